"""The routes for machines, without a credential: ``GET /metrics`` (Prometheus, merged across worker processes),
``GET /healthz`` (readiness) and ``GET /livez`` (liveness).

* ``/healthz`` answers 200 only when this node can take calls: every worker process is up and has reported its SIP
  port (a respawned worker counts once it is ready, not when it is forked), the front (Kamailio, when ``serve`` runs
  it) is running and has answered OPTIONS since it last started, Redis answers a ``PING`` within
  :data:`REDIS_PING_S` (when one is configured), and no worker's model circuit breaker is open. Otherwise 503.
  Without a credential the body is ``{"ready": true|false}`` alone. With ``Authorization: Bearer`` an API token or
  the metrics token (or for anyone with ``http_health_detail: open``: :func:`health_route`) the body is the pool's
  state (workers, their pids, ports and restarts; the front; the model) with ``ready`` and, when not ready,
  ``problems`` naming each reason. No call data. With Redis, ``redis.state`` is ``up``, or ``degraded``
  while a worker's state writes wait for it (an outage, a Sentinel failover being re-synced; ``degraded`` says
  which workers and how long): still 200, since the calls go on and their state is queued. ``degraded`` also
  names why the Realtime socket cannot take its fast paths, if it cannot (``fast_path``, ws_fastpath.py).
* ``/livez`` answers 200 as long as the ``serve`` process answers at all: restart it only when this fails.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from bridge import metrics as bridge_metrics
from bridge.supervisor.http import client_address, reply, supervisor_of
from bridge.supervisor.routes import Kind, Route, add

REDIS_PING_S = 1.0


class ModelState(enum.StrEnum):
    """The pool's ``realtime.state`` in its health (``bridge.serve.pool``): every worker's model circuit breaker
    closed, or one open."""

    UP = "up"
    DOWN = "down"


def add_routes(
    app: web.Application, *, metrics_token: str | None = None, metrics: bool = True, health_detail: str = "token"
) -> None:
    if metrics:
        add_metrics_route(app, metrics_token)
    health = health_route(metrics_token, open_detail=health_detail == "open")
    add(
        app,
        Route(
            "GET",
            "/healthz",
            health,
            "readiness: 200 when this node can take calls",
            needs=None,
            answers={200: "Ready", 503: "Ready"},
        ),
        Route("GET", "/livez", get_live, "liveness: 200 while serve answers", needs=None, answers={200: "Alive"}),
    )


def _bearer_is(given: str, want: bytes | None) -> bool:
    return want is not None and hmac.compare_digest(hashlib.sha256(given.encode()).digest(), want)


def add_metrics_route(app: web.Application, token: str | None) -> None:
    """``GET /metrics``; with ``token``, only for ``Authorization: Bearer <token>`` (401 otherwise)."""
    want = hashlib.sha256(token.encode()).digest() if token else None

    async def get_metrics(request: web.Request) -> web.Response:
        if want is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            ok = scheme.lower() == "bearer" and _bearer_is(given.strip(), want)
            if not ok:
                return reply({"error": "unauthorized: /metrics wants its bearer token"}, 401)
        body, content_type = bridge_metrics.render(request.headers.get("Accept", ""))  # OpenMetrics: exemplars
        return web.Response(body=body, headers={"Content-Type": content_type})

    about = "the Prometheus exposition, merged across workers" + (" (a bearer token of its own)" if token else "")
    add(app, Route("GET", "/metrics", get_metrics, about, needs=None, answers={200: None}, kind=Kind.TEXT))


def problems_of(health: dict[str, Any]) -> list[str]:
    """Why the pool described by ``health`` (``Pool.health``) cannot take calls; empty: it can."""
    problems = [
        f"worker {w.get('index')} is not ready" + ("" if w.get("alive") else " (not running)")
        for w in health.get("workers") or ()
        if not (w.get("alive") and w.get("ready", True) and w.get("sip_port"))
    ]
    front = health.get("front")
    if front is not None and not front.get("alive"):  # serve's own Kamailio: callers reach no worker without it
        problems.append("the front (Kamailio) is down")
    realtime = health.get("realtime") or {}
    if realtime.get("state") == ModelState.DOWN:
        problems.append(f"model circuit breaker open on workers {realtime.get('breaker_open_workers')}")
    return problems


async def readiness(health: dict[str, Any], redis: Any) -> list[str]:
    """Why this node cannot take calls (empty: it can): :func:`problems_of` ``health``, and a ``PING`` of ``redis``
    (None: no Redis configured). ``/healthz`` answers by it, and ``callbridge_ready`` follows it."""
    problems = problems_of(health)
    if redis is not None:
        try:
            await asyncio.wait_for(redis.ping(), REDIS_PING_S)
        except (TimeoutError, RedisError, OSError) as exc:
            problems.append(f"Redis unreachable: {type(exc).__name__}")
    return problems


def health_route(metrics_token: str | None, *, open_detail: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /healthz``: ``{"ready"}`` alone, unless ``open_detail`` or the request's bearer token is the metrics
    token or opens the API (:meth:`~bridge.supervisor.auth.Credentials.bearer`); a wrong one counts as a failure of
    its address (:class:`~bridge.supervisor.auth.FailureLimits`) and gets ``{"ready"}``."""
    want = hashlib.sha256(metrics_token.encode()).digest() if metrics_token else None

    async def get_health(request: web.Request) -> web.Response:
        response = await full_health(request)
        if open_detail or _may_see_detail(request, want):
            return response
        return reply({"ready": response.status == 200}, response.status)

    return get_health


def _may_see_detail(request: web.Request, metrics_token: bytes | None) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not scheme:
        return False
    credentials = supervisor_of(request).credentials
    given = given.strip()
    if scheme.lower() == "bearer" and (_bearer_is(given, metrics_token) or credentials.bearer(given) is not None):
        return True  # a valid token is never refused for its address's failures
    credentials.limits.attempt(client_address(request))  # a wrong one is counted against its address
    return False


async def full_health(request: web.Request) -> web.Response:
    sup = supervisor_of(request)
    health = dict(sup.health())
    problems = await readiness(health, sup.redis)
    body = health | {"ready": not problems} | ({"problems": problems} if problems else {})
    if sup.redis is not None:
        body |= redis_state(bridge_metrics.redis_writes_waiting())
    if slow := (health.get("fast_path") or {}).get("problems"):  # calls go on, at a higher cost per call
        body["degraded"] = [*body.get("degraded", []), *slow]
    return reply(body, 200 if not problems else 503)


def redis_state(waiting: dict[str, float]) -> dict[str, Any]:
    """``redis``: ``up``, or ``degraded`` while some worker's state writes wait for Redis (queued in memory; the
    calls go on), with ``degraded`` naming why. Not a 503: a failover stalls every node at once, and taking them all
    out of service would refuse the calls the writes are queued for."""
    if not waiting:
        return {"redis": {"state": "up"}}
    workers = sorted(waiting, key=lambda w: (len(w), w))
    reason = "Redis writes waiting on worker(s) " + ", ".join(f"{w} ({waiting[w]:.1f} s)" for w in workers)
    return {
        "redis": {"state": "degraded", "writes_waiting_s": {w: round(waiting[w], 1) for w in workers}},
        "degraded": [reason + ": queued, none lost"],
    }


async def get_live(request: web.Request) -> web.Response:
    return reply({"alive": True})
