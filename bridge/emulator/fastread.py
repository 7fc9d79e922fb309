"""Client data frames straight from aiohttp's WebSocket parser to the emulator, without a task wake-up per frame.

Why: aiohttp's parser puts each message in a queue (``WebSocketDataQueue``) and wakes the task parked in
``ws.receive()``; the emulator's reader task then only hands the frame to ``SocketPump.offer``. Under
``bench calls``' load (50 appends a second per session) that future, task switch, ``receive()`` and
``__anext__`` cost 15-20 % of the emulator's CPU in a profile; skipping them saves about 13 % of its CPU per
session (32 sessions, 7 runs each way). :class:`FastReadResponse` gives the parser a queue whose
``feed_data`` passes a TEXT or BINARY payload to a sink on the spot instead, when nothing can be ahead of it:
the queue is empty and the reader task is parked in ``receive()`` with nothing in hand. Everything else (ping,
close, closing, errors, eof), and any data behind it, takes aiohttp's own path to ``receive()`` unchanged, so
aiohttp still answers pings and runs the close handshake, and order is kept.

aiohttp has no public hook for this, so it leans on internals, all of them listed and checked by
:func:`missing_internals`; a unit test asserts that the list is empty with the installed aiohttp. When it is not,
every session reads the usual way (as with ``ENABLED`` off) and a warning says so once:

- ``WebSocketResponse._post_start`` builds the queue by the module-level name ``WebSocketDataQueue`` and passes
  it to the parser; we run that same function with the name bound to our subclass (the compiled parser types its
  queue, so a wrapper that is not a subclass would be refused);
- the queue's ``_buffer`` (a deque) and ``feed_data(message, size)``, and the response's ``_waiting`` flag (set
  while ``receive()`` awaits the queue) and ``_reader`` (the queue).
"""

from __future__ import annotations

import logging
import types
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import aiohttp
from aiohttp import WSMsgType, web, web_ws

log = logging.getLogger("bridge.emulator")

ENABLED = True  # False: every response reads the usual way (the fallback's path; for tests and comparisons)

Sink = Callable[[Any], None]  # takes a TEXT (str) or BINARY (bytes) message's payload

_TEXT, _BINARY = WSMsgType.TEXT, WSMsgType.BINARY
_warned = False


def _fall_back(why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "emulator: aiohttp %s differs from what the fast read path relies on (%s); client frames take "
            "the reader task",
            aiohttp.__version__,
            why,
        )


_Queue: Any = getattr(web_ws, "WebSocketDataQueue", None)  # the compiled class, or the pure-Python one


def _make_fast_queue() -> Any:
    if _Queue is None:
        return None
    base_feed = _Queue.feed_data

    class FastQueue(_Queue):  # type: ignore[misc]  # its base is picked at run time (compiled or pure Python)
        """aiohttp's queue, with a ``sink`` for data messages that find nothing ahead of them (module docstring)."""

        __slots__ = ("sink", "ws")

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.sink: Sink | None = None
            self.ws: Any = None  # the FastReadResponse, while a sink is attached

        def feed_data(self, data: Any, size: int) -> None:
            sink = self.sink
            if (
                sink is not None
                and not self._buffer  # nothing queued ahead
                and (data[0] is _TEXT or data[0] is _BINARY)
                and self.ws._waiting  # the reader is parked in receive(), not holding a ping or a close
            ):
                sink(data[1])
            else:
                base_feed(self, data, size)

    return FastQueue


def _make_post_start(queue: Any) -> Callable[..., None] | None:
    """aiohttp's own ``_post_start``, with ``WebSocketDataQueue`` meaning ``queue``: the same parser and reader
    setup, around our queue. Its globals are a copy of ``aiohttp.web_ws``'s, taken now."""
    original = getattr(web.WebSocketResponse, "_post_start", None)
    if queue is None or not isinstance(original, types.FunctionType):
        return None
    code = original.__code__
    if code.co_freevars or "WebSocketDataQueue" not in code.co_names:
        return None
    scope = {**original.__globals__, "WebSocketDataQueue": queue}
    clone = types.FunctionType(code, scope, original.__name__, original.__defaults__)
    clone.__kwdefaults__ = original.__kwdefaults__
    return clone


_FastQueue: Any = None
_post_start: Callable[..., None] | None = None
_cannot_extend = ""
try:
    _FastQueue = _make_fast_queue()
    _post_start = _make_post_start(_FastQueue)
except Exception as exc:  # not a class, or one that cannot be subclassed: the usual path
    _FastQueue, _post_start = None, None
    _cannot_extend = f"WebSocketDataQueue cannot be extended ({exc!r})"


def missing_internals() -> list[str]:
    """What the fast read path relies on that the installed aiohttp does not provide (empty: all there)."""
    missing = [_cannot_extend] if _cannot_extend else []
    if _Queue is None:
        missing.append("aiohttp.web_ws has no WebSocketDataQueue")
    elif not all(hasattr(_Queue, name) for name in ("_buffer", "feed_data")):
        missing.append("WebSocketDataQueue has no _buffer or feed_data")
    if _post_start is None:
        missing.append("WebSocketResponse._post_start does not build its queue by name")
    elif "_reader" not in _post_start.__code__.co_names:
        missing.append("WebSocketResponse._post_start keeps no _reader")
    if not isinstance(getattr(web.WebSocketResponse, "_waiting", None), bool):
        missing.append("WebSocketResponse has no _waiting flag")
    return missing


MISSING: Final = tuple(missing_internals())


class FastReadResponse(web.WebSocketResponse):
    """A ``WebSocketResponse`` whose data frames can go to a sink from the parser (:meth:`attach`)."""

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        if ENABLED and not MISSING and _post_start is not None:
            _post_start(self, request, protocol, writer)
        else:
            super()._post_start(request, protocol, writer)

    def attach(self, sink: Sink) -> bool:
        """From now on, hand each TEXT/BINARY payload with nothing ahead of it to ``sink``, inside aiohttp's
        ``data_received``; the rest still reaches ``receive()``. False (and nothing changes) if the fast path is
        off or aiohttp's internals are not as expected. ``sink`` must not raise: the parser would take it for a
        protocol error and fail the connection."""
        if not ENABLED:
            return False
        if MISSING:
            _fall_back("; ".join(MISSING))
            return False
        queue = self._fast_queue()
        if queue is None:
            _fall_back("WebSocketResponse._post_start did not build our queue")
            return False
        if not isinstance(getattr(queue, "_buffer", None), deque) or not isinstance(
            getattr(self, "_waiting", None), bool
        ):
            _fall_back("WebSocketDataQueue._buffer or WebSocketResponse._waiting not as expected")
            return False
        queue.ws, queue.sink = self, sink
        return True

    def detach(self) -> None:
        """Back to the usual path for everything (and no reference cycle through the sink)."""
        queue = self._fast_queue()
        if queue is not None:
            queue.ws, queue.sink = None, None

    @property
    def fast(self) -> bool:
        """Whether data frames currently go to a sink."""
        queue = self._fast_queue()
        return queue is not None and queue.sink is not None

    def _fast_queue(self) -> Any:
        """Our queue, if ``_post_start`` built one."""
        queue: Any = getattr(self, "_reader", None)
        return queue if _FastQueue is not None and type(queue) is _FastQueue else None
