"""The client with its socket's C downlink on (``RealtimeClient.decode_audio``, :mod:`bridge.realtime.downlink`)
against the emulator: a whole response read on the beat comes out as the same events in the same order as the loop's
own path gives them, its audio already 8 kHz and equal, sample for sample, to what the call's converter makes of the
deltas the emulator sent; control events and the close are untouched."""

from __future__ import annotations

import asyncio
import base64

import pytest

from bridge import events as ev
from bridge.audio.passthrough import PassthroughDownlink
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
