"""The sans-I/O emulator session in virtual time: no sockets, no sleeping.

Every event the session sends is validated against the SDK's models (the ``oracle`` fixture) and decoded by the
bridge's own protocol core.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from _wire_orders import EXPECTED

from bridge import events as bev
from bridge.emulator.annotations import Annotations
from bridge.emulator.faults import Faults, Settings
from bridge.emulator.session import Abort, Action, Close, EmulatorSession, Send, SendRaw
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.protocol import RealtimeProtocol

RATE = 24000
MODELS = {"ga": "gpt-realtime", "beta": "gpt-4o-realtime-preview"}
TOOLS = [
    {
        "type": "function",
        "name": "transfer_to_human",
        "description": "Hand over to a person.",
        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
    },
    {"type": "function", "name": "end_call", "description": "Hang up.", "parameters": {"type": "object"}},
]


def speech(seconds: float, rate: int = RATE) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    x = np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 600 * t) + 0.25 * np.sin(2 * np.pi * 900 * t)
    x *= 0.1 * 32768 / np.sqrt(np.mean(x**2))  # -20 dBFS RMS
    return np.round(x).astype("<i2").tobytes()


def zeros(seconds: float, rate: int = RATE) -> bytes:
    return b"\x00\x00" * int(rate * seconds)


def session_update(dialect: Dialect, **ga_or_beta: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": ga_or_beta[dialect.name]}


class Driver:
    """Feeds a session in virtual time: audio is appended at real-time pace, 20 ms per append."""

    def __init__(
        self, dialect: Dialect, *, annotations: Any = None, seed: int | None = 1, model: str = "", **settings: Any
    ) -> None:
        self.dialect = dialect
        self.s = EmulatorSession(
            dialect,
            Settings(seed=seed).with_values({"speed": 0, **settings}),
            model=model or MODELS[dialect.name],
            annotations=Annotations.parse(annotations),
            now=0.0,
            wall=1_700_000_000.0,
        )
        self.t = 0.0
        self.actions: list[Action] = list(self.s.open())

    @property
    def events(self) -> list[dict[str, Any]]:
        return [a.event for a in self.actions if isinstance(a, Send)]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def send(self, event: dict[str, Any]) -> None:
        self.actions += self.s.receive(json.dumps(event), self.t)

    def tick(self, seconds: float) -> None:
        self.t += seconds
        self.actions += self.s.advance(self.t)

    def append(self, pcm: bytes, *, rate: int = RATE, width: int = 2) -> None:
        step = rate * 20 // 1000 * width
        for i in range(0, len(pcm), step):
            self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + step]).decode()})
            self.tick(0.02)

    def settle(self, limit: float = 120.0) -> None:
        """Run every pending deadline (up to ``limit`` virtual seconds ahead)."""
        while (d := self.s.next_deadline()) is not None and d <= self.t + limit:
            self.t = max(self.t, d)
            self.actions += self.s.advance(self.t)

    def first(self, kind: str) -> dict[str, Any]:
        return next(e for e in self.events if e["type"] == kind)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def errors(self) -> list[dict[str, Any]]:
        return [e["error"] for e in self.all("error")]


def check_all(d: Driver, oracle: Any) -> None:
    proto = RealtimeProtocol(d.dialect)
    for event in d.events:
        oracle.server_event(d.dialect.name, event)
        for decoded in proto.decode(json.dumps(event)):
            assert not isinstance(decoded, bev.UnknownEvent), event["type"]
            assert event["type"] == "error" or not isinstance(decoded, bev.ErrorEvent), (event["type"], decoded)


def wire(dialect: Dialect, canonical: str) -> str:
    return dialect.wire(canonical)


TRANSCRIPTION = {
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
}


def voice_turn(dialect: Dialect, model: str = "", **settings: Any) -> Driver:
    d = Driver(dialect, annotations=[{"hears": "What are your opening hours?"}], tone_hz=700, model=model, **settings)
    d.send(
        session_update(
            dialect,
            ga={"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}},
            beta={"input_audio_transcription": {"model": "whisper-1"}},
        )
    )
    d.append(speech(2.0) + zeros(1.0))
    d.settle()
    return d


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
def test_voice_turn(dialect: Dialect, oracle: Any) -> None:
    d = voice_turn(dialect, speed=4)
    check_all(d, oracle)
    deltas = {wire(dialect, "audio.delta"), wire(dialect, "audio_transcript.delta")}
    types = d.types()
    compressed: list[str] = []
    for t in (t for t in types if t not in TRANSCRIPTION):
        if t in deltas:
            if compressed[-1] != "<deltas>":
                compressed.append("<deltas>")
        else:
            compressed.append(t)
    assert compressed == EXPECTED[dialect.name]
    # transcript deltas interleave with audio deltas
    block = [t for t in types if t in deltas]
    assert block[0] == wire(dialect, "audio_transcript.delta") and block[-1] == wire(dialect, "audio.delta")
    assert types.index(wire(dialect, "audio.delta")) < len(types) - 1 - types[::-1].index(block[0])
    # the user item id is assigned at speech_started and reused; positions count from the session's first audio
    started, stopped = d.first("input_audio_buffer.speech_started"), d.first("input_audio_buffer.speech_stopped")
    committed = d.first("input_audio_buffer.committed")
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (0, 2500)
    assert committed["previous_item_id"] is None
    done = d.first("conversation.item.input_audio_transcription.completed")
    assert (done["item_id"], done["transcript"]) == (committed["item_id"], "What are your opening hours?")
    assert types.index("conversation.item.input_audio_transcription.completed") > types.index(
        "input_audio_buffer.committed"
    )
    # the reply: a 700 Hz tone at 24 kHz, its length following the text, deltas of 100 ms
    audio = [base64.b64decode(e["delta"]) for e in d.all(wire(dialect, "audio.delta"))]
    assert {len(a) for a in audio[:-1]} == {4800}
    x = np.frombuffer(b"".join(audio), dtype="<i2").astype(float)
    assert np.argmax(np.abs(np.fft.rfft(x))) * RATE / len(x) == pytest.approx(700, abs=2)
    transcript = d.first(wire(dialect, "audio_transcript.done"))["transcript"]
    assert transcript == "I heard you say: What are your opening hours?."
    assert len(x) / RATE * 1000 == pytest.approx(len(transcript) * 60, abs=1)
    response = d.first("response.done")["response"]
    assert response["status"] == "completed" and response["usage"]["total_tokens"] > 0
    content_type = dialect.output_audio_content_type
    assert response["output"][0]["content"] == [{"type": content_type, "transcript": transcript}]
    assert ("object" in response["output"][0]) == (dialect is BETA)


def test_one_conversation_same_bridge_events_in_both_dialects() -> None:
    """One conversation replayed in both dialects yields the same internal events (beyond the
    dialect-only ones: GA's conversation.item.done and where rate_limits.updated falls)."""
    kinds = {}
    for dialect in (GA, BETA):
        proto = RealtimeProtocol(dialect)
        decoded = [d for e in voice_turn(dialect).events for d in proto.decode(json.dumps(e))]
        kinds[dialect.name] = [e.kind for e in decoded if not isinstance(e, bev.ItemDone | bev.RateLimits)]
    assert kinds["ga"] == kinds["beta"]


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
def test_barge_in_cancels_then_truncate(dialect: Dialect, oracle: Any) -> None:
    d = Driver(dialect, speed=1, annotations=[{"hears": "hi", "reply": {"duration_ms": 4000}}])
    d.append(speech(1.0) + zeros(0.7))
    d.append(zeros(0.5))  # 0.5 s of reply audio streams meanwhile (speed 1)
    assert d.s.responses.active is not None  # still answering
    d.append(speech(0.5))
    check_all(d, oracle)
    second_start = d.all("input_audio_buffer.speech_started")[1]
    assert second_start["audio_start_ms"] == 2200 - 300  # session-wide position, minus prefix padding
    response = d.first("response.done")["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert response["output"][0]["status"] == "incomplete"
    assert d.types().index("response.done") > d.events.index(second_start)
    item_id = response["output"][0]["id"]
    delivered = sum(len(base64.b64decode(e["delta"])) for e in d.all(wire(dialect, "audio.delta"))) / 48
    assert 400 <= delivered <= 1500
    d.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": int(delivered) + 1,
        }
    )
    assert (
        d.errors()[-1]["message"]
        == f"Audio content of {int(delivered)}ms is already shorter than {int(delivered) + 1}ms"
    )
    d.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 300})
    assert d.events[-1] == {
        **d.events[-1],
        "type": "conversation.item.truncated",
        "item_id": item_id,
        "audio_end_ms": 300,
        "content_index": 0,
    }
    assert d.s.record.truncates[-1]["ok"] is True
    check_all(d, oracle)


def test_client_cancel_mid_response_and_cancel_errors(oracle: Any) -> None:
    d = Driver(GA, speed=1, annotations={"greeting": {"text": "Welcome to the clinic, how can I help?"}})
    d.send({"type": "response.create"})
    d.tick(0.5)
    d.send({"type": "response.create"})
    assert d.errors()[-1]["code"] == "conversation_already_has_active_response"
    d.send({"type": "response.cancel", "event_id": "evt_client_1"})
    tail = d.types()[-6:]
    assert tail == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    response = d.first("response.done")["response"]
    assert (response["status"], response["status_details"]["reason"]) == ("cancelled", "client_cancelled")
    assert response["usage"]["output_tokens"] > 0
    partial = d.first("response.output_audio_transcript.done")["transcript"]
    assert "Welcome to the clinic, how can I help?".startswith(partial) and partial != ""
    d.send({"type": "response.cancel", "event_id": "evt_client_2"})
    err = d.errors()[-1]
    assert (err["code"], err["message"], err["event_id"]) == (
        "response_cancel_not_active",
        "Cancellation failed: no active response found",
        "evt_client_2",
    )
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
    d.send({"type": "conversation.item.create", "item": {"id": "item_user_1", **user}})
    d.send({"type": "conversation.item.truncate", "item_id": "item_user_1", "content_index": 0, "audio_end_ms": 0})
    assert (d.errors()[-1]["code"], d.errors()[-1]["message"]) == (
        "unsupported_content_type",
        "Only model output audio messages can be truncated",
    )
    d.send({"type": "conversation.item.delete", "item_id": "item_user_1"})
    assert d.events[-1]["type"] == "conversation.item.deleted"
    d.send({"type": "conversation.item.delete", "item_id": "item_user_1"})
    assert d.errors()[-1]["code"] == "item_not_found"
    check_all(d, oracle)


def test_manual_commit_errors_and_append_validation(oracle: Any) -> None:
    d = Driver(BETA)
    d.send({"type": "session.update", "session": {"turn_detection": None}})
    d.append(speech(0.06))
    d.send({"type": "input_audio_buffer.commit"})
    err = d.errors()[-1]
    assert err["code"] == "input_audio_buffer_commit_empty" and "only has 60.00ms" in err["message"]
    d.send({"type": "input_audio_buffer.append", "audio": "not base64 !!", "event_id": "evt_9"})
    assert (d.errors()[-1]["code"], d.errors()[-1]["param"], d.errors()[-1]["event_id"]) == (
        "invalid_value",
        "audio",
        "evt_9",
    )
    d.append(speech(0.5))
    d.send({"type": "input_audio_buffer.commit"})
    assert d.types()[-2:] == ["input_audio_buffer.committed", "conversation.item.created"]
    assert "input_audio_buffer.speech_started" not in d.types()  # no VAD
    assert "response.created" not in d.types()  # manual turns wait for response.create
    d.append(speech(0.2))
    d.send({"type": "input_audio_buffer.clear"})
    d.send({"type": "input_audio_buffer.commit"})
    assert d.types()[-2] == "input_audio_buffer.cleared" and d.errors()[-1]["code"] == "input_audio_buffer_commit_empty"
    d.send({"type": "response.create", "response": {"instructions": "Say 'one moment please'"}})
    d.settle()
    assert d.first("response.audio_transcript.done")["transcript"] == "one moment please"
    d.send({"type": "no.such.event"})
    assert (d.errors()[-1]["code"], d.errors()[-1]["param"]) == ("invalid_value", "type")
    check_all(d, oracle)
    assert not d.s.closed


def test_idle_timeout_ga(oracle: Any) -> None:
    d = Driver(GA, annotations=[{"hears": "hello", "reply": {"text": "Hi.", "duration_ms": 1000}}])
    d.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}},
            },
        }
    )
    d.append(speech(1.0) + zeros(0.6))
    done_at = next(t for t, direction, kind in d.s.record.timeline if kind == "response.done")
    d.tick(done_at + 5.9 - d.t)  # reply audio (1 s) + 5 s idle, minus 0.1 s
    assert "input_audio_buffer.timeout_triggered" not in d.types()
    d.tick(0.2)
    d.settle(limit=1.0)  # the idle timer re-arms after each prompt; one is enough here
    fired_at = next(t for t, direction, kind in d.s.record.timeline if kind == "input_audio_buffer.timeout_triggered")
    assert fired_at == pytest.approx(done_at + 6.0)
    i = d.types().index("input_audio_buffer.timeout_triggered")
    assert d.types()[i + 1 : i + 5] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    assert d.all("response.output_audio_transcript.done")[-1]["transcript"] == "Are you still there?"
    check_all(d, oracle)


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
def test_function_call_rules_and_output(dialect: Dialect, oracle: Any) -> None:
    d = Driver(dialect, annotations=[{"hears": "Can I talk to a real person?"}, {"hears": "OK, thanks. Bye!"}])
    d.send(session_update(dialect, ga={"type": "realtime", "tools": TOOLS}, beta={"tools": TOOLS}))
    d.append(speech(1.0) + zeros(0.7))
    d.settle()
    call = d.first("response.function_call_arguments.done")
    added = d.first("response.output_item.added")["item"]
    assert added["type"] == "function_call" and added["name"] == "transfer_to_human"
    assert call.get("name", added["name"]) == "transfer_to_human" and call["call_id"].startswith("call_")
    assert json.loads(call["arguments"]) == {"reason": "Can I talk to a real person?"}
    output = d.first("response.done")["response"]["output"]
    assert [(o["type"], o["call_id"], o["arguments"]) for o in output] == [
        ("function_call", call["call_id"], call["arguments"])
    ]
    n = len(d.events)
    d.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_nope", "output": "{}"},
        }
    )
    assert d.errors()[-1]["param"] == "item.call_id"
    d.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call["call_id"], "output": '{"queue": 3}'},
        }
    )
    d.settle()
    assert "response.created" not in d.types()[n:]  # only the item events until response.create
    d.send({"type": "response.create"})
    d.settle()
    assert d.all(wire(dialect, "audio_transcript.done"))[-1]["transcript"].endswith('{"queue": 3}')
    d.append(speech(1.0) + zeros(0.7))
    d.settle()
    last = d.all("response.done")[-1]["response"]["output"]
    assert [o["type"] for o in last] == ["message", "function_call"] and last[1]["name"] == "end_call"
    check_all(d, oracle)


def test_forced_tool_call_greeting_text_mode_and_out_of_band(oracle: Any) -> None:
    d = Driver(
        GA,
        annotations={
            "greeting": "Thanks for calling ACME.",
            "turns": [
                {
                    "hears": "my order",
                    "reply": {"text": "Let me check.", "tool_call": {"name": "lookup_order", "arguments": {"id": 42}}},
                }
            ],
        },
    )
    d.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    d.send({"type": "response.create"})
    d.settle()
    assert d.first("response.output_text.done")["text"] == "Thanks for calling ACME."
    assert "response.output_audio.delta" not in d.types()
    d.append(speech(1.0) + zeros(0.7))
    d.settle()
    out = d.all("response.done")[-1]["response"]["output"]
    assert [o["type"] for o in out] == ["message", "function_call"]
    assert (out[1]["name"], json.loads(out[1]["arguments"])) == ("lookup_order", {"id": 42})
    n = len(d.events)
    d.send(
        {
            "type": "response.create",
            "response": {"conversation": "none", "metadata": {"topic": "survey"}, "output_modalities": ["audio"]},
        }
    )
    d.settle()
    oob = d.all("response.done")[-1]["response"]
    assert (oob["conversation_id"], oob["metadata"]) == (None, {"topic": "survey"})
    assert "conversation.item.added" not in d.types()[n:]
    assert "response.output_audio.delta" in d.types()[n:]
    check_all(d, oracle)


def test_g711_ulaw_in_and_out_virtual(oracle: Any) -> None:
    from bridge.emulator.formats import FORMATS

    ulaw = FORMATS["g711_ulaw"]
    d = Driver(BETA, tone_hz=500)
    d.send(
        {"type": "session.update", "session": {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}
    )
    d.append(ulaw.from_pcm16(speech(1.0, 8000) + zeros(1.0, 8000)), rate=8000, width=1)
    d.settle()
    assert d.first("input_audio_buffer.speech_stopped")["audio_end_ms"] == 1500
    audio = b"".join(base64.b64decode(e["delta"]) for e in d.all("response.audio.delta"))
    assert d.first("response.done")["response"]["output_audio_format"] == "g711_ulaw"
    x = np.frombuffer(ulaw.to_pcm16(audio), dtype="<i2").astype(float)
    assert np.argmax(np.abs(np.fft.rfft(x))) * 8000 / len(x) == pytest.approx(500, abs=2)
    assert len(d.s.record.input_g711) == 16000 and d.s.record.input_rate == 8000
    check_all(d, oracle)


def test_faults_in_virtual_time(oracle: Any) -> None:
    d = Driver(GA, speed=1, error_mid_response=1, unknown_event=1, malformed_json=1, fault_after_deltas=3)
    d.send({"type": "response.create"})
    d.settle()
    kinds = [type(a).__name__ if not isinstance(a, Send) else a.event["type"] for a in d.actions]
    i = kinds.index("SendRaw")
    assert kinds[i - 2 : i + 2] == [
        "response.output_audio.delta",
        "response.emulator_unknown.delta",
        "SendRaw",
        "error",
    ]
    assert sum(k == "response.output_audio.delta" for k in kinds[:i]) == 3
    err = d.errors()[-1]
    assert (err["type"], err["code"]) == ("server_error", "server_error")
    done = d.first("response.done")["response"]
    assert (done["status"], done["status_details"]["error"]["code"]) == ("failed", "server_error")
    assert not d.s.closed
    proto = RealtimeProtocol(GA)
    raw = next(a.text for a in d.actions if isinstance(a, SendRaw))
    ((bad,), (unknown,)) = proto.decode(raw), proto.decode(json.dumps(d.first("response.emulator_unknown.delta")))
    assert isinstance(bad, bev.ErrorEvent) and isinstance(unknown, bev.UnknownEvent)
    for e in d.events:
        if e["type"] != "response.emulator_unknown.delta":
            oracle.server_event("ga", e)


def test_drop_and_session_cap_in_virtual_time() -> None:
    d = Driver(BETA, speed=1, drop_mid_response=2, fault_after_deltas=2)
    for _ in range(2):
        d.send({"type": "response.create"})
        d.settle()
    assert isinstance(d.actions[-1], Abort) and d.s.closed
    assert len(d.all("response.done")) == 1 and len(d.all("response.audio.delta")) > 2
    d2 = Driver(GA, session_max_s=90, drop_after_s=100)
    d2.tick(89.9)
    assert not d2.s.closed
    d2.tick(0.2)
    assert d2.errors()[-1]["message"] == "Your session hit the maximum duration of 1.5 minutes."
    assert d2.actions[-1] == Close(1001, "session expired") and d2.s.next_deadline() is None
    d3 = Driver(GA, drop_after_s=2.5)
    d3.tick(2.4)
    assert not d3.s.closed
    d3.tick(0.1)
    assert isinstance(d3.actions[-1], Abort)


def test_seeded_sessions_are_reproducible() -> None:
    a, b = voice_turn(GA), voice_turn(GA)
    assert a.events == b.events
    assert Settings(faults=Faults(drop_after_s=1)).faults.drop_after_s == 1


def test_delta_faults_and_wav_reply(oracle: Any, tmp_path: Any) -> None:
    import wave

    path = tmp_path / "reply.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        t = np.arange(16000) / 16000
        w.writeframes(np.round(8000 * np.sin(2 * np.pi * 800 * t)).astype("<i2").tobytes())
    d = Driver(
        GA,
        speed=1,
        delay_first_delta_ms=400,
        invalid_base64_delta=1,
        oversized_delta=1,
        fault_after_deltas=1,
        annotations={"greeting": {"text": "Hi.", "wav": str(path)}},
    )
    d.send({"type": "response.create"})
    d.settle()
    timeline = d.s.record.timeline
    created = next(t for t, _, kind in timeline if kind == "response.created")
    first = next(t for t, _, kind in timeline if kind == "response.output_audio.delta")
    assert first - created == pytest.approx(0.15 + 0.4)  # latency (speed 1) + the fault's delay
    deltas = d.all("response.output_audio.delta")
    assert deltas[1]["delta"] == "!!not*base64!!"
    (bad,) = RealtimeProtocol(GA).decode(json.dumps(deltas[1]))
    assert isinstance(bad, bev.ErrorEvent)
    big = base64.b64decode(deltas[2]["delta"])
    assert len(big) == 5 * 48000  # a 5 s delta
    normal = [base64.b64decode(e["delta"]) for i, e in enumerate(deltas) if i not in (1, 2)]
    x = np.frombuffer(b"".join(normal), dtype="<i2").astype(float)
    assert len(x) == RATE  # the whole 1 s WAV, resampled to 24 kHz
    assert np.argmax(np.abs(np.fft.rfft(x))) * RATE / len(x) == pytest.approx(800, abs=2)
    delivered = d.s.state.conversation.audio_ms[deltas[0]["item_id"]]
    assert delivered == pytest.approx(6000)  # the oversized audio counts as delivered
    for e in d.events:
        if e is not deltas[1]:
            oracle.server_event("ga", e)


def test_injected_faults() -> None:
    d = Driver(GA)
    d.actions += d.s.inject("unknown_event", 0.0, event_type="response.future.delta")
    d.actions += d.s.inject("malformed_json", 0.0)
    d.actions += d.s.inject("error", 0.0, code="invalid_request_error", message="nope")
    assert d.types()[-2:] == ["response.future.delta", "error"]
    assert isinstance(d.actions[-2], SendRaw)
    assert (d.errors()[-1]["type"], d.errors()[-1]["message"]) == ("invalid_request_error", "nope")
    d.actions += d.s.inject("expire", 1.0)
    assert d.errors()[-1]["code"] == "session_expired" and d.actions[-1] == Close(1001, "session expired")
    assert d.s.inject("drop", 2.0) == [] and d.s.record.close_code == 1001
    with pytest.raises(ValueError, match="unknown fault"):
        Driver(GA).s.inject("explode", 0.0)


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
def test_a_gpt_realtime_2_model_answers_a_turn_with_a_preamble_and_the_answer_as_two_items(
    dialect: Dialect, oracle: Any
) -> None:
    if dialect is GA:
        d = voice_turn(dialect, "gpt-realtime-2.1", speed=4)
    else:  # the beta shape names only the beta models: one of them, told to say preambles
        d = voice_turn(dialect, speed=4, preamble_models="gpt-4o-realtime-preview")
    check_all(d, oracle)  # every event, of both items, is a valid server event of the dialect
    added = d.all(wire(dialect, "response.item_added"))
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [(0, "message"), (1, "message")]
    first, second = (e["item"]["id"] for e in added)
    transcripts = [(e["item_id"], e["transcript"]) for e in d.all(wire(dialect, "audio_transcript.done"))]
    answer = "I heard you say: What are your opening hours?."
    assert transcripts == [(first, "Let me check that for you."), (second, answer)]
    deltas = [e["item_id"] for e in d.all(wire(dialect, "audio.delta"))]
    assert deltas == sorted(deltas, key=[first, second].index) and set(deltas) == {first, second}  # one, then the other
    [response] = [e["response"] for e in d.all("response.done")]
    assert [o["id"] for o in response["output"]] == [first, second] and response["status"] == "completed"


@pytest.mark.parametrize(
    ("model", "items"),
    [("gpt-realtime-2", 2), ("gpt-realtime-2.1-mini", 2), ("gpt-realtime", 1), ("gpt-realtime-2025-08-28", 1),
     ("gpt-realtime-mini", 1)],
)  # fmt: skip
def test_which_models_say_a_preamble(model: str, items: int) -> None:
    assert len(voice_turn(GA, model, speed=4).all("response.output_item.added")) == items
    assert len(voice_turn(GA, model, speed=4, preamble="").all("response.output_item.added")) == 1  # turned off


@pytest.mark.parametrize("how", ["system_item", "session_update"])
def test_a_whispered_say_is_the_next_reply_once(how: str) -> None:
    """A supervisor's whisper reaches the model as a system item or as new session instructions; "say 'X'" in it
    makes the next in-band reply say X, once."""
    d = Driver(GA)
    d.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}})
    if how == "system_item":
        item = {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Now say 'pineapple'"}]}
        d.send({"type": "conversation.item.create", "item": item})
    else:
        d.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief. Say 'pineapple'"}})
    for _ in range(2):
        d.send({"type": "response.create"})
        d.settle()
    said = [e["transcript"] for e in d.all("response.output_audio_transcript.done")]
    assert said[0] == "pineapple" and "pineapple" not in said[1], said
