"""``Idempotency-Key`` on a supervisor's action POSTs: a retry within a day with the same key gets the first answer,
and the action is not taken twice.

The key (1 to :data:`MAX_CHARS` visible ASCII characters; else 400 naming the header) is the client's, scoped to the
account that sends it: its record in Redis (:func:`bridge.store.keys.action_idempotency`) is named by the SHA-256 of
the account's name and the key, never by anything the client sent as it is, and never holds a token. The first
request with a key marks it pending (``SET NX``, :data:`~bridge.store.keys.IDEMPOTENCY_PENDING_TTL_S`), then stores
its answer (status and body) for :data:`~bridge.store.keys.IDEMPOTENCY_TTL_S`. A retry gets that answer again with
``Idempotent-Replayed: true``; a retry while the first is still being answered gets 409 with ``Retry-After: 1``;
the same key for another request (another call, action or body) 422 naming the header. An answer that says nothing
was done (503) is not kept: the retry acts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from bridge.store import keys
from bridge.store.connection import StoreUnavailable
from bridge.supervisor import routes
from bridge.supervisor.http import principal_of, reply, supervisor_of
from bridge.supervisor.routes import Param

HEADER: Final = "Idempotency-Key"
MAX_CHARS: Final = 255
PARAM: Final = Param(
    HEADER,
    {"type": "string", "minLength": 1, "maxLength": MAX_CHARS, "pattern": "^[!-~]+$"},
    "a key of the client's: a retry within 24 h with the same key gets the first answer, the action taken once",
)
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _refused(error: str, status: int) -> web.Response:
    return reply({"error": error, "field": HEADER}, status)


def _valid(key: str) -> bool:
    return 0 < len(key) <= MAX_CHARS and all("!" <= c <= "~" for c in key)


async def _fingerprint(request: web.Request) -> str:
    body = await request.read() if request.body_exists else b""
    route = routes.of(request)  # the same under /api/v1/
    what = f"{request.method} {route.path if route is not None else request.path}"
    seen = "\0".join((what, json.dumps(dict(request.match_info), sort_keys=True), body.hex()))
    return hashlib.sha256(seen.encode()).hexdigest()


def idempotent(handler: Handler) -> Handler:
    """``handler`` answering a retry with its ``Idempotency-Key`` as the first request was answered."""

    async def once(request: web.Request) -> web.Response:
        key = request.headers.get(HEADER)
        if key is None:
            return await handler(request)
        if not _valid(key):
            return _refused(f"{HEADER}: 1 to {MAX_CHARS} visible ASCII characters", 400)
        redis = supervisor_of(request).need_redis()
        who = principal_of(request).who
        name = keys.action_idempotency(hashlib.sha256(f"{who}\0{key}".encode()).hexdigest())
        fingerprint = await _fingerprint(request)
        try:
            claimed = await redis.set(name, json.dumps({"fp": fingerprint}), nx=True, ex=keys.IDEMPOTENCY_PENDING_TTL_S)
            if not claimed:
                return await _again(redis, name, fingerprint)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("idempotency keys", str(exc)) from exc
        kept = False
        try:
            response = await handler(request)
            if response.status != 503:
                first = {"fp": fingerprint, "status": response.status, "body": json.loads(response.text or "null")}
                await redis.set(name, json.dumps(first), ex=keys.IDEMPOTENCY_TTL_S)
                kept = True
            return response
        finally:
            if not kept:
                await _forget(redis, name)

    return once


async def _again(redis: aioredis.Redis, name: str, fingerprint: str) -> web.Response:
    raw = await redis.get(name)
    try:
        first: Any = json.loads(raw) if isinstance(raw, str | bytes) else {}
    except ValueError:  # not what this module wrote: no answer to give again
        first = {}
    if not isinstance(first, dict) or first.get("fp") != fingerprint:
        return _refused(f"{HEADER}: used within 24 h for another request (another call, action or body)", 422)
    status = first.get("status")
    if not isinstance(status, int):
        refused = _refused(f"{HEADER}: the first request with this key is still being answered", 409)
        refused.headers["Retry-After"] = "1"
        return refused
    answer = reply(first.get("body"), status)
    answer.headers["Idempotent-Replayed"] = "true"
    return answer


async def _forget(redis: aioredis.Redis, name: str) -> None:
    with contextlib.suppress(RedisError, OSError):  # else the pending mark lapses by itself
        await redis.delete(name)
