"""Behind a TLS-terminating proxy: whose ``X-Forwarded-*`` headers the supervisor app believes.

A request from an address in ``http_trusted_proxies`` is handled as the proxy saw it: its scheme from
``X-Forwarded-Proto`` (so the session cookie is ``Secure`` and the Origin check compares against ``https://``), its
host from ``X-Forwarded-Host``, and the client's address from the last ``X-Forwarded-For`` hop that is not itself a
trusted proxy (the limits on failed sign-ins and the log). From any other address those headers change nothing: a
client cannot claim HTTPS or another address by sending them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def within(address: str | None, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def _first(header: str | None) -> str:
    """The first value of a possibly comma-separated header (a chain of proxies appends)."""
    return (header or "").split(",")[0].strip()


def forwarded(request: web.Request, trusted: tuple[Network, ...]) -> dict[str, str]:
    """What to clone ``request`` with, if it came from a trusted proxy; else nothing."""
    if not trusted or not within(request.remote, trusted):
        return {}
    out: dict[str, str] = {}
    proto = _first(request.headers.get("X-Forwarded-Proto")).lower()
    if proto in ("http", "https"):
        out["scheme"] = proto
    host = _first(request.headers.get("X-Forwarded-Host"))
    if host:
        out["host"] = host
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not within(hop, trusted):
            out["remote"] = hop
            break
    return out


def middleware(cidrs: Iterable[str]) -> Middleware:
    trusted = networks(cidrs)

    @web.middleware
    async def believe_proxy(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen = forwarded(request, trusted)
        if not seen:
            return await handler(request)
        remote = seen.get("remote", request.remote) or ""
        clone = request.clone(
            scheme=seen.get("scheme", request.scheme), host=seen.get("host", request.host), remote=remote
        )
        return await handler(clone)

    return believe_proxy
