"""The emulator's Live session in virtual time: the bridge's own Live encoder drives it, every event it sends is
strictly valid against ``openai.types.live`` (and the backend's inner events against the Responses stream), and
the bridge's decoder reads them back."""

from __future__ import annotations

import base64
import itertools
import json
import typing
import warnings
from typing import Any

import numpy as np
import pytest
from openai.types.live import ClientEventParam, ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from bridge import events as bev
from bridge.dialplan import BUILTIN_TOOLS
from bridge.emulator.annotations import Annotations
from bridge.emulator.faults import Settings
from bridge.emulator.live import LiveSession
from bridge.emulator.session import Abort, Action, Close, Send, SendRaw
from bridge.realtime.dialects import LIVE
from bridge.realtime.profile import AgentProfile
from bridge.realtime.protocol import RealtimeProtocol

TOOLS = (BUILTIN_TOOLS["transfer_to_human"], BUILTIN_TOOLS["end_call"])
FRAME_S = 0.02


def speech(seconds: float, rate: int) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    x = np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 600 * t) + 0.25 * np.sin(2 * np.pi * 900 * t)
    x *= 0.1 * 32768 / np.sqrt(np.mean(x**2))  # -20 dBFS RMS
    return np.round(x).astype("<i2").tobytes()


def peak_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


class Driver:
    """A Live session in virtual time, fed by the bridge's own encoder; the caller's audio goes in 20 ms appends
    at real-time pace (silence included), as the bridge sends it."""

    def __init__(
        self, *, annotations: Any = None, speed: float = 1.0, profile: AgentProfile | None = None, **settings: Any
    ) -> None:
        self.protocol = RealtimeProtocol(LIVE)
        self.profile = profile or AgentProfile(tools=TOOLS)
        self.s = LiveSession(
            LIVE,
            Settings(seed=1).with_values({"speed": speed, **settings}),
            annotations=Annotations.parse(annotations),
            now=0.0,
            wall=1_700_000_000.0,
        )
        self.t = 0.0
        self.actions: list[Action] = list(self.s.open())
        self.rate = {"pcm16": 24000, "pcm16_16k": 16000}.get(self.profile.audio_format, 8000)
        self.width = 1 if self.profile.audio_format.startswith("g711") else 2
        self.quiet = {"g711_ulaw": b"\xff", "g711_alaw": b"\xd5"}.get(self.profile.audio_format, b"\x00")

    @property
    def events(self) -> list[dict[str, Any]]:
        return [a.event for a in self.actions if isinstance(a, Send)]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def command(self, command: bev.Command) -> None:
        for frame in self.protocol.encode(command):
            self.actions += self.s.receive(frame, self.t)

    def raw(self, event: dict[str, Any]) -> None:
        self.actions += self.s.receive(json.dumps(event), self.t)

    def start(self) -> None:
        self.command(bev.StartSession(self.profile))

    def stream(self, pcm: bytes, *, until: float | None = None) -> None:
        """Append ``pcm`` in 20 ms frames at real-time pace, then silence until ``until`` (seconds)."""
        step = int(self.rate * FRAME_S) * self.width
        for i in range(0, len(pcm), step):
            self.command(bev.AppendAudio(pcm[i : i + step]))
            self.tick(FRAME_S)
        while until is not None and self.t < until:
            self.command(bev.AppendAudio(self.quiet * step))
            self.tick(FRAME_S)

    def tick(self, seconds: float) -> None:
        self.t += seconds
        self.actions += self.s.advance(self.t)

    def decoded(self) -> list[bev.Event]:
        return [e for a in self.actions if isinstance(a, Send) for e in self.protocol.decode(json.dumps(a.event))]

    def output_pcm(self) -> bytes:
        return b"".join(base64.b64decode(e["delta"]) for e in self.of_type("session.output_audio.delta"))


def _by_type(union: Any) -> dict[str, Any]:
    """The union's members by their ``type``: the union's discriminator, so validating against the member is
    validating against the union (and much faster than trying every member)."""
    members = typing.get_args(typing.get_args(union)[0])
    return {m.model_fields["type"].annotation.__args__[0]: m for m in members}


SERVER_MODELS, RESPONSES_MODELS = _by_type(ServerEvent), _by_type(ResponseStreamEvent)


def check_all(driver: Driver, oracle: Any) -> None:
    """Every event is strictly valid, and so is every Responses event inside ``response.event``."""
    for event in driver.events:
        oracle.model(SERVER_MODELS[event["type"]], event)
        if event["type"] == "response.event":
            oracle.model(RESPONSES_MODELS[event["event"]["type"]], event["event"])
    assert not any(isinstance(e, bev.UnknownEvent) for e in driver.decoded())


def test_nothing_happens_before_session_start_and_the_start_is_answered(oracle: Any) -> None:
    d = Driver()
    d.command(bev.AppendAudio(bytes(640)))
    (error,) = d.of_type("error")
    assert error["error"]["code"] == "session_not_started" and error["error"]["type"] == "invalid_request_error"
    d.start()
    (started,) = d.of_type("session.started")
    session = started["session"]
    assert session["model"] == "gpt-live-1" and session["status"] == "active"
    assert session["expires_at"] == 1_700_000_000 + 7200  # about 2 h: the dialect's cap
    assert [t["name"] for t in session["delegation"]["responses"]["tools"]] == [t.name for t in TOOLS]
    ready, configured = d.protocol.decode(json.dumps(started))
    assert isinstance(ready, bev.SessionReady) and configured == bev.SessionConfigured(
        session_id=session["id"], voice="alloy", audio_format="pcm16"
    )
    check_all(d, oracle)


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        (
            {"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcm", "rate": 8000}}},
            "invalid_value",
            "session.audio.format.rate",
        ),
        ({"model": "gpt-live-1", "modalities": ["audio"]}, "unknown_parameter", "session.modalities"),
        ({"instructions": "x"}, "missing_required_parameter", "session.model"),
        (
            {"model": "gpt-live-1", "audio": {"output": {"voice": "nobody"}}},
            "invalid_value",
            "session.audio.output.voice",
        ),
    ],
)
def test_a_bad_start_gets_lives_error_envelope(oracle: Any, session: dict[str, Any], code: str, param: str) -> None:
    d = Driver()
    d.raw({"type": "session.start", "event_id": "evt_1", "session": session})
    (error,) = d.events
    assert (error["error"]["code"], error["error"]["param"], error["error"]["client_event_id"]) == (
        code,
        param,
        "evt_1",
    )
    assert not d.s.closed and d.of_type("session.started") == []
    check_all(d, oracle)


def test_a_realtime_model_is_refused_and_the_socket_closes(oracle: Any) -> None:
    d = Driver(profile=AgentProfile(model="gpt-realtime"))
    d.start()
    (error,) = d.events
    assert error["error"]["code"] == "invalid_model"
    assert [a for a in d.actions if isinstance(a, Close)] == [Close(4000, error["error"]["message"])]
    check_all(d, oracle)


def test_an_unknown_client_event_is_named(oracle: Any) -> None:
    d = Driver()
    d.start()
    d.raw({"type": "input_audio_buffer.commit", "event_id": "evt_9"})
    error = d.of_type("error")[-1]["error"]
    assert error["code"] == "invalid_value" and error["param"] == "type" and "'session.start'" in error["message"]
    check_all(d, oracle)


def test_the_output_is_one_real_time_stream_of_silence_between_replies(oracle: Any) -> None:
    d = Driver()
    d.start()
    d.stream(b"", until=2.0)
    deltas = d.of_type("session.output_audio.delta")
    assert len(deltas) == 21  # one per 100 ms of real time, from the start on (t = 0.0 ... 2.0)
    assert d.output_pcm() == bytes(len(d.output_pcm())) and len(d.output_pcm()) == 21 * 4800
    check_all(d, oracle)


def test_speed_zero_says_things_at_once_and_fills_no_silence(oracle: Any) -> None:
    d = Driver(speed=0, annotations={"greeting": {"text": "Hi.", "duration_ms": 600}})
    d.start()
    d.command(bev.CreateResponse(instructions="Greet the caller."))
    assert len(d.of_type("session.output_audio.delta")) == 6 and d.s.next_deadline() is not None  # the cap only
    d.tick(5.0)
    assert len(d.of_type("session.output_audio.delta")) == 6
    check_all(d, oracle)


def test_commentary_greets_with_timed_words_and_the_meant_tone(oracle: Any) -> None:
    greeting = {"greeting": {"text": "Welcome to Acme support.", "tone_hz": 440, "duration_ms": 1000}}
    d = Driver(annotations=greeting, profile=AgentProfile(audio_format="pcm16_16k", tools=TOOLS))
    d.start()
    d.tick(0.35)
    d.command(bev.CreateResponse(instructions="Greet the caller."))
    (ack,) = d.of_type("session.commentary.appended")
    assert ack["start_ms"] == ack["end_ms"] == 400  # where the output stream is
    d.stream(b"", until=2.0)
    words = d.of_type("session.output_transcript.delta")
    assert "".join(w["delta"] for w in words) == "Welcome to Acme support."
    assert words[0]["start_ms"] >= 400 and all(a["end_ms"] <= b["start_ms"] for a, b in itertools.pairwise(words))
    pcm = np.frombuffer(d.output_pcm(), dtype="<i2")
    voiced = np.flatnonzero(np.abs(pcm) > 1000)
    assert (voiced[-1] - voiced[0]) / 16000 == pytest.approx(1.0, abs=0.02)  # the reply, and silence around it
    assert peak_hz(pcm[voiced[0] : voiced[-1]].tobytes(), 16000) == pytest.approx(440, abs=2)
    (usage,) = d.of_type("session.usage.updated")
    assert usage["usage"]["seconds"] == pytest.approx(1.5, abs=0.11)
    assert d.of_type("error") == []  # every command the bridge sent was accepted
    check_all(d, oracle)


def test_a_caller_turn_is_transcribed_with_timings_and_answered(oracle: Any) -> None:
    annotations = [{"hears": "Where is my parcel?", "reply": {"text": "It ships today.", "tone_hz": 500}}]
    d = Driver(annotations=annotations, transcript_delay_ms=100)
    d.start()
    d.stream(bytes(2 * 24000), until=1.0)
    d.stream(speech(1.5, 24000), until=5.0)
    heard = d.of_type("session.input_transcript.delta")
    assert "".join(h["delta"] for h in heard) == "Where is my parcel?"
    assert heard[0]["start_ms"] == pytest.approx(1000 - 300, abs=20)  # the onset, with 300 ms of padding
    assert heard[-1]["end_ms"] == pytest.approx(2500, abs=30)  # the speech's end, not the silence after it
    said = d.of_type("session.output_transcript.delta")
    assert "".join(s["delta"] for s in said) == "It ships today."
    assert said[0]["start_ms"] > heard[-1]["end_ms"]
    assert [r["status"] for r in d.s.record.responses] == ["completed"]
    caller = [e for e in d.decoded() if isinstance(e, bev.CallerTranscript)]
    assert all(c.start_ms is not None and c.end_ms is not None and not c.final for c in caller)
    assert d.of_type("error") == []  # every command the bridge sent was accepted
    check_all(d, oracle)


def test_the_caller_speaking_over_the_model_stops_it(oracle: Any) -> None:
    annotations = {"greeting": {"text": "Please listen to our long menu of options.", "duration_ms": 4000}}
    d = Driver(annotations=annotations)
    d.start()
    d.command(bev.CreateResponse(instructions="Read the menu."))
    d.stream(b"", until=1.0)
    before = len(d.output_pcm())
    d.stream(speech(0.6, 24000), until=2.5)
    (reply,) = d.s.record.responses
    assert reply["status"] == "interrupted" and d.s.record.cancels[0]["by"] == "turn_detected"
    cut_at = next(e for e in d.s.record.timeline if e[2] == "session.usage.updated")[0]
    assert 1.0 < cut_at < 1.2  # within one delta of the caller's onset (plus the VAD's 60 ms)
    tail = np.frombuffer(d.output_pcm()[before:], dtype="<i2")[int(0.3 * 24000) :]
    assert np.all(tail[: int(0.5 * 24000)] == 0)  # then silence: the model stopped itself
    assert d.of_type("error") == []  # every command the bridge sent was accepted
    check_all(d, oracle)


def test_a_tool_goes_to_the_backend_and_is_answered_when_every_call_is(oracle: Any) -> None:
    d = Driver(annotations=[{"hears": "I want to talk to a person."}])
    d.start()
    d.stream(speech(1.0, 24000), until=2.5)
    (created,) = d.of_type("session.delegation.created")
    inner = [e["event"]["type"] for e in d.of_type("response.event")]
    assert inner == [
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert {e["delegation_id"] for e in d.of_type("response.event")} == {created["delegation"]["id"]}
    (call,) = [e for e in d.decoded() if isinstance(e, bev.FunctionCall)]
    assert call.name == "transfer_to_human" and json.loads(call.arguments) == {"reason": "I want to talk to a person."}
    assert call.response_id == created["delegation"]["id"]
    d.command(bev.FunctionOutput(call_id="call_nope", output="{}", respond=False))
    assert d.of_type("error")[-1]["error"]["param"] == "item.call_id"
    d.raw({"type": "response.create"})
    assert d.of_type("error")[-1]["error"]["code"] == "tool_output_missing"
    d.command(bev.FunctionOutput(call_id=call.call_id, output='{"status": "transferring"}'))
    d.stream(b"", until=8.0)
    said = "".join(e["delta"] for e in d.of_type("session.output_transcript.delta"))
    assert said == 'Thanks for waiting. The result is: {"status": "transferring"}'
    assert [type(e).__name__ for e in d.decoded() if isinstance(e, bev.ResponseStarted | bev.ResponseDone)] == [
        "ResponseStarted",
        "ResponseDone",
        "ResponseStarted",
        "ResponseDone",
    ]
    check_all(d, oracle)


def test_keys_and_notes_go_in_as_text(oracle: Any) -> None:
    d = Driver()
    d.start()
    d.command(bev.AddText("The caller pressed the key 1 on the phone keypad."))
    d.command(bev.AddText("The transfer did not start.", bev.Role.SYSTEM))
    acks = [e["type"] for e in d.events if e["type"].endswith(".appended")]
    assert acks == ["session.thinking.appended", "session.instructions.appended"]
    d.stream(b"", until=6.0)
    said = "".join(e["delta"] for e in d.of_type("session.output_transcript.delta"))
    assert said == "I heard you say: The caller pressed the key 1 on the phone keypad.."
    assert d.of_type("error") == []  # every command the bridge sent was accepted
    check_all(d, oracle)


def test_g711_passes_through_both_ways(oracle: Any) -> None:
    d = Driver(
        profile=AgentProfile(audio_format="g711_ulaw"), annotations={"greeting": {"text": "Hi.", "tone_hz": 700}}
    )
    d.start()
    d.command(bev.CreateResponse(instructions="Greet."))
    d.stream(b"\xff" * 1600, until=1.5)  # μ-law silence
    assert d.s.record.audio[0].format == "g711_ulaw" and len(d.s.record.input_g711) == 1.5 * 8000
    with warnings.catch_warnings():  # the stdlib's reference codec (3.11), independent of the emulator's
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    pcm = audioop.ulaw2lin(d.output_pcm(), 2)
    voiced = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype="<i2")) > 1000)
    assert peak_hz(pcm[2 * voiced[0] : 2 * voiced[-1]], 8000) == pytest.approx(700, abs=5)
    assert d.of_type("error") == []  # every command the bridge sent was accepted
    check_all(d, oracle)


def test_close_answers_with_the_final_usage(oracle: Any) -> None:
    d = Driver()
    d.start()
    d.stream(b"", until=1.0)
    d.raw({"type": "session.close", "event_id": "evt_bye"})
    closed = d.of_type("session.closed")[-1]
    assert closed["reason"] == "close_requested" and closed["usage"]["seconds"] == pytest.approx(1.1, abs=0.05)
    assert closed["client_event_id"] == "evt_bye"
    assert isinstance(d.actions[-1], Close) and d.actions[-1].code == 1000 and d.s.closed
    usage, end = d.protocol.decode(json.dumps(closed))
    assert usage == bev.UsageUpdated(seconds=closed["usage"]["seconds"], final=True) and isinstance(end, bev.Closed)
    check_all(d, oracle)


def test_the_cap_ends_the_session_as_expired(oracle: Any) -> None:
    d = Driver(session_max_s=1.5)
    d.start()
    d.stream(b"", until=2.0)
    (closed,) = d.of_type("session.closed")
    assert closed["reason"] == "expired" and d.s.closed
    _, end = d.protocol.decode(json.dumps(closed))
    assert isinstance(end, bev.Closed) and (end.error_class, end.retryable) == (bev.ErrorClass.SERVER, True)
    check_all(d, oracle)


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("error_mid_response", lambda d: d.of_type("error")[0]["error"]["code"] == "server_error"),
        ("unknown_event", lambda d: "session.emulator_unknown" in [e["type"] for e in d.events]),
        ("invalid_base64_delta", lambda d: any(e.get("delta") == "!!not*base64!!" for e in d.events)),
        ("malformed_json", lambda d: any(isinstance(a, SendRaw) for a in d.actions)),
        ("drop_mid_response", lambda d: isinstance(d.actions[-1], Abort) and d.s.closed),
    ],
)
def test_faults_fire_in_the_nth_thing_said(fault: str, check: Any) -> None:
    d = Driver(
        **{fault: 1, "fault_after_deltas": 2}, annotations={"greeting": {"text": "Hello there.", "duration_ms": 800}}
    )
    d.start()
    d.command(bev.CreateResponse(instructions="Greet."))
    d.stream(b"", until=1.5)
    assert check(d)


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ({"type": "session.commentary.append", "content": "Hi."}, "missing_required_parameter", "delegation_id"),
        ({"type": "session.thinking.append", "content": 5, "delegation_id": None}, "invalid_type", "content"),
        ({"type": "session.input_audio.append"}, "missing_required_parameter", "audio"),
        ({"type": "response.item.create"}, "missing_required_parameter", "item"),
    ],
)
def test_a_client_event_the_sdk_refuses_gets_lives_error_envelope(
    oracle: Any, event: dict[str, Any], code: str, param: str
) -> None:
    """What the SDK's client-event union (its request shapes) refuses, the emulator refuses by name."""
    with pytest.raises(ValidationError):
        TypeAdapter(ClientEventParam).validate_python(event)
    d = Driver()
    d.start()
    d.raw({**event, "event_id": "evt_bad"})
    error = d.of_type("error")[-1]["error"]
    assert (error["code"], error["param"], error["client_event_id"]) == (code, param, "evt_bad")
    check_all(d, oracle)


def test_a_fixture_plays_through_the_output_and_is_acknowledged(oracle: Any) -> None:
    d = Driver()
    d.start()
    clip = speech(0.5, 24000)
    d.raw({"type": "session.output_audio.fixture.play", "audio": base64.b64encode(clip).decode(), "event_id": "evt_f"})
    d.raw({"type": "session.output_audio.fixture.play", "audio": "", "event_id": "evt_e"})
    d.command(bev.AddText("Please hold."))  # rejected while the fixture plays
    d.stream(b"", until=1.0)
    kinds = [e["type"] for e in d.events if "fixture" in e["type"] or e["type"] == "error"]
    assert kinds == ["session.output_audio.fixture.playing", "error", "error", "session.output_audio.fixture.played"]
    assert [e["error"]["code"] for e in d.of_type("error")] == ["invalid_value", "fixture_active"]
    assert np.abs(np.frombuffer(d.output_pcm(), dtype="<i2")).max() > 1000  # the clip went out in the stream
    check_all(d, oracle)
