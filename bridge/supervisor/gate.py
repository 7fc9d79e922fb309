"""The door of serve's HTTP port: how many connections it holds, from whom, and for how long one may take to ask.

* **A request's head** must arrive within ``http_head_timeout_s`` of the connection's start (or of the previous
  answer on a kept-alive connection), else the connection is closed: aiohttp's own keep-alive timer, which fires
  while no complete request has arrived, is set to it (:func:`runner_options`).
* **A request's body** must arrive within ``http_body_timeout_s`` of its head, else ``408`` (:func:`body_deadline`).
* **Connections per source address** are at most ``http_max_connections_per_source`` (a trusted proxy's are not
  counted per source: it carries many clients); one more is answered ``503`` ``{"error": "too many connections from
  this address"}`` and closed.
* **Connections in all** are at most ``http_max_connections``, and never more than the open-file limit leaves room
  for (:func:`connection_cap`; ``serve`` raises its soft limit to the hard one at start, :func:`raise_open_files`).
  At the cap a new connection takes the place of the oldest one that has no request in hand (a half-sent head, an
  idle keep-alive; a whole head is in hand from its last byte, before aiohttp dispatches it), taken from an address
  that holds other connections where there is one (:meth:`Gate._victim`); with none such, it is answered ``503``
  ``{"error": "too many connections"}`` and closed. So ``/healthz`` and the console answer while thousands of
  half-sent requests from a few addresses come and go.
* Each refusal is counted (``callbridge_http_connections_refused_total{reason}``) and the refusals are logged once
  per :data:`LOG_EVERY_S` as one summary line; so are the loop's accept errors (``Too many open files``) by
  :func:`quiet_accept_errors`, instead of a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from bridge import metrics
from bridge.config import Settings
from bridge.supervisor.errors import json_errors
from bridge.supervisor.proxy import Network, networks, within

log = logging.getLogger("bridge.supervisor")

LOG_EVERY_S = 10.0
LINGER_S = 1.0  # a refused connection's answer is read before it closes, or this passes
MAX_LINGERING = 64  # refused connections held at once so; past it a refusal closes at once, unsaid
# asyncio accepts up to the listen backlog's count of connections per wake of the loop (aiohttp's default, 128),
# each an open file before the gate sees it: room is kept for one such burst
ACCEPT_BURST = 128
VICTIM_LOOK = 64  # idle connections looked at for one from an address holding others (Gate._victim)
FD_RESERVE = 256  # open files kept for everything else serve holds: workers' pipes, Redis, the control socket
REASONS = ("source", "total", "evicted", "body_timeout")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(status: str, error: str) -> bytes:
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Retry-After: 5\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


FROM_SOURCE = _refusal("503 Service Unavailable", "too many connections from this address")
IN_ALL = _refusal("503 Service Unavailable", "too many connections")


@dataclass(frozen=True, slots=True)
class Limits:
    head_s: float = 10.0
    body_s: float = 30.0
    per_source: int = 64
    total: int = 1000
    trusted: tuple[Network, ...] = ()  # proxies: their connections count in all only


class Summary:
    """Counts of one kind of trouble, logged as one line once per ``every_s`` (the first at once)."""

    def __init__(self, what: str, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.every_s, self.clock = what, every_s, clock
        self.counts: collections.Counter[str] = collections.Counter()
        self.last = -every_s

    def add(self, reason: str) -> None:
        self.counts[reason] += 1
        now = self.clock()
        if now - self.last >= self.every_s:
            seen = ", ".join(f"{kind} {n}" for kind, n in sorted(self.counts.items()))
            log.warning("%s (at most one line per %.0f s): %s", self.what, self.every_s, seen)
            self.counts.clear()
            self.last = now


@dataclass
class Gate:
    """Who holds a connection to the port now (each :class:`Door`, oldest first) and how many per address."""

    limits: Limits
    open: dict[Door, None] = field(default_factory=dict)  # insertion order: the oldest first
    by_source: collections.Counter[str] = field(default_factory=collections.Counter)
    summary: Summary = field(default_factory=lambda: Summary("HTTP connections refused"))
    lingering: int = 0  # refused connections waiting for their client to close

    def refuse(self, reason: str) -> None:
        metrics.HTTP_CONNECTIONS_REFUSED.labels(reason).inc()
        self.summary.add(reason)

    def admit(self, door: Door) -> bytes | None:
        """Take ``door`` in (None), or the refusal to send it."""
        per_source = bool(door.source) and not within(door.source, self.limits.trusted)
        if per_source and self.by_source[door.source] >= self.limits.per_source:
            self.refuse("source")
            return FROM_SOURCE
        if len(self.open) >= self.limits.total:
            idle = self._victim()
            if idle is None:
                self.refuse("total")
                return IN_ALL
            self.refuse("evicted")
            self.left(idle)
            idle.close()
        self.open[door] = None
        if door.source:
            self.by_source[door.source] += 1
        return None

    def _victim(self) -> Door | None:
        """The connection a new one replaces at the cap: the oldest with no request in hand from an address that
        holds others, else the oldest with none. A flood from a few addresses turns its own connections over many
        times a second (each of its closed ones comes back), so "the oldest" is a fraction of a second old: a health
        probe's or a browser's single connection whose head has not yet come would go too. The look is bounded
        (:data:`VICTIM_LOOK`): a flood from as many addresses as connections takes the oldest."""
        first: Door | None = None
        looked = 0
        for door in self.open:  # the oldest first
            if door.busy or door.asked:
                continue
            if self.by_source[door.source] > 1:
                return door
            if first is None:
                first = door
            looked += 1
            if looked >= VICTIM_LOOK:
                break
        return first

    def left(self, door: Door) -> None:
        """``door`` no longer counts (closed, or being closed); again: nothing."""
        if door not in self.open:
            return
        del self.open[door]
        if door.source:
            self.by_source[door.source] -= 1
            if self.by_source[door.source] <= 0:
                del self.by_source[door.source]


class Door(asyncio.Protocol):
    """One connection: admitted by the :class:`Gate`, then handed to aiohttp's protocol (``inner``), or refused."""

    def __init__(self, gate: Gate, make: Callable[[], asyncio.Protocol]) -> None:
        self.gate, self.make = gate, make
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.busy = 0  # requests in hand (:func:`body_deadline` marks them)
        self.asked = False  # a whole head has come since the last answer (in hand before aiohttp dispatches it)
        self.head_tail = b""  # the head's last bytes so far, for an end split across reads
        self.linger: asyncio.TimerHandle | None = None  # a refused connection's last moment

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self.gate.admit(self)
        if refusal is not None:
            self.refused(transport, refusal)
            return
        self.inner = self.make()
        self.inner.connection_made(transport)

    def refused(self, transport: asyncio.Transport, refusal: bytes) -> None:
        """Say ``refusal``, then close once the client has closed (what it sent is read and dropped, so the close
        does not reset the answer away) or after :data:`LINGER_S`; with too many such already, close at once."""
        gate = self.gate
        if gate.lingering >= MAX_LINGERING:
            transport.abort()
            return
        gate.lingering += 1
        self.linger = asyncio.get_running_loop().call_later(LINGER_S, transport.abort)
        try:
            transport.write(refusal)
            if transport.can_write_eof():
                transport.write_eof()
            else:  # TLS: its close says so after the answer
                transport.close()
        except OSError:  # the client is gone already (reset before the answer): nothing to say, nothing to log
            transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.left(self)
        if self.linger is not None:
            self.linger.cancel()
            self.gate.lingering -= 1
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if not self.asked:
            self.saw_head(data)
        self.inner.data_received(data)

    def saw_head(self, data: bytes) -> None:
        """Note a head's end (an empty line after something other than empty lines) in what came since the last
        answer: between its last byte and the handler's start the request is in hand though not yet marked busy,
        and a burst of new connections at the cap must not take its place."""
        if not self.head_tail:
            data = data.lstrip(b"\r\n")  # empty lines before a request line are no request
        seen = self.head_tail + data
        self.asked = b"\r\n\r\n" in seen
        self.head_tail = b"" if self.asked else seen[-3:]

    def answered(self) -> None:
        """The requests in hand are answered: the next head starts anew."""
        if not self.busy:
            self.asked, self.head_tail = False, b""

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None  # refused: None closes it

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class GatedSite(web.TCPSite):
    """aiohttp's TCP site with every connection passing the :class:`Gate` first."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int | None, gate: Gate, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        handler = self._runner.server
        assert handler is not None
        gate, make = self.gate, json_errors(handler)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Door(gate, make),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )


class OncePerInterval(logging.Filter):
    """aiohttp's "Error handling request" records, at most one per kind per ``every_s`` (with how many were left
    out since). A malformed request is the client's doing: one line naming the error, no traceback and nothing the
    client sent; an error of a handler keeps its traceback."""

    def __init__(self, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s, self.clock = every_s, clock
        self.last: dict[str, float] = {}
        self.left_out: collections.Counter[str] = collections.Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        kind = type(exc).__name__ if exc is not None else str(record.msg)
        if isinstance(exc, HttpProcessingError):
            source = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "a malformed request from %s: %s %s", (source, exc.code, kind)
            record.exc_info = None
        now = self.clock()
        if now - self.last.get(kind, -self.every_s) < self.every_s:
            self.left_out[kind] += 1
            return False
        self.last[kind] = now
        if left_out := self.left_out.pop(kind, 0):
            record.msg = f"{record.msg} (and {left_out} more like it in the last %.0f s)"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), self.every_s)
        return True


SERVER_LOG = logging.getLogger("bridge.supervisor.http")
SERVER_LOG.addFilter(OncePerInterval())
SERVER = "callbridge"


def runner_options(limits: Limits) -> dict[str, Any]:
    """aiohttp's server options for these limits: its keep-alive timer (which closes a connection that has not sent
    a complete request since it opened or since its last answer) is the head's deadline; its errors go to
    :data:`SERVER_LOG`, at most one line per kind per interval (:class:`OncePerInterval`)."""
    return {"keepalive_timeout": limits.head_s, "access_log": None, "logger": SERVER_LOG}


def name_the_server() -> None:
    """Every response of this process's aiohttp servers says ``Server: callbridge``, not aiohttp's name and version.
    aiohttp fills the header in from its module's ``SERVER_SOFTWARE`` where a response has none, the errors it
    answers itself (a malformed request's 400) among them, so that is where the name is set."""
    vars(web_response)["SERVER_SOFTWARE"] = SERVER


def body_deadline(gate: Gate | None, body_s: float) -> Middleware:
    """A request's body must arrive within ``body_s`` (408 otherwise, and the connection closes); while a request
    is in hand its connection is not the one a new connection takes the place of."""

    @web.middleware
    async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        door = transport.get_protocol() if transport is not None else None
        door = door if isinstance(door, Door) else None
        if door is not None:
            door.busy += 1
        try:
            if request.body_exists and not request.headers.get("Upgrade"):
                try:
                    await asyncio.wait_for(request.read(), body_s)
                except TimeoutError:
                    if gate is not None:
                        gate.refuse("body_timeout")
                    said = {"error": f"request body not received within {body_s:g} s"}
                    response = web.json_response(said, status=408)
                    response.force_close()
                    return response
            return await handler(request)
        finally:
            if door is not None:
                door.busy -= 1
                door.answered()

    return deadline


def raise_open_files() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit; the new ``(soft, hard)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("open files: could not raise the soft limit %d to the hard limit %d: %s", soft, hard, exc)
    return soft, hard


def connection_cap(wanted: int, soft_limit: int) -> int:
    """At most ``wanted`` connections, leaving :data:`FD_RESERVE` open files for the rest of serve,
    :data:`MAX_LINGERING` for refusals and :data:`ACCEPT_BURST` for one wake's accepts (at least 16)."""
    spare = FD_RESERVE + MAX_LINGERING + ACCEPT_BURST
    room = soft_limit - spare if soft_limit != resource.RLIM_INFINITY else wanted
    return max(16, min(wanted, room))


def limits_of(settings: Settings, soft_limit: int) -> Limits:
    """The limits ``settings`` ask for, the connections in all kept under ``soft_limit`` (:func:`connection_cap`)."""
    return Limits(
        head_s=settings.http_head_timeout_s,
        body_s=settings.http_body_timeout_s,
        per_source=settings.http_max_connections_per_source,
        total=connection_cap(settings.http_max_connections, soft_limit),
        trusted=networks(settings.http_trusted_proxies),
    )


def log_limits(limits: Limits, open_files: tuple[int, int], *, health_open: bool = False) -> None:
    """The start-up lines of the HTTP port's limits (and of ``/healthz``'s detail, if anyone may see it)."""
    if health_open:
        log.warning("open: /healthz shows its detail (workers, pids, ports, run directory) to anyone")
    said = "HTTP limits: head within %g s, body within %g s, %d connection(s) per source, %d in all"
    numbers = (limits.head_s, limits.body_s, limits.per_source, limits.total, *open_files)
    log.info(said + " (open files: soft limit %d, hard %d)", *numbers)


ACCEPT_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message for them (selector_events)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, every_s: float = LOG_EVERY_S) -> None:
    """The loop's accept errors (out of open files, of buffers) logged as one line per ``every_s`` with their count;
    the loop still pauses accepting for a moment after each, as it does. Anything else goes where it went."""
    previous = loop.get_exception_handler()
    summary = Summary("accept errors (the loop pauses accepting for a second each)", every_s)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == ACCEPT_FAILED and isinstance(exc, OSError) and exc.errno in ACCEPT_ERRORS:
            summary.add(errno.errorcode.get(exc.errno or 0, "?"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
