"""The emulator's WebSocket loop: one per connection, feeding its sans-I/O session the client's frames, control
requests and the clock, and carrying out the session's actions.

Frames and deadlines that find the loop idle are handled where they arrive (see :meth:`SocketPump.offer`);
everything else goes through the connection's queue to its pump task, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType

from bridge.emulator.actions import Abort, Action, Close, Send, SendRaw
from bridge.emulator.fastread import FastReadResponse
from bridge.emulator.live import LiveSession
from bridge.emulator.session import EmulatorSession

log = logging.getLogger("bridge.emulator")


class Item(enum.Enum):
    """What a connection's pump is handed (with its data)."""

    FRAME = enum.auto()  # a client frame (text or bytes)
    TICK = enum.auto()  # a deadline is due (None)
    ACTIONS = enum.auto()  # actions produced on the spot, to be awaited by the pump
    INJECT = enum.auto()  # a fault from the control API: (Fault, options)
    FAIL = enum.auto()  # an exception raised outside the pump, to raise in it
    STOP = enum.auto()  # the server stops (None)
    EOF = enum.auto()  # the client closed or the connection broke (the close code)


@dataclass
class Connection:
    session: EmulatorSession | LiveSession
    ws: FastReadResponse
    transport: asyncio.Transport | None
    queue: asyncio.Queue[tuple[Item, Any]] = field(default_factory=asyncio.Queue)
    idle: bool = False  # the pump awaits an empty queue: nothing is ahead of a new frame or deadline
    last_out: float = 0.0  # when something was last sent (idle pings)
    alarm: _Alarm = field(init=False)  # set by the pump

    def put(self, item: tuple[Item, Any]) -> None:
        """Queue ``item`` for the pump; what arrives after it queues behind it."""
        self.idle = False
        self.queue.put_nowait(item)


class SocketPump:
    """Runs connections' sessions; ``ping_interval_s`` > 0 pings a connection that has been quiet that long."""

    def __init__(self, ping_interval_s: float) -> None:
        self.ping_interval_s = ping_interval_s

    async def _reader(self, live: Connection) -> None:
        """What aiohttp must see itself (pings, the close handshake, errors, eof) and, when the parser cannot hand
        them over directly (``fastread``: something is ahead of them, or the fallback path), client frames."""
        try:
            async for msg in live.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.offer(live, Item.FRAME, msg.data)
        finally:
            live.put((Item.EOF, live.ws.close_code))

    def _wake(self, live: Connection) -> float | None:
        """When the session next wants the clock: its next deadline, or the next idle ping."""
        deadline = live.session.next_deadline()
        if self.ping_interval_s <= 0:
            return deadline
        ping = live.last_out + self.ping_interval_s
        return ping if deadline is None or ping < deadline else deadline

    def offer(self, live: Connection, kind: Item, data: Any) -> None:
        """A client frame (``kind`` FRAME) or a due deadline (TICK), handled on the spot when it can be, else
        queued for the pump.

        On the spot (a frame from aiohttp's parser via ``fastread`` or in the reader task, a tick in the alarm's
        timer callback) when the pump is idle and the socket has no backlog: the session handles it and its
        events go out in one transport write. Through the pump, each frame and each tick cost a queue hop (a
        future and a task switch) and each event a ``send_str``: on the spot, a load like ``bench calls``' (48
        sessions, 50 appends and 20 deltas a second each) costs the emulator about 15 % less CPU. Anything that
        must be awaited (a close, a ping, a backlog to drain) takes the pump's path, in order: the pump was idle,
        and once something is queued what follows queues behind it."""
        ws, transport = live.ws, live.transport
        if (
            not live.idle
            or transport is None
            or ws.closed
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            live.put((kind, data))
            return
        loop = asyncio.get_running_loop()
        session, now = live.session, loop.time()
        if self.ping_interval_s > 0 and now >= live.last_out + self.ping_interval_s:
            live.put((kind, data))  # the pump pings first
            return
        actions = session.advance(now) if kind is Item.TICK else session.receive(data, now)
        if actions:
            live.last_out = loop.time()
            frames = _frames(actions)
            if frames is None:  # a close or an abort
                live.put((Item.ACTIONS, actions))
                return
            transport.write(frames)
        live.alarm.arm(self._wake(live))

    def _tick(self, live: Connection) -> None:
        """The alarm's callback."""
        self._offer_outside(live, Item.TICK, None)

    def _frame(self, live: Connection, data: str | bytes) -> None:
        """``fastread``'s sink: a client frame, from inside aiohttp's ``data_received``."""
        self._offer_outside(live, Item.FRAME, data)

    def _offer_outside(self, live: Connection, kind: Item, data: Any) -> None:
        """``offer`` from a callback outside the session's tasks. An exception here would only be logged by the
        loop (or, from the parser, fail the connection as a protocol error) and leave the session waiting: the pump
        raises it instead, as it would have had it handled the item itself."""
        try:
            self.offer(live, kind, data)
        except Exception as exc:
            live.put((Item.FAIL, exc))

    async def run(self, live: Connection, actions: list[Action]) -> None:
        """Carry out ``actions`` (the session's opening), then serve the connection until its session is closed."""
        loop = asyncio.get_running_loop()
        session, record = live.session, live.session.record
        await self.perform(live, actions)
        if session.closed:
            return
        live.last_out = loop.time()
        alarm = live.alarm = _Alarm(loop, lambda: self._tick(live))
        live.ws.attach(lambda data: self._frame(live, data))  # False: the reader task takes every frame
        reader = asyncio.create_task(self._reader(live))
        try:
            while not session.closed:
                wake = self._wake(live)
                if wake is not None and wake <= loop.time():
                    item = _TICK  # a due deadline goes before anything queued
                else:
                    alarm.arm(wake)
                    if live.queue.empty():
                        live.idle = True
                    item = await live.queue.get()
                kind, data = item
                now = loop.time()
                if kind is Item.TICK:
                    if self.ping_interval_s > 0 and now >= live.last_out + self.ping_interval_s:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await live.ws.ping()
                        live.last_out = now
                    actions = session.advance(now)
                elif kind is Item.FRAME:
                    actions = session.receive(data, now)
                elif kind is Item.ACTIONS:  # produced on the spot, to be awaited here
                    actions = data
                elif kind is Item.INJECT:
                    fault, opts = data
                    actions = session.inject(fault, now, **opts)
                elif kind is Item.FAIL:
                    raise data
                elif kind is Item.STOP:
                    actions = [Close(1001, "emulator stopping")]
                    record.closed, record.close_code, record.close_reason = True, 1001, "emulator stopping"
                else:  # eof: the client closed or the connection broke
                    record.closed, record.close_code = True, data
                    return
                if actions:
                    live.last_out = loop.time()
                    await self.perform(live, actions)
                if kind is Item.STOP:
                    return
        finally:
            live.idle = False
            live.ws.detach()
            alarm.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def perform(self, live: Connection, actions: Sequence[Action]) -> None:
        ws = live.ws
        for action in actions:
            try:
                if isinstance(action, Send):
                    await ws.send_str(orjson.dumps(action.event).decode())
                elif isinstance(action, SendRaw):
                    await ws.send_str(action.text)
                elif isinstance(action, Close):
                    await ws.close(code=action.code, message=action.reason.encode()[:123])
                elif isinstance(action, Abort):
                    if live.transport is not None:
                        live.transport.abort()
                    return
            except (ConnectionError, RuntimeError) as exc:  # the client went away mid-send
                log.debug("emulator: send failed: %s", exc)
                live.session.closed = True
                return


_TICK: tuple[Item, Any] = (Item.TICK, None)

_PACK_LEN1, _PACK_LEN2, _PACK_LEN3 = struct.Struct("!BB").pack, struct.Struct("!BBH").pack, struct.Struct("!BBQ").pack


def _frames(actions: Sequence[Action]) -> bytes | None:
    """The events as WebSocket text frames, for one transport write; None if there is a close or an abort.

    aiohttp's ``send_str`` is a coroutine per frame and a write per frame; these are the bytes it would send for
    each: FIN, opcode 1, no mask (a server's frames are never masked) and no compression (the emulator
    negotiates none) (RFC 6455 §5.2)."""
    parts: list[bytes] = []
    for action in actions:
        if type(action) is Send:
            payload = orjson.dumps(action.event)
        elif type(action) is SendRaw:
            payload = action.text.encode()
        else:
            return None
        n = len(payload)
        parts.append(
            _PACK_LEN1(0x81, n) if n < 126 else _PACK_LEN2(0x81, 126, n) if n < 65536 else _PACK_LEN3(0x81, 127, n)
        )
        parts.append(payload)
    return b"".join(parts)


class _Alarm:
    """A session's next wake-up (its next deadline or idle ping) as a timer that offers a tick (``offer``).

    One timer handle per session, re-armed only when the time moves: ``asyncio.timeout`` (or ``wait_for``)
    around every queue read cost more than the emulator's own work per append in ``bench calls``. A tick for a
    time that has since moved only makes the session check for due work (``advance`` is idempotent)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ring: Callable[[], None]) -> None:
        self._loop, self._ring = loop, ring
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def arm(self, at: float | None) -> None:
        if at != self._at:
            self.cancel()
            if at is not None:
                self._handle = self._loop.call_at(at, self._fire)
                self._at = at

    def _fire(self) -> None:
        self._handle, self._at = None, None  # a tick for the same time again must re-arm
        self._ring()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at = None, None
