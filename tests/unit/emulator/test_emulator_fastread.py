"""The emulator's fast read path (``bridge/emulator/fastread.py``): client data frames go from aiohttp's parser
straight to the session, while pings, the close handshake and anything queued behind them still take aiohttp's
queue and ``receive()``, in order. The live tests run on both paths (``fastread.ENABLED`` on and off) and drive a
raw WebSocket client, so that several frames leave in one write and reach the server's parser together."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.reader import WebSocketReader

from bridge.emulator import EmulatorServer, fastread
from bridge.emulator.websocket import Item
from bridge.realtime.dialects import GA

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
NO_VAD = {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}}


def frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455 §5.2): FIN, masked; an all-zero mask key leaves the payload as it is."""
    n = len(payload)
    head = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return head + b"\x00\x00\x00\x00" + payload


def text(event: dict[str, Any]) -> bytes:
    return frame(OP_TEXT, json.dumps(event).encode())


def pcm(i: int) -> bytes:
    """20 ms of 24 kHz PCM16, every sample ``i``: far below any VAD threshold, and tells the appends apart."""
    return struct.pack("<480h", *([i] * 480))


def append(i: int) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "event_id": f"a{i}", "audio": base64.b64encode(pcm(i)).decode()}


def item(name: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "event_id": f"c_{name}",
        "item": {"id": name, "type": "message", "role": "user", "content": [{"type": "input_text", "text": name}]},
    }


class RawClient:
    """A bare WebSocket client over a TCP stream: it sends prepared bytes in one write and reads frames raw."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: EmulatorServer) -> RawClient:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /v1/realtime?model={GA.default_model} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer sk-test\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (unmasked, unfragmented)."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), 5)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def until(self, pred: Callable[[int, bytes], bool]) -> list[tuple[int, bytes]]:
        """Frames up to and including the first that matches ``pred``."""
        got = []
        while True:
            got.append(await self.recv())
            if pred(*got[-1]):
                return got

    async def until_type(self, kind: str) -> list[dict[str, Any]]:
        frames = await self.until(lambda op, data: op == OP_TEXT and json.loads(data)["type"] == kind)
        return [json.loads(data) for op, data in frames if op == OP_TEXT]

    def close(self) -> None:
        self.writer.close()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@pytest.fixture(params=[True, False], ids=["fast", "fallback"])
def fast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(fastread, "ENABLED", request.param)
    return bool(request.param)


@pytest.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer("127.0.0.1", 0, ping_interval_s=0) as emu:
        yield emu


@pytest.fixture
def offers(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each client frame offered to a session: True if it came from inside a task (the reader), False if from
    a plain callback (aiohttp's ``data_received``, via the fast path)."""
    seen: list[bool] = []
    offer = server.pump.offer

    def recording(live: Any, kind: Item, data: Any) -> None:
        if kind is Item.FRAME:
            seen.append(asyncio.current_task() is not None)
        offer(live, kind, data)

    monkeypatch.setattr(server.pump, "offer", recording)
    return seen


async def connected(server: EmulatorServer, index: int = 0) -> tuple[RawClient, Any]:
    client = await RawClient.open(server)
    assert types(await client.until_type("session.created")) == ["session.created"]
    record = await server.wait_for_session(index)
    return client, server._live[record.id]


async def test_queue_hands_over_only_data_with_nothing_ahead() -> None:
    """The queue's rule, fed by aiohttp's (pinned, compiled) parser in one go: data messages go to the sink while
    the queue is empty and the reader waits; a ping, and everything behind it, is queued in order."""

    class Protocol:
        _reading_paused = False

        def pause_reading(self) -> None: ...

        def resume_reading(self) -> None: ...

    class Response:
        _waiting = True  # the reader task is parked in receive()

    assert fastread._FastQueue is not None, "the fast path is unavailable under the pinned aiohttp"
    queue = fastread._FastQueue(Protocol(), 2**16, loop=asyncio.get_running_loop())
    sunk: list[Any] = []
    response = Response()
    queue.ws, queue.sink = response, sunk.append
    parser = WebSocketReader(queue, 2**20, compress=False, decode_text=True)
    close = frame(OP_CLOSE, struct.pack("!H", 1000))
    parser.feed_data(frame(OP_TEXT, b"t1") + frame(OP_BINARY, b"b2") + frame(OP_PING, b"p") + text({}) + close)
    assert sunk == ["t1", b"b2"]
    queued = [await queue.read() for _ in range(3)]
    assert [(m.type, m.data) for m in queued] == [
        (WSMsgType.PING, b"p"),
        (WSMsgType.TEXT, "{}"),
        (WSMsgType.CLOSE, 1000),
    ]
    response._waiting = False  # the reader holds a message (answering a ping, say): data queues behind it
    parser.feed_data(frame(OP_TEXT, b"t3"))
    response._waiting = True
    parser.feed_data(frame(OP_TEXT, b"t4"))  # the queue is not empty
    assert sunk == ["t1", b"b2"]
    assert [(await queue.read()).data for _ in range(2)] == ["t3", "t4"]
    queue.ws, queue.sink = None, None
    parser.feed_data(frame(OP_TEXT, b"t5"))
    assert (await queue.read()).data == "t5"


async def test_live_session_reads_through_the_fast_path(fast: bool, server: EmulatorServer, offers: list[bool]) -> None:
    """Under the pinned aiohttp a live session's frames reach it from the parser, not the reader task (and from
    the reader task with the fast path off); the session answers them either way."""
    client, live = await connected(server)
    assert live.ws.fast is fast
    client.writer.write(text(NO_VAD) + text(item("i1")) + text(item("i2")))
    events = await client.until_type("conversation.item.done")
    events += await client.until_type("conversation.item.done")
    assert types(events) == ["session.updated", *["conversation.item.added", "conversation.item.done"] * 2]
    assert [e["item"]["id"] for e in events[1:]] == ["i1", "i1", "i2", "i2"]
    assert offers == [not fast] * 3
    client.close()


async def test_appends_in_order_with_a_ping_and_a_close_interleaved(
    fast: bool, server: EmulatorServer, offers: list[bool]
) -> None:
    """One write: appends and items, a ping, more, then a close. The ping gets its pong, every frame is handled in
    the order sent (audio, items, the record), the close handshake completes with the client's code recorded."""
    client, live = await connected(server)
    record = live.session.record
    before = [NO_VAD, item("i1"), *map(append, range(1, 6))]
    after = [item("i2"), *map(append, range(6, 11)), item("i3")]
    client.writer.write(
        b"".join(map(text, before))
        + frame(OP_PING, b"are you there")
        + b"".join(map(text, after))
        + frame(OP_CLOSE, struct.pack("!H", 4100) + b"bye")
    )
    frames = await client.until(lambda op, data: op == OP_CLOSE)
    assert (OP_PONG, b"are you there") in frames
    assert frames[-1][0] == OP_CLOSE and struct.unpack("!H", frames[-1][1][:2]) == (1000,)  # the reply
    assert await asyncio.wait_for(client.reader.read(), 5) == b""  # then the server closes the connection
    added = [json.loads(data) for op, data in frames if op == OP_TEXT]
    assert [e["item"]["id"] for e in added if e["type"] == "conversation.item.added"] == ["i1", "i2", "i3"]
    await server.wait_closed(record)
    assert record.close_code == 4100
    assert [e.get("event_id") for e in record.received[1:]] == [e["event_id"] for e in before[1:] + after]
    assert record.input_audio == b"".join(pcm(i) for i in range(1, 11))
    assert len(offers) == len(before) + len(after)
    # The frames before the ping met an empty queue and a waiting reader; the rest may have queued behind it.
    assert offers[: len(before)] == [not fast] * len(before)
    client.close()


async def test_frames_while_the_pump_is_busy_keep_their_order(
    fast: bool, server: EmulatorServer, offers: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the pump awaits a send, frames that arrive queue for it (whichever way they came in) and are handled
    after what it is doing, in the order sent."""
    client, live = await connected(server)
    record = live.session.record
    client.writer.write(text(NO_VAD))
    await client.until_type("session.updated")
    busy, release = asyncio.Event(), asyncio.Event()
    perform = server.pump.perform

    async def held(live: Any, actions: Any) -> None:
        if not release.is_set():
            busy.set()
            await release.wait()
        await perform(live, actions)

    monkeypatch.setattr(server.pump, "perform", held)
    server.inject(record.id, "unknown_event", event_type="emulator.busy")
    await asyncio.wait_for(busy.wait(), 5)
    sent = [item("i1"), *map(append, range(1, 4)), item("i2"), *map(append, range(4, 7))]
    offered = len(offers)
    client.writer.write(b"".join(map(text, sent)))
    for _ in range(1000):  # until every frame waits for the pump
        if live.queue.qsize() == len(sent):
            break
        await asyncio.sleep(0.005)
    assert [e.get("event_id") for e in record.received[1:]] == []  # none handled yet
    assert offers[offered:] == [not fast] * len(sent)
    release.set()
    events = await client.until(lambda op, data: op == OP_TEXT and b'"i2"' in data and b"item.done" in data)
    kinds = [json.loads(data)["type"] for op, data in events if op == OP_TEXT]
    assert kinds == ["emulator.busy", *["conversation.item.added", "conversation.item.done"] * 2]
    assert [e.get("event_id") for e in record.received[1:]] == [e["event_id"] for e in sent]
    assert record.input_audio == b"".join(pcm(i) for i in range(1, 7))
    client.close()


def test_the_installed_aiohttp_has_every_internal_the_fast_path_uses() -> None:
    assert fastread.missing_internals() == [], "aiohttp's internals changed: update bridge/emulator/fastread.py"
    assert fastread.MISSING == ()


def test_a_changed_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastread, "_post_start", None)  # as when _post_start no longer builds its queue by name
    monkeypatch.setattr(fastread.web.WebSocketResponse, "_waiting", None)
    assert fastread.missing_internals() == [
        "WebSocketResponse._post_start does not build its queue by name",
        "WebSocketResponse has no _waiting flag",
    ]


async def test_without_the_internals_sessions_read_the_usual_way_and_it_warns_once(
    server: EmulatorServer, offers: list[bool], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastread, "MISSING", ("WebSocketResponse has no _waiting flag",))
    monkeypatch.setattr(fastread, "_warned", False)
    caplog.set_level(logging.WARNING, "bridge.emulator")
    for index in range(2):
        client, live = await connected(server, index)
        assert not live.ws.fast
        offered = len(offers)
        client.writer.write(text(NO_VAD))
        assert types(await client.until_type("session.updated")) == ["session.updated"]
        assert offers[offered:] == [True]  # from the reader task
        client.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "bridge.emulator"]
    assert len(warnings) == 1 and "no _waiting flag" in warnings[0], warnings
