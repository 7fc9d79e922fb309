"""The Realtime socket: ``websockets``' public sans-I/O protocol (``websockets.client.ClientProtocol``) over the
bridge's own asyncio transport, with four fast paths.

``websockets`` parses and frames (the handshake, masking, control frames, the closing handshake, ``max_size``);
:class:`RealtimeSocket` moves bytes. It opens the TCP connection itself (through the environment's HTTP(S) proxy,
as ``websockets.connect`` does: ``wss_proxy``/``https_proxy``/``http_proxy``, ``no_proxy``), with TLS for ``wss://``,
sends the handshake with the dialect's headers, pings for keepalive and maps every way the connection ends to the
close frame received (:attr:`RealtimeSocket.close_rcvd`) or a failure.

**Direct reads.** A whole server message is handed to ``on_message`` on the spot, from the read that brought it: no
queue, no receive task. A fragmented one is joined first; the order never changes.

**Reading on a beat** (:meth:`RealtimeSocket.gate`, :meth:`RealtimeSocket.beat`): a call session that ticks every
20 ms has the socket read once per tick, right after the tick's own work, instead of whenever a frame lands. On a
loaded machine a wake-up of a Python process costs more in cold caches than the decoding it does. Gated, the
transport does not read (``pause_reading``); each beat asks the kernel (``poll`` with no wait) whether anything
arrived and, if so, reads it there and then and hands it to the protocol as the transport would. A server frame
waits at most one beat before it is decoded. Gated with the call's metronome (``gate(True, beats)``) and a C
scanner, the socket is read by the loop's one reader of every socket instead, in one C call per beat
(:mod:`bridge.realtime.readset`), and hears only of what Python must handle (:meth:`RealtimeSocket.ready`).

**The downlink in C** (:meth:`RealtimeSocket.decode_audio`, :mod:`bridge.realtime.downlink`): the plain bytes of each
read go to a C scanner in one call; while it decodes, the model's audio deltas come out of it as 8 kHz runs for
``on_audio`` and every other frame's bytes go to the protocol as before, in order. Armed with an item
(:meth:`RealtimeSocket.sink_audio`), the scanner pushes that item's runs into the call's C playout ring itself.

**Direct writes** (:meth:`RealtimeSocket.write_now`): while the socket's write buffer is empty, a frame is framed and
written at once, on the caller's stack. :meth:`RealtimeSocket.send` is the same plus waiting for the drain when
asyncio holds more than :data:`WRITE_LIMIT` bytes (backpressure).

**Offloaded writes** (:meth:`RealtimeSocket.offload`): a call whose caller audio is sent by C code on the media clock
thread (``bridge/native/cport.c``, "Uplink") binds the socket to that code, and from then on every frame this socket
writes goes through the same C writer (:class:`WriteOffload`), so the audio and the connection's own frames (session
updates, truncates, pings, the close) reach the socket in one order. A close frame ends the audio; the end of the
stream, a failed write or the loss of the connection hands the socket back (with the bytes the kernel had not taken
yet) before the socket is closed. Only while the transport has nothing buffered.

**TLS as the socket's own layer** (``wss://``, :meth:`RealtimeSocket.use_tls`): asyncio's TLS transport reads the
socket itself and seals in Python, so neither reading on a beat nor offloaded writes could reach its bytes. Where
the native engine loads (:mod:`bridge.realtime.tls_native`: OpenSSL, the one Python's ``ssl`` uses, on memory
buffers), the transport is plain TCP carrying TLS records and this socket seals and opens them with the engine:
the handshake first (the peer's chain and name verified as ``ssl.create_default_context()`` verifies them), then
the WebSocket's. Offloaded, the C writer seals with the same engine, under its lock, so the stream stays one TLS
stream whoever writes. Where the engine does not load, asyncio's TLS carries the connection and the fast paths
stay off over ``wss://`` (:func:`fast_path_problems` says so).

What this relies on is ``websockets``' documented sans-I/O API, the same from 15 on; :func:`missing_api` checks it
(and a unit test, run in every venv CI builds, asserts it is complete). Should a ``websockets`` lack part of it,
connections go through ``websockets``' own asyncio client instead (:mod:`bridge.realtime.ws_plain`), ``serve`` says
so at start and ``/healthz`` (``callbridge health``) reports it as degraded (:func:`fast_path_problems`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import select
import ssl
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import websockets
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidProxy
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

from bridge.audio import AudioConverter
from bridge.audio.playout_native import CSink
from bridge.realtime import readset, tls_native
from bridge.realtime.downlink import AudioRun, DownlinkScanner, OnSunk
from bridge.realtime.readset import Beats, ReadSet
from bridge.realtime.tls_native import NativeTls

log = logging.getLogger("bridge.realtime")

_OPCODE_CLOSE = 0x8
_READ_BYTES = 256 * 1024  # what asyncio's transport reads at once
WRITE_LIMIT = 32 * 1024  # asyncio's buffer above this: send() waits for the drain (websockets' own default)
CLOSE_TIMEOUT_S = 10.0  # a close frame sent or received: the TCP connection ends within this, or is aborted
USER_AGENT = f"Python/{sys.version_info.major}.{sys.version_info.minor} websockets/{websockets.version.version}"

OnMessage = Callable[[bytes | bytearray | memoryview], None]
OnAudio = Callable[[AudioRun], None]

_METHODS = (
    "connect",
    "send_request",
    "receive_data",
    "receive_eof",
    "events_received",
    "data_to_send",
    "send_text",
    "send_ping",
    "send_close",
    "fail",
    "close_expected",
)
_ATTRIBUTES = ("state", "handshake_exc", "close_rcvd")


def missing_api(protocol: type = ClientProtocol) -> list[str]:
    """What the socket uses of ``websockets``' sans-I/O client that ``protocol`` does not have (empty: all there)."""
    missing = [f"ClientProtocol.{name}()" for name in _METHODS if not callable(getattr(protocol, name, None))]
    try:
        instance = protocol(parse_uri("ws://localhost/"), max_size=None)
    except Exception as exc:  # a changed constructor
        return [*missing, f"ClientProtocol(uri, max_size=...) raised {exc!r}"]
    missing += [f"ClientProtocol.{name}" for name in _ATTRIBUTES if not hasattr(instance, name)]
    if not {"TEXT", "BINARY", "CONT", "PONG"} <= set(Opcode.__members__):
        missing.append("websockets.frames.Opcode")
    return missing


MISSING: Final = tuple(missing_api())


def fast_path_problems(secure: bool = False) -> list[str]:
    """Why the Realtime socket cannot take its fast paths with the installed packages (empty: it takes them);
    ``secure``: over ``wss://`` too, which needs the native TLS engine. ``serve`` logs them at start; ``/healthz``
    lists them under ``degraded``."""
    problems = []
    if MISSING:
        problems.append(
            f"websockets {websockets.version.version} lacks {', '.join(MISSING)}: the Realtime socket runs on "
            "websockets' own asyncio client (no direct reads or writes, no reading on the beat, no offloaded writes)"
        )
    if secure and tls_native.load() is None:
        problems.append(
            f"no native TLS engine ({tls_native.problem()}): over wss:// asyncio's TLS carries the Realtime socket "
            "(no reading on the beat, no offloaded writes)"
        )
    return problems


class WriteOffload(Protocol):
    """Who writes the socket while it is offloaded (see the module doc)."""

    def bind(self, fd: int, seal: tuple[int, int] | None = None) -> bool: ...  # seal: over TLS (see offload)
    def write(self, data: bytes) -> int: ...  # 0: sent or pending, -1: the socket failed, -2: not bound
    def end_data(self) -> None: ...
    def unbind(self) -> bytes: ...


class Socket(Protocol):
    """What the client uses of a socket: :class:`RealtimeSocket`, or ``ws_plain.PlainSocket`` without the API."""

    @property
    def fast(self) -> bool: ...
    @property
    def gated(self) -> bool: ...
    @property
    def offloaded(self) -> bool: ...
    @property
    def read_in_c(self) -> bool: ...
    @property
    def close_rcvd(self) -> Close | None: ...
    @property
    def failure(self) -> Exception | None: ...
    @property
    def lost(self) -> asyncio.Future[None]: ...
    @property
    def keepalive_at(self) -> float:
        """``time.monotonic()`` when the server last showed it is there outside its messages (a pong to our ping,
        a ping of its own): an idle session is not a dead one."""
        ...

    def write_now(self, data: bytes) -> bool: ...
    async def send(self, data: bytes) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
    def gate(self, on: bool, beats: Beats | None = None) -> None: ...
    def beat(self) -> None: ...
    def offload(self, offload: WriteOffload | None) -> bool: ...
    def decode_audio(self, converter: AudioConverter | None, on_audio: OnAudio | None, items: bool) -> bool: ...
    def sink_audio(self, sink: CSink | None, on_sunk: OnSunk | None) -> bool: ...
    def settle_audio(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """How a Realtime socket is opened and kept: the whole opening's time limit, the largest message, the keepalive
    pings (``None``: none), and the logger ``websockets`` logs to (handshake headers at DEBUG: give a redacting
    one)."""

    open_timeout: float
    max_size: int | None
    ping_interval: float | None
    ping_timeout: float | None
    logger: logging.Logger | None = None
    audio_events: tuple[str, ...] = ()  # the dialect's audio delta events: the C downlink may decode them
    commuting_events: tuple[str, ...] = ()  # and the events a run of them may carry past (bridge.realtime.downlink)


class SocketClosed(Exception):
    """A send on a socket that is no longer open (the close itself is reported by :attr:`RealtimeSocket.lost`)."""


class _Downlink:
    """The socket's downlink in C (:mod:`bridge.realtime.downlink`): every plain byte read goes to the scanner, which
    follows the stream from its first byte; while it decodes, audio runs go to ``on_audio`` and every other frame's
    bytes to ``websockets``' protocol, in order (:meth:`RealtimeSocket._frames_received`)."""

    protocol: ClientProtocol
    transport: asyncio.Transport
    gated: bool
    failure: Exception | None
    _heard_at: float  # the server's last ping, pong or audio the sink took (Socket.keepalive_at)
    loop: asyncio.AbstractEventLoop
    lost: asyncio.Future[None]
    _tls: NativeTls | None
    _offload: WriteOffload | None
    _fd: int
    _down: DownlinkScanner | None = None
    _reader: ReadSet | None = None  # read by the loop's reader of every socket, in C (bridge.realtime.readset)
    _slot = -1
    _on_audio: OnAudio | None = None
    _read_paused = False  # the transport's reading paused by this socket (gated): no need to pause it again

    def _frames_received(self, data: bytes) -> None:
        raise NotImplementedError

    def fail(self, code: int, reason: str = "") -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def eof_received(self) -> bool | None:
        raise NotImplementedError

    def _resume(self) -> None:
        transport = self.transport
        self._read_paused = False
        if not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()

    def _plain_received(self, data: bytes) -> None:
        down = self._down
        if down is None:
            self._frames_received(data)
        else:
            if down.sinking is not None:  # audio the sink takes is a server message no one else sees
                self._heard_at = time.monotonic()
            self._take(down.feed(data))
        if self.gated and not self._read_paused and not self.transport.is_closing():
            self.transport.pause_reading()
            self._read_paused = True

    def _take(self, pieces: Iterator[bytes | AudioRun]) -> None:
        for piece in pieces:
            if isinstance(piece, AudioRun):
                self._audio_received(piece)
            else:
                self._frames_received(piece)

    def _audio_received(self, run: AudioRun) -> None:
        on_audio = self._on_audio
        if on_audio is None:
            return
        try:
            on_audio(run)
        except Exception as exc:  # as _deliver: the session ends, classified
            log.exception("realtime audio handler failed")
            if self.failure is None:
                self.failure = exc
                self.fail(1011, "internal error")

    def decode_audio(self, converter: AudioConverter | None, on_audio: OnAudio | None, items: bool = True) -> bool:
        """Have the C downlink decode the model's audio deltas with ``converter`` and hand them to ``on_audio`` as
        runs, from the next frame on; None: stop (they reach ``on_message`` again). False where it cannot: no
        scanner (the setting off, no compiler), asyncio's TLS, permessage-deflate, not open, no C form."""
        down = self._down
        if converter is None or on_audio is None:
            if down is not None:
                down.decode(None)
            self._on_audio = None
            return True
        if (
            down is None
            or self.protocol.state is not State.OPEN
            or self.protocol.extensions  # a compressed frame's payload is not the event's text
            or self.transport.get_extra_info("sslcontext") is not None
            or not down.decode(converter, items)
        ):
            return False
        self._on_audio = on_audio
        return True

    def sink_audio(self, sink: CSink | None, on_sunk: OnSunk | None) -> bool:
        """Have the scanner push the runs of ``sink``'s item into its C ring itself from the next one on, telling
        ``on_sunk`` of their deltas (:meth:`DownlinkScanner.sink`); None: disarm. False where it cannot (not
        decoding)."""
        down = self._down
        if sink is None or on_sunk is None or self._on_audio is None or down is None:
            if down is not None:
                down.unsink()
            return sink is None
        return down.sink(sink, on_sunk)

    def settle_audio(self) -> None:
        """What the sink took, told now (:meth:`DownlinkScanner.settle`)."""
        if self._down is not None:
            self._down.settle()

    def _close_downlink(self) -> None:
        down, self._down, self._on_audio = self._down, None, None
        if down is not None:
            down.close()

    # -- read by the loop's reader in C (bridge.realtime.readset)

    @property
    def keepalive_at(self) -> float:
        """``time.monotonic()`` when the server last showed it is there outside the messages it hands on (a pong,
        a ping, audio the sink took; any read, where the reader reads)."""
        reader = self._reader
        return self._heard_at if reader is None else max(self._heard_at, reader.heard(self._slot))

    @property
    def read_in_c(self) -> bool:
        """Read on every beat by the loop's reader in C (no :meth:`beat` needed)."""
        return self._reader is not None

    def _read_by_set(self, beats: Beats | None) -> bool:
        scanner = self._down.handle if self._down is not None else None
        reader = readset.for_beats(beats) if scanner and beats is not None else None
        tls = self._tls.handle if self._tls is not None else None
        slot = reader.add(self, self._fd, scanner, tls) if reader is not None and scanner else None
        if slot is None:
            return False
        self._reader, self._slot = reader, slot
        return True

    def _unread(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            self._heard_at = max(self._heard_at, reader.remove(self._slot))

    def ready(self, flags: int) -> None:
        """What the loop's reader read brought (its flags, :mod:`bridge.realtime.readset`): the pieces for the
        loop taken now, in order, then ciphertext the engine wants sent, then an end: the transport is resumed and
        meets it on its own read, as after :meth:`beat`'s."""
        down = self._down
        if self.transport.is_closing() or down is None:
            self._unread()  # asyncio would not hand on what a closing transport read either
            return
        if flags & readset.PIECE:
            self._take(down.pieces())
        tls = self._tls
        if flags & readset.TLS_OUT and tls is not None and self._offload is None and not self.lost.done():
            queued = tls.take()  # e.g. the answer to a key update (offloaded: the next sealed write carries it)
            if queued:
                self.transport.write(queued)
        if flags & readset.TLS_FAILED:
            log.warning("realtime TLS failed: %s", tls.failure() if tls is not None else "the downlink's reader")
            self._unread()
            self.abort()
        elif flags & readset.TLS_CLOSED:  # the server's close_notify: the end of the stream
            self._unread()
            self.eof_received()
            if not self.transport.is_closing():
                self.transport.close()
        elif flags & readset.END:
            self._unread()
            self._resume()


class RealtimeSocket(_Downlink, asyncio.Protocol):
    """One client WebSocket: the sans-I/O protocol, this asyncio protocol, and the fast paths (see the module doc).
    Made by :func:`connect`."""

    fast = True
    gated = False
    _ready: select.poll | None = None  # asks the kernel, without a wake-up, whether anything arrived
    _fd = -1
    _offload: WriteOffload | None = None
    _tls: NativeTls | None = None  # wss:// on the native engine: TLS is this socket's own layer (the module doc)
    _handshaking = False
    transport: asyncio.Transport

    def __init__(
        self,
        uri: WebSocketURI,
        headers: Mapping[str, str],
        on_message: OnMessage,
        options: SocketOptions,
        *,
        close_timeout: float = CLOSE_TIMEOUT_S,
    ) -> None:
        # no extensions: no compression
        self.protocol = ClientProtocol(uri, max_size=options.max_size, logger=options.logger)
        self.headers = headers
        self.on_message = on_message
        self.ping_interval, self.ping_timeout = options.ping_interval, options.ping_timeout
        self.close_timeout = close_timeout
        self.loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = self.loop.create_future()  # the handshake's answer
        self.lost: asyncio.Future[None] = self.loop.create_future()  # the TCP connection is gone
        self.failure: Exception | None = None  # on_message raised: the connection was failed with 1011
        self.latency = 0.0  # of the last keepalive ping
        self._heard_at = time.monotonic()  # the server's last ping or pong (keepalive_at)
        self._fragments: list[bytes] = []
        self._paused = False  # asyncio's write buffer is over WRITE_LIMIT
        self._drained: asyncio.Future[None] | None = None
        self._ping: tuple[bytes, float] | None = None
        self._keepalive: asyncio.TimerHandle | None = None  # the next ping, or the deadline of its pong
        self._close_timer: asyncio.TimerHandle | None = None
        self._down = DownlinkScanner.make(options.audio_events, options.commuting_events)  # C downlink: _Downlink

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def close_rcvd(self) -> Close | None:
        """The server's close frame (code and reason), None if none came."""
        return self.protocol.close_rcvd

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_LIMIT)
        if self._tls is not None:  # the TLS handshake first, then the WebSocket's
            self._handshaking = True
            self._tls_handshake()
            return
        self._send_request()

    def use_tls(self, engine: NativeTls) -> None:
        """Carry the connection over ``engine`` (before it is made): the transport moves TLS records, this socket
        seals and opens them, so its fast paths see the plain WebSocket bytes (see the module doc)."""
        self._tls = engine

    def _send_request(self) -> None:
        request = self.protocol.connect()
        request.headers.update(self.headers)
        request.headers.setdefault("User-Agent", USER_AGENT)
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        tls = self._tls
        if tls is None:
            self._plain_received(data)
            return
        tls.feed(data)
        if self._handshaking and not self._tls_handshake():
            return
        try:
            plain, closed = tls.read()
        except ssl.SSLError as exc:  # a record that does not open: the stream is broken
            log.warning("realtime TLS failed: %s", exc)
            self.abort()
            return
        if self._offload is None:  # offloaded, the next sealed write carries it out first, in order
            queued = tls.take()  # e.g. the answer to a key update
            if queued:
                self.transport.write(queued)
        if plain:
            self._plain_received(plain)
        if closed:  # the server's close_notify: the end of the stream
            self.eof_received()
            if not self.transport.is_closing():
                self.transport.close()

    def _tls_handshake(self) -> bool:
        """One step of the TLS handshake: what the engine has to send goes out; True once it is done (the
        WebSocket's opening handshake is sent then). A failure (a certificate that does not verify) fails the
        opening with the engine's ``ssl.SSLError``."""
        tls = self._tls
        assert tls is not None
        try:
            done = tls.handshake()
        except ssl.SSLError as exc:
            if not self.opened.done():
                self.opened.set_exception(exc)
            self.abort()
            return False
        out = tls.take()
        if out:
            self.transport.write(out)
        if done:
            self._handshaking = False
            log.debug("realtime TLS %s %s", tls.version, tls.cipher)
            self._send_request()
        return done

    def _frames_received(self, data: bytes) -> None:  # raw frames, from _Downlink._plain_received
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._flush()  # pongs, the close frame's echo, a failure's close
        if protocol.close_expected():
            self._expect_close()
        fragments = self._fragments
        for event in events:
            if type(event) is Frame:
                if event.fin and not fragments and (event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY):
                    self._deliver(event.data)
                else:
                    self._frame(event)
            elif isinstance(event, Response):
                self._answered()

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        for event in self.protocol.events_received():  # a response that ended with the stream
            if isinstance(event, Response):
                self._answered()
        self._flush()
        # nothing is written after the server's end of stream: returning None lets the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._unread()  # before the transport closes the socket: its descriptor may be reused
        self.gated, self._ready = False, None
        self._take_back()  # before the transport closes the socket: C must never write to a closed (reused) fd
        if self._tls is not None:  # C no longer seals with it (unbound above)
            self._tls.close()
        self._close_downlink()
        self.protocol.receive_eof()  # idempotent: the protocol's state is CLOSED from here
        for timer in (self._keepalive, self._close_timer):
            if timer is not None:
                timer.cancel()
        if not self.opened.done():
            failed = self.protocol.handshake_exc
            self.opened.set_exception(failed or ConnectionError(f"connection closed during the handshake: {exc!r}"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- receiving

    def _answered(self) -> None:
        if self.opened.done():
            return
        if self.protocol.handshake_exc is not None:
            self.opened.set_exception(self.protocol.handshake_exc)
            return
        self.opened.set_result(None)
        if self.ping_interval is not None:
            self._keepalive = self.loop.call_later(self.ping_interval, self._send_ping)

    def _frame(self, frame: Frame) -> None:
        """Everything but a whole data message: fragments, the pong a keepalive ping waits for, and the server's
        pings (answered by the protocol itself, as close frames are); a ping or pong stamps :attr:`keepalive_at`."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                message, self._fragments = b"".join(self._fragments), []
                self._deliver(message)
        elif opcode is Opcode.PONG:
            self._heard_at = time.monotonic()
            self._pong(bytes(frame.data))
        elif opcode is Opcode.PING:  # answered by the protocol; the server is there
            self._heard_at = time.monotonic()

    def _deliver(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.on_message(data)
        except Exception as exc:  # never let the reader die silently: the session ends, classified
            log.exception("realtime message handler failed")
            if self.failure is None:
                self.failure = exc
                self.fail(1011, "internal error")

    # -- keepalive: a ping every ping_interval; no pong within ping_timeout fails the connection (1011)

    def _send_ping(self) -> None:
        if self.protocol.state is not State.OPEN:
            return
        data = os.urandom(4)
        self._ping = (data, self.loop.time())
        self.protocol.send_ping(data)
        self._flush()
        if self.ping_timeout is not None:
            self._keepalive = self.loop.call_later(self.ping_timeout, self._pong_overdue)
        elif self.ping_interval is not None:
            self._keepalive = self.loop.call_later(self.ping_interval, self._send_ping)

    def _pong(self, data: bytes) -> None:
        if self._ping is None or data != self._ping[0]:
            return  # unsolicited
        self.latency = self.loop.time() - self._ping[1]
        self._ping = None
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.ping_interval is not None:
            self._keepalive = self.loop.call_later(max(0.0, self.ping_interval - self.latency), self._send_ping)

    def _pong_overdue(self) -> None:
        self.fail(1011, "keepalive ping timeout")

    # -- writing

    def write_now(self, data: bytes) -> bool:
        """Frame and write one text message now (the direct path); False (nothing sent) if it would have to wait:
        not open, or asyncio still holds bytes (backpressure: :meth:`send` waits for the drain)."""
        if self.protocol.state is not State.OPEN or self.transport.get_write_buffer_size():
            return False
        self.protocol.send_text(data)
        self._flush()
        return True

    async def send(self, data: bytes) -> None:
        """Write one text message, then wait while asyncio holds more than :data:`WRITE_LIMIT` bytes. Raises
        :class:`SocketClosed` if the connection is not open."""
        if self.protocol.state is not State.OPEN:
            raise SocketClosed
        self.protocol.send_text(data)
        self._flush()
        if self._paused and not self.lost.done():
            self._drained = self.loop.create_future()
            await self._drained

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (close frame, end of stream) and abort it if it does not end in time."""
        if self.protocol.state is State.CLOSED:
            return
        self.protocol.fail(code, reason)
        self._flush()
        self._expect_close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake: send a close frame and wait for the connection to end (aborted after
        ``close_timeout``)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
            self._expect_close()
        elif self.protocol.state is State.CONNECTING:
            self.abort()
        await asyncio.shield(self.lost)

    def abort(self) -> None:
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.abort()

    def _expect_close(self) -> None:
        if self._close_timer is None:
            self._close_timer = self.loop.call_later(self.close_timeout, self.abort)

    def _flush(self) -> None:
        offload = self._offload
        for data in self.protocol.data_to_send():
            if not data:  # end of stream: hand the socket back, then half-close it
                self._take_back()
                if self._tls is not None and not self.lost.done() and not self.transport.is_closing():
                    self.transport.write(self._tls.close_notify())
                if self.transport.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        self.transport.write_eof()
                else:
                    self.transport.close()
                offload = None
                continue
            if offload is None:
                self._write(data)
                continue
            if data[0] & 0x0F == _OPCODE_CLOSE:
                offload.end_data()
            status = offload.write(data)
            if status == -2:  # unbound underneath us (the media port was detached): write it ourselves
                self._offload = offload = None
                self._write(data)
            elif status != 0:  # the socket failed: the read side reports the loss
                self._take_back()
                self.transport.abort()
                return

    def _write(self, data: bytes) -> None:
        """Write ``data`` through the transport, sealed first over the native TLS engine (none after the connection
        is lost: the engine is gone with it)."""
        tls = self._tls
        if tls is None:
            self.transport.write(data)
        elif not self.lost.done():
            self.transport.write(tls.seal(data))

    def offload(self, offload: WriteOffload | None) -> bool:
        """Route every write through ``offload`` (bound to the socket now), or (None) take the socket back."""
        if offload is None:
            self._take_back()
            return True
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if (
            self._offload is not None
            or sock is None
            or transport.get_extra_info("sslcontext") is not None
            or transport.is_closing()
            or transport.get_write_buffer_size()  # what asyncio still holds must go out first
            or self.protocol.state is not State.OPEN
        ):
            return False
        tls = self._tls
        if not offload.bind(sock.fileno(), None if tls is None else (tls.seal_fn, tls.handle)):
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

    # -- reading on a beat

    def gate(self, on: bool, beats: Beats | None = None) -> None:
        """Gate reading to the beat: the reader in C of ``beats`` (the loop's metronome) reads the socket with every
        other (:mod:`bridge.realtime.readset`), else :meth:`beat`. Not over asyncio's TLS (the fallback): its
        transport reads the socket itself."""
        sock = self.transport.get_extra_info("socket")
        if on and not self.gated and sock is not None and self.transport.get_extra_info("sslcontext") is None:
            self._fd = sock.fileno()
            self.gated = True
            if not self._read_by_set(beats):
                self._ready = select.poll()
                self._ready.register(self._fd, select.POLLIN)
            if not self.transport.is_closing():
                self.transport.pause_reading()  # from now on the beat asks first
                self._read_paused = True
        elif not on and self.gated:
            self._unread()
            self.gated, self._ready = False, None
            self._resume()

    def beat(self) -> None:
        """Read what arrived, if anything did, now: the socket is read here and the bytes handed to the protocol
        as the transport would (its reader stays out of the selector: registering it for one read and taking it
        out again cost two ``epoll_ctl`` and the selector's bookkeeping per beat). An end of stream or an error
        is left to the transport: it is resumed and meets them on its own read."""
        if self._ready is None or not self._ready.poll(0) or self.transport.is_closing():
            return
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


async def connect(
    url: str, headers: Mapping[str, str], on_message: OnMessage, options: SocketOptions
) -> RealtimeSocket:
    """Open a :class:`RealtimeSocket` to ``url`` (TCP, the proxy if the environment names one, TLS for ``wss://``,
    the handshake), all within ``open_timeout``. Raises ``websockets``' ``InvalidURI``, ``InvalidStatus`` (the
    server refused the upgrade), ``InvalidHandshake``/``InvalidProxy``, ``TimeoutError`` or ``OSError``, as
    ``websockets.connect`` does."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    sock = RealtimeSocket(uri, headers, on_message, options)
    engine = native_tls(uri.host) if uri.secure else None
    if engine is not None:
        sock.use_tls(engine)
    tls = ssl.create_default_context() if uri.secure and engine is None else None
    try:
        async with asyncio.timeout(options.open_timeout):
            proxy = proxy_for(uri)
            if proxy is None:
                await loop.create_connection(
                    lambda: sock, uri.host, uri.port, ssl=tls, server_hostname=uri.host if tls else None
                )
            else:
                transport = await _tunnel(proxy, uri)
                transport.set_protocol(sock)
                if tls is not None:
                    upgraded = await loop.start_tls(transport, sock, tls, server_hostname=uri.host)
                    assert upgraded is not None
                    transport = upgraded
                sock.connection_made(transport)
            await sock.opened
    except BaseException:
        # Nobody waits for the handshake's answer any more (a cancelled opening: a caller who hung up while it
        # rang). Settle it now: else the abort's connection_lost sets an exception on it that nobody retrieves
        # ("Future exception was never retrieved", with a traceback, when it is collected).
        if not sock.opened.done():
            sock.opened.cancel()
        sock.abort()
        if engine is not None:  # never connected, or lost: its C state goes now (closing twice is nothing)
            engine.close()
        raise
    return sock


def native_tls(host: str) -> NativeTls | None:
    """A TLS engine for ``host`` on the native one (:mod:`bridge.realtime.tls_native`), verifying as
    ``ssl.create_default_context()`` does (the peer's chain against the default CA paths, which ``SSL_CERT_FILE``
    and ``SSL_CERT_DIR`` name, and its name); None where the engine is not available (asyncio's TLS then)."""
    if tls_native.load() is None:
        return None
    paths = ssl.get_default_verify_paths()
    try:
        return NativeTls(host, cafile=paths.cafile, capath=paths.capath)
    except (OSError, ValueError) as exc:
        log.warning("native TLS engine not made for %s (%s): asyncio's TLS instead", host, exc)
        return None


# -- the environment's proxy, as websockets.connect finds it (RFC 6455's "Proxy Usage")


def proxy_for(uri: WebSocketURI) -> str | None:
    """The proxy the environment names for ``uri`` (``wss_proxy``/``ws_proxy``, ``https_proxy``, ``http_proxy``,
    minus ``no_proxy``), None for a direct connection. Raises ``InvalidProxy`` for a SOCKS proxy."""
    if urllib.request.proxy_bypass(f"{uri.host}:{uri.port}"):
        return None
    proxies = urllib.request.getproxies()
    for scheme in ("wss", "socks", "https") if uri.secure else ("ws", "socks", "https", "http"):
        proxy = proxies.get(scheme)
        if proxy is None:
            continue
        if scheme == "socks" or not proxy.startswith(("http://", "https://")):
            raise InvalidProxy(_public(proxy), "only HTTP(S) proxies are supported for the Realtime socket")
        return proxy
    return None


def _public(proxy: str) -> str:
    """The proxy's URL without its credentials (for messages)."""
    parts = urllib.parse.urlsplit(proxy)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class _Tunnel(asyncio.Protocol):
    """``CONNECT host:port`` through an HTTP proxy; :attr:`answer` resolves on its 2xx."""

    def __init__(self, request: bytes, proxy: str) -> None:
        self.request, self.proxy = request, proxy
        self.head = bytearray()
        self.answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # an opening cancelled inside create_connection never awaits it: its exception is not news then
        self.answer.add_done_callback(lambda f: f.cancelled() or f.exception())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if self.answer.done() or (end < 0 and len(self.head) < 65536):
            return
        status = bytes(self.head[: self.head.find(b"\r\n")]).decode("latin-1")
        parts = status.split(" ", 2)
        if end >= 0 and len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 300:
            self.answer.set_result(None)
        else:
            self.answer.set_exception(InvalidProxy(self.proxy, f"CONNECT answered {status[:120]!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionError(f"proxy {self.proxy} closed the connection: {exc!r}"))


async def _tunnel(proxy: str, uri: WebSocketURI) -> asyncio.Transport:
    parts = urllib.parse.urlsplit(proxy)
    if not parts.hostname:
        raise InvalidProxy(_public(proxy), "names no host")
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    lines = [f"CONNECT {host}:{uri.port} HTTP/1.1", f"Host: {host}:{uri.port}", f"User-Agent: {USER_AGENT}"]
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        lines.append("Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    transport, tunnel = await asyncio.get_running_loop().create_connection(
        lambda: _Tunnel(request, _public(proxy)),
        parts.hostname,
        parts.port or (443 if tls else 80),
        ssl=tls,
    )
    try:
        await tunnel.answer
    except BaseException:
        transport.close()
        raise
    assert isinstance(transport, asyncio.Transport)
    return transport
