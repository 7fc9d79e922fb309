"""The supervisor's HTTP API and console on ``callbridge serve`` (aiohttp).

==================================  ==================================================================================
``GET /``, ``/static/*``            the console (:mod:`bridge.supervisor.console`; no credential: it holds no data)
``POST /auth/signin``               console sign-in: JSON ``{"name", "password"}`` (an account; the demo:
                                    ``{"token", "name"}``) -> a session cookie and its CSRF token
``POST /auth/signout``              ends the session (needs its CSRF token)
``GET /auth/session``               the session's role, name and CSRF token (the page after a reload)
``GET /metrics``                    Prometheus exposition, merged across worker processes (no token: scrapers)
``GET /healthz``                    readiness: 200 when workers, Redis and the model can take calls, else 503; with a
                                    bearer token (or ``http_health_detail: open``) the workers and the problems (no
                                    call data); ``GET /livez``: liveness
``GET /api/calls``                  live calls across all workers: phase, dialect, duration, last transcript line
``GET /api/calls/{id}``             one call: its Redis hash and recent event summaries with transcripts
``GET /api/calls/ended``            ended calls of the retention window, paged and searched (:mod:`.ended`: ``?page=``
                                    ``&q=&dialplan=&variant=&caller=&reason=``), or since a time or a cursor
                                    (``?since=``, ``?cursor=``: oldest first); ``GET /api/calls/{id}/export``
                                    ``?format=json|text``: one call's state, transcript and timeline as a download
``GET /api/plans/stats``            each plan's figures: active, on hold, in an outage, and over the last hour's
                                    ended calls handle time, transfer rate, resolved alone, first-audio p95
                                    (:mod:`.strip`)
``GET /api/live/calls``             server-sent events: the live-calls table as it changes (:mod:`.stream`)
``GET /api/live/calls/{id}``        server-sent events: one call's state, stream entries and latency as they happen
``GET /api/calls/{id}/listen``      supervisor: listen-in, a WebSocket of the call's audio (:mod:`.listen`)
``POST /api/calls/{id}/hangup``     supervisor: the agent says goodbye, then BYE (:mod:`.actions`; also ``/whisper``
                                    ``{"text"}`` and ``/transfer`` ``{"target"}``); ``GET /api/actions/audit``
``GET /api/listen/audit``           who listened to which call, when and for how long (newest first)
``GET /api/rollout``                each rollout dialplan's variants, every stored flag, the recent audit entries
``GET /api/console/rollout``        the console's rollout panel (:mod:`bridge.supervisor.rollout_view`)
``POST /api/rollout/{dp}/preview``  admin: what a change would do, without saving it
``PUT /api/rollout/{dp}/kill``      supervisor: the kill switch alone, ``{"kill": true|false, "reason"}``, audited;
                                    turned off only by its holder or a role at least as high (else 403 naming the
                                    holder and the role needed: :mod:`.kill_switch`)
``POST /api/signin/unlock``         admin: forget the failed sign-ins of ``{"account"}`` and/or ``{"source"}``
``GET /api/openapi.json``           the API as an OpenAPI 3.1 document (:mod:`.openapi`), drawn from the route table
``PUT /api/rollout/{dp}``           admin: change a flag: JSON ``{"weights", "kill", "allow", "deny", "sticky",
                                    "reason", "who"}`` as ``callbridge rollout set`` takes them (``weights``: an object
                                    of numbers or ``"NAME=W,NAME=W"``; ``allow``/``deny``: an object of caller lists per
                                    variant); the audit's ``who`` is the signed-in account, never the body's. A refused
                                    change answers 400 ``{"error", "field"}``, the field named as in the flag
                                    (``weights.NAME``, ``deny.NAME``, ``reason``, ...)
==================================  ==================================================================================

Every ``/api`` route wants a credential (:mod:`bridge.supervisor.auth`): ``Authorization: Bearer <token>`` or a console
session cookie. Without one it answers 401 ``{"error": "unauthorized"}``; with a wrong bearer token the same, after
:data:`~bridge.supervisor.auth.REFUSED_DELAY_S` (too many from one address: 429 with ``Retry-After``; a valid token is
never refused for its address's failures). Each token or session may make ``requests_per_minute`` requests
(:mod:`.ratelimit`; past it 429 with ``Retry-After``). A session's change without its CSRF token, or from another
Origin, 403 saying which; a role that may not do it 403 naming the role it needs (the route's own ``needs``,
:mod:`.routes`, checked here before its handler runs). With neither accounts nor a demo token configured the API answers
503. Every error of the port is JSON, ``{"error", ...}``: the router's 404 and 405, a body that is not JSON in UTF-8
(400), anything a handler did not handle (500), a request aiohttp could not parse (:mod:`.errors`). A page of another
origin reaches ``/api`` only where ``http_cors_origins`` lists it (:mod:`.cors`). Tokens are compared in constant time
and never logged.

The routes come in groups, one module each: :mod:`.monitoring` (``/metrics``, ``/healthz``, ``/livez``),
:mod:`.calls` (calls and their event streams), :mod:`.ended` (ended calls and exports), :mod:`.actions` (a
supervisor's actions on a call), :mod:`.listen` (listen-in and its audit), :mod:`.strip` (the per-plan figures),
:mod:`.rollout` (flags and changes) and :mod:`.console` (the page and sign-in); what they share (the app's state, JSON
answers, the credential) is in :mod:`.http`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from redis import asyncio as aioredis

from bridge import metrics
from bridge.dialplan import Dialplan, rollout_plans
from bridge.rollout.store import RolloutStore
from bridge.store.connection import StoreUnavailable
from bridge.supervisor import (
    actions,
    calls,
    console,
    cors,
    ended,
    errors,
    listen,
    monitoring,
    openapi,
    proxy,
    rollout,
    routes,
    strip,
    takeover,
    users_watch,
    wallboard,
)
from bridge.supervisor.accounts import ROLES, Users, token_digest
from bridge.supervisor.auth import (
    COOKIE,
    CSRF_HEADER,
    REFUSED_DELAY_S,
    SESSION_TTL_S,
    Credentials,
    FailureLimits,
    Principal,
    Sessions,
    Tokens,
    csrf_ok,
)
from bridge.supervisor.flags import watch_of
from bridge.supervisor.gate import Gate, Limits, body_deadline
from bridge.supervisor.http import (
    PRINCIPAL,
    SUPERVISOR,
    Supervisor,
    client_address,
    over_rate,
    reply,
    same_origin,
    too_many,
)
from bridge.supervisor.ratelimit import RateLimit
from bridge.supervisor.stream import LiveCalls

log = logging.getLogger("bridge.supervisor")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USERS_WATCH = web.AppKey("users_watch", asyncio.Task[None])  # the users file's watcher (.users_watch)


async def refuse_after(started: float, delay_s: float, via: str) -> web.Response:
    """A wrong token: counted, then answered only ``delay_s`` after the request came in, the same way every time."""
    metrics.SUPERVISOR_REFUSED_TOKENS.labels(via).inc()
    await asyncio.sleep(max(0.0, started + delay_s - asyncio.get_running_loop().time()))
    return reply({"error": "unauthorized"}, 401)


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    """How people reach the console. ``readonly_token``: a watching supervisor's token (beside the operator's). With
    ``users`` (the users file) people sign in as accounts and the tokens are not used; ``users_file``: where ``users``
    came from, read again when it changes (:mod:`.users_watch`); ``limits``: failed sign-ins per address and per
    account; ``refused_delay_s``: how late a wrong token is answered; ``trusted_proxies``: CIDRs whose
    ``X-Forwarded-*`` headers are believed (:mod:`.proxy`); ``metrics_token``: ``/metrics`` wants it as a bearer
    token; ``metrics_here``: False when ``/metrics`` has its own port (:func:`metrics_app`); ``listen_key`` signs
    listen-in requests to the workers (``bridge.supervisor.listen_token``; without it, listen-in answers 503);
    ``gate``: the port's connection limits (:mod:`.gate`)."""

    readonly_token: str | None = None
    users: Users | None = None
    users_file: Path | None = None
    limits: FailureLimits | None = None
    session_ttl_s: float = SESSION_TTL_S
    refused_delay_s: float = REFUSED_DELAY_S
    trusted_proxies: Iterable[str] = ()
    metrics_token: str | None = None
    metrics_here: bool = True
    listen_key: bytes | None = None
    gate: Gate | None = None  # the port's connection limits (:mod:`.gate`); its body deadline applies here
    health_detail: str = "token"  # /healthz's detail: for a bearer token ("token") or anyone ("open")
    cors_origins: tuple[str, ...] = ()  # web origins whose pages may use /api (:mod:`.cors`); none: no other origin
    trace_ui_url: str = ""  # tracing_ui_url: a call's detail links its trace there (:mod:`.trace_link`)
    requests_per_minute: int = 600  # http_api_requests_per_minute: per token or session (:mod:`.ratelimit`)


def create_app(
    *,
    token: str | None,
    redis: aioredis.Redis | None,
    rollouts: RolloutStore | None,
    listen_audio: aioredis.Redis | None = None,
    health: Callable[[], dict[str, Any]] = dict,
    dialplans: Iterable[Dialplan] = (),
    lost_workers: Callable[[], Collection[str]] = frozenset,
    options: ConsoleOptions = ConsoleOptions(),
) -> web.Application:
    """``token`` is the operator's; the rollout plans among ``dialplans`` are shown with their variants even before
    anyone stored a flag; ``lost_workers`` names this node's dead workers (their calls show as lost at once);
    ``listen_audio`` is a client of the same Redis that does not decode replies (listen-in's audio; without it,
    listen-in answers 503); the rest is in ``options`` (:class:`ConsoleOptions`)."""
    o = options
    plans = tuple(dialplans)
    sup = Supervisor(
        credentials=Credentials(Tokens(token, o.readonly_token), o.users, o.limits or FailureLimits(10, 300.0)),
        sessions=Sessions(o.session_ttl_s),
        redis=redis,
        rollouts=rollouts,
        listen_audio=listen_audio,
        listen_key=o.listen_key,
        live=LiveCalls(redis, lost_workers=lost_workers, watch_of=watch_of(plans)) if redis is not None else None,
        plans=rollout_plans(plans),
        dialplans={plan.name: plan for plan in plans},
        health=health,
        stopping=asyncio.Event(),
        trace_ui_url=o.trace_ui_url,
    )
    _count_from_zero()
    body_s = (o.gate.limits if o.gate is not None else Limits()).body_s
    allowed = cors.Cors.of(o.cors_origins)
    app = web.Application(
        middlewares=[
            proxy.middleware(o.trusted_proxies),  # first: it clones the request, which must not have been read
            errors.middleware,  # every error JSON, an unhandled one a 500 (:mod:`.errors`)
            cors.middleware(allowed),  # a preflight is answered before any credential is asked for
            body_deadline(o.gate, body_s),
            _auth_middleware(sup, o.refused_delay_s, RateLimit(o.requests_per_minute)),
        ]
    )
    app[SUPERVISOR] = sup
    app.on_response_prepare.append(cors.on_prepare(allowed))
    app.on_response_prepare.append(_api_version)
    if o.users_file is not None:
        app.on_startup.append(_watch_users(o.users_file))
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    monitoring.add_routes(app, metrics_token=o.metrics_token, metrics=o.metrics_here, health_detail=o.health_detail)
    for group in (ended, calls, actions, listen, takeover, rollout, strip, wallboard, openapi):
        group.add_routes(app)
    console.add_routes(app, credentials=sup.credentials, sessions=sup.sessions, refused_delay_s=o.refused_delay_s)
    return app


async def _api_version(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer names the API's version (docs/operating.md, *Versions of the API*)."""
    response.headers["API-Version"] = routes.API_VERSION


def _count_from_zero() -> None:
    """Every label of the supervisor's counters exists from the start (a rate needs its zero)."""
    for via in ("signin", "bearer", "limited"):
        metrics.SUPERVISOR_REFUSED_TOKENS.labels(via)
    for role in ROLES:
        metrics.SUPERVISOR_SIGNINS.labels(role)
    for result in ("opened", "read_only", "origin", "unknown_call", "ended_call"):
        metrics.LISTEN_SESSIONS.labels(result)


async def _authenticate(
    request: web.Request, sup: Supervisor, started: float, refused_delay_s: float
) -> Principal | web.Response:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, given = header.partition(" ")
        opened = sup.credentials.bearer(given.strip()) if scheme.lower() == "bearer" else None
        if opened is None:  # a wrong token counts against its address; a valid one is never locked out
            wait, _ = sup.credentials.limits.attempt(client_address(request))
            if wait > 0:
                return too_many(wait)
            log.warning("supervisor API: a wrong bearer token from %s", client_address(request))
            return await refuse_after(started, refused_delay_s, "bearer")
        digest = token_digest(given.strip()) if sup.credentials.accounts else ""
        return Principal(opened[0], opened[1], "bearer", token=digest)
    session = sup.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        return reply({"error": "unauthorized"}, 401)
    if request.method not in SAFE_METHODS and not (
        same_origin(request) and csrf_ok(session, request.headers.get(CSRF_HEADER))
    ):
        if not same_origin(request):
            return reply({"error": "forbidden: the request's Origin is not this server's"}, 403)
        return reply({"error": "forbidden: missing or wrong CSRF token"}, 403)
    return Principal(session.role, session.name, "session", session)


def _rate_key(principal: Principal, request: web.Request) -> str:
    """Whose requests a request counts among: its session's, or its token's (a digest; a demo token's role)."""
    if principal.session is not None:
        return f"session:{principal.session.id}"
    return f"token:{principal.token or principal.role}"


def _auth_middleware(sup: Supervisor, refused_delay_s: float, rate: RateLimit) -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        started = asyncio.get_running_loop().time()
        if not sup.credentials.configured:
            return reply({"error": "supervisor API disabled: set users_file (or a demo token)"}, 503)
        principal = await _authenticate(request, sup, started, refused_delay_s)
        if isinstance(principal, web.Response):
            return principal
        PRINCIPAL.set(principal)
        wait = rate.take(_rate_key(principal, request))
        if wait > 0:
            return over_rate(rate.per_minute, wait)
        route = routes.of(request)
        if route is not None and not route.allows(principal):
            return route.refused(principal, route.needs or "watch")
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            return reply({"error": f"state store unavailable: {exc}"}, 503)

    return auth


def _watch_users(path: Path) -> Callable[[web.Application], Awaitable[None]]:
    async def start(app: web.Application) -> None:
        sup = app[SUPERVISOR]
        task = asyncio.create_task(users_watch.watch(path, sup.credentials, sup.sessions, sup.stopping))
        app[USERS_WATCH] = task

    return start


async def _on_shutdown(app: web.Application) -> None:
    sup = app[SUPERVISOR]
    sup.stopping.set()  # open event streams end now instead of holding the shutdown up
    if sup.live is not None:
        await sup.live.close()


async def _on_cleanup(app: web.Application) -> None:
    watching = app.get(USERS_WATCH)
    if watching is not None:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    listen_audio = app[SUPERVISOR].listen_audio
    if listen_audio is not None:
        await listen_audio.aclose()


def metrics_app(metrics_token: str | None = None) -> web.Application:
    """``/metrics`` alone, for its own port (``http_metrics_port``)."""
    app = web.Application()
    monitoring.add_metrics_route(app, metrics_token)
    return app
