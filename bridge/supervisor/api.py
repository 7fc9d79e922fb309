"""The supervisor's HTTP API on ``callbridge serve`` (aiohttp), behind a bearer token.

=======================  ======================================================================
``GET /metrics``         Prometheus exposition, merged across worker processes (no token: scrapers)
``GET /healthz``         the pool: workers, their ports and restarts (no token; no call data)
``GET /api/calls``       live calls across all workers: phase, dialect, duration, last transcript line
``GET /api/calls/{id}``  one call: its Redis hash and recent event summaries with transcripts
``GET /api/rollout``     every stored rollout flag, and the recent audit entries
``PUT /api/rollout/{dp}`` change a flag: JSON ``{"ga_percent", "kill", "allow", "deny", "reason", "who"}``
=======================  ======================================================================

Without the right ``Authorization: Bearer <token>`` every ``/api`` route answers 401 with a body that says only
that. The token is compared in constant time and never logged. With no token configured the API answers 503.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis import asyncio as aioredis

from bridge import metrics
from bridge.errors import ConfigError
from bridge.rollout.store import RolloutStore
from bridge.store.calls import StoreUnavailable, read_call, read_live_calls

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROLLOUT_FIELDS = {"ga_percent", "kill", "allow", "deny", "sticky", "model_selection"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def create_app(
    *,
    token: str | None,
    redis: aioredis.Redis | None,
    rollouts: RolloutStore | None,
    health: Callable[[], dict[str, Any]] = dict,
) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        if not token:
            return _json({"error": "supervisor API disabled: set CALLBRIDGE_SUPERVISOR_TOKEN"}, 503)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _json({"error": "unauthorized"}, 401)
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            return _json({"error": f"state store unavailable: {exc}"}, 503)

    def need_redis() -> aioredis.Redis:
        if redis is None:
            raise web.HTTPServiceUnavailable(text='{"error": "no Redis configured"}', content_type="application/json")
        return redis

    async def get_metrics(request: web.Request) -> web.Response:
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_health(request: web.Request) -> web.Response:
        return _json(health())

    async def list_calls(request: web.Request) -> web.Response:
        calls = await read_live_calls(need_redis())
        return _json({"calls": [c.to_json() for c in calls]})

    async def get_call(request: web.Request) -> web.Response:
        detail = await read_call(need_redis(), request.match_info["call_id"])
        if detail is None:
            return _json({"error": "no such call"}, 404)
        return _json(detail.to_json())

    async def get_rollout(request: web.Request) -> web.Response:
        if rollouts is None:
            return _json({"error": "no Redis configured"}, 503)
        flags = await rollouts.flags()
        audit = await rollouts.audit(count=20)
        return _json(
            {
                "flags": {name: flag.model_dump(mode="json") for name, flag in flags.items()},
                "audit": [a.to_json() for a in audit],
            }
        )

    async def put_rollout(request: web.Request) -> web.Response:
        if rollouts is None:
            return _json({"error": "no Redis configured"}, 503)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _json({"error": "body must be JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "body must be a JSON object"}, 400)
        reason, who = body.pop("reason", None), body.pop("who", "supervisor-api")
        unknown = set(body) - ROLLOUT_FIELDS
        if unknown:
            return _json({"error": f"unknown field(s): {sorted(unknown)}"}, 400)
        if not reason:
            return _json({"error": "reason is required"}, 400)
        try:
            change = await rollouts.set_flag(request.match_info["dialplan"], body, str(who), str(reason))
        except ConfigError as exc:
            return _json({"error": str(exc), "field": exc.field}, 400)
        return _json(
            {"dialplan": change.dialplan, "changed": change.changed, "flag": change.new.model_dump(mode="json")}
        )

    app = web.Application(middlewares=[auth])
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/calls/{call_id}", get_call)
    app.router.add_get("/api/rollout", get_rollout)
    app.router.add_put("/api/rollout/{dialplan}", put_rollout)
    return app
