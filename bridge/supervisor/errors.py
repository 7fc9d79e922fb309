"""Every error serve's HTTP port answers is the one JSON body, ``{"error", ...}``, whatever refused the request.

* **The app's** (:func:`middleware`): the router's 404 and 405, aiohttp's own refusals inside a handler (a body over
  ``client_max_size``: 413), and anything a handler did not handle: a 500 ``{"error": "internal error"}`` with one
  ERROR line in the log naming the route, the exception's type and where it was raised (no traceback, nothing the
  request carried).
* **The server's** (:func:`json_errors`): a request aiohttp could not parse (a bad request line, a header line over
  its limit, a malformed header) is answered by the connection's protocol before any app sees it; that answer is
  JSON too, saying only the status, never what the client sent.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("bridge.supervisor")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
INTERNAL = {"error": "internal error: the server's log says where"}


def _reply(error: str, status: int) -> web.Response:
    return web.json_response({"error": error}, status=status)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors raised on the way to an answer, as JSON (see the module)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return _refusal(request, exc)
    except Exception as exc:  # the one place an unhandled error becomes its answer
        if request.writer.output_size > 0:
            raise  # a stream already under way: aiohttp closes the connection, nothing more can be said
        route = request.match_info.route.resource
        where = route.canonical if route is not None else "(no route)"
        frame = traceback.extract_tb(exc.__traceback__)[-1:]
        at = f"{frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno}" if frame else "?"
        log.error("HTTP %s %s: unhandled %s at %s", request.method, where, type(exc).__name__, at)
        return web.json_response(INTERNAL, status=500)


def _refusal(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPNotFound):
        error = f"not found: no route {request.method} {request.path[:200]} (the routes: /api/openapi.json)"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        error = f"method not allowed: {request.method} {request.path[:200]} (allowed: {allowed})"
    else:
        error = exc.text or exc.reason
    response = _reply(error, exc.status)
    for name in ("Allow", "Retry-After"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


class JsonErrors(RequestHandler):
    """aiohttp's connection protocol, its own answers (a request it could not parse, a handler's error past every
    middleware) as JSON naming only the status."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs it (gate.OncePerInterval) and closes
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        said = INTERNAL["error"] if status == 500 else f"{phrase.lower()}: the request could not be read as HTTP"
        response = web.Response(status=status, text=json.dumps({"error": said}), content_type="application/json")
        response.force_close()
        del plain
        return response


def json_errors(make: Callable[[], RequestHandler]) -> Callable[[], RequestHandler]:
    """``make`` (aiohttp's server: a protocol per connection) whose protocols answer their errors as JSON."""

    def made() -> RequestHandler:
        protocol = make()
        protocol.__class__ = JsonErrors  # the same slots: aiohttp builds its protocol itself, with its own options
        return protocol

    return made
