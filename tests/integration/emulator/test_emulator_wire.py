"""A raw WebSocket client drives a voice turn through the live emulator in both dialects: event order, every event
strictly valid against the SDK models, decodable by the bridge, and the reply audio really is the configured tone."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from _emulator_helpers import PCM_RATE, RawClient, audio_of, compress, of_type, peak_hz, silence, speech
from _wire_orders import EXPECTED

from bridge import events as bev
from bridge.emulator import EmulatorServer
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.protocol import RealtimeProtocol

pytestmark = pytest.mark.integration

SESSION = {
    "ga": {
        "type": "realtime",
        "instructions": "Be brief.",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "whisper-1"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
        },
    },
    "beta": {
        "modalities": ["audio", "text"],
        "instructions": "Be brief.",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
        },
    },
}
TRANSCRIPTION = (
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
)


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
async def test_voice_turn_over_the_wire(emulator: EmulatorServer, oracle: Any, dialect: Dialect) -> None:
    emulator.queue_next(annotations=[{"hears": "I'd like to book an appointment."}])
    url = f"{emulator.base_url}/realtime?model={dialect.default_model}&speed=20&tone_hz=650"
    client = await RawClient.open(url, headers=dialect.extra_headers)
    await client.until_type("session.created")
    update = {"type": "session.update", "session": SESSION[dialect.name]}
    oracle.client_event(dialect.name, update)  # the test's own client events are valid too
    await client.send(update)
    updated = await client.until_type("session.updated")
    await client.append(speech(2.0) + silence(1.0))
    await client.until_type("response.done", wait_s=10)
    if dialect.service.rate_limits_after_done:
        await client.until_type("rate_limits.updated")
    if not of_type(client.events, TRANSCRIPTION[1]):
        await client.until_type(TRANSCRIPTION[1])
    await client.close()

    events, types = client.events, [e["type"] for e in client.events]
    proto = RealtimeProtocol(dialect)
    for frame, event in zip(client.frames, events, strict=True):
        oracle.server_event(dialect.name, event)
        for decoded in proto.decode(frame):
            assert not isinstance(decoded, bev.UnknownEvent | bev.ErrorEvent), (event["type"], decoded)
    deltas = {dialect.wire("audio.delta"), dialect.wire("audio_transcript.delta")}
    assert compress([t for t in types if t not in TRANSCRIPTION], deltas) == EXPECTED[dialect.name]
    delta_types = [t for t in types if t in deltas]
    assert delta_types[0] == dialect.wire("audio_transcript.delta")
    assert delta_types.index(dialect.wire("audio.delta")) < max(
        i for i, t in enumerate(delta_types) if t == dialect.wire("audio_transcript.delta")
    )  # interleaved, not all transcript first
    committed = types.index("input_audio_buffer.committed")
    assert all(types.index(t) > committed for t in TRANSCRIPTION)
    assert of_type(events, TRANSCRIPTION[1])[0]["transcript"] == "I'd like to book an appointment."
    # the echo holds the whole session in the dialect's shape
    echo = updated["session"]
    if dialect is GA:
        assert echo["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500 and "modalities" not in echo
    else:
        assert echo["input_audio_transcription"] == {"model": "whisper-1"} and "audio" not in echo
    # real audio: a 650 Hz tone at 24 kHz
    pcm = audio_of(events, dialect.wire("audio.delta"))
    assert peak_hz(pcm, PCM_RATE) == pytest.approx(650, abs=2)
    # IDs as the service spells them
    for event in events:
        assert event["event_id"].startswith("event_") and len(event["event_id"]) == 27
    response = of_type(events, "response.done")[0]["response"]
    assert response["id"].startswith("resp_") and response["conversation_id"].startswith("conv_")
    # what the emulator recorded matches what the client saw
    record = emulator.sessions[-1]
    await emulator.wait_closed(record)
    assert [e["type"] for e in record.sent] == types
    assert record.types_received()[:2] == ["session.update", "input_audio_buffer.append"]
    assert len(record.input_audio) == len(speech(2.0) + silence(1.0))


async def test_ids_and_unsolicited_session_created(emulator: EmulatorServer, oracle: Any) -> None:
    client = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-realtime")
    created = await client.recv(wait_s=1.0)
    session = created["session"]
    assert created["type"] == "session.created" and session["id"].startswith("sess_") and len(session["id"]) == 26
    assert session["type"] == "realtime" and session["model"] == "gpt-realtime"
    oracle.server_event("ga", created)
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        }
    )
    added, done = await client.recv(), await client.recv()
    assert (added["type"], done["type"]) == ("conversation.item.added", "conversation.item.done")
    assert added["item"]["content"] == [{"type": "input_text", "text": "hi"}]
    await client.send({"type": "conversation.item.retrieve", "item_id": added["item"]["id"]})
    retrieved = await client.recv()
    assert retrieved["type"] == "conversation.item.retrieved"
    for event in (added, done, retrieved):
        oracle.server_event("ga", event)
    assert json.loads(client.frames[0])["event_id"] != json.loads(client.frames[1])["event_id"]
    await client.close()


def test_helpers_decode_roundtrip() -> None:
    pcm = speech(0.5)
    assert base64.b64decode(base64.b64encode(pcm)) == pcm
    assert peak_hz(pcm, PCM_RATE) == pytest.approx(300, abs=3)
