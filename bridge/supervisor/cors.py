"""Cross-origin use of the ``/api`` routes from listed web origins (``http_cors_origins``): off unless listed.

A browser's preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered here, before any
credential is asked for (a preflight carries none, by the Fetch standard): 204 with the CORS headers for a listed
origin, 403 with the API's error body and no CORS header for any other (the browser then sends nothing). An answer to
a listed origin's request carries ``Access-Control-Allow-Origin`` (and ``Vary: Origin``), whatever its status, so
the page can read a 401 or 403 as well as a 200.

An origin listed by name (``https://crm.example.com``) may send credentials (``Access-Control-Allow-Credentials``:
the console's cookie, where the browser sends it at all: it is ``SameSite=Strict``); ``"*"`` lets any origin in
without them (a bearer token in ``Authorization`` is no credential in the Fetch sense: it works either way). A
session's change (any method but GET) from another origin is still refused (403, :mod:`.api`): a page of another
origin changes things with a bearer token only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bridge.supervisor.http import reply

ANY = "*"
METHODS = "GET, HEAD, POST, PUT, OPTIONS"
HEADERS = "Authorization, Content-Type, Idempotency-Key"
EXPOSED = "Retry-After, Content-Disposition, API-Version, Idempotent-Replayed"
MAX_AGE_S = 600


@dataclass(frozen=True, slots=True)
class Cors:
    named: frozenset[str] = frozenset()  # origins listed by name: credentials allowed
    anyone: bool = False  # "*" listed: every origin, without credentials

    @classmethod
    def of(cls, origins: Iterable[str]) -> Cors:
        listed = {o.strip().rstrip("/") for o in origins if o.strip()}
        return cls(frozenset(listed - {ANY}), ANY in listed)

    @property
    def on(self) -> bool:
        return self.anyone or bool(self.named)

    def allows(self, origin: str) -> bool:
        return origin in self.named or self.anyone

    def headers(self, origin: str) -> dict[str, str]:
        """What an answer to ``origin`` (allowed) carries."""
        headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSED}
        if origin in self.named:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def describe(self) -> str:
        """For the start-up log."""
        names = sorted(self.named) + (["any origin without credentials"] if self.anyone else [])
        return ", ".join(names)


def _preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def middleware(cors: Cors) -> Middleware:
    """Answers preflights of ``/api`` (before the auth middleware)."""

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not request.path.startswith("/api/") or origin is None or not _preflight(request):
            return await handler(request)
        if not cors.allows(origin):
            error = f"forbidden: the origin {origin[:100]} is not listed in http_cors_origins"
            return reply({"error": error}, 403)
        headers = {
            **cors.headers(origin),
            "Access-Control-Allow-Methods": METHODS,
            "Access-Control-Allow-Headers": HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_S),
            "Vary": "Origin",
        }
        return web.Response(status=204, headers=headers)

    return preflight


def on_prepare(cors: Cors) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Adds the CORS headers to an answer of ``/api`` to an allowed origin (``on_response_prepare``)."""

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        if not cors.on or not request.path.startswith("/api/") or _preflight(request):
            return
        response.headers.add("Vary", "Origin")  # a cache keeps each origin's answer apart
        origin = request.headers.get("Origin")
        if origin is not None and cors.allows(origin):
            response.headers.update(cors.headers(origin))

    return add_headers
