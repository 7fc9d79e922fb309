"""Dead workers found and their calls ended: the reaper every worker's writer runs, and its helpers.

A worker whose heartbeat expired (``keys.worker_heartbeat``) is only a suspect: it may be dead, or alive and cut off
from Redis, still carrying its calls. Before its calls are marked ended ("worker died") and their callers sent a BYE,
the worker itself is asked over SIP (:func:`bridge.store.liveness.answers_sip`); one that answers is left alone, said
once at INFO, and asked again at every round while its heartbeat stays expired. It rewrites its calls as live when it
reaches Redis again (``bridge.store.calls``).

A round of :class:`Reaper` costs one pipeline while the set of workers does not change (``SMEMBERS`` of
``keys.WORKERS`` and an ``EXISTS`` per worker known from the round before); a worker not seen before costs a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import redis.asyncio as aioredis

from bridge import events as ev
from bridge.store import keys
from bridge.store.ended import index_ended
from bridge.store.liveness import answers_sip
from bridge.store.pending import PHASE_ENDED, stamp
from bridge.store.read import text

log = logging.getLogger("bridge.store")

Probe = Callable[[str], Awaitable[bool]]  # a worker's id -> does it answer (is it alive)?


async def mark_ended(
    client: aioredis.Redis, call_ids: list[str], reason: str, *, now: float | None = None
) -> list[str]:
    """Mark these calls ended (phase, ``ended_at``, ``end_reason``, ended by a fault, outcome ``failed``: their
    worker is gone) unless they already are; returns those marked.
    Raises ``RedisError`` subclasses."""
    if not call_ids:
        return []
    t = stamp(time.time() if now is None else now)
    pipe = client.pipeline(transaction=False)
    for call_id in call_ids:
        pipe.hget(keys.call(call_id), "ended_at")
        pipe.exists(keys.call(call_id))
    replies = await pipe.execute()
    marked = [c for i, c in enumerate(call_ids) if replies[2 * i + 1] and not replies[2 * i]]
    pipe = client.pipeline(transaction=False)
    for call_id in marked:
        # Only the hash: a stream entry added here (with a server-time id) would make Redis refuse, as "equal or
        # smaller", the entries a merely stalled worker still has queued for this call.
        pipe.hset(
            keys.call(call_id),
            mapping={
                "phase": PHASE_ENDED,
                "ended_at": t,
                "end_reason": reason,
                "ended_by": str(ev.EndedBy.FAULT),
                "outcome": str(ev.CallOutcome.FAILED),
            },
        )
        pipe.expire(keys.call(call_id), keys.CALL_TTL_S)
        index_ended(pipe, call_id, float(t), keys.CALL_TTL_S)
    await pipe.execute()
    return marked


Orphaned = Callable[[list[tuple[str, str]]], None]  # (call id, sip_dialog) of each answered call found orphaned
Lost = Callable[[list[tuple[str, dict[str, str]]]], None]  # (call id, its hash) of each call marked ended


async def report_orphans(
    client: aioredis.Redis, call_ids: list[str], hook: Orphaned | None, lost: Lost | None = None
) -> None:
    """Hand the ``(call id, sip_dialog)`` of calls found orphaned, those answered, to ``hook`` (the worker opens each
    dialog, bridge/store/dialogseal.py, and sends its caller a BYE), and every one's ``(call id, hash)`` as marked
    ended to ``lost`` (the worker queues its ``call.ended``, bridge/serve/webhooks.py)."""
    if not call_ids or (hook is None and lost is None):
        return
    pipe = client.pipeline(transaction=False)
    for call_id in call_ids:
        pipe.hgetall(keys.call(call_id))
    found = zip(call_ids, await pipe.execute(), strict=True)
    states = [(c, {text(k): text(v) for k, v in h.items()}) for c, h in found]
    dialogs = [(c, state["sip_dialog"]) for c, state in states if state.get("sip_dialog")]
    if hook is not None and dialogs:
        _safely("on_orphaned", lambda: hook(dialogs))
    if lost is not None and states:
        _safely("on_lost", lambda: lost(states))


def _safely(name: str, call: Callable[[], None]) -> None:
    """A hook never raises into the writer."""
    try:
        call()
    except Exception:
        log.exception("%s hook failed", name)


async def bury(client: aioredis.Redis, dead: Iterable[str], *, now: float | None) -> dict[str, list[str]]:
    """Mark each dead worker's live calls ended ("worker died"), drop its live set and forget the worker. Returns
    ``{worker: [call ids marked ended]}``. Raises ``RedisError`` subclasses."""
    out: dict[str, list[str]] = {}
    for w in dead:
        call_ids = sorted(text(c) for c in await client.smembers(keys.worker_calls(w)))
        out[w] = await mark_ended(client, call_ids, "worker died", now=now)
        pipe = client.pipeline(transaction=False)
        pipe.delete(keys.worker_calls(w))
        pipe.srem(keys.WORKERS, w)
        await pipe.execute()
        if out[w]:
            log.warning("worker %s is dead (heartbeat expired, no SIP answer): marked %d call(s) ended", w, len(out[w]))
    return out


async def expired(client: aioredis.Redis, workers: list[str]) -> list[str]:
    """Those of ``workers`` whose heartbeat expired (one pipeline)."""
    if not workers:
        return []
    pipe = client.pipeline(transaction=False)
    for w in workers:
        pipe.exists(keys.worker_heartbeat(w))
    return [w for w, up in zip(workers, await pipe.execute(), strict=True) if not up]


async def unanswered(workers: list[str], probe: Probe | None) -> tuple[list[str], list[str]]:
    """Ask each worker at once: (dead, alive). Without a probe every one is dead."""
    if probe is None or not workers:
        return list(workers), []
    answers = dict(zip(workers, await asyncio.gather(*(probe(w) for w in workers)), strict=True))
    return [w for w in workers if not answers[w]], [w for w in workers if answers[w]]


async def reap_dead_workers(
    client: aioredis.Redis,
    *,
    exclude: frozenset[str] = frozenset(),
    now: float | None = None,
    probe: Probe | None = None,
) -> dict[str, list[str]]:
    """Workers whose heartbeat expired (and, given a ``probe``, that do not answer it) are buried (:func:`bury`).
    Idempotent; safe to run from every worker. Raises ``RedisError`` subclasses."""
    workers = [w for w in sorted(text(w) for w in await client.smembers(keys.WORKERS)) if w not in exclude]
    dead, _ = await unanswered(await expired(client, workers), probe)
    return await bury(client, dead, now=now)


class Reaper:
    """One worker's reaper: :meth:`round` finds the other workers whose heartbeat expired, asks each over SIP, and
    buries those that do not answer. ``probe=None``: no asking (an expired heartbeat is death)."""

    def __init__(self, own: str, probe: Probe | None = answers_sip) -> None:
        self.own = own
        self.probe = probe
        self.known: list[str] = []  # the other workers, as the last round found them
        self.cut_off: set[str] = set()  # expired but answering, already said

    async def round(self, client: aioredis.Redis, *, now: float | None = None) -> dict[str, list[str]]:
        pipe = client.pipeline(transaction=False)
        pipe.smembers(keys.WORKERS)
        for w in self.known:
            pipe.exists(keys.worker_heartbeat(w))
        members_raw, *beats = await pipe.execute()
        members = {text(m) for m in members_raw} - {self.own}
        suspects = [w for w, up in zip(self.known, beats, strict=True) if not up and w in members]
        suspects += await expired(client, sorted(members.difference(self.known)))
        self.known = sorted(members)
        dead, alive = await unanswered(suspects, self.probe)
        for w in alive:
            if w not in self.cut_off:
                log.info("worker %s misses its heartbeat but answers SIP: not reaped", w)
        self.cut_off = set(alive)  # one back on Redis, or buried, is said again if it is cut off again
        return await bury(client, dead, now=now)
