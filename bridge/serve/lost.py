"""The record of every call whose worker died: closed by ``serve``'s pool (:class:`bridge.serve.pool.Pool`) when a
worker exits without being asked to, and at start for the workers of a previous run of this node.

A worker killed mid-call (SIGKILL, the OOM killer, a crash in native code) cannot end its calls' records. For each
call it left live in Redis (its set ``cb:worker:{<id>}:calls``), the pool:

* marks the call ended, end reason ``worker died`` (and ``worker_exit``: how it died), and takes it off the set;
* sends the caller a BYE built from the dialog kept in the call's hash, sealed under the node's ``listen_key``
  (:mod:`bridge.store.dialogseal`, :mod:`bridge.sip.orphans`);
* writes the call's report line (``report_file``: :func:`lost_line`, the fields every record of a call has, with that
  end reason, outcome ``failed`` and ``"worker_died": true``);
* finishes the call's recording (:func:`bridge.call.recorder.finish_recording`: what reached the disk plays);
* queues its ``call.ended`` webhook (:func:`bridge.serve.webhooks.lost_ended`: end reason ``worker died``, ``seq``
  after the worker's last event), once: a call some other path ended already is not marked, and the queue takes one
  ``call.ended`` per call and endpoint whoever sends it;
* counts the call as a failure (outcome ``dropped``) of its variant: in the rollout's sliding window, which may roll
  the variant back, and in ``/metrics``.

A part that fails (Redis away, a file not writable) is logged and counted in
``callbridge_call_record_failures_total{part}``. Without Redis the pool knows no calls, and closes none.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import events as ev
from bridge import metrics
from bridge.call.recorder import finish_recording, recording_dir
from bridge.config import WILDCARD_HOSTS, Settings
from bridge.dialplan import Dialplan, rollout_specs
from bridge.errors import redact
from bridge.rollout.store import RolloutStore
from bridge.serve.webhooks import lost_ended
from bridge.store import keys
from bridge.store.calls import mark_ended
from bridge.store.dialogseal import DialogSeal
from bridge.store.pending import stamp
from bridge.store.read import text
from bridge.store.record import stored_record
from bridge.store.reportfile import append_report
from bridge.webhooks.outbox import installed

log = logging.getLogger("bridge.serve.lost")

END_REASON = "worker died"
LOST_RECORD = {"outcome": "dropped", "worker_died": True, "fallback": False}  # a failure in the rollout's window


def worker_id(settings: Settings, index: int) -> str:
    """The call-store id worker ``index`` gives itself (``bridge.serve.worker``): ``<sip_host>:<port or index>``."""
    return f"{settings.sip_host}:{settings.worker_sip_port(index) or index}"


def how_it_died(returncode: int | None) -> str:
    if returncode is None:
        return "a previous run of this node"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


async def close_lost_calls(
    client: aioredis.Redis, settings: Settings, plans: list[Dialplan], index: int, returncode: int | None
) -> list[str]:
    """Close the record of every call worker ``index`` left live (see the module docstring); returns their ids."""
    worker, exit_ = worker_id(settings, index), how_it_died(returncode)
    now = time.time()
    try:
        live = sorted(text(c) for c in await client.smembers(keys.worker_calls(worker)))
        states = [await client.hgetall(keys.call(c)) for c in live]
        marked = set(await mark_ended(client, live, END_REASON, now=now))
        for call_id in marked:
            await client.hset(keys.call(call_id), "worker_exit", exit_)
        if live:
            await client.srem(keys.worker_calls(worker), *live)
    except (RedisError, OSError) as exc:
        metrics.CALL_RECORD_FAILURES.labels("redis").inc()
        log.error("worker %s died: its calls could not be read or closed in Redis: %s", worker, redact(str(exc)))
        return []
    ended = {"ended_at": stamp(now), "end_reason": END_REASON, "ended_by": str(ev.EndedBy.FAULT), "worker_exit": exit_}
    ended |= {"outcome": str(ev.CallOutcome.FAILED)}  # as mark_ended wrote them
    lost = [
        (c, {text(k): text(v) for k, v in st.items()} | ended)
        for c, st in zip(live, states, strict=True)
        if c in marked
    ]
    if not lost:
        return []
    log.warning("worker %d (%s) died (%s) with %d call(s): closing their records", index, worker, exit_, len(lost))
    # the callers' BYEs wait for their answers (bridge/sip/orphans.py) while the records are written
    hanging_up = asyncio.create_task(_hang_up(settings, [(c, state.get("sip_dialog", "")) for c, state in lost]))
    rollouts = RolloutStore(client=client, specs=rollout_specs(plans), rollout_keys=settings.rollout_keys)
    try:
        for call_id, state in lost:
            _write_report(settings, index, call_id, state, exit_)
            _finish_recording(settings, call_id)
            lost_ended(installed(), call_id, state, settings.recordings_dir, worker_exit=exit_)  # serve's outbox
            await _count_failure(rollouts, state)
    finally:
        await hanging_up
    return [c for c, _ in lost]


async def _hang_up(settings: Settings, dialogs: list[tuple[str, str]]) -> None:
    """BYE to the caller of each ``(call id, stored sip_dialog)``, opened with the node's ``listen_key``."""
    from bridge.sip.orphans import end_orphans  # a plain socket: no pjsua2 in this process

    key = settings.listen_key
    opened = DialogSeal.under(key.get_secret_value() if key else None).open_all(dialogs)
    host = settings.sip_host
    try:
        await end_orphans(opened, None if host in WILDCARD_HOSTS else host)
    except OSError as exc:
        log.error("BYE to the callers of a dead worker failed: %s", exc)


def lost_line(index: int, call_id: str, state: dict[str, str], exit_: str) -> dict[str, Any]:
    """The report line of a call whose worker died, from its hash as marked ended: the fields every record of a call
    has (:func:`bridge.store.record.stored_record`: numbers as stored, masked), whether it was answered, and how the
    worker died. Its transcript, timeline and cost died with the worker."""
    return {
        "worker": index,
        **stored_record(state | {"call_id": call_id}),
        "answered": bool(state.get("answered_at") or state.get("sip_dialog")),
        "worker_died": True,
        "worker_exit": exit_,
    }


def _write_report(settings: Settings, index: int, call_id: str, state: dict[str, str], exit_: str) -> None:
    if settings.report_file is None:
        return
    line = lost_line(index, call_id, state, exit_)
    try:
        append_report(settings.report_file, line)
    except OSError as exc:
        metrics.CALL_RECORD_FAILURES.labels("report").inc()
        log.error("call %s: its report line could not be written to %s: %s", call_id, settings.report_file, exc)


def _finish_recording(settings: Settings, call_id: str) -> None:
    try:
        finish_recording(recording_dir(settings.recordings_dir, call_id), END_REASON)
    except (OSError, ValueError) as exc:
        metrics.CALL_RECORD_FAILURES.labels("recording").inc()
        log.error("call %s: its recording could not be finished: %s", call_id, exc)


async def _count_failure(rollouts: RolloutStore, state: dict[str, str]) -> None:
    plan, variant = state.get("dialplan", ""), state.get("variant", "")
    if not plan or not variant:
        return
    metrics.record_variant_call(plan, variant, LOST_RECORD)
    metrics.CALLS_LOST.labels(plan, variant).inc()
    spec = rollouts.specs.get(plan)
    if spec is None or variant not in spec.names:
        return  # a plan pinned to one dialect has no rollout window
    if not await rollouts.record_call(plan, variant, LOST_RECORD):
        metrics.CALL_RECORD_FAILURES.labels("rollout").inc()
        return
    for rollback in await rollouts.check_rollback(plan):
        metrics.ROLLBACKS.labels(plan, rollback.variant).inc()
