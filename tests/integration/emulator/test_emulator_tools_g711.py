"""Function calls by rule, function output then a spoken reply; G.711 passthrough sessions (GA audio/pcmu, beta
g711_ulaw): VAD on μ-law input, μ-law output deltas at 8 kHz carrying the right tone."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from _emulator_helpers import RawClient, of_type, peak_hz, silence, speech, ulaw_decode, ulaw_encode

from bridge import events as bev
from bridge.emulator import EmulatorServer
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.profile import AgentProfile, Tool
from bridge.realtime.protocol import RealtimeProtocol

pytestmark = pytest.mark.integration

PROFILE = AgentProfile(
    tools=(
        Tool(
            name="transfer_to_human",
            description="Transfer to a person.",
            parameters={"type": "object", "properties": {"reason": {"type": "string"}}},
        ),
        Tool(name="end_call", description="Hang up."),
    )
)


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
async def test_transfer_rule_then_function_output_reply(
    emulator: EmulatorServer, oracle: Any, dialect: Dialect
) -> None:
    emulator.queue_next(annotations=[{"hears": "Please get me a representative."}])
    client = await RawClient.open(
        f"{emulator.base_url}/realtime?model={dialect.default_model}&speed=0", headers=dialect.extra_headers
    )
    proto = RealtimeProtocol(dialect)
    await client.until_type("session.created")
    # the bridge's own session builder and commands drive the emulator
    for frame in proto.encode(bev.UpdateSession(PROFILE)):
        await client.ws.send(frame)
    await client.until_type("session.updated")
    await client.append(speech(1.0) + silence(0.8))
    done = await client.until_type("response.done")
    call = of_type(client.events, "response.function_call_arguments.done")[0]
    (decoded,) = proto.decode(json.dumps(call))
    assert isinstance(decoded, bev.FunctionCall)
    added = of_type(client.events, "response.output_item.added")[0]["item"]
    assert (added["type"], added["name"], added["call_id"]) == ("function_call", "transfer_to_human", call["call_id"])
    assert done["response"]["output"][0]["arguments"] == call["arguments"]
    assert json.loads(call["arguments"]) == {"reason": "Please get me a representative."}
    n = len(client.events)
    for frame in proto.encode(bev.FunctionOutput(call_id=call["call_id"], output='{"agent": "Dana"}')):
        await client.ws.send(frame)
    done = await client.until_type("response.done")
    new = [e["type"] for e in client.events[n:] if "transcription" not in e["type"] and "rate_limits" not in e["type"]]
    item_events = (
        ["conversation.item.added", "conversation.item.done"] if dialect is GA else ["conversation.item.created"]
    )
    assert new[: len(item_events) + 1] == [*item_events, "response.created"]
    assert of_type(client.events[n:], dialect.wire("audio_transcript.done"))[0]["transcript"].endswith(
        '{"agent": "Dana"}'
    )
    for event in client.events:
        oracle.server_event(dialect.name, event)
    await client.close()


G711_SESSIONS = {
    "ga": {
        "type": "realtime",
        "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}},
    },
    "beta": {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"},
}


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
async def test_g711_ulaw_passthrough(emulator: EmulatorServer, oracle: Any, dialect: Dialect) -> None:
    client = await RawClient.open(
        f"{emulator.base_url}/realtime?model={dialect.default_model}&speed=0&tone_hz=440", headers=dialect.extra_headers
    )
    await client.until_type("session.created")
    await client.send({"type": "session.update", "session": G711_SESSIONS[dialect.name]})
    await client.until_type("session.updated")
    ulaw = ulaw_encode(speech(1.5, 8000) + silence(1.0, 8000))
    await client.append(ulaw, rate=8000, width=1)
    stopped = await client.until_type("input_audio_buffer.speech_stopped")
    assert stopped["audio_end_ms"] == 2000  # 1.5 s of speech + 500 ms of silence, counted at 8 kHz
    await client.until_type("response.done")
    deltas = [base64.b64decode(e["delta"]) for e in of_type(client.events, dialect.wire("audio.delta"))]
    assert {len(d) for d in deltas[:-1]} == {800}  # 100 ms of 8 kHz μ-law per delta
    assert peak_hz(ulaw_decode(b"".join(deltas)), 8000) == pytest.approx(440, abs=2)
    for event in client.events:
        oracle.server_event(dialect.name, event)
    record = emulator.sessions[-1]
    assert record.input_g711 == ulaw and record.input_rate == 8000
    assert peak_hz(record.input_audio[: 8000 * 3], 8000) == pytest.approx(300, abs=3)
    await client.close()
