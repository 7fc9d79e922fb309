"""Reading the call-actions audit (:data:`~bridge.store.keys.CALL_ACTIONS_AUDIT`, written by :mod:`.actions` and
:mod:`.takeover`): its view, filtered by who, call and action (``GET /api/actions/audit``), and one call's actions,
then each new one as it is written (the call's timeline, :func:`bridge.supervisor.stream.follow_call`).

An entry is ``{"id", "action", "who", "call_id", "at", ...}`` and what its action carried: a whisper's ``text``, a
transfer's ``target``, ``request`` (the request's id), ``worker`` (the worker that took it; empty: none did).

An action is audited before it is sent, so the worker that took it is written after, in an entry of its own
(``event`` :data:`OUTCOME`, the same ``request``); every reader here folds it into its request's entry. Following,
a request younger than :data:`PENDING_S` without its outcome is held back until the outcome is in or the wait
is over, so the timeline shows each action once, with its result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.store.connection import StoreUnavailable

SHOWN = 50  # entries in one answer of the view
OUTCOME = "outcome"  # the ``event`` of the entry naming the worker that took a request
TAKEOVER_AUDIO = "takeover-audio"  # the action of a take-over's audio (``bridge.supervisor.takeover``)
PENDING_S = 4.0  # a request's outcome comes within this (the console waits actions.ACK_WAIT_S for the worker)
SCAN = 2000  # the newest entries a filtered view and a call's timeline look through
FOLLOW_COUNT = 500  # new entries read at once while following

Entry = dict[str, str]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """``who``: part of the account's name (any case); ``call_id``: the call, exactly; ``action``: exactly."""

    who: str = ""
    call_id: str = ""
    action: str = ""

    def __call__(self, entry: Mapping[str, str]) -> bool:
        return (
            (not self.who or self.who.casefold() in entry.get("who", "").casefold())
            and (not self.call_id or entry.get("call_id") == self.call_id)
            and (not self.action or entry.get("action") == self.action)
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: Mapping[Any, Any] | None) -> Entry:
    return {"id": _text(entry_id), **{_text(k): _text(v) for k, v in (fields or {}).items()}}


def fold(entries: list[Entry]) -> list[Entry]:
    """``entries`` (in either order) with each outcome's ``worker`` put into its request's entry and the outcomes
    dropped."""
    workers = {e.get("request", ""): e.get("worker", "") for e in entries if e.get("event") == OUTCOME}
    return [
        {**e, "worker": workers.get(e["request"], "")} if e.get("request") else e
        for e in entries
        if e.get("event") != OUTCOME
    ]


def _settled(entries: list[Entry], now: float) -> int:
    """How many of ``entries`` (oldest first) can be shown: up to the first request still waiting for its outcome."""
    answered = {e.get("request") for e in entries if e.get("event") == OUTCOME}
    for i, e in enumerate(entries):
        request = e.get("request")
        waiting = request and e.get("event") != OUTCOME and request not in answered
        if waiting and now - float(e.get("at", "0") or 0) < PENDING_S:
            return i
    return len(entries)


async def read_audit(redis: aioredis.Redis, wanted: AuditFilter, *, shown: int = SHOWN) -> tuple[list[Entry], bool]:
    """The newest entries ``wanted`` keeps (at most ``shown``, newest first), and whether the scan stopped at
    :data:`SCAN` entries (older ones were not looked at). Raises StoreUnavailable."""
    try:
        rows = await redis.xrevrange(keys.CALL_ACTIONS_AUDIT, count=SCAN)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("call actions audit", str(exc)) from exc
    entries = [e for e in fold([_entry(i, f) for i, f in rows or ()]) if wanted(e)]
    return entries[:shown], len(rows or ()) >= SCAN


async def call_actions(redis: aioredis.Redis, call_id: str) -> tuple[list[Entry], str]:
    """The call's audited actions, oldest first, and the id to follow the audit from (:func:`actions_after`)."""
    try:
        rows = await redis.xrevrange(keys.CALL_ACTIONS_AUDIT, count=SCAN)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("call actions audit", str(exc)) from exc
    entries = [_entry(i, f) for i, f in reversed(rows or ())]
    shown = _settled(entries, time.time())
    after = entries[shown - 1]["id"] if shown else ("0-0" if not entries else _before(entries[0]["id"]))
    return [e for e in fold(entries[:shown]) if e.get("call_id") == call_id], after


async def actions_after(redis: aioredis.Redis, call_id: str, after: str) -> tuple[list[Entry], str]:
    """The call's actions audited after the entry id ``after``, oldest first, and the id to go on from."""
    try:
        replies = await redis.xread({keys.CALL_ACTIONS_AUDIT: after}, count=FOLLOW_COUNT)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("call actions audit", str(exc)) from exc
    streams: Any = replies.items() if isinstance(replies, dict) else (replies or [])  # RESP3 answers a map
    entries = [_entry(i, f) for _stream, rows in streams for i, f in rows]
    shown = _settled(entries, time.time())
    last = entries[shown - 1]["id"] if shown else after
    return [e for e in fold(entries[:shown]) if e.get("call_id") == call_id], last


def _before(entry_id: str) -> str:
    """The stream id just before ``entry_id`` (reading after it starts at ``entry_id``)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq) - 1}" if int(seq or 0) > 0 else f"{int(ms) - 1}-{2**64 - 1}"
