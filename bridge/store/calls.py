"""Per-call state in Redis, written off the media path by a batching writer that never blocks or fails a call.

What a call writes (key names and TTLs in :mod:`bridge.store.keys`):

* one hash per call (:data:`keys.CALL_FIELDS`: identity, protocol state, progress, times), TTL refreshed by writes;
* one capped stream per call of event summaries and both transcripts (``XADD MAXLEN ~``);
* membership in its worker's live set, and the worker's heartbeat key (``SET ... EX``), refreshed every few seconds.

The call session only ever calls cheap synchronous methods (:meth:`CallStore.update`, :meth:`CallStore.event`,
:meth:`CallStore.end`, or the :meth:`CallStore.listener_for` adapter on ``CallSession.listeners``). They touch
memory only: an in-memory snapshot of each call's full hash (with the names of the fields changed since the last
flush) and a bounded queue of stream entries. They must be called on the event loop's thread (pjsua2 callbacks only
copy and enqueue onto the loop; see docs/pjsip.md). A background task flushes one pipeline every ``flush_interval_s``:
changed hash fields coalesced per call, stream entries in order, live-set membership, the heartbeat.

A Redis outage never stops a call::

    update()/event() ──► snapshot + queue ──► writer ──► Redis
                                   ▲             │ connection error
                                   │             ▼
                      bounded: oldest entries   retry with backoff (``backoff()``), counters:
                      dropped, ``dropped_writes`` ``write_errors``, ``outages``, ``queue_depth``, ``connected``
                                                 │ Redis answers again
                                                 ▼
                      RE-SYNC: every call still in memory gets its FULL hash rewritten from the snapshot (so the state
                      is complete even if Redis restarted empty), live-set membership and the heartbeat are re-added,
                      the recent stream entries already written are appended again, then the queued ones.

Stream entries carry ids chosen here (``<epoch ms>-<seq>``, increasing per call) rather than ``*``. Appending one that
Redis already holds is refused (``ID ... equal or smaller``) and ignored, so a retried pipeline, or a re-sync against a
server that kept its data, never duplicates an entry, and entries keep the time they happened, not the time Redis came
back. A worker that was only cut off (its heartbeat expired, a reaper marked its calls "worker died") rewrites them as
live when it reconnects.

Connections (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, or a client built by hand): see
:mod:`bridge.store.connection`. What supervisors read back: :mod:`bridge.store.read`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from bridge import events as ev
from bridge.errors import redact
from bridge.store import keys
from bridge.store.connection import backoff, connect, is_outage, safe_url
from bridge.store.read import RECENT_EVENTS, CallDetail, CallSummary, read_call, read_live_calls, text

log = logging.getLogger("bridge.store")

Listener = Callable[[ev.Report], None]
Probe = Callable[[], Mapping[str, Any]]

FLUSH_INTERVAL_S = 0.15
MAX_QUEUE = 10_000  # stream entries held while Redis is away; beyond it the oldest are dropped (``dropped_writes``)
MAX_ENDED_PENDING = 1_000  # ended calls whose final state is still unwritten; beyond it the oldest is given up
RESYNC_TAIL = 200  # stream entries per call kept after they were written, re-appended by a re-sync
BATCH_ENTRIES = 1_000  # stream entries per pipeline

# Stored report fields that are hash fields of the same name.
_HASH_FROM_REPORT = frozenset(keys.PROTOCOL_FIELDS + keys.PROGRESS_FIELDS + ("model", "voice", "dialect"))
_STREAM_DATA_MAX = 200  # characters of one extra data value in a stream entry
_PHASE_ENDED = "ENDED"


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _duplicate_id(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "equal or smaller" in str(exc)


def _field_value(value: Any) -> str:
    """A hash field or stream value: text, cut to ``keys.SUMMARY_MAX_CHARS``, with anything key-shaped redacted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return redact(str(value)[: keys.SUMMARY_MAX_CHARS])


def _stamp(t: float) -> str:
    return f"{t:.3f}"


@dataclass
class _Entry:
    call_id: str
    id: str
    fields: dict[FieldT, EncodableT]  # str -> str; typed as redis-py's XADD wants it


@dataclass
class _Call:
    state: dict[str, str]
    dirty: set[str] = field(default_factory=set)
    member_dirty: bool = True  # SADD (live) or SREM (ended) still to write
    ended: bool = False
    pending: int = 0  # stream entries of this call in the queue
    tail: deque[_Entry] = field(default_factory=lambda: deque(maxlen=RESYNC_TAIL))
    probe: Probe | None = None
    last_ms: int = 0
    seq: int = 0


async def reap_dead_workers(
    client: aioredis.Redis, *, exclude: frozenset[str] = frozenset(), now: float | None = None
) -> dict[str, list[str]]:
    """Workers whose heartbeat expired: mark each of their live calls ended ("worker died"), drop their live set
    and forget the worker. Returns ``{worker: [call ids marked ended]}``. Idempotent; safe to run from every worker.
    Raises ``RedisError`` subclasses (the writer treats them as an outage)."""
    workers = [w for w in sorted(text(w) for w in await client.smembers(keys.WORKERS)) if w not in exclude]
    if not workers:
        return {}
    pipe = client.pipeline(transaction=False)
    for w in workers:
        pipe.exists(keys.worker_heartbeat(w))
    alive = await pipe.execute()
    dead = [w for w, up in zip(workers, alive, strict=True) if not up]
    out: dict[str, list[str]] = {}
    for w in dead:
        call_ids = sorted(text(c) for c in await client.smembers(keys.worker_calls(w)))
        out[w] = await _mark_ended(client, call_ids, "worker died", now=now)
        pipe = client.pipeline(transaction=False)
        pipe.delete(keys.worker_calls(w))
        pipe.srem(keys.WORKERS, w)
        await pipe.execute()
        if out[w]:
            log.warning("worker %s is dead (heartbeat expired): marked %d call(s) ended", w, len(out[w]))
    return out


async def _mark_ended(client: aioredis.Redis, call_ids: list[str], reason: str, *, now: float | None) -> list[str]:
    if not call_ids:
        return []
    t = _stamp(time.time() if now is None else now)
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
        pipe.hset(keys.call(call_id), mapping={"phase": _PHASE_ENDED, "ended_at": t, "end_reason": reason})
        pipe.expire(keys.call(call_id), keys.CALL_TTL_S)
    await pipe.execute()
    return marked


# ------------------------------------------------------------------------------------------------ the writer
class CallStore:
    """The per-call state writer of one worker, and the supervisors' read side.

    ``CallStore(url)`` or ``CallStore(client=...)`` (Sentinel, Cluster, or a client you configured). Write side:
    ``await start()``, then the synchronous :meth:`begin` / :meth:`update` / :meth:`event` / :meth:`end` (or
    :meth:`listener_for`), ``await close()``. Read side (no ``start()`` needed): :meth:`list_calls`,
    :meth:`get_call`, :meth:`reap_dead_workers`.

    Gauges and counters, readable at any time: ``queue_depth`` (stream entries + changed hash fields not yet
    written), ``dropped_writes`` (stream entries, or ended calls, given up because the queue was full),
    ``write_errors`` (failed flushes), ``rejected_writes`` (commands Redis refused for another reason than a
    duplicate stream id), ``outages``, ``resyncs`` (completed after an outage), ``flushes``, ``connected``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        worker: str | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_queue: int = MAX_QUEUE,
        stream_maxlen: int = keys.STREAM_MAXLEN,
        call_ttl_s: int = keys.CALL_TTL_S,
        heartbeat_interval_s: float = keys.HEARTBEAT_INTERVAL_S,
        heartbeat_ttl_s: int = keys.HEARTBEAT_TTL_S,
        reap_interval_s: float | None = keys.REAP_INTERVAL_S,
        retry_initial_s: float = 0.1,
        retry_cap_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        **redis_kwargs: Any,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("CallStore needs a Redis URL or a client")
            client = connect(url, **redis_kwargs)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.where = safe_url(url) if url else "redis client"
        self.worker = worker or default_worker_id()
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.stream_maxlen = stream_maxlen
        self.call_ttl_s = call_ttl_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.reap_interval_s = reap_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_cap_s = retry_cap_s
        self._clock = clock
        # counters and gauges
        self.dropped_writes = 0
        self.write_errors = 0
        self.rejected_writes = 0
        self.outages = 0
        self.resyncs = 0
        self.flushes = 0
        self.connected = False
        self.last_error = ""
        # state
        self._calls: dict[str, _Call] = {}
        self._queue: deque[_Entry] = deque()
        self._writing = False  # a pipeline is on its way: what it took is off the queue but not yet written
        self._resync = True  # the first write is a full sync (and adopts what a previous incarnation left behind)
        self._first_sync = True
        self._in_outage = False
        self._last_heartbeat = float("-inf")
        self._last_reap = float("-inf")
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # Called with the ``sip_dialog`` values of calls found orphaned (a previous run of this worker, or a dead
        # worker): the worker sends each caller a BYE. Never raises into the writer.
        self.on_orphaned: Callable[[list[str]], None] | None = None

    # ---------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"callstore-{self.worker}")

    async def close(self, timeout_s: float = 2.0) -> None:
        """Try to write what is queued (for at most ``timeout_s``), withdraw the heartbeat, close the client."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
            if self.connected and not any(not c.ended for c in self._calls.values()):
                with contextlib.suppress(RedisError, OSError):
                    pipe = self.client.pipeline(transaction=False)
                    pipe.delete(keys.worker_heartbeat(self.worker))
                    pipe.srem(keys.WORKERS, self.worker)
                    await pipe.execute()
        if self._owns_client:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()

    async def __aenter__(self) -> CallStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + sum(len(c.dirty) for c in self._calls.values())

    @property
    def live_calls(self) -> list[str]:
        """Calls of this worker that have begun and not ended (in memory; no Redis read)."""
        return [cid for cid, c in self._calls.items() if not c.ended]

    def request_resync(self) -> None:
        """Rewrite everything held in memory with the next write, as after an outage (e.g. after a FLUSHALL)."""
        self._resync = True
        self._wake.set()

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued is written (tests, shutdown). False if Redis did not take it in time."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.queue_depth or self._writing or self._resync or any(c.member_dirty for c in self._calls.values()):
            if asyncio.get_running_loop().time() > deadline or self._task is None or self._task.done():
                return False
            self._wake.set()
            await asyncio.sleep(0.01)
        return True

    # ---------------------------------------------------------------------------------------- write side (sync)
    def begin(
        self,
        call_id: str,
        *,
        caller: str = "",
        called: str = "",
        dialplan: str = "",
        variant: str = "",
        dialect: str = "",
        model: str = "",
        voice: str = "",
    ) -> None:
        """A call starts: its hash gets every field (empty where unknown yet) and it joins the live set."""
        if call_id in self._calls:
            return
        now = _stamp(self._clock())
        state = dict.fromkeys(keys.CALL_FIELDS, "")
        state.update(
            call_id=call_id,
            worker=self.worker,
            caller=caller,
            called=called,
            dialplan=dialplan,
            variant=variant,
            dialect=dialect,
            model=model,
            voice=voice,
            phase="IDLE",
            last_user_audio_seq="0",
            played_ms="0",
            started_at=now,
            last_activity=now,
        )
        self._calls[call_id] = _Call(state=state, dirty=set(state))

    def update(self, call_id: str, **fields: Any) -> None:
        """Set hash fields (names from :data:`keys.CALL_FIELDS`; others are ignored). Memory only; never raises."""
        call = self._calls.get(call_id)
        if call is None:
            return
        for name, value in fields.items():
            if name not in call.state:
                log.debug("call %s: not a call field: %s", call_id, name)
                continue
            text = _field_value(value)
            if call.state[name] != text:
                call.state[name] = text
                call.dirty.add(name)
        call.state["last_activity"] = _stamp(self._clock())
        call.dirty.add("last_activity")

    def event(self, call_id: str, kind: str, summary: str = "", **data: Any) -> None:
        """Append an entry to the call's stream (in order). Memory only; never raises."""
        call = self._calls.get(call_id)
        if call is None:
            return
        now = self._clock()
        ms = int(now * 1000)
        if ms <= call.last_ms:
            ms, call.seq = call.last_ms, call.seq + 1
        else:
            call.seq = 0
        call.last_ms = ms
        t = _stamp(now)
        fields: dict[FieldT, EncodableT] = {"kind": kind, "summary": redact(summary[: keys.SUMMARY_MAX_CHARS]), "t": t}
        for name, value in data.items():
            if name not in fields and isinstance(value, str | int | float | bool):
                fields[name] = _field_value(value)[:_STREAM_DATA_MAX]
        self._queue.append(_Entry(call_id, f"{ms}-{call.seq}", fields))
        call.pending += 1
        call.state["last_activity"] = t
        call.dirty.add("last_activity")
        self._trim_queue()

    def end(self, call_id: str, reason: str) -> None:
        """The call is over: phase ENDED, ended_at, end_reason; it leaves the live set with the next write."""
        call = self._calls.get(call_id)
        if call is None or call.ended:
            return
        self.update(call_id, phase=_PHASE_ENDED, ended_at=_stamp(self._clock()), end_reason=reason)
        call.ended = True
        call.member_dirty = True
        call.probe = None
        ended = [cid for cid, c in self._calls.items() if c.ended]
        for cid in ended[: max(0, len(ended) - MAX_ENDED_PENDING)]:
            self._forget(cid)  # a very long outage: give up the oldest final states
            self.dropped_writes += 1

    def watch(self, call_id: str, probe: Probe) -> None:
        """Poll ``probe()`` at every flush for fields that change too often to report one by one (for example
        ``{"last_user_audio_seq": session.frames_appended}``). Runs on the loop, off the media path."""
        call = self._calls.get(call_id)
        if call is not None:
            call.probe = probe

    def listener_for(self, call_id: str, **identity: str) -> Listener:
        """A ``CallSession.listeners`` entry for one call: session reports become hash fields and stream entries.

        ``identity`` (caller, called, dialplan, variant, dialect, model, voice) begins the call if it has not begun. The
        mapping: :class:`~bridge.events.PhaseChanged` -> phase; :class:`~bridge.events.ResponseBegan` ->
        response_id; :class:`~bridge.events.TruncateSent` -> played_ms (the ``audio_end_ms`` the caller heard);
        :class:`~bridge.events.CallerSaid` / :class:`~bridge.events.AgentSaid` -> last_transcript and item_id; any
        stored report field named like a protocol or progress field (session_id, conversation_id, item_id, ...) ->
        that field; :class:`~bridge.events.CallEnded` -> :meth:`end`. Every report but
        :class:`~bridge.events.Latency` is streamed (kind, summary and the stored fields).
        """
        self.begin(call_id, **identity)

        def listener(report: ev.Report) -> None:
            self._on_report(call_id, report)

        return listener

    def _on_report(self, call_id: str, report: ev.Report) -> None:
        summary, data = report.summary, report.data()
        fields: dict[str, Any] = {k: v for k, v in data.items() if k in _HASH_FROM_REPORT}
        if isinstance(report, ev.PhaseChanged):
            fields["phase"] = report.new
        elif isinstance(report, ev.ResponseBegan):
            fields.setdefault("response_id", report.response_id)
        elif isinstance(report, ev.TruncateSent):
            fields["played_ms"] = report.audio_end_ms
        elif isinstance(report, ev.CallerSaid):
            fields["last_transcript"] = f"Caller: {summary}"
        elif isinstance(report, ev.AgentSaid):
            fields["last_transcript"] = f"Agent: {summary}"
        ended = isinstance(report, ev.CallEnded)
        streamed = not isinstance(report, ev.Latency)  # a latency sample is a metric, and far too chatty
        if not ended and (fields or streamed):
            self.update(call_id, **fields)
        if streamed:
            self.event(call_id, report.kind, summary, **data)
        if ended:
            self.end(call_id, summary or "ended")

    def _trim_queue(self) -> None:
        while len(self._queue) > self.max_queue:
            dropped = self._queue.popleft()
            self.dropped_writes += 1
            call = self._calls.get(dropped.call_id)
            if call is not None:
                call.pending -= 1

    def _forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        kept = deque(e for e in self._queue if e.call_id != call_id)
        self._queue = kept

    # ---------------------------------------------------------------------------------------- the writer task
    async def _run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                more = await self._write_once()
                if self._in_outage:
                    log.info("Redis at %s is back: call state re-synced", self.where)
                self._in_outage = False
                self.connected = True
                delays = None
                if self._closing and not more:
                    return
                if more:
                    self._wake.set()
            except Exception as exc:  # the writer must outlive anything, or calls would stop being recorded
                self.write_errors += 1
                self.last_error = redact(f"{type(exc).__name__}: {exc}")
                self.connected = False
                self._resync = True
                if not self._in_outage:
                    self._in_outage = True
                    self.outages += 1
                    if is_outage(exc):
                        log.warning("Redis at %s unavailable, queueing call state: %s", self.where, self.last_error)
                    else:
                        log.exception("call state writer failed; queueing and retrying")
                if self._closing:
                    return
                delays = delays or backoff(self.retry_initial_s, 2.0, self.retry_cap_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_closing(), next(delays))

    async def _wait_closing(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()

    async def _write_once(self) -> bool:
        """One pipeline. Returns True if entries are still queued (write again at once)."""
        now, tick = self._clock(), time.monotonic()  # stamps from the clock, intervals monotonic
        resync = self._resync
        if resync and self._first_sync:
            await self._adopt_leftovers()
        for call in self._calls.values():
            if call.probe is not None and not call.ended:
                try:
                    changes = dict(call.probe())
                except Exception:
                    log.exception("call state probe failed")
                    call.probe = None
                    continue
                for name, value in changes.items():
                    text = _field_value(value)
                    if name in call.state and call.state[name] != text:
                        call.state[name] = text
                        call.dirty.update((name, "last_activity"))
                        call.state["last_activity"] = _stamp(now)
        heartbeat = resync or tick - self._last_heartbeat >= self.heartbeat_interval_s
        taken: dict[str, set[str]] = {}
        members: list[str] = []
        batch: list[_Entry] = []
        tails: list[_Entry] = []
        pipe = self.client.pipeline(transaction=False)
        for call_id, call in self._calls.items():
            names = set(call.state) if resync else set(call.dirty)
            if names:
                key = keys.call(call_id)
                pipe.hset(key, mapping={n: call.state[n] for n in sorted(names)})
                pipe.expire(key, self.call_ttl_s)
                taken[call_id] = set(call.dirty)
                call.dirty.clear()
            if resync or call.member_dirty:
                if call.ended:
                    pipe.srem(keys.worker_calls(self.worker), call_id)
                else:
                    pipe.sadd(keys.worker_calls(self.worker), call_id)
                members.append(call_id)
                call.member_dirty = False
            if resync:
                tails += call.tail
        while self._queue and len(batch) < BATCH_ENTRIES:
            batch.append(self._queue.popleft())
        for entry in tails + batch:
            pipe.xadd(
                keys.call_events(entry.call_id),
                dict(entry.fields),
                id=entry.id,
                maxlen=self.stream_maxlen,
                approximate=True,
            )
        for call_id in {e.call_id for e in tails + batch}:
            pipe.expire(keys.call_events(call_id), self.call_ttl_s)
        hb_index, missed = -1, False
        if heartbeat:
            hb_index = len(pipe)
            pipe.exists(keys.worker_heartbeat(self.worker))
            pipe.set(keys.worker_heartbeat(self.worker), _stamp(now), ex=self.heartbeat_ttl_s)
            pipe.sadd(keys.WORKERS, self.worker)
            pipe.expire(keys.worker_calls(self.worker), self.call_ttl_s)
        if not len(pipe):
            return False
        self._writing = True
        try:
            results = await pipe.execute(raise_on_error=False)
        except BaseException:
            self._restore(taken, members, batch)
            raise
        finally:
            self._writing = False
        outage = next((r for r in results if isinstance(r, Exception) and is_outage(r)), None)
        if outage is not None:
            self._restore(taken, members, batch)
            raise outage
        for r in results:
            if isinstance(r, Exception) and not _duplicate_id(r):
                self.rejected_writes += 1
                log.error("Redis refused a call state write: %s", redact(str(r)))
        # Success: written entries move to their call's tail (for a later re-sync); finished calls are forgotten.
        for entry in batch:
            owner = self._calls.get(entry.call_id)
            if owner is not None:
                owner.pending -= 1
                owner.tail.append(entry)
        if heartbeat:
            missed = not resync and results[hb_index] == 0
            self._last_heartbeat = tick
        if resync:
            if not self._first_sync:
                self.resyncs += 1
            self._first_sync = False
            self._resync = False
        self.flushes += 1
        for call_id, done in list(self._calls.items()):
            if done.ended and not done.dirty and not done.member_dirty and done.pending == 0:
                del self._calls[call_id]
        if heartbeat and missed:
            # Our heartbeat had expired (the loop stalled, or Redis lost its data without us seeing an error): a reaper
            # may have marked our calls ended. Rewrite everything at once.
            log.warning("worker %s: heartbeat had expired; re-syncing call state", self.worker)
            self._resync = True
            return True
        if self.reap_interval_s is not None and tick - self._last_reap >= self.reap_interval_s:
            self._last_reap = tick
            await self.reap_dead_workers()
        return bool(self._queue)

    def _restore(self, taken: dict[str, set[str]], members: list[str], batch: list[_Entry]) -> None:
        """A failed pipeline: everything it carried is to be written again (in the same order)."""
        for call_id, names in taken.items():
            call = self._calls.get(call_id)
            if call is not None:
                call.dirty |= names
        for call_id in members:
            call = self._calls.get(call_id)
            if call is not None:
                call.member_dirty = True
        self._queue.extendleft(reversed(batch))
        self._trim_queue()

    async def _adopt_leftovers(self) -> None:
        """Calls a previous process with this worker id left in the live set are over: mark them ended."""
        known = await self.client.smembers(keys.worker_calls(self.worker))
        stale = sorted(c for c in (text(k) for k in known) if c not in self._calls)
        if stale:
            ended = await _mark_ended(self.client, stale, "worker restarted", now=self._clock())
            await self.client.srem(keys.worker_calls(self.worker), *stale)
            log.warning("worker %s: marked %d call(s) of a previous run ended", self.worker, len(stale))
            await self._report_orphans(ended)

    async def _report_orphans(self, call_ids: list[str]) -> None:
        if not call_ids or self.on_orphaned is None:
            return
        pipe = self.client.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hget(keys.call(call_id), "sip_dialog")
        dialogs = [text(d) for d in await pipe.execute() if d]
        if dialogs:
            try:
                self.on_orphaned(dialogs)
            except Exception:
                log.exception("on_orphaned hook failed")

    # ---------------------------------------------------------------------------------------- read side
    async def list_calls(self) -> list[CallSummary]:
        """Live calls across all workers (phase, dialect, duration, last transcript line). Raises StoreUnavailable."""
        return await read_live_calls(self.client, now=self._clock(), where=self.where)

    async def get_call(self, call_id: str, *, count: int = RECENT_EVENTS) -> CallDetail | None:
        """The call's hash and recent stream entries. Raises StoreUnavailable."""
        return await read_call(self.client, call_id, count=count, where=self.where)

    async def reap_dead_workers(self) -> dict[str, list[str]]:
        """Mark the calls of workers whose heartbeat expired ended ("worker died"); never this worker's own."""
        out = await reap_dead_workers(self.client, exclude=frozenset({self.worker}), now=self._clock())
        await self._report_orphans([c for calls in out.values() for c in calls])
        return out
