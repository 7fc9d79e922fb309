"""The Realtime socket on ``websockets``' own asyncio client, for a ``websockets`` that lacks part of the sans-I/O
API :class:`~bridge.realtime.ws_fastpath.RealtimeSocket` stands on (:func:`~bridge.realtime.ws_fastpath.missing_api`).

The same face as ``RealtimeSocket``, on public calls only (``connect``, ``send``, ``recv``, ``close``): a receive
task hands each message to ``on_message``; sends always wait their turn (``write_now`` is always False); no
reading on the beat and no offloaded writes (``gate`` and ``beat`` do nothing, ``offload`` refuses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.protocol import State

from bridge.audio import AudioConverter
from bridge.audio.playout_native import CSink
from bridge.realtime.downlink import OnSunk
from bridge.realtime.readset import Beats
from bridge.realtime.ws_fastpath import OnAudio, OnMessage, SocketClosed, SocketOptions, WriteOffload

log = logging.getLogger("bridge.realtime")


class PlainSocket:
    fast = False
    gated = False
    offloaded = False
    read_in_c = False

    def __init__(self, conn: ClientConnection, on_message: OnMessage, keepalive: bool) -> None:
        self.conn = conn
        self._keepalive = keepalive  # websockets pings, and closes the connection (1011) when a pong is overdue
        self.on_message = on_message
        self.close_rcvd: Close | None = None
        self.failure: Exception | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(), name="realtime-plain-recv")

    async def _read(self) -> None:
        try:
            while True:
                message = await self.conn.recv()
                self.on_message(message.encode() if isinstance(message, str) else message)
        except ConnectionClosed as exc:
            self.close_rcvd = exc.rcvd
        except Exception as exc:  # the handler raised: the session ends, classified
            log.exception("realtime message handler failed")
            self.failure = exc
            await self.conn.close(code=1011, reason="internal error")
        finally:
            await self.conn.wait_closed()
            if not self.lost.done():
                self.lost.set_result(None)

    @property
    def keepalive_at(self) -> float:
        """Now while the connection is open with websockets' keepalive on: websockets closes it when the server's
        pong is late, so an open one has heard the server within the last ping interval and timeout."""
        return time.monotonic() if self._keepalive and self.conn.state is State.OPEN else float("-inf")

    def write_now(self, data: bytes) -> bool:
        return False

    async def send(self, data: bytes) -> None:
        try:
            await self.conn.send(data.decode())
        except ConnectionClosed:
            raise SocketClosed from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.conn.close(code=code, reason=reason)
        await asyncio.shield(self.lost)

    def gate(self, on: bool, beats: Beats | None = None) -> None:
        pass

    def beat(self) -> None:
        pass

    def offload(self, offload: WriteOffload | None) -> bool:
        return offload is None

    def decode_audio(self, converter: AudioConverter | None, on_audio: OnAudio | None, items: bool = True) -> bool:
        return converter is None  # websockets' own client parses every frame itself: no C downlink

    def sink_audio(self, sink: CSink | None, on_sunk: OnSunk | None) -> bool:
        return sink is None  # no C downlink, no sink

    def settle_audio(self) -> None:
        pass


async def connect(url: str, headers: Mapping[str, str], on_message: OnMessage, options: SocketOptions) -> PlainSocket:
    """As :func:`bridge.realtime.ws_fastpath.connect`, with ``websockets.connect``."""
    conn = await websockets.connect(
        url,
        additional_headers=dict(headers),
        open_timeout=options.open_timeout,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        max_size=options.max_size,
        compression=None,  # audio frames do not compress; deflate costs CPU per frame
        logger=options.logger,
    )
    return PlainSocket(conn, on_message, keepalive=options.ping_interval is not None)
