"""The read side of the per-call state: the live calls of every worker, one call's hash and its recent events, and
the events after a given one (what the supervisor console and ``callbridge calls`` show). Every read raises
:class:`~bridge.store.connection.StoreUnavailable` when Redis is away, naming where it looked and never a password.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import events as ev
from bridge.store import keys
from bridge.store.connection import StoreUnavailable

RECENT_EVENTS = 100


def text(value: Any) -> str:
    """A Redis reply's value as text (bytes as UTF-8, None as "")."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One row of the supervisor's list of live calls."""

    call_id: str
    worker: str
    worker_alive: bool
    phase: str
    dialect: str
    dialplan: str
    caller: str
    called: str
    model: str
    voice: str
    started_at: float | None
    duration_s: float | None
    last_transcript: str
    variant: str = ""  # the rollout variant the call landed on
    on_hold: bool = False  # the caller hears hold audio now (keys.SUMMARY_FIELDS)
    in_outage: bool = False  # the model is away now
    transfer: str = ""  # a warm transfer's step (ringing, briefing, accepting), then its outcome
    original_called: str = ""  # the number a forwarded call was first placed to, as stored (masked)
    fallback: bool = False  # its variant's model failed to connect: the call runs on the fallback model
    transfer_at: float | None = None  # when a warm transfer's first step came: the caller waits for a human since

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry of a call's stream as stored; ``report``: the report it stores (:func:`bridge.events.decode`), None
    for an entry that is none."""

    id: str
    kind: str
    summary: str
    t: float | None
    data: dict[str, str]
    report: ev.Report | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            report: ev.Report | None = ev.decode({**self.data, "kind": self.kind, "summary": self.summary})
        except ev.UndecodableEntry:
            report = None
        object.__setattr__(self, "report", report)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "summary": self.summary, "t": self.t, "data": self.data}


@dataclass(frozen=True, slots=True)
class CallDetail:
    state: dict[str, str]  # the whole hash
    events: list[StreamEntry]  # the most recent entries, oldest first

    def to_json(self) -> dict[str, Any]:
        return {"call": self.state, **after_call(self.state), "events": [e.to_json() for e in self.events]}


def _json_field(value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def after_call(state: Mapping[str, str]) -> dict[str, Any]:
    """What an ended call's hash says of after the call, as the report line has it: ``post_call`` (the model's
    summary, disposition and fields, and the status; None where the plan asks for none) and ``checks`` (the
    compliance checks' rows)."""
    status = state.get("post_call_status", "")
    post = None
    if status:
        post = {
            "summary": state.get("call_summary") or None,
            "disposition": state.get("disposition") or None,
            "fields": _json_field(state.get("call_fields")),
            "status": status,
        }
    checks = _json_field(state.get("checks"))
    return {"post_call": post, "checks": checks if isinstance(checks, list) else []}


def as_float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def duration_s(started: float | None, ended: float | None) -> float | None:
    """Seconds from ``started`` to ``ended``, to the tenth (None: either is unknown)."""
    return round(max(0.0, ended - started), 1) if started is not None and ended is not None else None


def texts(state: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The hash fields ``names`` as text ("" for those it lacks)."""
    return {name: state.get(name, "") for name in names}


# What a live call's row takes of its hash as it is.
_LIVE_TEXTS = (
    "phase",
    "dialect",
    "dialplan",
    "variant",
    "caller",
    "called",
    "original_called",
    "model",
    "voice",
    "last_transcript",
    "transfer",
)


def stream_entry(entry_id: Any, fields: Mapping[Any, Any]) -> StreamEntry:
    data = {text(k): text(v) for k, v in fields.items()}
    kind, summary, t = data.pop("kind", ""), data.pop("summary", ""), data.pop("t", "")
    return StreamEntry(text(entry_id), kind, summary, as_float(t), data)


# ------------------------------------------------------------------------------------------------ read side
async def read_live_calls(
    client: aioredis.Redis, *, now: float | None = None, where: str = "redis client"
) -> list[CallSummary]:
    """Live calls across every worker, oldest first. Raises :class:`StoreUnavailable` when Redis is away."""
    now = time.time() if now is None else now
    try:
        workers = sorted(text(w) for w in await client.smembers(keys.WORKERS))
        pipe = client.pipeline(transaction=False)
        for w in workers:
            pipe.exists(keys.worker_heartbeat(w))
            pipe.smembers(keys.worker_calls(w))
        replies = await pipe.execute()
        rows: list[tuple[str, bool, str]] = []
        for i, w in enumerate(workers):
            alive = bool(replies[2 * i])
            rows += [(w, alive, text(c)) for c in replies[2 * i + 1]]
        pipe = client.pipeline(transaction=False)
        for _, _, call_id in rows:
            pipe.hgetall(keys.call(call_id))
        states = await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    out: list[CallSummary] = []
    for (worker, alive, call_id), raw in zip(rows, states, strict=True):
        if not raw:
            continue  # expired, or the reaper's DEL raced us
        s = {text(k): text(v) for k, v in raw.items()}
        started = as_float(s.get("started_at"))
        out.append(
            CallSummary(
                call_id=call_id,
                worker=s.get("worker") or worker,
                worker_alive=alive,
                started_at=started,
                duration_s=duration_s(started, as_float(s.get("ended_at")) or now),
                on_hold=s.get("on_hold") == "1",
                in_outage=s.get("in_outage") == "1",
                fallback=s.get("fallback") == "1",
                transfer_at=as_float(s.get("transfer_at")),
                **texts(s, _LIVE_TEXTS),
            )
        )
    out.sort(key=lambda c: (c.started_at or 0.0, c.call_id))
    return out


async def read_refused(client: aioredis.Redis, since: float, now: float, *, where: str = "redis client") -> int:
    """INVITEs the workers refused with 486 or 503 from ``since`` to ``now``, by whole minutes (the minute ``since``
    falls in counts whole). Raises :class:`StoreUnavailable` when Redis is away."""
    first, last = int(since // keys.REFUSED_BUCKET_S), int(now // keys.REFUSED_BUCKET_S)
    try:
        counts = await client.mget([keys.refused_calls(m) for m in range(first, last + 1)])
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    return sum(int(text(c) or 0) for c in counts)


async def read_call(
    client: aioredis.Redis, call_id: str, *, count: int = RECENT_EVENTS, where: str = "redis client"
) -> CallDetail | None:
    """One call's hash and its ``count`` most recent stream entries; None if Redis has no such call."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.call(call_id))
        pipe.xrevrange(keys.call_events(call_id), count=count)
        raw, entries = await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    if not raw:
        return None
    state = {text(k): text(v) for k, v in raw.items()}
    return CallDetail(state, [stream_entry(i, f) for i, f in reversed(entries)])


async def read_call_events(
    client: aioredis.Redis,
    call_id: str,
    *,
    after: str = "0-0",
    block_ms: int | None = None,
    count: int = RECENT_EVENTS,
    where: str = "redis client",
) -> list[StreamEntry]:
    """The call's stream entries after the entry id ``after``, oldest first (at most ``count``). With ``block_ms``,
    waits that long for the first one (``XREAD BLOCK``; keep it under the client's socket timeout). Raises
    :class:`StoreUnavailable` when Redis is away."""
    try:
        replies = await client.xread({keys.call_events(call_id): after}, count=count, block=block_ms)
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    streams: Any = replies.items() if isinstance(replies, dict) else (replies or [])  # RESP3 answers a map
    out: list[StreamEntry] = []
    for _stream, entries in streams:
        out += [stream_entry(i, f) for i, f in entries]
    return out
