"""The thin client in the Live dialect against the emulator: the handshake with a history, 16 kHz PCM both ways,
a greeting by commentary, the end of a session the Live way (one ``Closed``, the final usage), and an end the
service chose."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridge import events as ev
from bridge.audio import Downsampler16k, Upsampler16k
from bridge.emulator import EmulatorServer
from bridge.errors import ConnectError
from bridge.realtime.client import ClientSettings, RealtimeClient
from bridge.realtime.dialects import LIVE, UnsupportedCommand
from bridge.realtime.profile import AgentProfile

pytestmark = pytest.mark.integration

RATE = 16000


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


async def live_client(emulator: EmulatorServer, query: str = "") -> RealtimeClient:
    base = emulator.base_url + (f"?{query}" if query else "")
    client = RealtimeClient(LIVE, base, "sk-test-client", settings=ClientSettings(ping_interval_s=5))
    await client.connect()
    return client


async def until(client: RealtimeClient, done: type[ev.Event], seen: list[ev.Event], limit_s: float = 10.0) -> ev.Event:
    async with asyncio.timeout(limit_s):
        while True:
            event = await client.next_event()
            seen.append(event)
            if isinstance(event, done):
                return event


async def test_a_live_session_through_the_client(emulator: EmulatorServer) -> None:
    emulator.queue_next(annotations={"greeting": {"text": "Welcome back.", "tone_hz": 500, "duration_ms": 800}})
    client = await live_client(emulator)
    assert client.url == f"{emulator.base_url}/live/sessions"
    profile = AgentProfile(audio_format="pcm16_16k", instructions="Be brief.")
    summary = ev.AddText("The caller asked about a refund; it was approved.", ev.Role.SYSTEM)
    opened: list[ev.Event] = []

    async def note(event: ev.Event) -> None:
        opened.append(event)

    await client.open(profile, note, history=(summary,))
    assert [type(e) for e in opened] == [ev.SessionReady, ev.SessionConfigured]
    assert opened[1] == ev.SessionConfigured(session_id=opened[0].session_id, voice="alloy", audio_format="pcm16_16k")  # type: ignore[attr-defined]  # SessionReady

    (record,) = emulator.sessions
    (start,) = [e for e in record.received if e["type"] == "session.start"]
    assert start["session"]["input"] == [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": summary.text}]}
    ]
    assert start["session"]["audio"]["format"] == {"type": "audio/pcm", "rate": RATE}

    with pytest.raises(UnsupportedCommand):
        client.send(ev.CancelResponse())
    client.send(ev.CreateResponse(instructions="Greet the caller."))
    up, down = Upsampler16k(), Downsampler16k()
    seen: list[ev.Event] = []
    heard = b""
    async with asyncio.timeout(10):
        while sum(1 for e in seen if isinstance(e, ev.UsageUpdated)) < 1:
            client.send(ev.AppendAudio(up.process(bytes(320))))  # 20 ms of the phone's silence, resampled
            event = await client.next_event()
            seen.append(event)
            if isinstance(event, ev.AudioChunk):
                heard += down.process(event.audio)
    words = [e for e in seen if isinstance(e, ev.AgentTranscript)]
    assert "".join(w.text for w in words) == "Welcome back." and all(w.start_ms is not None for w in words)
    samples = np.frombuffer(heard, "<i2")
    voiced = np.flatnonzero(np.abs(samples) > 1000)
    assert (voiced[-1] - voiced[0]) / 8000 == pytest.approx(0.8, abs=0.03)
    assert dominant_hz(samples[voiced[0] : voiced[-1]].tobytes(), 8000) == pytest.approx(500, abs=5)

    await client.close()
    assert client.closed == ev.Closed(None, None, "session closed: close_requested", retryable=False)
    assert client.protocol.usage_seconds is not None and client.protocol.usage_seconds > 0
    rest = []
    while client.pending_events():
        rest.append(await client.next_event())
    assert [type(e) for e in rest if isinstance(e, ev.UsageUpdated | ev.Closed)][-2:] == [ev.UsageUpdated, ev.Closed]
    assert sum(isinstance(e, ev.Closed) for e in rest) == 1  # the socket's close after it is not reported again
    await emulator.wait_closed(record)
    assert record.types_received()[-1] == "session.close" and record.close_code == 1000 and record.errors == []


async def test_the_session_cap_ends_a_live_session_as_retryable(emulator: EmulatorServer) -> None:
    client = await live_client(emulator, "session_max_s=0.5")
    await client.open(AgentProfile())
    seen: list[ev.Event] = []
    closed = await until(client, ev.Closed, seen)
    assert closed == ev.Closed(ev.ErrorClass.SERVER, None, "session closed: expired", retryable=True)
    assert isinstance(seen[-2], ev.UsageUpdated) and seen[-2].final  # type: ignore[attr-defined]  # checked
    await client.close()
    assert client.closed is closed


async def test_a_realtime_model_on_the_live_endpoint_is_refused(emulator: EmulatorServer) -> None:
    client = await live_client(emulator)
    with pytest.raises(ConnectError, match="invalid_model") as info:
        await client.open(AgentProfile(model="gpt-realtime"))
    assert not info.value.retryable
    await client.close()
