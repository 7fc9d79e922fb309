"""The one seam into ``websockets``' internals: :class:`BeatConnection`, a ``ClientConnection`` with three fast paths.

**Direct reads.** A whole text message goes to :attr:`BeatConnection.direct` on the spot, from the read that
brought it, when nothing is ahead of it in ``websockets``' queue; the rest (fragments, control frames, anything
behind a queued message) takes ``websockets``' way to the receive loop, so the order never changes. The queue and
the receive task's wake-up cost more than decoding a delta.

**Reading on a beat** (:meth:`BeatConnection.gate`, :meth:`BeatConnection.beat`): a call session that ticks every
20 ms has the socket read once per tick, right after the tick's own work, instead of whenever a frame lands. On a
loaded machine a wake-up of a Python process costs more in cold caches than the decoding it does, and a worker's
deltas land on their own schedule, between its media ticks. Gated, the transport does not read
(``pause_reading``); each beat asks the kernel (``poll`` with no wait) whether anything arrived and, if so, reads it
there and then and hands it to the protocol as the transport would. A server frame waits at most one beat before
it is decoded; ``websockets``' own flow control still wins (while it has reading paused, the beat does not read).
Plain TCP only: over TLS the transport reads the socket itself (the kernel would wake the loop for the encrypted
bytes anyway).

**Direct writes** (:meth:`BeatConnection.write_now`): while nothing is in flight and the socket's write buffer is
empty, a frame is framed by the connection's sans-I/O protocol and written at once, on the caller's stack, which is
what ``Connection.send`` does minus the coroutine, its context manager and the hop through the send task.
**Offloaded writes** (:meth:`BeatConnection.offload`): a call whose caller audio is sent by C code on the media
clock thread (``bridge/native/cport.c``, "Uplink") binds the socket to that code, and from then on every frame
``websockets`` writes goes through the same C writer (:class:`WriteOffload`), so the audio and the connection's
own frames (session updates, truncates, pings, the close) reach the socket in one order. A close frame ends the
audio; the end of the stream, a failed write or the loss of the connection hands the socket back (with the bytes
the kernel had not taken yet) before the socket is closed. Plain TCP only, and only while the transport has
nothing buffered.

``websockets`` has no public hook for any of this. What it relies on (``websockets.asyncio.connection.Connection``,
its ``Assembler`` and the sans-I/O ``Protocol``) is listed and checked by :func:`missing_internals`; a unit test
asserts that the list is empty with the installed ``websockets``. When it is not, every connection falls back to
``websockets``' own paths (the receive task, ``Connection.send``, no gate, no offload) and a warning says so once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
from asyncio import BaseTransport
from collections.abc import Callable
from typing import Final, Protocol

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.asyncio.messages import Assembler, SimpleQueue
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State
from websockets.protocol import Protocol as SansIOProtocol

log = logging.getLogger("bridge.realtime")

_OPCODE_CLOSE = 0x8
_READ_BYTES = 256 * 1024  # what asyncio's transport reads at once


def missing_internals(
    connection: type = Connection,
    assembler: type = Assembler,
    protocol: type = SansIOProtocol,
    frame: type = Frame,
) -> list[str]:
    """What the fast paths rely on that the given ``websockets`` classes do not provide (empty: all there)."""
    missing = []

    def names(cls: type, method: str) -> tuple[str, ...]:
        code = getattr(getattr(cls, method, None), "__code__", None)
        return tuple(code.co_names) if code is not None else ()

    if "process_event" not in names(connection, "data_received"):
        missing.append("Connection.data_received no longer hands each event to Connection.process_event")
    if not callable(getattr(connection, "process_event", None)):
        missing.append("Connection.process_event is gone")
    if "data_to_send" not in names(connection, "send_data"):
        missing.append("Connection.send_data no longer writes protocol.data_to_send()")
    if "fragmented_send_waiter" not in names(connection, "__init__"):
        missing.append("Connection.__init__ sets no fragmented_send_waiter")
    if not {"recv_messages", "Assembler"} <= set(names(connection, "connection_made")):
        missing.append("Connection.connection_made builds no Assembler as recv_messages")
    if not {"frames", "paused"} <= set(names(assembler, "__init__")):
        missing.append("Assembler (recv_messages) has no frames queue or paused flag")
    if not callable(getattr(SimpleQueue, "__len__", None)):
        missing.append("Assembler.frames (SimpleQueue) has no len()")
    if not all(callable(getattr(protocol, m, None)) for m in ("send_text", "data_to_send")):
        missing.append("Protocol.send_text or Protocol.data_to_send is gone")
    fields = {f.name for f in dataclasses.fields(frame)} if dataclasses.is_dataclass(frame) else set()
    if not {"opcode", "data", "fin"} <= fields:
        missing.append("Frame has no opcode, data and fin fields")
    return missing


MISSING: Final = tuple(missing_internals())
_warned = False


def fast_path_active() -> bool:
    """Whether the fast paths run with the installed ``websockets``; logs a warning, once, when they do not."""
    global _warned
    if MISSING and not _warned:
        _warned = True
        log.warning(
            "websockets %s differs from what the fast paths rely on (%s): reads and writes take websockets' own path",
            websockets.version.version,
            "; ".join(MISSING),
        )
    return not MISSING


class WriteOffload(Protocol):
    """Who writes the socket while it is offloaded (see the module doc)."""

    def bind(self, fd: int) -> bool: ...
    def write(self, data: bytes) -> int: ...  # 0: sent or pending, -1: the socket failed, -2: not bound
    def end_data(self) -> None: ...
    def unbind(self) -> bytes: ...


class BeatConnection(ClientConnection):
    """A ``websockets`` connection with direct reads, reads on a beat, and direct or offloaded writes (see the
    module doc). Without the internals it relies on it behaves as a plain ``ClientConnection``."""

    fast = not MISSING
    gated = False
    _ready: select.poll | None = None  # asks the kernel, without a wake-up, whether anything arrived
    _fd = -1
    _offload: WriteOffload | None = None
    # Whole text messages, on the spot (see process_event).
    direct: Callable[[bytes | bytearray | memoryview], None] | None = None

    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(transport)
        self.fast = fast_path_active()

    def process_event(self, event: Event) -> None:
        direct = self.direct
        if (
            direct is not None
            and type(event) is Frame
            and event.opcode is Opcode.TEXT
            and event.fin
            and self.fast
            and not len(self.recv_messages.frames)
        ):
            direct(event.data)
            return
        super().process_event(event)

    # -- writing

    def write_now(self, data: bytes) -> bool:
        """Frame and write one text message now (the direct path); False (nothing sent) if anything could be ahead
        of it or would have to wait: not open, a fragmented send under way, bytes still buffered."""
        if (
            not self.fast
            or self.protocol.state is not State.OPEN
            or self.fragmented_send_waiter is not None
            or self.transport.get_write_buffer_size()  # backpressure: the send task waits for the drain
        ):
            return False
        self.protocol.send_text(data)
        self.send_data()
        return True

    def offload(self, offload: WriteOffload | None) -> bool:
        """Route every write through ``offload`` (bound to the socket now), or (None) take the socket back."""
        if offload is None:
            self._take_back()
            return True
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if (
            not self.fast
            or self._offload is not None
            or sock is None
            or transport.get_extra_info("sslcontext") is not None
            or transport.is_closing()
            or transport.get_write_buffer_size()  # what asyncio still holds must go out first
            or self.protocol.state is not State.OPEN
        ):
            return False
        if not offload.bind(sock.fileno()):
            return False
        self._offload = offload
        return True

    @property
    def offloaded(self) -> bool:
        return self._offload is not None

    def _take_back(self) -> None:
        offload, self._offload = self._offload, None
        if offload is not None:
            rest = offload.unbind()
            if rest and not self.transport.is_closing():
                self.transport.write(rest)

    def send_data(self) -> None:
        offload = self._offload
        if offload is None:
            super().send_data()
            return
        for data in self.protocol.data_to_send():
            if not data:  # end of stream: hand the socket back, then half-close it as websockets does
                self._take_back()
                if self.transport.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        self.transport.write_eof()
                else:
                    self.transport.close()
                continue
            if data[0] & 0x0F == _OPCODE_CLOSE:
                offload.end_data()
            status = offload.write(data)
            if status == -2:  # unbound underneath us (the media port was detached): write it ourselves
                self._offload = None
                self.transport.write(data)
            elif status != 0:  # the socket failed: the read side reports the loss
                self._take_back()
                self.transport.abort()
                return

    # -- reading on a beat

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.gated and not self.transport.is_closing():
            self.transport.pause_reading()

    def gate(self, on: bool) -> None:
        """Gate reading to :meth:`beat`. Plain TCP only: over TLS the transport reads the socket itself."""
        sock = self.transport.get_extra_info("socket")
        if (
            on
            and self.fast
            and not self.gated
            and sock is not None
            and self.transport.get_extra_info("sslcontext") is None
        ):
            self._ready = select.poll()
            self._ready.register(sock.fileno(), select.POLLIN)
            self._fd = sock.fileno()
            self.gated = True
            if not self.transport.is_closing():
                self.transport.pause_reading()  # from now on the beat asks first
        elif not on and self.gated:
            self.gated, self._ready = False, None
            self._resume()

    def beat(self) -> None:
        """Read what arrived, if anything did, now: the socket is read here and the bytes handed to the protocol
        as the transport would (its reader stays out of the selector: registering it for one read and taking it
        out again cost two ``epoll_ctl`` and the selector's bookkeeping per beat). An end of stream or an error
        is left to the transport: it is resumed and meets them on its own read."""
        if self._ready is None or not self._ready.poll(0):
            return
        if self.recv_messages.paused or self.transport.is_closing():
            return  # websockets' own flow control: it resumes the transport itself
        try:
            data = os.read(self._fd, _READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.data_received(data)
        else:
            self._resume()

    def _resume(self) -> None:
        transport = self.transport
        if not self.recv_messages.paused and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()  # unless websockets' own flow control paused it

    def connection_lost(self, exc: Exception | None) -> None:
        self.gated, self._ready = False, None
        self._take_back()  # before the transport closes the socket: C must never write to a closed (reused) fd
        super().connection_lost(exc)
