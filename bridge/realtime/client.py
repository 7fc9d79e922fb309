"""A thin asyncio pump between :class:`RealtimeProtocol` and a ``websockets`` connection.

All protocol knowledge lives in ``protocol.py`` and the dialect tables; this module only moves text frames. It runs a
send queue and a receive loop, lets ``websockets`` ping for keepalive, applies connect and idle timeouts, and turns
every way a connection can end into one :class:`~bridge.events.Closed` event, classified (network, auth, protocol,
server) with a retryable flag: the socket's close, or a dialect's own end-of-session event when it has one (Live's
``session.closed``), whichever comes first. It never raises into the call session after :meth:`connect` succeeds.

The socket is :class:`~bridge.realtime.ws_fastpath.RealtimeSocket`: ``websockets``' sans-I/O protocol over the
bridge's own transport, with the fast paths: server messages decoded on the spot, the socket read once per media beat
(:meth:`RealtimeClient.read_on_beat`), and frames written on the caller's stack or by C code on the media clock
thread (:meth:`RealtimeClient.offload_writes`). Without the sans-I/O API it needs it is ``websockets``' own client
(:mod:`bridge.realtime.ws_plain`), and ``serve`` and ``/healthz`` say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import orjson
import websockets
from websockets.exceptions import InvalidStatus, InvalidURI

from bridge import events as ev
from bridge.audio import AudioConverter
from bridge.audio.playout_native import CSink
from bridge.audio.wire import AppendTemplate
from bridge.errors import ConnectError, ModelRefused, classify_close, classify_http_status, is_refusal, redact
from bridge.realtime import ws_fastpath, ws_plain
from bridge.realtime.credentials import fingerprint
from bridge.realtime.dialects import Dialect
from bridge.realtime.downlink import AudioRun, audio_types, commuting_types
from bridge.realtime.profile import AgentProfile
from bridge.realtime.protocol import RealtimeProtocol
from bridge.realtime.readset import Beats
from bridge.realtime.ws_fastpath import Socket, SocketClosed, SocketOptions, WriteOffload

log = logging.getLogger("bridge.realtime")

CredentialSource = str | Callable[[], Awaitable[str]]


class _RedactSecrets(logging.Filter):
    """Rewrites every record of the websockets logger through :func:`redact` (keys, bearer values, ek_ secrets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


_WS_LOG = logging.getLogger("bridge.realtime.websockets")
_WS_LOG.addFilter(_RedactSecrets())

_STOP = object()
# What a handshake hands to its caller on the way: the session's and the conversation's ids, the configuration.
SESSION_EVENTS = (ev.SessionReady, ev.SessionConfigured, ev.ConversationReady)


@runtime_checkable
class AppendFraming(Protocol):
    """An offload that writes the caller's audio itself frames it as the dialect's audio append: it is given the
    template before it is bound (:meth:`RealtimeClient.offload_writes`)."""

    def set_append(self, template: AppendTemplate) -> bool: ...  # False: it cannot take this template


@dataclass(frozen=True)
class ClientSettings:
    connect_timeout_s: float = 10.0
    # no server frame at all (a message, a pong to our ping, a ping) for this long: the socket is dead. A session
    # with nothing to say (a caller who holds or says nothing) answers the pings, and stays
    idle_timeout_s: float = 120.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    max_frame_bytes: int = 16 * 1024 * 1024  # an oversized delta is the server's fault, not a crash
    send_queue_frames: int = 2000  # 40 s of audio appends
    goodbye_timeout_s: float = 2.0  # close(): how long a dialect's closing command waits for its answer


class RealtimeClient:
    def __init__(
        self,
        dialect: Dialect,
        base_url: str,
        credential: CredentialSource,
        *,
        model: str | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        self.dialect = dialect
        self.protocol = RealtimeProtocol(dialect)
        self.url = dialect.url(base_url, model)
        self.model = model  # None: the dialect's default (or, GPT-Live, the one the opening command names)
        self.settings = settings or ClientSettings()
        self._credential = credential
        self._secret = ""
        self.credential_fingerprint: str | None = None  # names the secret a server refused, never the secret
        self._ws: Socket | None = None
        self._send_q: asyncio.Queue[object] = asyncio.Queue(self.settings.send_queue_frames)
        self._events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self._sink: Callable[[ev.Event], None] | None = None  # deliver_to: events handed over as decoded
        self.sink_errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.closed: ev.Closed | None = None
        self.last_send_latency_s = 0.0  # socket write time of the last frame (uplink segment)
        self.dropped_sends = 0
        self.direct_sends = 0
        self._in_flight = False
        self._last_recv = time.monotonic()
        self._idle_expired = False
        self._ended = asyncio.Event()  # a Closed went out (decoded, or the socket's)
        self.deltas_in_c = 0  # the model's audio deltas the socket's C downlink decoded (decode_audio; sunk too)
        self.deltas_sunk = 0  # of them, those it pushed into the call's playout ring itself (sink_audio)

    async def _resolve_credential(self) -> str:
        if isinstance(self._credential, str):
            return self._credential
        return await self._credential()

    async def connect(self) -> None:
        """Open the socket. Raises :class:`ConnectError` (classified, credential redacted) on failure."""
        self._secret = await self._resolve_credential()
        self.credential_fingerprint = fingerprint(self._secret)
        opener = ws_plain.connect if ws_fastpath.MISSING else ws_fastpath.connect
        try:
            ws: Socket = await opener(
                self.url,
                self.dialect.headers(self._secret),
                self._received,  # every server message, on the spot
                SocketOptions(
                    open_timeout=self.settings.connect_timeout_s,
                    max_size=self.settings.max_frame_bytes,
                    ping_interval=self.settings.ping_interval_s,
                    ping_timeout=self.settings.ping_timeout_s,
                    logger=_WS_LOG,  # websockets logs handshake headers (Authorization) at DEBUG: redacted
                    audio_events=audio_types(self.dialect.server_events),
                    commuting_events=commuting_types(self.dialect.server_events),
                ),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            cls, retryable = classify_http_status(status)
            raise ConnectError(
                cls, f"handshake refused: HTTP {status}", retryable=retryable, code=str(status)
            ) from None
        except (TimeoutError, OSError) as exc:
            raise ConnectError(
                ev.ErrorClass.NETWORK, redact(f"cannot connect: {exc!r}", self._secret), retryable=True
            ) from None
        except InvalidURI as exc:
            raise ConnectError(ev.ErrorClass.PROTOCOL, f"bad realtime URL: {exc}", retryable=False) from None
        except websockets.exceptions.WebSocketException as exc:
            raise ConnectError(
                ev.ErrorClass.PROTOCOL, redact(f"handshake failed: {exc!r}", self._secret), retryable=True
            ) from None
        self._ws = ws
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="realtime-send"),
            asyncio.create_task(self._recv_loop(), name="realtime-recv"),
            asyncio.create_task(self._idle_watch(), name="realtime-idle"),
        ]

    # -- sending
    def send(self, command: ev.Command) -> None:
        """Queue a command. Never blocks; if the queue is full (socket stalled) the frame is dropped and counted.
        A command the dialect does not have raises :class:`~bridge.realtime.dialects.UnsupportedCommand`."""
        if self.closed is not None:
            return
        for frame in self.protocol.encode(command):
            self._send_frame(frame)

    def _send_frame(self, frame: str) -> None:
        if self._send_q.empty() and not self._in_flight and self._write_now(frame):
            return
        try:
            self._send_q.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped_sends += 1

    def _write_now(self, frame: str) -> bool:
        """The direct path (:meth:`BeatConnection.write_now`). False: the caller queues the frame instead."""
        ws = self._ws
        if ws is None:
            return False
        t0 = time.perf_counter()
        try:
            if not ws.write_now(frame.encode()):
                return False
        except Exception:  # OSError on a dying socket: the receive loop reports the close
            return False
        self.last_send_latency_s = time.perf_counter() - t0
        self.direct_sends += 1
        return True

    async def _send_loop(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            while True:
                frame = await self._send_q.get()
                if frame is _STOP:
                    return
                t0 = time.perf_counter()
                self._in_flight = True
                try:
                    await ws.send(str(frame).encode())  # frames are str; _STOP is handled above
                finally:
                    self._in_flight = False
                self.last_send_latency_s = time.perf_counter() - t0
        except SocketClosed:
            return  # the receive loop reports the close

    # -- receiving
    async def _idle_watch(self) -> None:
        """One timer for the whole session, not one per frame: a per-frame ``asyncio.timeout`` leaves a cancelled
        timer handle in the loop's heap for every frame, for the length of the timeout."""
        assert self._ws is not None
        idle = self.settings.idle_timeout_s
        while self.closed is None:
            await asyncio.sleep(min(idle / 4, 5.0))
            heard = max(self._last_recv, self._ws.keepalive_at)  # a pong is a server frame: idle is not dead
            if time.monotonic() - heard > idle and self.closed is None:
                self._idle_expired = True
                await self._ws.close(code=1001, reason="idle timeout")
                return

    async def _recv_loop(self) -> None:
        """Waits for the connection's end (the socket hands each message to :meth:`_received` itself) and says how
        it ended: the server's close frame, a keepalive or idle timeout, a failure, or a lost connection."""
        assert self._ws is not None
        ws = self._ws
        await asyncio.shield(ws.lost)
        rcvd = ws.close_rcvd
        code = rcvd.code if rcvd is not None else None
        cls, retryable = classify_close(code)
        if self._closing:
            cls, retryable = None, False
        if self._idle_expired:
            cls, retryable = ev.ErrorClass.NETWORK, True
        reason = redact(rcvd.reason if rcvd is not None else "connection lost", self._secret)
        if self._idle_expired:
            reason = "idle timeout: no server frame"
        closed = ev.Closed(error_class=cls, code=code, reason=reason or "closed", retryable=retryable)
        if ws.failure is not None:  # the message handler raised: never a silent end
            closed = ev.Closed(ev.ErrorClass.PROTOCOL, None, redact(repr(ws.failure), self._secret), retryable=True)
        self._send_q.put_nowait(_STOP) if not self._send_q.full() else None
        for task in self._tasks:  # the idle watch has nothing left to watch (unless it is the one closing)
            if task.get_name() == "realtime-idle" and not self._idle_expired:
                task.cancel()
        if self.closed is None:  # else the service already said how the session ended
            self.closed = closed
            self._ended.set()
            self._emit(closed)

    def _received(self, frame: str | bytes | bytearray | memoryview) -> None:
        """One server message, handed over by the socket from the read that brought it."""
        self._last_recv = time.monotonic()
        for event in self.protocol.decode(frame):
            if isinstance(event, ev.Closed):
                if self.closed is not None:
                    continue
                self.closed = event
                self._ended.set()
            self._emit(event)

    def _received_audio(self, run: AudioRun) -> None:
        """Audio deltas the C downlink decoded from one read (:meth:`decode_audio`): one chunk, already 8 kHz."""
        self._last_recv = time.monotonic()
        self.deltas_in_c += run.deltas
        self.protocol.decoded_audio(run.deltas, run.event_id)
        self._emit(ev.AudioChunk(run.response_id, run.item_id, run.pcm, decoded=True))

    def decode_audio(self, converter: AudioConverter | None) -> bool:
        """Have the socket's C downlink decode the model's audio deltas with ``converter`` (the call's downlink
        converter, whose C form it runs on its own state) into 8 kHz chunks (:mod:`bridge.realtime.downlink`);
        None: the dialect's decoder and the converter in Python again. False where it cannot (the events then
        come as before)."""
        ws = self._ws
        if ws is None:
            return converter is None
        if converter is None:
            return ws.decode_audio(None, None, True)
        if self._closing:
            return False
        items = not self.dialect.capabilities.continuous_output  # one stream: never reset, no ids
        return ws.decode_audio(converter, self._received_audio, items)

    def sink_audio(self, sink: CSink | None) -> bool:
        """Have the socket's C downlink push the later runs of ``sink``'s item into the call's C playout ring itself
        (:meth:`~bridge.realtime.downlink.DownlinkScanner.sink`: no event for them); None: they come as chunks again.
        Never for a continuous output stream (the call gates it by level) nor while closing. Their deltas and last
        event id are counted as the chunks' are, when the next piece is handed over or at :meth:`settle_audio`."""
        ws = self._ws
        if sink is None:
            return ws.sink_audio(None, None) if ws is not None else True
        if ws is None or self._closing or self.dialect.capabilities.continuous_output:
            return False
        return ws.sink_audio(sink, self._sunk)

    def settle_audio(self) -> None:
        """Count what the sink took so far (before reading :attr:`deltas_in_c` or the protocol's counters)."""
        if self._ws is not None:
            self._ws.settle_audio()

    def _sunk(self, deltas: int, event_id: str | None) -> None:
        self.deltas_in_c += deltas
        self.deltas_sunk += deltas
        self.protocol.decoded_audio(deltas, event_id)

    def _emit(self, event: ev.Event) -> None:
        sink = self._sink
        if sink is None:
            self._events.put_nowait(event)
            return
        try:
            sink(event)
        except Exception:  # a bug in the sink must not end the session: the receive loop goes on
            self.sink_errors += 1
            if self.sink_errors <= 10 or self.sink_errors % 1000 == 0:
                log.exception("event sink raised on %s (%d so far)", type(event).__name__, self.sink_errors)

    def deliver_to(self, sink: Callable[[ev.Event], None] | None) -> None:
        """Hand every event to ``sink`` as it is decoded, on the loop, instead of queueing it for :meth:`events`
        (a call's hot path: one task switch less per event). Events already queued go first, in order. None
        queues them again."""
        self._sink = sink
        if sink is not None:
            while not self._events.empty():
                self._emit(self._events.get_nowait())

    def read_on_beat(self, on: bool, beats: Beats | None = None) -> bool:
        """Gate reading to the beat (a ticking call session), or read as frames land again (the default). True if
        the reader in C of ``beats`` (the loop's metronome) reads it on every beat from now on
        (:mod:`bridge.realtime.readset`): :meth:`beat` has nothing to do then."""
        ws = self._ws
        if ws is None:
            return False
        ws.gate(on and not self._closing, beats)
        return ws.read_in_c

    def offload_writes(self, offload: WriteOffload | None) -> bool:
        """Hand the socket's writes to ``offload`` (see the module doc); False if this connection cannot (asyncio's
        TLS, closing, not open, or asyncio still holds unsent bytes). None takes them back."""
        ws = self._ws
        if offload is None:
            if ws is not None:
                ws.offload(None)
            return True
        if ws is None or self._closing:
            return False
        if isinstance(offload, AppendFraming) and not offload.set_append(self.dialect.append):
            return False
        return ws.offload(offload)

    @property
    def offloaded(self) -> bool:
        return self._ws is not None and self._ws.offloaded

    def beat(self) -> None:
        """The tick: read what the server sent since the last one (no-op unless gated)."""
        ws = self._ws
        if ws is not None and ws.gated:
            ws.beat()

    async def open(
        self,
        profile: AgentProfile,
        on_event: Callable[[ev.Event], Awaitable[None]] | None = None,
        history: Sequence[ev.AddText] = (),
    ) -> None:
        """The dialect's handshake on a connected client: send the command that opens the session and wait for the
        event that confirms it (beta and GA: ``session.update``, then ``session.updated``; Live: ``session.start``,
        then ``session.started``), so the first caller audio goes out in the configured format. ``history`` is the
        text a continued call starts from (a rollover's or a reconnect's summary): items after the configuration in
        Realtime, ``session.start``'s ``input[]`` in Live. The session's own events on the way (session and
        conversation ids, the confirmation itself) go to ``on_event``. Raises :class:`ConnectError` if the service
        answers with an error (an expired or refused credential is AUTH, retryable with a fresh one; a bad config
        is not) or the connection ends first. Leaves closing the client to the caller."""
        handshake = self.dialect.handshake
        self.send(handshake.opening(profile, tuple(history)))
        while True:
            event = await self.next_event()
            if on_event is not None and isinstance(event, SESSION_EVENTS):
                await on_event(event)
            if isinstance(event, handshake.confirmation):
                return
            if isinstance(event, ev.ErrorEvent) and is_refusal(event.code):
                raise ModelRefused(self.model or profile.model or self.dialect.default_model, event.code, event.message)
            if isinstance(event, ev.ErrorEvent):
                raise ConnectError(event.error_class, f"session refused: {event.code}", retryable=event.retryable)
            if isinstance(event, ev.Closed):
                raise ConnectError(event.error_class or ev.ErrorClass.NETWORK, event.reason, retryable=event.retryable)

    async def next_event(self) -> ev.Event:
        return await self._events.get()

    def pending_events(self) -> int:
        return self._events.qsize()

    async def events(self) -> AsyncIterator[ev.Event]:
        """Every event until (and including) the :class:`Closed` event."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, ev.Closed):
                return

    async def close(self, drain_timeout_s: float = 1.0) -> None:
        """End the session the dialect's way, send what is queued (up to ``drain_timeout_s``), close cleanly (1000)
        and wait for the pump tasks. A dialect with a closing command (Live: ``session.close``) gets it first, and
        its answer (``session.closed``, with the final usage: ``protocol.usage_seconds``) is awaited for up to
        ``settings.goodbye_timeout_s``; its events still reach the sink or the queue."""
        self._closing = True
        self.sink_audio(None)  # what the model still says comes as chunks
        self.read_on_beat(False)  # the close handshake is read as it lands
        closing = self.dialect.handshake.closing
        if closing is not None and self.closed is None and self._ws is not None:
            self._send_frame(orjson.dumps({"type": self.dialect.client_events[closing]}).decode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), self.settings.goodbye_timeout_s)
        if self._tasks and not self._tasks[0].done():
            with contextlib.suppress(asyncio.QueueFull):
                self._send_q.put_nowait(_STOP)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._tasks[0]), drain_timeout_s)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(code=1000), timeout=2.0)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.closed is None:
            self.closed = ev.Closed(None, 1000, "closed by bridge", retryable=False)
