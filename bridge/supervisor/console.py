"""The console's page, its static files and its sign-in routes, and the security headers of every response.

The page is ``static/index.html`` and plain JavaScript modules beside it (no build step). It never holds the
token: the sign-in form posts it once as JSON (a cross-site form cannot send ``application/json`` without a CORS
preflight this server never grants), and from then on the browser holds only the HttpOnly session cookie and, in a
module's memory, the session's CSRF token.

Every response carries a strict Content-Security-Policy (scripts and styles from this origin only, so no inline
script runs, whatever a transcript contains), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``
and ``X-Frame-Options: DENY``; API and sign-in answers are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge import metrics
from bridge.supervisor.accounts import NAME_RE, Role
from bridge.supervisor.auth import COOKIE, CSRF_HEADER, Credentials, FailureLimits, Sessions, csrf_ok
from bridge.supervisor.http import NOT_JSON, client_address, json_body, need, too_many
from bridge.supervisor.routes import Handler, Kind, Route, add

log = logging.getLogger("bridge.supervisor")

STATIC = Path(__file__).with_name("static")
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=json.dumps)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith(("/api/", "/auth/")):
        response.headers.setdefault("Cache-Control", "no-store")
    elif request.path in ("/", "/wallboard") or request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")  # revalidate: a new release shows at once


def unlock(limits: FailureLimits, account: object, source: object, who: str) -> str:
    """Clear the sign-in failures of ``account`` and/or ``source`` (an address); what was done, as logged. A name or
    an address that is not one raises ``ValueError`` saying which."""
    account, source = account or "", source or ""
    if not isinstance(account, str) or (account and not NAME_RE.match(account)):
        raise ValueError("account: not an account's name")
    if not isinstance(source, str):
        raise ValueError("source: not an address")
    if source:
        try:
            source = str(ipaddress.ip_address(source))
        except ValueError:
            raise ValueError("source: not an address") from None
    if not account and not source:
        raise ValueError("name an account or a source (address) to unlock")
    had = limits.unlock(account=account, source=source)
    what = " and ".join(f"{k} {v}" for k, v in (("account", account), ("source", source)) if v)
    said = f"sign-in failures of {what} cleared by {who}" + ("" if had else " (none were counted)")
    log.info("console: %s", said)
    return said


def _not_text(credentials: Credentials, source: str, error: str = "") -> web.Response:
    """A sign-in whose name or password is not a string (or whose body is not JSON in UTF-8): 400, counted for its
    address, and nothing hashed."""
    wait, _ = credentials.limits.attempt(source)
    if wait > 0:
        return too_many(wait)
    log.warning("console: a sign-in without a name and password as text from %s", source)
    what = "name and password" if credentials.accounts else "token"
    return _json({"error": error or f"sign-in needs the {what} as JSON strings"}, 400)


def _unlock_route(limits: FailureLimits) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def unlock_signins(request: web.Request) -> web.Response:
        """``POST /api/signin/unlock`` ``{"account", "source"}`` (either or both): admins clear sign-in failures."""
        principal = need(request, "unlock")
        body = await json_body(request)
        wrong = [field for field in ("account", "source") if field in body and not isinstance(body[field], str)]
        if wrong:
            return _json({"error": f"{wrong[0]}: a string", "field": wrong[0]}, 400)
        try:
            said = unlock(limits, body.get("account"), body.get("source"), principal.who)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"unlocked": said})

    return unlock_signins


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def _register(app: web.Application, limits: FailureLimits, signin: Handler, signout: Handler, current: Handler) -> None:
    app.on_response_prepare.append(_security_headers)
    add(
        app,
        Route(
            "POST",
            "/api/signin/unlock",
            _unlock_route(limits),
            "forget the failed sign-ins of an account and/or an address",
            needs="unlock",
            answers={200: "Unlocked", 400: None},
            body="Unlock",
        ),
        Route("GET", "/", index, "the console", needs=None, answers={200: None}, kind=Kind.PAGE),
        Route(
            "POST",
            "/auth/signin",
            signin,
            "console sign-in: a session cookie and its CSRF token",
            needs=None,
            answers={200: "Session", 400: None, 401: None, 415: None, 429: None, 503: None},
            body="SignIn",
        ),
        Route(
            "POST",
            "/auth/signout",
            signout,
            "end the session (its CSRF token)",
            needs=None,
            answers={200: "SignedOut", 403: None},
        ),
        Route(
            "GET",
            "/auth/session",
            current,
            "the session's role, name and CSRF token",
            needs=None,
            answers={200: "Session", 401: None},
        ),
    )
    app.router.add_static("/static/", STATIC)


def add_routes(app: web.Application, *, credentials: Credentials, sessions: Sessions, refused_delay_s: float) -> None:
    async def signin(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not credentials.configured:
            return _json({"error": "console disabled: set users_file (or a demo token)"}, 503)
        if request.content_type != "application/json":
            return _json({"error": "send the sign-in as JSON"}, 415)
        try:
            body = await request.json()
        except ValueError:  # not JSON, or not UTF-8: counted as a failure, as a body without the strings
            return _not_text(credentials, client_address(request), json.loads(NOT_JSON)["error"])
        body = body if isinstance(body, dict) else {}
        name, secret = body.get("name"), body.get("password", body.get("token"))
        source = client_address(request)
        if not isinstance(secret, str) or (credentials.accounts and not isinstance(name, str)):
            return _not_text(credentials, source)
        account = name if credentials.accounts and isinstance(name, str) and name else None
        wait, attempt = credentials.limits.attempt(source, account)  # checked and counted before the hash
        if wait > 0:
            log.warning("console: sign-in refused (too many failures) from %s", source)
            return too_many(wait)
        role: Role | None = None
        if credentials.accounts:
            role = await asyncio.to_thread(credentials.password, str(name), secret)
        else:
            role = credentials.tokens.role_of(secret)
        if role is None:
            shown = repr(name)[:60] if credentials.accounts else "a demo token"
            log.warning("console: failed sign-in for %s from %s", shown, client_address(request))
            metrics.SUPERVISOR_REFUSED_TOKENS.labels("signin").inc()
            await asyncio.sleep(max(0.0, started + refused_delay_s - loop.time()))
            return _json({"error": "sign-in failed"}, 401)
        credentials.limits.succeeded(attempt, source, account)
        typed = name if isinstance(name, str) else ""
        session = sessions.open(role, typed, account=credentials.accounts)
        metrics.SUPERVISOR_SIGNINS.labels(role).inc()
        log.info("console: %s signed in (%s) from %s", session.name, role, client_address(request))
        response = _json(session.to_json(sessions.clock()))
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(sessions.ttl_s),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    async def signout(request: web.Request) -> web.Response:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
                return _json({"error": "forbidden: missing or wrong CSRF token"}, 403)
            sessions.close(session.id)
            log.info("console: %s signed out", session.name)
        response = _json({"signed_out": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def current(request: web.Request) -> web.Response:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return _json(
                {"error": "signed out", "enabled": credentials.configured, "accounts": credentials.accounts}, 401
            )
        return _json(session.to_json(sessions.clock()))

    _register(app, credentials.limits, signin, signout, current)
