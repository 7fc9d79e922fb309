"""Every command the bridge can send, in both dialects, validates against the SDK's client-event union."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.realtime import RealtimeClientEvent as GAClientEvent
from pydantic import TypeAdapter

from bridge import events as ev
from bridge.errors import DialectFieldError
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.profile import AgentProfile, SemanticVad, ServerVad, Tool, Transcription
from bridge.realtime.protocol import RealtimeProtocol

ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "beta": TypeAdapter(BetaClientEvent),
    "ga": TypeAdapter(GAClientEvent),
}

TRANSFER = Tool(
    name="transfer_to_human",
    description="Transfer the caller to a human agent.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
)

PROFILES = {
    "defaults": AgentProfile(),
    "full": AgentProfile(
        instructions="You are the front desk of a clinic.",
        voice="verse",
        input_transcription=Transcription(model="whisper-1", language="en"),
        turn_detection=ServerVad(threshold=0.6, prefix_padding_ms=200, silence_duration_ms=400),
        noise_reduction="near_field",
        tools=(TRANSFER,),
        tool_choice="auto",
        speed=1.1,
        max_output_tokens=512,
    ),
    "semantic": AgentProfile(turn_detection=SemanticVad(eagerness="high"), input_transcription=None),
    "no_vad_text": AgentProfile(turn_detection=None, output_modalities=("text",)),
    "ulaw": AgentProfile(audio_format="g711_ulaw"),
    "alaw": AgentProfile(audio_format="g711_alaw"),
}

COMMANDS: list[ev.Command] = [
    ev.AppendAudio(b"\x01\x02" * 480),
    ev.CommitAudio(),
    ev.ClearAudio(),
    ev.CreateResponse(),
    ev.CreateResponse(instructions="Greet the caller.", metadata=(("purpose", "greeting"),)),
    ev.CreateResponse(instructions="Say: one moment please.", out_of_band=True),
    ev.CancelResponse(),
    ev.CancelResponse(response_id="resp_123"),
    ev.Truncate(item_id="item_abc", audio_end_ms=1234),
    ev.FunctionOutput(call_id="call_1", output=json.dumps({"ok": True})),
    ev.FunctionOutput(call_id="call_2", output="{}", respond=False),
    ev.AddText(text="The caller pressed 1."),
    ev.AddText(text="Summary of the call so far.", role=ev.Role.SYSTEM),
    ev.DeleteItem(item_id="item_abc"),
]


@pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_session_update_validates(dialect: Dialect, profile: AgentProfile) -> None:
    frames = RealtimeProtocol(dialect).encode(ev.UpdateSession(profile))
    assert len(frames) == 1
    obj = json.loads(frames[0])
    model = ADAPTERS[dialect.name].validate_python(obj)
    assert model.type == "session.update"
    # No field is dropped or renamed by validation: what we send is what the model describes.
    assert set(obj["session"]) <= dialect.session_fields


@pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.kind)
def test_commands_validate(dialect: Dialect, command: ev.Command) -> None:
    frames = RealtimeProtocol(dialect).encode(command)
    assert frames
    for frame in frames:
        ADAPTERS[dialect.name].validate_python(json.loads(frame))


def test_shapes_differ_where_the_dialects_do() -> None:
    profile = PROFILES["full"]
    beta = BETA.build_session(profile)
    ga = GA.build_session(profile)
    assert beta["modalities"] == ["audio", "text"] and "output_modalities" not in beta
    assert ga["type"] == "realtime" and ga["output_modalities"] == ["audio"]
    assert beta["input_audio_format"] == "pcm16"
    assert ga["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert ga["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 400
    assert beta["turn_detection"]["prefix_padding_ms"] == 200
    assert ga["audio"]["output"]["voice"] == "verse" and beta["voice"] == "verse"
    assert beta["max_response_output_tokens"] == 512 and ga["max_output_tokens"] == 512
    assert GA.build_session(PROFILES["ulaw"])["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert BETA.build_session(PROFILES["alaw"])["output_audio_format"] == "g711_alaw"


def test_out_of_band_response_has_no_conversation() -> None:
    for dialect in (BETA, GA):
        (frame,) = RealtimeProtocol(dialect).encode(ev.CreateResponse(instructions="x", out_of_band=True))
        assert json.loads(frame)["response"]["conversation"] == "none"


def test_function_output_is_followed_by_response_create() -> None:
    frames = RealtimeProtocol(GA).encode(ev.FunctionOutput(call_id="call_9", output='{"a":1}'))
    assert [json.loads(f)["type"] for f in frames] == ["conversation.item.create", "response.create"]
    assert json.loads(frames[0])["item"] == {"type": "function_call_output", "call_id": "call_9", "output": '{"a":1}'}


def test_append_round_trips_audio() -> None:
    import base64

    pcm = bytes(range(256)) * 4
    (frame,) = RealtimeProtocol(BETA).encode(ev.AppendAudio(pcm))
    assert base64.b64decode(json.loads(frame)["audio"]) == pcm


def test_truncate_clamps_negative() -> None:
    (frame,) = RealtimeProtocol(GA).encode(ev.Truncate(item_id="i", audio_end_ms=-5))
    assert json.loads(frame)["audio_end_ms"] == 0


@pytest.mark.parametrize(
    ("dialect", "profile", "field"),
    [
        (GA, AgentProfile(temperature=0.8), "temperature"),
        (BETA, AgentProfile(turn_detection=ServerVad(idle_timeout_ms=6000)), "turn_detection.idle_timeout_ms"),
        (GA, AgentProfile(extra={"modalities": ["audio", "text"]}), "session.modalities"),
        (BETA, AgentProfile(extra={"output_modalities": ["audio"]}), "session.output_modalities"),
    ],
)
def test_field_the_dialect_lacks_is_rejected_by_name(dialect: Dialect, profile: AgentProfile, field: str) -> None:
    with pytest.raises(DialectFieldError) as info:
        dialect.build_session(profile)
    assert info.value.field == field
    assert field in str(info.value)


def test_fields_each_dialect_has_are_accepted() -> None:
    beta = BETA.build_session(AgentProfile(temperature=0.7))
    assert beta["temperature"] == 0.7
    ga = GA.build_session(AgentProfile(turn_detection=ServerVad(idle_timeout_ms=6000)))
    assert ga["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 6000
    ADAPTERS["ga"].validate_python({"type": "session.update", "session": ga})


def test_connect_parameters() -> None:
    assert BETA.headers("sk-x") == {"Authorization": "Bearer sk-x", "OpenAI-Beta": "realtime=v1"}
    assert GA.headers("sk-x") == {"Authorization": "Bearer sk-x"}
    assert GA.url("wss://api.openai.com/v1") == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert BETA.url("ws://127.0.0.1:9/v1?drop_after_s=2", "m") == "ws://127.0.0.1:9/v1/realtime?model=m&drop_after_s=2"
