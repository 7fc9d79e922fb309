"""The HTTP side of the orchestrator: one POST per caller turn, on one aiohttp session per worker (connections are
kept alive between turns and calls), and every way it can fail named by kind (:class:`Fault`).

The time limits are the call's (``bridge.call.orchestration``: the filler at ``timeout_ms``, the failover at
``give_up_ms``); here the request only gets the outer one, so a hung peer never holds a connection longer. The
answer is read to its end (its Content-Length, or the last chunk of a chunked one) within that limit and
:data:`MAX_BODY`, however the peer cuts it into packets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from bridge.orchestrator.models import Decision, TurnRequest, parse_decision

# What the call side needs: (url, request, outer limit in seconds) -> the decision, or a Fault.
Ask = Callable[[str, TurnRequest, float], Awaitable[Decision]]
KINDS = ("down", "timeout", "http_5xx", "http_4xx", "invalid_json", "invalid_answer")
MAX_BODY = 64 * 1024  # an answer is a few hundred bytes; more is not a decision


async def whole_body(resp: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """``resp``'s body to its end, or None once it is longer than ``cap`` bytes (a declared longer one unread): a
    body cut into packets, chunked or not, is read whole (the HTTP tools' answers too)."""
    if resp.method != "HEAD" and resp.content_length is not None and resp.content_length > cap:
        return None
    body = bytearray()
    while chunk := await resp.content.read(cap + 1 - len(body)):  # what has come so far, or b"" at the end
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


class Fault(Exception):
    """A failed request: ``kind`` is one of :data:`KINDS`; the message names the URL's origin and the status, never
    the body or the URL's path and query (they may carry a token)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: what a log line may show of it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class OrchestratorClient:
    """POSTs turns; one per worker (or per replay), closed with :meth:`close`."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def ask(self, url: str, request: TurnRequest, limit_s: float) -> Decision:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "callbridge"})
        where = origin(url)
        try:
            async with self._session.post(
                url,
                data=request.model_dump_json(),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=limit_s),
            ) as resp:
                status = resp.status
                body = await whole_body(resp, MAX_BODY) if 200 <= status < 300 else b""
        except TimeoutError:
            raise Fault("timeout", f"{where}: no answer within {limit_s:.1f} s") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise Fault("down", f"{where}: {type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:  # a malformed HTTP answer
            raise Fault("invalid_answer", f"{where}: {type(exc).__name__}") from None
        if status >= 500:
            raise Fault("http_5xx", f"{where}: HTTP {status}")
        if not 200 <= status < 300:
            raise Fault("http_4xx", f"{where}: HTTP {status}")
        if body is None:
            raise Fault("invalid_answer", f"{where}: an answer of more than {MAX_BODY} bytes (a decision's most)")
        try:
            return parse_decision(body)
        except ValueError as exc:
            kind = "invalid_json" if str(exc).startswith("invalid JSON") else "invalid_answer"
            raise Fault(kind, f"{where}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
