"""Server events of both dialects decode into the same bridge events; bad input becomes a classified event."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GAServerEvent
from pydantic import TypeAdapter

from bridge import events as ev
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.protocol import RealtimeProtocol

SERVER: dict[str, TypeAdapter[Any]] = {"beta": TypeAdapter(BetaServerEvent), "ga": TypeAdapter(GAServerEvent)}
AUDIO = (b"\x00\x10" * 2400, b"\x00\x20" * 1200)


def _item(dialect: Dialect, item_id: str, role: str, status: str, content_type: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "message", "role": role, "status": status, "content": []}
    if content_type is not None:
        item["content"] = [{"type": content_type, "transcript": None}]
    if dialect is BETA:
        item["object"] = "realtime.item"
    return item


def conversation(dialect: Dialect) -> list[dict[str, Any]]:
    """One voice turn with a reply, a function call, a barge-in and an error, spelled in ``dialect``."""
    w = dialect.wire
    out_type = dialect.output_audio_content_type
    session: dict[str, Any] = {
        "id": "sess_1",
        "model": "gpt-realtime",
        "voice": "alloy",
        "output_audio_format": "pcm16",
    }
    if dialect is GA:
        session = {
            "id": "sess_1",
            "type": "realtime",
            "model": "gpt-realtime",
            "audio": {"output": {"voice": "alloy", "format": {"type": "audio/pcm", "rate": 24000}}},
        }
    user = _item(dialect, "item_u1", "user", "completed", "input_audio")
    assistant = _item(dialect, "item_a1", "assistant", "in_progress", out_type)
    fn_item = {"id": "item_f1", "type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"}
    events: list[dict[str, Any]] = [
        {"type": w("session.created"), "event_id": "event_1", "session": session},
        {"type": w("session.updated"), "event_id": "event_2", "session": session},
        {"type": w("input.speech_started"), "event_id": "event_3", "audio_start_ms": 100, "item_id": "item_u1"},
        {"type": w("input.speech_stopped"), "event_id": "event_4", "audio_end_ms": 2100, "item_id": "item_u1"},
        {"type": w("input.committed"), "event_id": "event_5", "item_id": "item_u1", "previous_item_id": None},
        {"type": w("item.added"), "event_id": "event_6", "item": user, "previous_item_id": None},
        {"type": w("response.created"), "event_id": "event_7", "response": {"id": "resp_1", "status": "in_progress"}},
        {
            "type": w("response.item_added"),
            "event_id": "event_8",
            "response_id": "resp_1",
            "output_index": 0,
            "item": assistant,
        },
    ]
    for i, chunk in enumerate(AUDIO):
        events.append(
            {
                "type": w("audio.delta"),
                "event_id": f"event_d{i}",
                "response_id": "resp_1",
                "item_id": "item_a1",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(chunk).decode(),
            }
        )
        events.append(
            {
                "type": w("audio_transcript.delta"),
                "event_id": f"event_t{i}",
                "response_id": "resp_1",
                "item_id": "item_a1",
                "output_index": 0,
                "content_index": 0,
                "delta": ["Hello ", "there."][i],
            }
        )
    common = {"response_id": "resp_1", "item_id": "item_a1", "output_index": 0, "content_index": 0}
    events += [
        {"type": w("audio.done"), "event_id": "event_9", **common},
        {"type": w("audio_transcript.done"), "event_id": "event_10", "transcript": "Hello there.", **common},
        {
            "type": w("input.transcript_done"),
            "event_id": "event_11",
            "item_id": "item_u1",
            "content_index": 0,
            "transcript": "What are your hours?",
            "usage": {"type": "duration", "seconds": 2.0},
        },
        {
            "type": w("response.function_done"),
            "event_id": "event_12",
            "response_id": "resp_1",
            "item_id": "item_f1",
            "output_index": 1,
            "call_id": "call_1",
            "name": "lookup",
            "arguments": '{"q":"hours"}',
        },
        {
            "type": w("response.done"),
            "event_id": "event_13",
            "response": {
                "id": "resp_1",
                "status": "completed",
                "output": [fn_item | ({"object": "realtime.item"} if dialect is BETA else {})],
                "usage": {"total_tokens": 30, "input_tokens": 10, "output_tokens": 20},
            },
        },
        {"type": w("input.speech_started"), "event_id": "event_14", "audio_start_ms": 5000, "item_id": "item_u2"},
        {
            "type": w("item.truncated"),
            "event_id": "event_15",
            "item_id": "item_a1",
            "content_index": 0,
            "audio_end_ms": 150,
        },
        {
            "type": w("response.done"),
            "event_id": "event_16",
            "response": {
                "id": "resp_2",
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "turn_detected"},
            },
        },
        {
            "type": w("rate_limits"),
            "event_id": "event_17",
            "rate_limits": [{"name": "tokens", "limit": 1000, "remaining": 900, "reset_seconds": 1.5}],
        },
        {
            "type": w("error"),
            "event_id": "event_18",
            "error": {
                "type": "invalid_request_error",
                "code": "response_cancel_not_active",
                "message": "Cancellation failed: no active response found",
                "param": None,
                "event_id": "evt_c1",
            },
        },
    ]
    return events


@pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
def test_fixture_is_valid_wire(dialect: Dialect) -> None:
    for obj in conversation(dialect):
        SERVER[dialect.name].validate_python(obj)


def _decode_all(dialect: Dialect) -> list[ev.Event]:
    proto = RealtimeProtocol(dialect)
    return [e for obj in conversation(dialect) for e in proto.decode(json.dumps(obj))]


def test_one_conversation_same_bridge_events_in_both_dialects() -> None:
    beta, ga = _decode_all(BETA), _decode_all(GA)
    assert [e.kind for e in beta] == [e.kind for e in ga]
    # SessionConfigured differs only by where the voice lives: both decode it.
    assert beta == ga
    kinds = [e.kind for e in beta]
    assert "UnknownEvent" not in kinds and kinds.count("ErrorEvent") == 1
    chunks = [e for e in beta if isinstance(e, ev.AudioChunk)]
    assert [c.audio for c in chunks] == list(AUDIO)
    assert chunks[0].response_id == "resp_1" and chunks[0].item_id == "item_a1"
    done = [e for e in beta if isinstance(e, ev.ResponseDone)]
    assert done[0].usage == ev.Usage(total_tokens=30, input_tokens=10, output_tokens=20)
    assert (done[1].status, done[1].reason) == ("cancelled", "turn_detected")
    (call,) = [e for e in beta if isinstance(e, ev.FunctionCall)]
    assert (call.call_id, call.name, call.arguments) == ("call_1", "lookup", '{"q":"hours"}')
    (err,) = [e for e in beta if isinstance(e, ev.ErrorEvent)]
    assert (err.error_class, err.code, err.retryable) == (ev.ErrorClass.PROTOCOL, "response_cancel_not_active", False)
    assert ev.SpeechStarted(item_id="item_u1", audio_start_ms=100) in beta
    assert ev.CallerTranscript(item_id="item_u1", text="What are your hours?", final=True) in beta


def test_the_other_dialects_names_are_unknown() -> None:
    """Each table really maps its own names: a GA audio delta means nothing to a beta session, and back."""
    ga_delta = {"type": "response.output_audio.delta", "delta": "AAAA", "response_id": "r", "item_id": "i"}
    beta_delta = {**ga_delta, "type": "response.audio.delta"}
    assert RealtimeProtocol(BETA).decode(json.dumps(ga_delta)) == (ev.UnknownEvent(type="response.output_audio.delta"),)
    assert RealtimeProtocol(GA).decode(json.dumps(beta_delta)) == (ev.UnknownEvent(type="response.audio.delta"),)


def test_ga_only_events() -> None:
    proto = RealtimeProtocol(GA)
    timeout = {"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": 1, "audio_end_ms": 9, "item_id": "i"}
    SERVER["ga"].validate_python({**timeout, "event_id": "e"})
    assert proto.decode(json.dumps(timeout)) == (ev.IdleTimeout(item_id="i", audio_start_ms=1, audio_end_ms=9),)
    assert proto.decode('{"type":"conversation.item.done","item":{"id":"x"}}') == (ev.ItemDone(item_id="x"),)
    assert proto.decode('{"type":"input_audio_buffer.dtmf_event_received","event":"5","received_at":1}') == (
        ev.Dtmf(digit="5", source="realtime"),
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "malformed_json"),
        ("[1, 2]", "malformed_event"),
        ('{"no_type": 1}', "malformed_event"),
        ('{"type": 5}', "malformed_event"),
        (
            '{"type":"response.output_audio.delta","delta":"!!!not base64!!!","response_id":"r","item_id":"i"}',
            "malformed_event",
        ),
        ('{"type":"input_audio_buffer.speech_started","audio_start_ms":"soon","item_id":"i"}', "malformed_event"),
        ('{"type":"session.created","session":[]}', "malformed_event"),
    ],
)
def test_bad_frames_become_protocol_errors(frame: str, code: str) -> None:
    proto = RealtimeProtocol(GA)
    (event,) = proto.decode(frame)
    assert isinstance(event, ev.ErrorEvent)
    assert (event.error_class, event.code, event.retryable) == (ev.ErrorClass.PROTOCOL, code, False)
    assert proto.counters[code] == 1
    # and the protocol goes on
    assert proto.decode('{"type":"input_audio_buffer.cleared"}') == (ev.InputCleared(),)


def test_unknown_type_is_counted_not_fatal() -> None:
    proto = RealtimeProtocol(BETA)
    assert proto.decode('{"type":"brand.new.event","x":1}') == (ev.UnknownEvent(type="brand.new.event"),)
    assert proto.counters["unknown"] == 1


@pytest.mark.parametrize(
    ("etype", "code", "cls", "retryable"),
    [
        ("server_error", "server_error", ev.ErrorClass.SERVER, True),
        ("invalid_request_error", "session_expired", ev.ErrorClass.SERVER, True),
        ("invalid_request_error", "invalid_api_key", ev.ErrorClass.AUTH, True),
        ("invalid_request_error", "unknown_parameter", ev.ErrorClass.PROTOCOL, False),
    ],
)
def test_server_errors_are_classified(etype: str, code: str, cls: ev.ErrorClass, retryable: bool) -> None:
    frame = json.dumps({"type": "error", "error": {"type": etype, "code": code, "message": "m"}})
    (event,) = RealtimeProtocol(GA).decode(frame)
    assert isinstance(event, ev.ErrorEvent)
    assert (event.error_class, event.code, event.retryable) == (cls, code, retryable)


def test_error_messages_are_redacted() -> None:
    frame = json.dumps(
        {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_api_key",
                                    "message": "Incorrect API key provided: sk-proj-abcdef123456."}}
    )  # fmt: skip
    (event,) = RealtimeProtocol(GA).decode(frame)
    assert isinstance(event, ev.ErrorEvent)
    assert "sk-proj" not in event.message and "[redacted]" in event.message
