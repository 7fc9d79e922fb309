"""The Live dialect against its oracle, ``openai.types.live``: every frame it sends is a valid client event, every
server event of the SDK's union is decoded or deliberately ignored, and what Live lacks is refused by name."""

from __future__ import annotations

import base64
import json
import typing
from typing import Any

import pytest
from openai.types.live import ClientEvent, ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from bridge import events as ev
from bridge.dialplan import BUILTIN_TOOLS
from bridge.errors import DialectFieldError
from bridge.realtime.dialects import BETA, GA, LIVE, UnsupportedCommand
from bridge.realtime.dialects.live import CLOSE_REASONS, FATAL_CODES, IGNORED, RESPONSES_EVENTS
from bridge.realtime.profile import AgentProfile, Delegation, SemanticVad, ServerVad, Transcription
from bridge.realtime.protocol import RealtimeProtocol

CLIENT: TypeAdapter[Any] = TypeAdapter(ClientEvent)
SERVER: TypeAdapter[Any] = TypeAdapter(ServerEvent)
INNER: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
TOOLS = (BUILTIN_TOOLS["transfer_to_human"], BUILTIN_TOOLS["end_call"])
SUMMARY = ev.AddText("The caller asked about a refund.", ev.Role.SYSTEM)


def union_types(union: Any) -> list[str]:
    members = typing.get_args(typing.get_args(union)[0])
    return [str(m.model_fields["type"].annotation.__args__[0]) for m in members]


def client_frames(command: ev.Command) -> list[dict[str, Any]]:
    frames = [json.loads(f) for f in RealtimeProtocol(LIVE).encode(command)]
    for frame in frames:
        CLIENT.validate_python(frame, strict=True)
    return frames


def decode(event: dict[str, Any]) -> tuple[ev.Event, ...]:
    return tuple(RealtimeProtocol(LIVE).decode(json.dumps(event)))


# -- what the bridge sends -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "history"),
    [
        (AgentProfile(), ()),
        (AgentProfile(tools=TOOLS, voice="marin", instructions="Be brief."), (SUMMARY,)),
        (
            AgentProfile(audio_format="pcm16_16k", delegation=Delegation(model="gpt-5.4-mini", instructions="Tools.")),
            (),
        ),
        (
            AgentProfile(audio_format="g711_ulaw", extra={"store": True}),
            (ev.AddText("hi"), ev.AddText("Hello!", ev.Role.ASSISTANT)),
        ),
        (AgentProfile(audio_format="g711_alaw", model="gpt-live-1"), ()),
    ],
)
def test_session_start_is_a_valid_client_event(profile: AgentProfile, history: tuple[ev.AddText, ...]) -> None:
    (start,) = client_frames(ev.StartSession(profile, history))
    session = start["session"]
    assert start["type"] == "session.start" and set(session) <= LIVE.session_fields
    assert session["model"] == (profile.model or "gpt-live-1") and session["instructions"] == profile.instructions
    assert session["audio"]["output"] == {"voice": profile.voice}
    assert LIVE.format_name(session["audio"]["format"]) == profile.audio_format
    responses = session["delegation"]["responses"]
    assert session["delegation"]["type"] == "responses"
    assert responses["model"] == (profile.delegation or Delegation()).model
    assert [t["name"] for t in responses.get("tools", [])] == [t.name for t in profile.tools]
    roles = {ev.Role.SYSTEM: "developer", ev.Role.USER: "user", ev.Role.ASSISTANT: "assistant"}
    assert [(i["role"], i["content"][0]["text"]) for i in session.get("input", [])] == [
        (roles[h.role], h.text) for h in history
    ]


def test_pcm_rates_are_spelled_with_their_rate() -> None:
    formats = {name: LIVE.format_value(name) for name in ("pcm16", "pcm16_16k", "g711_ulaw", "g711_alaw")}
    assert formats == {
        "pcm16": {"type": "audio/pcm", "rate": 24000},
        "pcm16_16k": {"type": "audio/pcm", "rate": 16000},
        "g711_ulaw": {"type": "audio/pcmu", "rate": 8000},
        "g711_alaw": {"type": "audio/pcma", "rate": 8000},
    }


@pytest.mark.parametrize(
    ("command", "types"),
    [
        (ev.UpdateSession(AgentProfile(tools=TOOLS)), ["session.update"]),
        (ev.AppendAudio(b"\x01\x02" * 160), ["session.input_audio.append"]),
        (ev.CreateResponse(instructions="Greet the caller."), ["session.commentary.append"]),
        (ev.FunctionOutput(call_id="call_1", output='{"ok": true}'), ["response.item.create", "response.create"]),
        (ev.FunctionOutput(call_id="call_2", output="{}", respond=False), ["response.item.create"]),
        (ev.AddText("The caller pressed the key 1 on the phone keypad."), ["session.thinking.append"]),
        (SUMMARY, ["session.instructions.append"]),
    ],
)
def test_commands_are_valid_client_events(command: ev.Command, types: list[str]) -> None:
    frames = client_frames(command)
    assert [f["type"] for f in frames] == types


def test_the_command_frames_say_what_the_bridge_meant() -> None:
    (update,) = client_frames(ev.UpdateSession(AgentProfile(tools=TOOLS)))
    assert set(update["session"]) == {"delegation"}  # instructions, voice and format are fixed at start
    (append,) = client_frames(ev.AppendAudio(b"\x01\x02"))
    assert base64.b64decode(append["audio"]) == b"\x01\x02"
    (speak,) = client_frames(ev.CreateResponse(instructions="Greet the caller."))
    assert speak == {"type": "session.commentary.append", "content": "Greet the caller.", "delegation_id": None}
    item, create = client_frames(ev.FunctionOutput(call_id="call_1", output='{"ok": true}'))
    assert item["item"] == {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'}
    assert create == {"type": "response.create"}
    (dtmf,) = client_frames(ev.AddText("The caller pressed 5."))
    assert dtmf == {"type": "session.thinking.append", "content": "The caller pressed 5.", "delegation_id": None}


def test_the_closing_command_is_a_valid_client_event() -> None:
    closing = LIVE.handshake.closing
    assert closing is not None and LIVE.handshake.closed_by == "session.closed"
    CLIENT.validate_python({"type": LIVE.client_events[closing]}, strict=True)


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (ev.CommitAudio(), "takes turns itself"),
        (ev.ClearAudio(), "nothing is buffered"),
        (ev.CancelResponse("resp_1"), "stops itself"),
        (ev.Truncate(item_id="item_1", audio_end_ms=100), "keeps what it said"),
        (ev.DeleteItem(item_id="item_1"), "no conversation items"),
        (ev.CreateResponse(), "needs something to say"),
        (ev.CreateResponse(instructions="x", out_of_band=True), "enters the session"),
        (ev.AddText("x", ev.Role.ASSISTANT), "only at session.start"),
    ],
)
def test_what_live_lacks_is_refused_clearly(command: ev.Command, needle: str) -> None:
    with pytest.raises(UnsupportedCommand) as info:
        RealtimeProtocol(LIVE).encode(command)
    assert info.value.dialect == "live" and needle in str(info.value)


def test_the_capabilities_say_so() -> None:
    caps = LIVE.capabilities
    assert (caps.turn_detection, caps.cancel, caps.truncate) == ("none", False, False)
    assert caps.continuous_audio and caps.continuous_output and caps.usage == "audio_seconds"
    assert caps.session_cap_s > GA.capabilities.session_cap_s
    assert {str(f) for f in caps.input_formats} == {
        "pcm16 24 kHz",
        "pcm16 16 kHz",
        "g711_ulaw 8 kHz",
        "g711_alaw 8 kHz",
    }
    assert caps.output_formats == caps.input_formats
    for dialect in (BETA, GA):
        assert not dialect.capabilities.continuous_output and dialect.capabilities.usage == "tokens"


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        (AgentProfile(temperature=0.8), "temperature"),
        (AgentProfile(turn_detection=ServerVad(silence_duration_ms=800)), "turn_detection"),
        (AgentProfile(turn_detection=SemanticVad()), "turn_detection"),
        (AgentProfile(turn_detection=None), "turn_detection"),
        (AgentProfile(input_transcription=Transcription(language="de")), "input_transcription"),
        (AgentProfile(output_modalities=("text",)), "output_modalities"),
        (AgentProfile(speed=1.2), "speed"),
        (AgentProfile(extra={"triggers": []}), "session.triggers"),
    ],
)
def test_a_realtime_knob_live_lacks_is_refused_by_name(profile: AgentProfile, field: str) -> None:
    with pytest.raises(DialectFieldError) as info:
        LIVE.build_session(profile)
    assert info.value.field == field and "Live" in str(info.value)


def test_live_only_fields_are_refused_by_the_realtime_dialects() -> None:
    for dialect in (BETA, GA):
        with pytest.raises(DialectFieldError, match="delegation"):
            dialect.build_session(AgentProfile(delegation=Delegation()))
        with pytest.raises(DialectFieldError, match="pcm16 16 kHz"):
            dialect.build_session(AgentProfile(audio_format="pcm16_16k"))


def test_connect_parameters() -> None:
    assert LIVE.url("wss://api.openai.com/v1") == "wss://api.openai.com/v1/live/sessions"
    assert LIVE.url("ws://127.0.0.1:9/v1?speed=1", "gpt-live-1") == "ws://127.0.0.1:9/v1/live/sessions?speed=1"
    assert LIVE.headers("sk-x") == {"Authorization": "Bearer sk-x"} and LIVE.credential_path is None
    with pytest.raises(UnsupportedCommand, match="connect with the API key"):
        LIVE.build_credential_request(AgentProfile())


# -- what the service sends ----------------------------------------------------------------------------------

_SESSION = {
    "id": "sess_1",
    "expires_at": 1_800_000_000,
    "model": "gpt-live-1",
    "status": "active",
    "audio": {"format": {"type": "audio/pcm", "rate": 16000}, "output": {"voice": "marin"}},
}
_DECISION = {
    "answers": [{"type": "refusal"}],
    "model": "gpt-decision",
    "usage": {
        "input_tokens": 1,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 1,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 2,
    },
}
_AT = {"start_ms": 1200, "end_ms": 1450}
SAMPLES: dict[str, dict[str, Any]] = {
    "session.started": {"session": _SESSION},
    "session.updated": {"session": {**_SESSION, "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}}},
    "session.input_audio.muted": {},
    "session.input_audio.unmuted": {},
    "session.output_audio.fixture.playing": {},
    "session.output_audio.fixture.played": {},
    "session.instructions.appended": dict(_AT),
    "session.thinking.appended": dict(_AT),
    "session.commentary.appended": dict(_AT),
    "session.input_audio.append": {"audio": "AAAA"},
    "session.output_audio.delta": {"delta": base64.b64encode(b"\x01\x00\x02\x00").decode()},
    "session.input_transcript.delta": {"delta": "Where is", **_AT},
    "session.output_transcript.delta": {"delta": " my parcel", **_AT},
    "session.delegation.created": {
        "delegation": {"id": "deleg_1", "target": "responses", "type": "delegation", "response_id": "resp_1"},
        "offset_ms": 3000,
    },
    "decision.event": {"event": {"type": "decision.completed", "decision": _DECISION}},
    "decision.item.created": {"item": {"id": "item_1", "role": "user", "content": "hi", "type": "message"}},
    "decision.item.deleted": {"item_id": "item_1"},
    "response.event": {"event": {"type": "response.in_progress"}, "delegation_id": "deleg_1"},
    "session.usage.updated": {"usage": {"seconds": 12.5}},
    "session.closed": {"reason": "close_requested", "session": _SESSION, "usage": {"seconds": 30.0}},
    "error": {"error": {"code": "invalid_value", "type": "invalid_request_error", "message": "Bad.", "param": "x"}},
    "info": {"code": "data_channel_permissions", "message": "Permissions applied."},
    "transport.dtmf.received": {"event": "5"},
    "transport.dtmf.send": {"event": "5"},
    "transport.dtmf.sent": {"event": "5"},
    "transport.ringing": {"session_id": "sess_1"},
    "transport.answered": {"session_id": "sess_1"},
    "transport.failed": {"session_id": "sess_1", "error": {"code": "busy", "message": "Busy.", "type": "call_error"}},
}


def sample(kind: str) -> dict[str, Any]:
    event = {"type": kind, **SAMPLES[kind]}
    if kind != "session.input_audio.append" and kind != "session.output_audio.delta":
        event["event_id"] = "event_1"
    return event


def test_the_samples_cover_the_sdk_union_and_are_valid() -> None:
    assert sorted(SAMPLES) == sorted(union_types(ServerEvent))
    for kind in SAMPLES:
        SERVER.validate_python(sample(kind), strict=True)


@pytest.mark.parametrize("kind", union_types(ServerEvent))
def test_every_server_event_is_decoded_or_deliberately_ignored(kind: str) -> None:
    assert kind in LIVE.server_events
    events = decode(sample(kind))
    assert not any(isinstance(e, ev.UnknownEvent | ev.ErrorEvent) for e in events) or kind == "error"
    canonical = LIVE.server_events[kind]
    if canonical in IGNORED:
        assert events == () and IGNORED[canonical]
    elif kind != "response.event":  # an envelope: what it yields depends on the event inside
        assert events


def test_session_started_is_both_the_session_and_its_configuration() -> None:
    ready, configured = decode(sample("session.started"))
    assert ready == ev.SessionReady(session_id="sess_1", model="gpt-live-1")
    assert configured == ev.SessionConfigured(session_id="sess_1", voice="marin", audio_format="pcm16_16k")
    (updated,) = decode(sample("session.updated"))
    assert updated == ev.SessionConfigured(session_id="sess_1", voice="", audio_format="g711_ulaw")


def test_transcripts_and_audio() -> None:
    (caller,) = decode(sample("session.input_transcript.delta"))
    assert caller == ev.CallerTranscript(item_id="", text="Where is", final=False, start_ms=1200, end_ms=1450)
    (agent,) = decode(sample("session.output_transcript.delta"))
    assert agent == ev.AgentTranscript(
        response_id="", item_id="", text=" my parcel", final=False, start_ms=1200, end_ms=1450
    )
    (chunk,) = decode(sample("session.output_audio.delta"))
    assert isinstance(chunk, ev.AudioChunk) and chunk.audio == b"\x01\x00\x02\x00"
    (bad,) = decode({"type": "session.output_audio.delta", "delta": "!!"})
    assert isinstance(bad, ev.ErrorEvent) and bad.error_class is ev.ErrorClass.PROTOCOL


def test_usage_and_the_end_of_a_session() -> None:
    protocol = RealtimeProtocol(LIVE)
    assert protocol.decode(json.dumps(sample("session.usage.updated"))) == (ev.UsageUpdated(seconds=12.5),)
    assert protocol.usage_seconds == 12.5 and protocol.ended is None
    usage, closed = protocol.decode(json.dumps(sample("session.closed")))
    assert usage == ev.UsageUpdated(seconds=30.0, final=True) and protocol.usage_seconds == 30.0
    assert closed == ev.Closed(None, None, "session closed: close_requested", retryable=False)
    assert protocol.ended == closed


@pytest.mark.parametrize(("reason", "expected"), list(CLOSE_REASONS.items()))
def test_each_close_reason_is_classified(reason: str, expected: tuple[ev.ErrorClass | None, bool]) -> None:
    event = {**sample("session.closed"), "reason": reason}
    SERVER.validate_python(event, strict=True)
    _, closed = decode(event)
    assert isinstance(closed, ev.Closed) and (closed.error_class, closed.retryable) == expected


@pytest.mark.parametrize(
    ("error_type", "code", "expected"),
    [
        ("invalid_request_error", "invalid_value", (ev.ErrorClass.PROTOCOL, False)),
        ("server_error", "server_error", (ev.ErrorClass.SERVER, True)),
        ("invalid_request_error", "invalid_model", (ev.ErrorClass.PROTOCOL, False)),
        ("authentication_error", "invalid_api_key", (ev.ErrorClass.AUTH, False)),  # fatal: never retried
        ("insufficient_quota", "insufficient_quota", (ev.ErrorClass.PROTOCOL, False)),
        ("permission_error", "account_deactivated", (ev.ErrorClass.AUTH, False)),
        ("invalid_request_error", "billing_hard_limit_reached", (ev.ErrorClass.PROTOCOL, False)),
        ("authentication_error", "expired_client_secret", (ev.ErrorClass.AUTH, True)),
    ],
)
def test_live_errors_are_classified_like_the_others(
    error_type: str, code: str, expected: tuple[ev.ErrorClass, bool]
) -> None:
    event = {
        "type": "error",
        "event_id": "event_1",
        "error": {
            "code": code,
            "type": error_type,
            "message": "Incorrect API key provided: sk-abcdef123456.",
            "param": None,
            "client_event_id": "evt_client_7",
        },
    }
    SERVER.validate_python(event, strict=True)
    (error,) = decode(event)
    assert isinstance(error, ev.ErrorEvent) and (error.error_class, error.retryable) == expected
    assert error.code == code and error.event_id == "evt_client_7" and "sk-abcdef" not in error.message
    assert not error.retryable or code not in FATAL_CODES


def _envelope(inner: dict[str, Any], delegation_id: str | None = "deleg_1") -> dict[str, Any]:
    INNER.validate_python(inner, strict=True)
    event = {"type": "response.event", "event_id": "event_1", "event": inner, "delegation_id": delegation_id}
    SERVER.validate_python(event, strict=True)
    return event


_RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_800_000_000,
    "model": "gpt-5-mini",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}
_CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "transfer_to_human", "arguments": "{}"}


def test_the_backends_stream_is_unwrapped_into_the_bridges_tool_events() -> None:
    created = _envelope(
        {"type": "response.created", "sequence_number": 0, "response": {**_RESPONSE, "status": "in_progress"}}
    )
    assert decode(created) == (ev.ResponseStarted(response_id="deleg_1"),)
    added = _envelope(
        {
            "type": "response.output_item.added",
            "sequence_number": 1,
            "output_index": 0,
            "item": {**_CALL, "arguments": ""},
        }
    )
    assert decode(added) == (ev.OutputItemAdded(response_id="deleg_1", item_id="fc_1", item_type="function_call"),)
    done = _envelope({"type": "response.output_item.done", "sequence_number": 2, "output_index": 0, "item": _CALL})
    assert decode(done) == (
        ev.FunctionCall(
            response_id="deleg_1", item_id="fc_1", call_id="call_1", name="transfer_to_human", arguments="{}"
        ),
    )
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 14,
    }
    completed = _envelope(
        {
            "type": "response.completed",
            "sequence_number": 3,
            "response": {**_RESPONSE, "status": "completed", "usage": usage},
        }
    )
    assert decode(completed) == (
        ev.ResponseDone(response_id="deleg_1", status="completed", reason=None, usage=ev.Usage(14, 10, 4)),
    )
    text = _envelope(
        {
            "type": "response.output_text.delta",
            "sequence_number": 4,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "The result",
            "logprobs": [],
        }
    )
    assert decode(text) == ()  # the model speaks the backend's answer: its speech and transcript carry it
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": []}
    item_done = _envelope(
        {"type": "response.output_item.done", "sequence_number": 5, "output_index": 0, "item": message}
    )
    assert decode(item_done) == ()
    anonymous = _envelope(
        {"type": "response.created", "sequence_number": 0, "response": {**_RESPONSE, "status": "in_progress"}}, None
    )
    assert decode(anonymous) == (ev.ResponseStarted(response_id="resp_1"),)


def test_the_inner_event_names_exist_in_the_responses_stream() -> None:
    assert set(RESPONSES_EVENTS.values()) <= set(union_types(ResponseStreamEvent))
