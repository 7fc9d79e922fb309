"""The supervisor's HTTP API and console on ``callbridge serve`` (aiohttp).

==================================  ==================================================================================
``GET /``, ``/static/*``            the console (:mod:`bridge.supervisor.console`; no credential: it holds no data)
``POST /auth/signin``               console sign-in: JSON ``{"token", "name"}`` -> a session cookie and its CSRF token
``POST /auth/signout``              ends the session (needs its CSRF token)
``GET /auth/session``               the session's role, name and CSRF token (the page after a reload)
``GET /metrics``                    Prometheus exposition, merged across worker processes (no token: scrapers)
``GET /healthz``                    the pool: workers, their ports and restarts (no token; no call data)
``GET /api/calls``                  live calls across all workers: phase, dialect, duration, last transcript line
``GET /api/calls/{id}``             one call: its Redis hash and recent event summaries with transcripts
``GET /api/live/calls``             server-sent events: the live-calls table as it changes (:mod:`.live`)
``GET /api/live/calls/{id}``        server-sent events: one call's state, stream entries and latency as they happen
``GET /api/calls/{id}/listen``      operator: listen-in, a WebSocket of the call's audio (:mod:`.listen`)
``GET /api/listen/audit``           who listened to which call, when and for how long (newest first)
``GET /api/rollout``                each rollout dialplan's variants, every stored flag, the recent audit entries
``GET /api/console/rollout``        the console's rollout panel (:mod:`bridge.supervisor.rollout_view`)
``POST /api/rollout/{dp}/preview``  operator: what a change would do, without saving it
``PUT /api/rollout/{dp}``           operator: change a flag: JSON ``{"weights", "kill", "allow", "deny", "sticky",
                                    "reason", "who"}`` as ``callbridge rollout set`` takes them (``weights``: an object
                                    of numbers or ``"NAME=W,NAME=W"``; ``allow``/``deny``: an object of caller lists per
                                    variant); a console session's ``who`` is its own name, not the body's. A refused
                                    change answers 400 ``{"error", "field"}``, the field named as in the flag
                                    (``weights.NAME``, ``deny.NAME``, ``reason``, ...)
==================================  ==================================================================================

Every ``/api`` route wants a credential (:mod:`bridge.supervisor.auth`): ``Authorization: Bearer <token>`` or a
console session cookie. Without one it answers 401 ``{"error": "unauthorized"}``; with a wrong bearer token the same,
after :data:`~bridge.supervisor.auth.REFUSED_DELAY_S`; a session's change without its CSRF token 403; a read-only
credential's change 403. With no token configured the API answers 503. Tokens are compared in constant time and
never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from redis import asyncio as aioredis

from bridge import metrics
from bridge.dialplan import Dialplan, rollout_plans
from bridge.errors import ConfigError
from bridge.rollout import catalog
from bridge.rollout.policy import describe_variants
from bridge.rollout.store import RolloutStore
from bridge.store.connection import StoreUnavailable
from bridge.store.read import read_call, read_live_calls
from bridge.supervisor import console, listen, rollout_view
from bridge.supervisor.auth import (
    COOKIE,
    CSRF_HEADER,
    REFUSED_DELAY_S,
    SESSION_TTL_S,
    Principal,
    Sessions,
    Tokens,
    csrf_ok,
)
from bridge.supervisor.live import Event, LiveCalls, follow_call

log = logging.getLogger("bridge.supervisor")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROLLOUT_FIELDS = frozenset({"weights", "kill", "allow", "deny", "sticky"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Who makes the request being handled: set by the auth middleware, read by the handler (the same task).
PRINCIPAL: ContextVar[Principal] = ContextVar("supervisor_principal")
SSE_CHECK_S = 1.0  # how often an open event stream checks that its session still holds
SSE_KEEPALIVE_S = 10.0  # a comment line this often: proxies keep the stream open, a gone page is noticed


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


async def refuse_after(started: float, delay_s: float, via: str) -> web.Response:
    """A wrong token: counted, then answered only ``delay_s`` after the request came in, the same way every time."""
    metrics.SUPERVISOR_REFUSED_TOKENS.labels(via).inc()
    await asyncio.sleep(max(0.0, started + delay_s - asyncio.get_running_loop().time()))
    return _json({"error": "unauthorized"}, 401)


def principal_of(request: web.Request) -> Principal:
    return PRINCIPAL.get()


def _sse(name: str, data: Any) -> bytes:
    """One event (JSON text has no raw newline, so ``data`` is one line)."""
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def same_origin(request: web.Request) -> bool:
    """No ``Origin`` header (not a browser's cross-site request), or this server's own origin."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def create_app(
    *,
    token: str | None,
    redis: aioredis.Redis | None,
    rollouts: RolloutStore | None,
    listen_audio: aioredis.Redis | None = None,
    health: Callable[[], dict[str, Any]] = dict,
    readonly_token: str | None = None,
    dialplans: Iterable[Dialplan] = (),
    lost_workers: Callable[[], Collection[str]] = frozenset,
    session_ttl_s: float = SESSION_TTL_S,
    refused_delay_s: float = REFUSED_DELAY_S,
) -> web.Application:
    """``token`` is the operator's, ``readonly_token`` a watching supervisor's; the rollout plans among ``dialplans``
    are shown with their variants even before anyone stored a flag; ``lost_workers`` names this node's dead workers
    (their calls show as lost at once); ``listen_audio`` is a client of the same Redis that does not decode replies
    (listen-in's audio; without it, listen-in answers 503)."""
    tokens = Tokens(token, readonly_token)
    sessions = Sessions(session_ttl_s)
    live = LiveCalls(redis, lost_workers=lost_workers) if redis is not None else None
    plans = rollout_plans(dialplans)
    stopping = asyncio.Event()
    for via in ("signin", "bearer"):
        metrics.SUPERVISOR_REFUSED_TOKENS.labels(via)
    for role in ("operator", "read-only"):
        metrics.SUPERVISOR_SIGNINS.labels(role)
    for result in ("opened", "read_only", "origin", "unknown_call", "ended_call"):
        metrics.LISTEN_SESSIONS.labels(result)

    async def authenticate(request: web.Request, started: float) -> Principal | web.Response:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, given = header.partition(" ")
            role = tokens.role_of(given.strip()) if scheme.lower() == "bearer" else None
            if role is None:
                return await refuse_after(started, refused_delay_s, "bearer")
            return Principal(role, "supervisor-api", "bearer")
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return _json({"error": "unauthorized"}, 401)
        if request.method not in SAFE_METHODS and not (
            same_origin(request) and csrf_ok(session, request.headers.get(CSRF_HEADER))
        ):
            return _json({"error": "forbidden: missing or wrong CSRF token"}, 403)
        return Principal(session.role, session.name, "session", session)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        started = asyncio.get_running_loop().time()
        if not tokens.configured:
            return _json({"error": "supervisor API disabled: set CALLBRIDGE_SUPERVISOR_TOKEN"}, 503)
        principal = await authenticate(request, started)
        if isinstance(principal, web.Response):
            return principal
        PRINCIPAL.set(principal)
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            return _json({"error": f"state store unavailable: {exc}"}, 503)

    def need_redis() -> aioredis.Redis:
        if redis is None:
            raise web.HTTPServiceUnavailable(text='{"error": "no Redis configured"}', content_type="application/json")
        return redis

    def need_rollouts() -> RolloutStore:
        if rollouts is None:
            raise web.HTTPServiceUnavailable(text='{"error": "no Redis configured"}', content_type="application/json")
        return rollouts

    def need_operator(request: web.Request) -> Principal:
        principal = principal_of(request)
        if not principal.can_change:
            raise web.HTTPForbidden(
                text='{"error": "read-only: only an operator can change a rollout"}', content_type="application/json"
            )
        return principal

    async def json_body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise web.HTTPBadRequest(text='{"error": "body must be JSON"}', content_type="application/json") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
        return body

    async def event_stream(request: web.Request, events: AsyncIterator[Event]) -> web.StreamResponse:
        """Server-sent events until the source ends, the session ends, the page goes, or the server stops."""
        principal = principal_of(request)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[Any] | None = None
        stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        quiet_since = loop.time()
        try:
            await response.write(b"retry: 1000\n\n")
            while not stopping.is_set():
                if pending is None:
                    pending = asyncio.ensure_future(anext(events))
                await asyncio.wait({pending, stop}, timeout=SSE_CHECK_S, return_when=asyncio.FIRST_COMPLETED)
                if principal.session is not None and sessions.get(principal.session.id) is None:
                    await response.write(b"event: signed-out\ndata: {}\n\n")
                    break
                if not pending.done():
                    if loop.time() - quiet_since >= SSE_KEEPALIVE_S:
                        await response.write(b": keep-alive\n\n")
                        quiet_since = loop.time()
                    continue
                done, pending = pending, None
                try:
                    name, data = done.result()
                except StopAsyncIteration:
                    break
                except StoreUnavailable as exc:
                    await response.write(_sse("store", {"ok": False, "error": exc.detail}))
                    break
                await response.write(_sse(name, data))
                quiet_since = loop.time()
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            stop.cancel()
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending  # the generator must be at rest before it is closed
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        return response

    # ------------------------------------------------------------------------------------------------ routes
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

    async def live_calls(request: web.Request) -> web.StreamResponse:
        if live is None:
            need_redis()
        assert live is not None
        sub = await live.subscribe()

        async def events() -> AsyncIterator[Event]:
            try:
                async for event in sub.events():
                    yield event
            finally:
                live.unsubscribe(sub)

        return await event_stream(request, events())

    async def live_call(request: web.Request) -> web.StreamResponse:
        return await event_stream(request, follow_call(need_redis(), request.match_info["call_id"]))

    async def listen_in(request: web.Request) -> web.StreamResponse:
        principal = principal_of(request)
        if not principal.can_change:
            metrics.LISTEN_SESSIONS.labels("read_only").inc()
            return _json({"error": "read-only: only an operator can listen in"}, 403)
        if not same_origin(request):
            metrics.LISTEN_SESSIONS.labels("origin").inc()
            return _json({"error": "forbidden: the page is not this server's (Origin)"}, 403)
        client = need_redis()
        if listen_audio is None:
            return _json({"error": "listen-in needs Redis (no audio client configured)"}, 503)
        session = principal.session

        def alive() -> bool:
            return session is None or sessions.get(session.id) is not None

        return await listen.handle(request, principal, client, listen_audio, session_alive=alive, stopping=stopping)

    async def listen_audit(request: web.Request) -> web.Response:
        return _json({"audit": await listen.read_audit(need_redis())})

    async def get_rollout(request: web.Request) -> web.Response:
        store = need_rollouts()
        flags = await store.flags()
        today = dt.datetime.now(dt.UTC).date()
        rollouts = {}
        for name, (spec, voice) in plans.items():
            flag = flags.get(name) or store.default_for(name)
            rollouts[name] = {
                "stored": name in flags,
                "safe": spec.safe,
                "variants": describe_variants(spec, flag, voice, catalog.shutdown_dates(), today),
            }
        audit = await store.audit(count=20)
        return _json(
            {
                "flags": {name: flag.model_dump(mode="json") for name, flag in flags.items()},
                "rollouts": rollouts,
                "audit": [a.to_json() for a in audit],
            }
        )

    async def get_rollout_panel(request: web.Request) -> web.Response:
        body = await rollout_view.panel(need_rollouts(), plans)
        body["can_change"] = principal_of(request).can_change
        return _json(body)

    def refused(exc: ConfigError) -> web.Response:
        return _json({"error": f"{exc.field}: {exc.message}", "field": exc.field}, 400)

    def rollout_of(dialplan: str) -> None:
        if dialplan not in plans:
            known = ", ".join(sorted(plans)) or "none"
            message = f"not a rollout dialplan here (rollout dialplans: {known})"
            raise ConfigError(f"rollout {dialplan}", "dialplan", message)

    async def preview_rollout(request: web.Request) -> web.Response:
        need_operator(request)
        store = need_rollouts()
        body = await json_body(request)
        dialplan = request.match_info["dialplan"]
        try:
            rollout_of(dialplan)
            old = await store.stored_flag(dialplan) or store.default_for(dialplan)
            return _json(rollout_view.preview(dialplan, store.spec_for(dialplan), old, body))
        except ConfigError as exc:
            return refused(exc)

    async def put_rollout(request: web.Request) -> web.Response:
        principal = need_operator(request)
        store = need_rollouts()
        body = await json_body(request)
        dialplan = request.match_info["dialplan"]
        reason, who = body.pop("reason", None), body.pop("who", principal.who)
        if principal.via == "session":
            who = principal.who  # the audit names the signed-in supervisor, whatever the page sent
        unknown = sorted(set(body) - ROLLOUT_FIELDS)
        try:
            rollout_of(dialplan)
            if unknown:
                known = ", ".join(sorted(ROLLOUT_FIELDS | {"reason", "who"}))
                raise ConfigError(f"rollout {dialplan}", unknown[0], f"unknown field (known: {known})")
            if not isinstance(reason, str) or not reason.strip():
                raise ConfigError(f"rollout {dialplan}", "reason", "required: why this change is made")
            changes = rollout_view.normalize_changes(body, f"rollout {dialplan}")
            change = await store.set_flag(dialplan, changes, str(who), reason)
        except ConfigError as exc:
            return refused(exc)
        return _json(
            {"dialplan": change.dialplan, "changed": change.changed, "flag": change.new.model_dump(mode="json")}
        )

    async def on_shutdown(app: web.Application) -> None:
        stopping.set()  # open event streams end now instead of holding the shutdown up
        if live is not None:
            await live.close()

    async def on_cleanup(app: web.Application) -> None:
        if listen_audio is not None:
            await listen_audio.aclose()

    app = web.Application(middlewares=[auth])
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/calls/{call_id}", get_call)
    app.router.add_get("/api/live/calls", live_calls)
    app.router.add_get("/api/live/calls/{call_id}", live_call)
    app.router.add_get("/api/calls/{call_id}/listen", listen_in)
    app.router.add_get("/api/listen/audit", listen_audit)
    app.router.add_get("/api/rollout", get_rollout)
    app.router.add_get("/api/console/rollout", get_rollout_panel)
    app.router.add_post("/api/rollout/{dialplan}/preview", preview_rollout)
    app.router.add_put("/api/rollout/{dialplan}", put_rollout)
    console.add_routes(app, tokens=tokens, sessions=sessions, refused_delay_s=refused_delay_s)
    return app
