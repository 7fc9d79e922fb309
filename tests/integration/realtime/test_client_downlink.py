"""The client with its socket's C downlink on (``RealtimeClient.decode_audio``, :mod:`bridge.realtime.downlink`)
against the emulator: a whole response read on the beat comes out as the same events in the same order as the loop's
own path gives them, its audio already 8 kHz and equal, sample for sample, to what the call's converter makes of the
deltas the emulator sent; control events and the close are untouched."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import orjson
import pytest

from bridge import events as ev
from bridge.audio.passthrough import PassthroughDownlink
from bridge.audio.playout_native import NativePlayout, native_playout
from bridge.audio.resample import Downsampler
from bridge.emulator import EmulatorServer
from bridge.realtime import downlink
from bridge.realtime.client import ClientSettings, RealtimeClient
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.profile import AgentProfile

pytestmark = pytest.mark.skipif(downlink.load() is None, reason="no C compiler")


async def collect(client: RealtimeClient, until: type[ev.Event]) -> list[ev.Event]:
    out: list[ev.Event] = []
    async with asyncio.timeout(10):
        while not any(isinstance(e, until | ev.Closed) for e in out):
            client.beat()
            await asyncio.sleep(0.02)
            while client.pending_events():
                out.append(await client.next_event())
    return out


async def two_responses(emulator: EmulatorServer, dialect: Dialect, fmt: str) -> tuple[list[ev.Event], list[dict]]:
    client = RealtimeClient(dialect, emulator.base_url + "?speed=0", "sk-test", settings=ClientSettings())
    await client.connect()
    client.send(ev.UpdateSession(AgentProfile(audio_format=fmt)))
    async with asyncio.timeout(10):
        while not isinstance(await client.next_event(), ev.SessionConfigured):
            pass
    client.read_on_beat(True)
    converter = Downsampler() if fmt == "pcm16" else PassthroughDownlink("ulaw")
    assert client.decode_audio(converter)
    events: list[ev.Event] = []
    for say in ("Say hello.", "Say goodbye."):  # two items: the filter starts again for the second
        client.send(ev.CreateResponse(instructions=say))
        events += await collect(client, ev.ResponseDone)
    assert client.decode_audio(None)
    await client.close()
    assert client.closed is not None and client.closed.error_class is None
    (record,) = emulator.sessions
    assert client.deltas_in_c == sum(1 for e in record.sent if e["type"] == dialect.wire_names["audio.delta"])
    assert client.protocol.counters["audio.delta"] == client.deltas_in_c
    return events, record.sent


@pytest.mark.parametrize(("dialect", "fmt"), [(GA, "pcm16"), (BETA, "pcm16"), (GA, "g711_ulaw")])
async def test_decoded_responses_keep_their_order_and_their_audio(
    emulator: EmulatorServer, dialect: Dialect, fmt: str
) -> None:
    events, sent = await two_responses(emulator, dialect, fmt)
    chunks = [e for e in events if isinstance(e, ev.AudioChunk)]
    assert chunks and all(c.decoded for c in chunks)
    # every chunk of an item comes after its item is added and before its audio is done
    for chunk in chunks:
        done = next(i for i, e in enumerate(events) if isinstance(e, ev.AudioDone) and e.item_id == chunk.item_id)
        assert events.index(chunk) < done
    # the audio: what the converter makes of the deltas sent, item by item (a new item: a fresh converter)
    delta_type = dialect.wire_names["audio.delta"]
    items = list(dict.fromkeys(e["item_id"] for e in sent if e["type"] == delta_type))
    assert len(items) == 2
    for item in items:
        raw = b"".join(base64.b64decode(e["delta"]) for e in sent if e["type"] == delta_type and e["item_id"] == item)
        reference = (Downsampler() if fmt == "pcm16" else PassthroughDownlink("ulaw")).process(raw)
        heard = b"".join(c.audio for c in chunks if c.item_id == item)
        assert heard == reference, item
    # the rest, as the loop's own decoders give it
    kinds = [e.kind for e in events if not isinstance(e, ev.AudioChunk)]
    assert kinds.count("ResponseDone") == 2 and kinds.count("AudioDone") == 2


class RawServer:
    """A Realtime server that answers the handshake and then writes the frames it is given as they are (unmasked
    text frames, any bytes): what a hostile or broken service could send, which no well-behaved emulator does."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/realtime"

    async def __aexit__(self, *exc: object) -> None:
        self.frames.put_nowait(None)
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
        writer.write(b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while (payload := await self.frames.get()) is not None:
            n = len(payload)
            size = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
            writer.write(b"\x81" + size + payload)
            await writer.drain()
        writer.close()


async def test_a_hostile_id_is_malformed_json_and_the_connection_lives_on() -> None:
    """Invalid UTF-8 in an audio delta's item id: the loop's parser calls the frame malformed JSON; with the C
    downlink on, the frame reaches that parser too, the deltas around it play and the connection stays up."""
    audio = [bytes(range(i, i + 80)) for i in (0, 100)]

    def delta(data: bytes, item: bytes = b"item_1") -> bytes:
        return (
            b'{"type":"response.output_audio.delta","event_id":"ev","response_id":"resp_1","item_id":"'
            + item
            + b'","output_index":0,"content_index":0,"delta":"'
            + base64.b64encode(data)
            + b'"}'
        )

    server = RawServer()
    async with server as url:
        client = RealtimeClient(GA, url, "sk-test", settings=ClientSettings())
        await client.connect()
        assert client.decode_audio(PassthroughDownlink("ulaw"))
        done = b'{"type":"response.done","response":{"id":"resp_1","status":"completed"}}'
        for payload in (delta(audio[0]), delta(audio[1], item=b"item_\xff"), delta(audio[1]), done):
            server.frames.put_nowait(payload)
        events: list[ev.Event] = []
        async with asyncio.timeout(10):
            while not any(isinstance(e, ev.ResponseDone | ev.Closed) for e in events):
                events.append(await client.next_event())
        assert [e.kind for e in events] == ["AudioChunk", "ErrorEvent", "AudioChunk", "ResponseDone"]
        error = events[1]
        assert isinstance(error, ev.ErrorEvent) and error.code == "malformed_json"
        chunks = [e for e in events if isinstance(e, ev.AudioChunk)]
        assert all(c.decoded for c in chunks) and client.deltas_in_c == 2
        assert b"".join(c.audio for c in chunks) == PassthroughDownlink("ulaw").process(audio[0] + audio[1])
        assert client.closed is None
        await client.close()


@pytest.mark.skipif(native_playout() is None, reason="no C compiler")
async def test_an_armed_items_runs_go_into_the_ring_without_an_event_and_are_counted_as_decoded() -> None:
    """Armed with a ring and an item (``RealtimeClient.sink_audio``), the socket's later runs of that item go into
    the ring in C: no event for them, the audio in the ring, their deltas and last event id counted as the chunks'
    by the time the next event is handed on; another item's audio comes as chunks."""
    lib = native_playout()
    assert lib is not None
    ring = NativePlayout(lib)
    audio = [bytes(range(i, i + 80)) for i in (0, 40, 80, 120)]

    def delta(data: bytes, event: str, item: str = "item_1") -> bytes:
        return orjson.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": event,
                "response_id": "resp_1",
                "item_id": item,
                "delta": base64.b64encode(data).decode(),
            }
        )

    async def until(client: RealtimeClient, kind: type[ev.Event]) -> list[ev.Event]:
        out: list[ev.Event] = []
        async with asyncio.timeout(10):
            while not any(isinstance(e, kind) for e in out):
                out.append(await client.next_event())
        return out

    server = RawServer()
    async with server as url:
        client = RealtimeClient(GA, url, "sk-test", settings=ClientSettings())
        await client.connect()
        ulaw = PassthroughDownlink("ulaw")
        assert client.decode_audio(ulaw)
        server.frames.put_nowait(delta(audio[0], "ev1"))
        (first,) = await until(client, ev.AudioChunk)
        assert isinstance(first, ev.AudioChunk)
        ring.push(first.item_id, first.audio)  # the call took the first chunk
        sink = ring.c_sink("item_1")
        assert sink is not None and client.sink_audio(sink)
        for payload in (delta(audio[1], "ev2"), delta(audio[2], "ev3")):
            server.frames.put_nowait(payload)
        server.frames.put_nowait(b'{"type":"response.output_audio.done","response_id":"resp_1","item_id":"item_1"}')
        assert [e.kind for e in await until(client, ev.AudioDone)] == ["AudioDone"]  # no chunk for the sunk runs
        assert client.deltas_in_c == 3 and client.protocol.counters["audio.delta"] == 3
        assert client.protocol.last_event_id == "ev3"  # told before the done event was decoded
        ring.end_item("item_1")
        assert ring.pop_frames(2)[: 3 * 160] == PassthroughDownlink("ulaw").process(b"".join(audio[:3]))
        server.frames.put_nowait(delta(audio[3], "ev4", item="item_2"))
        chunk = (await until(client, ev.AudioChunk))[-1]
        assert isinstance(chunk, ev.AudioChunk) and chunk.item_id == "item_2"  # another item: the loop's
        assert client.sink_audio(None)
        await client.close()
