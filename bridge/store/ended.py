"""Ended calls still in Redis: the index every writer adds a call to as it ends (``keys.ENDED_CALLS``), and the read
side the console pages and searches (``GET /api/calls/ended``) and exports one call from.

A call's hash and stream live :data:`keys.CALL_TTL_S` after its last write, so the retention window is that long; the
index is trimmed to the same window by every add and expires with it. A query looks at the :data:`MAX_SCAN` most
recently ended calls (``capped`` says when there were more): filters on the hash (plan, variant, caller, end reason)
first, then a free text (``q``) over the hash's identity and, for calls whose hash does not match, the transcripts in
their stream. Every read raises :class:`~bridge.store.connection.StoreUnavailable` when Redis is away.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from bridge import events as ev
from bridge.store import keys
from bridge.store.connection import StoreUnavailable
from bridge.store.read import StreamEntry, as_float, stream_entry, text
from bridge.store.record import stored_record

MAX_SCAN = 5000  # most recently ended calls a query looks at
PER_PAGE = 20
MAX_PER_PAGE = 100
CHUNK = 200  # hashes or streams per pipeline
ALL_EVENTS = 10 * keys.STREAM_MAXLEN  # a whole call stream (capped at about STREAM_MAXLEN by its writer)
SAID_BY: dict[type[ev.Report | None], str] = {
    ev.CallerSaid: "caller",
    ev.AgentSaid: "agent",
}  # a transcript line's speaker
# What a row, a search and the per-plan figures read of each hash (not its SIP dialog or protocol state).
READ_FIELDS = (
    "call_id",
    "caller",
    "called",
    "original_called",
    "dialplan",
    "variant",
    "started_at",
    "ended_at",
    "end_reason",
    "last_transcript",
    *keys.SUMMARY_FIELDS,
    *("sip_call_id", "dialect", "model", "voice", "answered_at", "ended_by", "session_id"),  # a row's whole record
)
_SEARCHED_FIELDS = ("call_id", "caller", "called", "dialplan", "variant", "end_reason", "last_transcript")


def index_ended(pipe: Pipeline, call_id: str, ended_at: float, ttl_s: int) -> None:
    """Add one ended call to the index (in a writer's pipeline), trim the index to the window, refresh its TTL."""
    pipe.zadd(keys.ENDED_CALLS, {call_id: ended_at})
    pipe.zremrangebyscore(keys.ENDED_CALLS, "-inf", f"({ended_at - ttl_s}")
    pipe.expire(keys.ENDED_CALLS, ttl_s)


# ------------------------------------------------------------------------------------------------ the query (pure)
@dataclass(frozen=True, slots=True)
class EndedQuery:
    """What the console asks for: exact plan and variant, a part of the caller's number and of the end reason, and a
    free text searched (case-insensitive) in the call's identity and its transcript. With ``hide_caller`` (a viewer,
    who sees numbers masked) the text is not looked for in the caller's number, wherever it stands: a match would
    tell the digits the mask hides."""

    q: str = ""
    dialplan: str = ""
    variant: str = ""
    caller: str = ""
    reason: str = ""
    disposition: str = ""  # exact: the model's disposition of the call (its plan's post_call)
    hide_caller: bool = False

    def fields_match(self, state: Mapping[str, str]) -> bool:
        return (
            (not self.dialplan or state.get("dialplan", "") == self.dialplan)
            and (not self.variant or state.get("variant", "") == self.variant)
            and (not self.caller or self.caller in state.get("caller", ""))
            and (not self.reason or self.reason.lower() in state.get("end_reason", "").lower())
            and (not self.disposition or state.get("disposition", "") == self.disposition)
        )

    def _seen(self, text: str, caller: str) -> str:
        return (text.replace(caller, " ") if self.hide_caller and caller else text).lower()

    def text_in_fields(self, state: Mapping[str, str]) -> bool:
        needle, caller = self.q.strip().lower(), state.get("caller", "")
        names = [n for n in _SEARCHED_FIELDS if not (self.hide_caller and n == "caller")]
        return not needle or any(needle in self._seen(state.get(name, ""), caller) for name in names)

    def text_in_transcript(self, entries: Iterable[StreamEntry], caller: str = "") -> bool:
        needle = self.q.strip().lower()
        return any(said_by(e) and needle in self._seen(e.summary, caller) for e in entries)


@dataclass(frozen=True, slots=True)
class EndedCall:
    """One row of the console's "Recently ended": the fields every record of a call has (:mod:`bridge.store.record`:
    ISO 8601 times, ``duration_s`` from the answer), its start and end in Unix seconds beside them
    (``started_at_unix``, ``ended_at_unix``), and what the console shows of it."""

    record: dict[str, Any]
    started_at_unix: float | None
    ended_at_unix: float | None
    last_transcript: str
    # after the call (its plan's post_call and checks): the model's disposition and summary, the post-call status
    # ("" where the plan asks for none), and the compliance checks that failed
    disposition: str = ""
    summary: str = ""
    post_call_status: str = ""
    failed_checks: tuple[str, ...] = ()
    fallback: bool = False  # its variant's model failed to connect: the call ran on the fallback model

    @property
    def call_id(self) -> str:
        return str(self.record["call_id"])

    @classmethod
    def of(cls, state: Mapping[str, str]) -> EndedCall:
        return cls(
            record=stored_record(state),
            started_at_unix=as_float(state.get("started_at")),
            ended_at_unix=as_float(state.get("ended_at")),
            last_transcript=state.get("last_transcript", ""),
            disposition=state.get("disposition", ""),
            summary=state.get("call_summary", ""),
            post_call_status=state.get("post_call_status", ""),
            failed_checks=tuple(c for c in state.get("failed_checks", "").split(",") if c),
            fallback=state.get("fallback") == "1",
        )

    def to_json(self) -> dict[str, Any]:
        shown = {k: v for k, v in asdict(self).items() if k != "record"}
        return self.record | shown


@dataclass(frozen=True, slots=True)
class EndedPage:
    calls: list[EndedCall]
    page: int  # 1-based
    pages: int
    total: int  # calls that match, among those looked at
    capped: bool  # the index held more than MAX_SCAN calls: only the most recent were looked at

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": [c.to_json() for c in self.calls],
            "page": self.page,
            "pages": self.pages,
            "total": self.total,
            "capped": self.capped,
        }


def page_of(matches: Sequence[EndedCall], page: int, per_page: int, capped: bool) -> EndedPage:
    """One page of the matches (newest first); a page past the last is the last."""
    pages = max(1, math.ceil(len(matches) / per_page))
    page = min(max(1, page), pages)
    return EndedPage(list(matches[(page - 1) * per_page : page * per_page]), page, pages, len(matches), capped)


# ------------------------------------------------------------------------------------------------ reads
async def ended_states(
    client: aioredis.Redis, *, since: float | None = None, limit: int = MAX_SCAN, where: str = "redis client"
) -> tuple[list[dict[str, str]], bool]:
    """The :data:`READ_FIELDS` of the ``limit`` most recently ended calls in Redis (those ended at ``since`` or later),
    newest first, and whether the index held more."""
    low: float | str = "-inf" if since is None else since
    try:
        ids = [text(i) for i in await client.zrevrangebyscore(keys.ENDED_CALLS, "+inf", low, start=0, num=limit + 1)]
        states: list[dict[str, str]] = []
        for start in range(0, min(len(ids), limit), CHUNK):
            pipe = client.pipeline(transaction=False)
            for call_id in ids[start : min(start + CHUNK, limit)]:
                pipe.hmget(keys.call(call_id), list(READ_FIELDS))
            replies = await pipe.execute()
            states += [
                dict(zip(READ_FIELDS, map(text, r), strict=True)) for r in replies if any(v is not None for v in r)
            ]
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    return [s for s in states if s.get("ended_at")], len(ids) > limit


async def read_ended(
    client: aioredis.Redis,
    query: EndedQuery,
    *,
    page: int = 1,
    per_page: int = PER_PAGE,
    where: str = "redis client",
    keep: Callable[[Mapping[str, str], list[StreamEntry]], bool] | None = None,
) -> EndedPage:
    """One page of the ended calls that match ``query``, newest first. ``keep``: a further test of each match, on its
    hash and its whole stream (the console's marks)."""
    states, capped = await ended_states(client, where=where)
    candidates = [s for s in states if query.fields_match(s)]
    matched = {s["call_id"] for s in candidates if query.text_in_fields(s)}
    unsure = [s["call_id"] for s in candidates if s["call_id"] not in matched]
    callers = {s["call_id"]: s.get("caller", "") for s in candidates}
    try:
        for start in range(0, len(unsure), CHUNK):
            pipe = client.pipeline(transaction=False)
            for call_id in unsure[start : start + CHUNK]:
                pipe.xrange(keys.call_events(call_id))
            replies = await pipe.execute()
            for call_id, entries in zip(unsure[start : start + CHUNK], replies, strict=True):
                if query.text_in_transcript((stream_entry(i, f) for i, f in entries), callers[call_id]):
                    matched.add(call_id)
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    if keep is not None:
        streams = await call_streams(client, [s["call_id"] for s in candidates if s["call_id"] in matched], where)
        matched = {s["call_id"] for s in candidates if s["call_id"] in streams and keep(s, streams[s["call_id"]])}
    rows = [EndedCall.of(s) for s in candidates if s["call_id"] in matched]
    return page_of(rows, page, max(1, min(per_page, MAX_PER_PAGE)), capped)


async def call_streams(
    client: aioredis.Redis, call_ids: Sequence[str], where: str = "redis client"
) -> dict[str, list[StreamEntry]]:
    """The whole stream of each call (oldest first), :data:`CHUNK` calls per pipeline."""
    out: dict[str, list[StreamEntry]] = {}
    try:
        for start in range(0, len(call_ids), CHUNK):
            pipe = client.pipeline(transaction=False)
            for call_id in call_ids[start : start + CHUNK]:
                pipe.xrange(keys.call_events(call_id))
            for call_id, entries in zip(call_ids[start : start + CHUNK], await pipe.execute(), strict=True):
                out[call_id] = [stream_entry(i, f) for i, f in entries]
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    return out


def transcript(entries: Iterable[StreamEntry]) -> list[dict[str, Any]]:
    """The call's transcript lines, oldest first: ``{"t", "who": "caller"|"agent", "text"}``."""
    return [{"t": e.t, "who": who, "text": e.summary} for e in entries if (who := said_by(e))]


def said_by(entry: StreamEntry) -> str:
    """Who said the transcript line ``entry`` stores: ``caller`` or ``agent`` ("": it stores no line said)."""
    return SAID_BY.get(type(entry.report), "")


# ------------------------------------------------------------------------------------------------ since a point
@dataclass(frozen=True, slots=True)
class Cursor:
    """A point in the index of ended calls: after the call ``call_id`` that ended at ``t`` (the index's score); with
    no ``call_id``, every call that ended at ``t`` or later. An integrator gets it as an opaque text
    (:meth:`text`) and hands it back (:meth:`parse`)."""

    t: float
    call_id: str = ""

    def text(self) -> str:
        raw = json.dumps([self.t, self.call_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def parse(cls, text_: str) -> Cursor:
        """The cursor :meth:`text` wrote; ValueError for anything else."""
        try:
            t, call_id = json.loads(base64.urlsafe_b64decode(text_ + "=" * (-len(text_) % 4)))
        except (ValueError, TypeError, binascii.Error):
            raise ValueError("not a cursor this API gave") from None
        if not isinstance(t, int | float) or isinstance(t, bool) or not isinstance(call_id, str):
            raise ValueError("not a cursor this API gave")
        try:
            point = float(t)
        except OverflowError:  # a whole number too large for a float
            raise ValueError("not a cursor this API gave") from None
        if not math.isfinite(point):  # NaN or Infinity, which JSON as Python reads it lets through
            raise ValueError("not a cursor this API gave")
        return cls(point, call_id)

    def passed(self, t: float, call_id: str) -> bool:
        """Whether the call ``call_id`` ended at ``t`` is at or before this point (already given)."""
        return t < self.t or (t == self.t and bool(self.call_id) and call_id <= self.call_id)


@dataclass(frozen=True, slots=True)
class EndedSince:
    """Ended calls after a point, oldest first; ``next``: the point after the last one looked at; ``more``: the index
    holds calls after ``next`` (ask again with it at once; else poll it later)."""

    calls: list[EndedCall]
    next: Cursor
    more: bool

    def to_json(self) -> dict[str, Any]:
        return {"calls": [c.to_json() for c in self.calls], "next": self.next.text(), "more": self.more}


async def read_since(
    client: aioredis.Redis, query: EndedQuery, after: Cursor, *, limit: int = MAX_PER_PAGE, where: str = "redis client"
) -> EndedSince:
    """At most ``limit`` ended calls after ``after`` that match ``query``'s fields (not its free text), oldest
    first (by end time, then call id: the index's own order), looking at no more than :data:`MAX_SCAN` calls."""
    rows: list[EndedCall] = []
    point, offset, looked = after, 0, 0
    try:
        while len(rows) < limit and looked < MAX_SCAN:
            batch: list[Any] = await client.zrangebyscore(
                keys.ENDED_CALLS, after.t, "+inf", start=offset, num=CHUNK, withscores=True
            )
            if not batch:
                break
            offset += len(batch)
            entries = [(text(m), float(s)) for m, s in batch if not after.passed(float(s), text(m))]
            pipe = client.pipeline(transaction=False)
            for call_id, _ in entries:
                pipe.hmget(keys.call(call_id), list(READ_FIELDS))
            for (call_id, t), values in zip(entries, await pipe.execute(), strict=True):
                looked += 1
                point = Cursor(t, call_id)
                state = dict(zip(READ_FIELDS, map(text, values), strict=True))
                if state.get("ended_at") and query.fields_match(state):
                    rows.append(EndedCall.of(state))
                if len(rows) >= limit or looked >= MAX_SCAN:
                    break
        more = await _after(client, point)
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    return EndedSince(rows, point, more)


async def _after(client: aioredis.Redis, point: Cursor) -> bool:
    """Whether the index holds a call after ``point``."""
    if await client.zcount(keys.ENDED_CALLS, f"({point.t}", "+inf"):
        return True
    ties = await client.zrangebyscore(keys.ENDED_CALLS, point.t, point.t)
    return any(not point.passed(point.t, text(m)) for m in ties)
