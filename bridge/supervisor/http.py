"""What every route group of the supervisor's app shares: its state, JSON answers and bodies, and who is asking.

Each group (:mod:`.monitoring`, :mod:`.calls`, :mod:`.listen`, :mod:`.rollout`, :mod:`.console`) registers its routes
with an ``add_routes(app)``; its handlers find the app's :class:`Supervisor` with :func:`supervisor_of`, and the
credential the auth middleware accepted (:mod:`.api`) with :func:`principal_of`.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis import asyncio as aioredis

from bridge import metrics
from bridge.dialplan import Dialplan, RolloutPlans, rollout_plans
from bridge.rollout.store import RolloutStore
from bridge.supervisor.accounts import NEEDS
from bridge.supervisor.auth import Credentials, Principal, Sessions
from bridge.supervisor.stream import LiveCalls

# Who makes the request being handled: set by the auth middleware, read by the handler (the same task).
PRINCIPAL: ContextVar[Principal] = ContextVar("supervisor_principal")
_NO_REDIS = '{"error": "no Redis configured"}'
NOT_JSON = '{"error": "body must be JSON in UTF-8"}'


@dataclass
class Supervisor:
    """The state of one supervisor app, shared by its route groups."""

    credentials: Credentials
    sessions: Sessions
    redis: aioredis.Redis | None
    rollouts: RolloutStore | None
    listen_audio: aioredis.Redis | None  # listen-in's audio: a client of the same Redis that does not decode
    listen_key: bytes | None  # signs listen-in requests to the workers (bridge.supervisor.listen_token)
    live: LiveCalls | None
    plans: RolloutPlans
    dialplans: dict[str, Dialplan]  # every dialplan by name (a call's transfer targets)
    health: Callable[[], dict[str, Any]]
    stopping: asyncio.Event  # set at shutdown: open event streams and listen-ins end at once
    trace_ui_url: str = ""  # tracing_ui_url: where a call's trace id links to (.trace_link); "": no link

    def reload_plans(self, plans: Sequence[Dialplan]) -> None:
        """The dialplans read again (serve's SIGHUP): a rollout plan added since start can be shown and changed
        (its kill switch included) without a restart."""
        self.plans = rollout_plans(plans)
        self.dialplans = {plan.name: plan for plan in plans}
        if self.rollouts is not None:
            self.rollouts.specs = {name: spec for name, (spec, _) in self.plans.items()}

    def need_redis(self) -> aioredis.Redis:
        if self.redis is None:
            raise web.HTTPServiceUnavailable(text=_NO_REDIS, content_type="application/json")
        return self.redis

    def need_rollouts(self) -> RolloutStore:
        if self.rollouts is None:
            raise web.HTTPServiceUnavailable(text=_NO_REDIS, content_type="application/json")
        return self.rollouts


SUPERVISOR = web.AppKey("supervisor", Supervisor)


def supervisor_of(request: web.Request) -> Supervisor:
    return request.app[SUPERVISOR]


def principal_of(request: web.Request) -> Principal:
    return PRINCIPAL.get()


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def too_many(wait_s: float) -> web.Response:
    """Too many failed attempts from this address or for this account: 429 with when to try again."""
    metrics.SUPERVISOR_REFUSED_TOKENS.labels("limited").inc()
    response = reply({"error": "too many failed sign-ins: try again later"}, 429)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
    return response


def over_rate(per_minute: int, wait_s: float) -> web.Response:
    """Past the rate limit of a token or session (:mod:`.ratelimit`): 429 with when one more request fits."""
    after = max(1, math.ceil(wait_s))
    error = f"rate limit: {per_minute} requests a minute per token or session; try again in {after} s"
    response = reply({"error": error}, 429)
    response.headers["Retry-After"] = str(after)
    return response


def client_address(request: web.Request) -> str:
    """The client's address, for the limits on failed sign-ins and the log."""
    return request.remote or "unknown"


def same_origin(request: web.Request) -> bool:
    """No ``Origin`` header (not a browser's cross-site request), or this server's own origin."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


WHAT = {
    "act": "act on a call",
    "listen": "listen in",
    "rollout": "change a rollout",
    "unlock": "clear sign-in failures",
}


def forbidden(principal: Principal, need: str) -> web.Response:
    """The 403 of a role that may not do ``need`` (:data:`~bridge.supervisor.accounts.NEEDS`)."""
    wanted = NEEDS[need]
    return reply({"error": f"forbidden: to {WHAT[need]} needs the {wanted} role ({principal.role} here)"}, 403)


def need(request: web.Request, what: str) -> Principal:
    """The request's principal, if its role may do ``what``; else a 403 naming the role it needs."""
    principal = principal_of(request)
    if not principal.may(what):
        raise web.HTTPForbidden(text=forbidden(principal, what).text, content_type="application/json")
    return principal


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object; else a 400 saying what it must be (bytes that are not UTF-8 too)."""
    try:
        body = await request.json()
    except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError)
        raise web.HTTPBadRequest(text=NOT_JSON, content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
    return body
