"""What the call state writer holds in memory and has not written yet (no Redis, no asyncio: the writer's pure half).

Per call: a snapshot of its full hash, the names of the fields changed since the last write, whether its live-set
membership is still to be written, whether its keys' TTLs are set, and the tail of stream entries already written
(re-appended by a re-sync). One bounded queue of stream entries for all calls, oldest dropped first
(``dropped_writes``).

Two kinds of change: what a report changes (a phase, a transcript line, an id) goes with the next write; the fields
that only tick along (``last_activity``, and whatever a call's probe reads, such as ``last_user_audio_seq``) are
*ticks*, written with the worker's heartbeat (about once a second) or with the call's next other change, whichever
comes first. A key's TTL is set when the key is first written, again when the call ends (so a record lives
``CALL_TTL_S`` after its end), after a re-sync, and otherwise every ``ttl_refresh_s``; never on every write.

The writer (:class:`bridge.store.calls.CallStore`) takes a :class:`Batch` out (:meth:`PendingWrites.take`), sends
it as one pipeline, then either settles it (:meth:`PendingWrites.written`) or puts it back
(:meth:`PendingWrites.restore`), so that nothing a failed pipeline carried is lost or reordered.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.typing import EncodableT, FieldT

from bridge import events as ev
from bridge.errors import redact
from bridge.store import keys

log = logging.getLogger("bridge.store")

Probe = Callable[[], Mapping[str, Any]]

MAX_QUEUE = 10_000  # stream entries held while Redis is away; beyond it the oldest are dropped (``dropped_writes``)
MAX_ENDED_PENDING = 1_000  # ended calls whose final state is still unwritten; beyond it the oldest is given up
RESYNC_TAIL = 200  # stream entries per call kept after they were written, re-appended by a re-sync
BATCH_ENTRIES = 1_000  # stream entries per pipeline
PHASE_ENDED = "ENDED"
IDENTITY = ("caller", "called", "original_called", "dialplan", "variant", "dialect", "model", "voice")  # at its start

# Stored report fields that are hash fields of the same name.
_HASH_FROM_REPORT = frozenset(keys.PROTOCOL_FIELDS + keys.PROGRESS_FIELDS + ("model", "voice", "dialect"))
_STREAM_DATA_MAX = 200  # characters of one extra data value in a stream entry
_ENTRY_HEAD = frozenset({"kind", "summary"})  # a stream entry's own fields, beside its report's


def field_value(value: Any) -> str:
    """A hash field or stream value: its stored text (:func:`bridge.events.text_of`), cut to
    ``keys.SUMMARY_MAX_CHARS``, with anything key-shaped redacted."""
    return redact(ev.text_of(value)[: keys.SUMMARY_MAX_CHARS])


def stamp(t: float) -> str:
    return f"{t:.3f}"


_FIRSTS = {"greeting": "greeting_ms", "first_reply": "first_reply_ms"}  # latency segment -> summary field
_MODEL_AWAY = (ev.SessionLost, ev.RealtimeUnavailable)
_MODEL_BACK = (ev.OutageEnded, ev.Recovered)


def summary_fields(report: ev.Report, call: CallState | None) -> dict[str, Any]:
    """The :data:`keys.SUMMARY_FIELDS` one report sets (a greeting or first reply: its first sample only)."""
    if isinstance(report, ev.CallEnded):
        return {"outcome": str(report.outcome), "ended_by": str(report.ended_by), "on_hold": "0", "in_outage": "0"}
    if isinstance(report, ev.PostCallDone):
        return {
            "disposition": report.disposition,
            "call_summary": report.text,
            "call_fields": report.fields_json,
            "post_call_status": report.status,
        }
    if isinstance(report, ev.ChecksDone):
        return {"failed_checks": report.failed, "checks": report.rows_json}
    if isinstance(report, ev.PeerReasonGiven):
        return {"peer_reason": report.reason}
    if isinstance(report, ev.Latency):
        name = _FIRSTS.get(report.segment)
        first = name is not None and call is not None and not call.state.get(name)
        return {name: round(report.ms, 1)} if first and name is not None else {}
    if isinstance(report, ev.SupervisorActed):
        return {"supervised": "1"}
    if isinstance(report, ev.HoldStarted | ev.HoldEnded):
        return {"on_hold": "1" if isinstance(report, ev.HoldStarted) else "0"}
    if isinstance(report, ev.TransferStepped):
        return {"transfer": str(report.step)}
    if isinstance(report, ev.WarmTransferEnded):
        return {"transfer": str(report.outcome)}
    if isinstance(report, ev.WaitHold):
        return {"on_hold": "1" if report.on else "0"}
    if isinstance(report, _MODEL_AWAY):
        return {"in_outage": "1", "had_outage": "1"}
    if isinstance(report, _MODEL_BACK):
        return {"in_outage": "0"}
    return {}


@dataclass
class Entry:
    call_id: str
    id: str
    fields: dict[FieldT, EncodableT]  # str -> str; typed as redis-py's XADD wants it


@dataclass
class CallState:
    state: dict[str, str]
    dirty: set[str] = field(default_factory=set)
    ticks: set[str] = field(default_factory=set)  # fields that only tick along: written with the heartbeat
    ttl_at: float | None = None  # when the hash's TTL was last set (monotonic); None: not yet
    stream_ttl: bool = False  # the stream's TTL is set
    member_dirty: bool = True  # SADD (live) or SREM (ended) still to write
    ended: bool = False
    pending: int = 0  # stream entries of this call in the queue
    tail: deque[Entry] = field(default_factory=lambda: deque(maxlen=RESYNC_TAIL))
    probe: Probe | None = None
    last_ms: int = 0
    seq: int = 0


@dataclass
class Batch:
    """What one pipeline carries, per call in order: hash fields to write, live-set membership to write."""

    order: list[str] = field(default_factory=list)  # call ids, in the order their commands go
    hashes: dict[str, dict[FieldT, EncodableT]] = field(default_factory=dict)  # call id -> fields (HSET)
    members: dict[str, bool] = field(default_factory=dict)  # call id -> ended (SREM) or not (SADD)
    taken: dict[str, set[str]] = field(default_factory=dict)  # call id -> changed fields taken (put back on failure)
    ticks: dict[str, set[str]] = field(default_factory=dict)  # call id -> ticking fields taken (put back on failure)
    expire: set[str] = field(default_factory=set)  # calls whose hash gets its TTL (again) with this write
    expire_streams: set[str] = field(default_factory=set)  # calls whose stream gets its TTL (again)
    at: float = 0.0  # when it was taken (monotonic)
    refused: dict[int, int] = field(default_factory=dict)  # epoch minute -> INVITEs refused (486/503) in it
    tails: list[Entry] = field(default_factory=list)  # written before, appended again (a re-sync)
    entries: list[Entry] = field(default_factory=list)  # taken off the queue

    @property
    def streamed(self) -> list[Entry]:
        return self.tails + self.entries


class PendingWrites:
    """Calls' state and stream entries not yet written. Synchronous, memory only, never raises into a call."""

    def __init__(self, worker: str, clock: Callable[[], float], max_queue: int = MAX_QUEUE) -> None:
        self.worker = worker
        self.max_queue = max_queue
        self.dropped_writes = 0
        self.calls: dict[str, CallState] = {}
        self.queue: deque[Entry] = deque()
        self.refused: dict[int, int] = {}  # epoch minute -> INVITEs refused in it, not yet written
        self._clock = clock

    @property
    def queue_depth(self) -> int:
        return len(self.queue) + sum(len(c.dirty) for c in self.calls.values())

    @property
    def live_calls(self) -> list[str]:
        return [cid for cid, c in self.calls.items() if not c.ended]

    @property
    def unwritten(self) -> bool:
        """Membership or ticking fields not written yet (beside :attr:`queue_depth`)."""
        return any(c.ticks or c.member_dirty for c in self.calls.values())

    @property
    def members_dirty(self) -> bool:
        return any(c.member_dirty for c in self.calls.values())

    def begin(self, call_id: str, **identity: str) -> None:
        if call_id in self.calls:
            return
        now = stamp(self._clock())
        state = dict.fromkeys(keys.CALL_FIELDS, "")
        state.update(
            call_id=call_id,
            worker=self.worker,
            **{name: identity.get(name, "") for name in IDENTITY},
            phase="IDLE",
            last_user_audio_seq="0",
            played_ms="0",
            started_at=now,
            last_activity=now,
        )
        self.calls[call_id] = CallState(state=state, dirty=set(state))

    def update(self, call_id: str, **fields: Any) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        for name, value in fields.items():
            if name not in call.state:
                log.debug("call %s: not a call field: %s", call_id, name)
                continue
            text = field_value(value)
            if call.state[name] != text:
                call.state[name] = text
                call.dirty.add(name)
        call.state["last_activity"] = stamp(self._clock())
        call.ticks.add("last_activity")

    def event(self, call_id: str, kind: str, summary: str = "", /, **data: Any) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        now = self._clock()
        ms = int(now * 1000)
        if ms <= call.last_ms:
            ms, call.seq = call.last_ms, call.seq + 1
        else:
            call.seq = 0
        call.last_ms = ms
        t = stamp(now)
        fields: dict[FieldT, EncodableT] = {"kind": kind, "summary": redact(summary[: keys.SUMMARY_MAX_CHARS]), "t": t}
        for name, value in data.items():
            if name not in fields and isinstance(value, str | int | float | bool):
                fields[name] = field_value(value)[:_STREAM_DATA_MAX]
        self.queue.append(Entry(call_id, f"{ms}-{call.seq}", fields))
        call.pending += 1
        call.state["last_activity"] = t
        call.ticks.add("last_activity")
        self._trim_queue()

    def end(self, call_id: str, reason: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return
        ended_at = call.state["ended_at"] or stamp(self._clock())  # the worker's time of the end, if it gave one
        self.update(call_id, phase=PHASE_ENDED, ended_at=ended_at, end_reason=reason)
        call.ended = True
        call.member_dirty = True
        call.probe = None
        ended = [cid for cid, c in self.calls.items() if c.ended]
        for cid in ended[: max(0, len(ended) - MAX_ENDED_PENDING)]:
            self._forget(cid)  # a very long outage: give up the oldest final states
            self.dropped_writes += 1

    def refuse(self) -> None:
        """An INVITE refused with 486 or 503 now: counted in its minute (the wallboard's callers who never got
        through). Minutes older than the bucket's TTL are given up while Redis is away."""
        minute = int(self._clock() // keys.REFUSED_BUCKET_S)
        self.refused[minute] = self.refused.get(minute, 0) + 1
        oldest = minute - keys.REFUSED_TTL_S // keys.REFUSED_BUCKET_S
        for stale in [m for m in self.refused if m < oldest]:
            del self.refused[stale]

    def watch(self, call_id: str, probe: Probe) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.probe = probe

    def on_report(self, call_id: str, report: ev.Report) -> None:
        """A session report as hash fields and a stream entry (the mapping: ``CallStore.listener_for``)."""
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
        elif isinstance(report, ev.LongestSilence):
            fields["longest_silence_ms"] = report.longest_silence_ms
        elif isinstance(report, ev.LongestWait):
            fields["longest_wait_ms"] = report.longest_wait_ms
        elif isinstance(report, ev.TransferStepped) and not self._state_of(call_id).get("transfer_at"):
            fields["transfer_at"] = stamp(self._clock())  # the caller waits for a human from the first step
        elif isinstance(report, ev.Answered) and (call := self.calls.get(call_id)) and not call.state["answered_at"]:
            fields["answered_at"] = stamp(self._clock())  # unless the worker's webhooks stamped it already
        fields.update(summary_fields(report, self.calls.get(call_id)))
        ended = isinstance(report, ev.CallEnded)
        streamed = not isinstance(report, ev.Latency)  # a latency sample is a metric, and far too chatty
        if fields or (streamed and not ended):
            self.update(call_id, **fields)
        if streamed:  # the entry :func:`bridge.events.decode` reads back: every field of the report
            stored = {k: v for k, v in ev.encode(report).items() if k not in _ENTRY_HEAD}
            self.event(call_id, report.kind, summary, **stored)
        if ended:
            self.end(call_id, summary or "ended")

    def _state_of(self, call_id: str) -> Mapping[str, str]:
        call = self.calls.get(call_id)
        return call.state if call is not None else {}

    def poll_probes(self, now: float) -> None:
        """Read every live call's probe (fields that change too often to report one by one)."""
        for call in self.calls.values():
            if call.probe is None or call.ended:
                continue
            try:
                changes = dict(call.probe())
            except Exception:
                log.exception("call state probe failed")
                call.probe = None
                continue
            for name, value in changes.items():
                text = field_value(value)
                if name in call.state and call.state[name] != text:
                    call.state[name] = text
                    call.ticks.update((name, "last_activity"))
                    call.state["last_activity"] = stamp(now)

    def take(self, resync: bool, *, ticks: bool = True, at: float = 0.0, ttl_refresh_s: float = float("inf")) -> Batch:
        """The next pipeline's content: changed fields (every field on a re-sync; the ticking ones only with
        ``ticks`` or beside another change of the call), membership, stream entries, and the keys whose TTL is due
        (first written, the call ended, a re-sync, or ``ttl_refresh_s`` since it was last set at ``at``)."""
        batch = Batch(at=at, refused=self.refused)
        self.refused = {}
        for call_id, call in self.calls.items():
            ending = call.ended and call.member_dirty
            with_ticks = ticks or bool(call.dirty) or ending
            names = set(call.state) if resync else call.dirty | (call.ticks if with_ticks else set())
            if names:
                batch.hashes[call_id] = {n: call.state[n] for n in sorted(names)}
                batch.taken[call_id] = set(call.dirty)
                call.dirty.clear()
                if with_ticks or resync:
                    batch.ticks[call_id] = set(call.ticks)
                    call.ticks.clear()
            if resync or call.member_dirty:
                batch.members[call_id] = call.ended
                call.member_dirty = False
            if resync or ending or call.ttl_at is None or at - call.ttl_at >= ttl_refresh_s:
                batch.expire.add(call_id)
            if names or call_id in batch.members or call_id in batch.expire:
                batch.order.append(call_id)
            if resync:
                batch.tails += call.tail
        while self.queue and len(batch.entries) < BATCH_ENTRIES:
            batch.entries.append(self.queue.popleft())
        streams = {e.call_id for e in batch.streamed}
        for call_id in streams | batch.expire:  # a new stream, or one whose call's TTL is due
            owner = self.calls.get(call_id)
            if owner is None:
                continue
            if (call_id in streams and not owner.stream_ttl) or (call_id in batch.expire and owner.stream_ttl):
                batch.expire_streams.add(call_id)
        return batch

    def restore(self, batch: Batch) -> None:
        """A failed pipeline: everything it carried is to be written again (in the same order)."""
        for call_id, names in batch.taken.items():
            call = self.calls.get(call_id)
            if call is not None:
                call.dirty |= names
        for call_id, names in batch.ticks.items():
            call = self.calls.get(call_id)
            if call is not None:
                call.ticks |= names
        for call_id in batch.members:
            call = self.calls.get(call_id)
            if call is not None:
                call.member_dirty = True
        self.queue.extendleft(reversed(batch.entries))
        self._trim_queue()
        for minute, count in batch.refused.items():
            self.refused[minute] = self.refused.get(minute, 0) + count

    def written(self, batch: Batch) -> None:
        """Written entries move to their call's tail (for a later re-sync); the TTLs set are noted; finished calls
        are forgotten."""
        for call_id in batch.expire:
            if (call := self.calls.get(call_id)) is not None:
                call.ttl_at = batch.at
        for call_id in batch.expire_streams:
            if (call := self.calls.get(call_id)) is not None:
                call.stream_ttl = True
        for entry in batch.entries:
            owner = self.calls.get(entry.call_id)
            if owner is not None:
                owner.pending -= 1
                owner.tail.append(entry)
        for call_id, done in list(self.calls.items()):
            if done.ended and not done.dirty and not done.ticks and not done.member_dirty and done.pending == 0:
                del self.calls[call_id]

    def _trim_queue(self) -> None:
        while len(self.queue) > self.max_queue:
            dropped = self.queue.popleft()
            self.dropped_writes += 1
            call = self.calls.get(dropped.call_id)
            if call is not None:
                call.pending -= 1

    def _forget(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        self.queue = deque(e for e in self.queue if e.call_id != call_id)
