"""Reading the call-actions audit (:data:`~bridge.store.keys.CALL_ACTIONS_AUDIT`, written by :mod:`.actions` and
:mod:`.takeover`): its view, filtered by who, call and action (``GET /api/actions/audit``), and one call's actions,
then each new one as it is written (the call's timeline, :func:`bridge.supervisor.stream.follow_call`).

An entry is ``{"id", "action", "who", "call_id", "at", ...}`` and what its action carried: a whisper's ``text``, a
transfer's ``target``, ``worker`` (the worker that took it; empty: none did).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.store.connection import StoreUnavailable

SHOWN = 50  # entries in one answer of the view
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


async def read_audit(redis: aioredis.Redis, wanted: AuditFilter, *, shown: int = SHOWN) -> tuple[list[Entry], bool]:
    """The newest entries ``wanted`` keeps (at most ``shown``, newest first), and whether the scan stopped at
    :data:`SCAN` entries (older ones were not looked at). Raises StoreUnavailable."""
    try:
        rows = await redis.xrevrange(keys.CALL_ACTIONS_AUDIT, count=SCAN)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("call actions audit", str(exc)) from exc
    entries = [e for e in (_entry(i, f) for i, f in rows or ()) if wanted(e)]
    return entries[:shown], len(rows or ()) >= SCAN


async def call_actions(redis: aioredis.Redis, call_id: str) -> tuple[list[Entry], str]:
    """The call's audited actions, oldest first, and the id to follow the audit from (:func:`actions_after`)."""
    try:
        rows = await redis.xrevrange(keys.CALL_ACTIONS_AUDIT, count=SCAN)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("call actions audit", str(exc)) from exc
    entries = [_entry(i, f) for i, f in rows or ()]
    after = entries[0]["id"] if entries else "0-0"
    return [e for e in reversed(entries) if e.get("call_id") == call_id], after


async def actions_after(redis: aioredis.Redis, call_id: str, after: str) -> tuple[list[Entry], str]:
    """The call's actions audited after the entry id ``after``, oldest first, and the id to go on from."""
    try:
        replies = await redis.xread({keys.CALL_ACTIONS_AUDIT: after}, count=FOLLOW_COUNT)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("call actions audit", str(exc)) from exc
    streams: Any = replies.items() if isinstance(replies, dict) else (replies or [])  # RESP3 answers a map
    entries = [_entry(i, f) for _stream, rows in streams for i, f in rows]
    last = entries[-1]["id"] if entries else after
    return [e for e in entries if e.get("call_id") == call_id], last
