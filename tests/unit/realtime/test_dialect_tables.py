"""Each dialect table is whole: an encoder for every command, a decoder for every event it names, a handshake that
its own decoders confirm, formats that round-trip, and capabilities the session builders respect."""

from __future__ import annotations

import json

import pytest

from bridge import events as ev
from bridge.errors import DialectFieldError
from bridge.realtime.dialects import BETA, DIALECTS, GA, PROFILE_FORMATS, Capabilities, Dialect, WireAudio
from bridge.realtime.dialects.base import Usage
from bridge.realtime.dialects.common import check_format
from bridge.realtime.profile import AgentProfile
from bridge.realtime.protocol import RealtimeProtocol


def commands() -> list[type[ev.Command]]:
    return [c for c in vars(ev).values() if isinstance(c, type) and issubclass(c, ev.Command) and c is not ev.Command]


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=lambda d: d.name)
def test_every_command_has_an_encoder_and_every_event_a_decoder(dialect: Dialect) -> None:
    """A command the dialect lacks is refused with a reason, and encoding it says so by name."""
    assert set(commands()) <= set(dialect.encoders) | set(dialect.refused)
    assert not set(dialect.encoders) & set(dialect.refused)
    for command in dialect.refused:
        assert dialect.refused[command]
    assert set(dialect.server_events.values()) <= set(dialect.decoders)
    assert set(dialect.wire_names) <= set(dialect.decoders)


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=lambda d: d.name)
def test_the_handshake_is_confirmed_by_the_dialects_own_decoder(dialect: Dialect) -> None:
    handshake = dialect.handshake
    opening = handshake.opening(AgentProfile(), ())
    (frame,) = RealtimeProtocol(dialect).encode(opening)
    assert json.loads(frame)["type"] == dialect.client_events[handshake.opened_by]
    wire = {"type": dialect.wire(handshake.confirmed_by), "session": {"id": "sess_1"}}
    decoded = RealtimeProtocol(dialect).decode(json.dumps(wire))
    (confirmed,) = [e for e in decoded if isinstance(e, handshake.confirmation)]
    assert confirmed.session_id == "sess_1"  # type: ignore[attr-defined]  # every confirmation names the session


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=lambda d: d.name)
def test_formats_round_trip_and_are_capabilities(dialect: Dialect) -> None:
    caps = dialect.capabilities
    assert caps.input_formats == caps.output_formats and caps.input_formats <= set(PROFILE_FORMATS.values())
    for name, audio in PROFILE_FORMATS.items():
        if audio in caps.input_formats:
            assert dialect.format_name(dialect.format_value(name)) == name
        else:
            with pytest.raises(DialectFieldError):
                dialect.build_session(AgentProfile(audio_format=name))  # type: ignore[arg-type]  # a format word
    assert dialect.format_name("audio/unknown") is None and dialect.format_name(None) is None


def test_the_dialects_state_their_capabilities() -> None:
    for dialect in (BETA, GA):
        caps = dialect.capabilities
        assert (caps.turn_detection, caps.responds, caps.cancel, caps.truncate) == ("server", "model", True, True)
        assert not caps.continuous_audio
        assert WireAudio("pcm16", 24000) in caps.input_formats and WireAudio("g711_ulaw", 8000) in caps.output_formats
    assert str(WireAudio("pcm16", 24000)) == "pcm16 24 kHz"


def test_a_format_the_dialect_lacks_is_refused_by_name() -> None:
    pcm_only = Capabilities(
        turn_detection="none",
        responds="orchestrator",
        cancel=False,
        truncate=False,
        continuous_audio=True,
        continuous_output=True,
        usage="audio_seconds",
        session_cap_s=60.0,
        input_formats=frozenset({PROFILE_FORMATS["pcm16"]}),
        output_formats=frozenset({PROFILE_FORMATS["pcm16"]}),
    )
    check_format("live", AgentProfile(), pcm_only)
    with pytest.raises(DialectFieldError) as info:
        check_format("live", AgentProfile(audio_format="g711_ulaw"), pcm_only)
    assert info.value.field == "audio_format" and "g711_ulaw 8 kHz" in str(info.value)


def test_the_append_template_is_the_dialects_append_command() -> None:
    for dialect in (BETA, GA):
        (frame,) = RealtimeProtocol(dialect).encode(ev.AppendAudio(b"\x01\x02"))
        assert frame == dialect.append.encode(b"\x01\x02")
        assert json.loads(frame) == {"type": dialect.client_events["input.append"], "audio": "AQI="}


def test_a_dialect_is_its_own_key() -> None:
    """Dialects are compared and hashed by identity: a table is one object (the emulator keys secrets by it)."""
    assert {BETA: 1, GA: 2}[GA] == 2 and BETA != GA


def test_the_service_spells_a_responses_usage_in_each_dialects_shape() -> None:
    """Totals and output details alike in both; the input details are each dialect's (GA adds images and cache)."""
    used = Usage(input_text=10, input_audio=20, output_text=3, output_audio=40)
    totals = {"total_tokens": 73, "input_tokens": 30, "output_tokens": 43}
    output = {"output_token_details": {"text_tokens": 3, "audio_tokens": 40}}
    assert BETA.realtime_service.usage(used) == {
        **totals,
        "input_token_details": {"cached_tokens": 0, "text_tokens": 10, "audio_tokens": 20},
        **output,
    }
    ga = GA.realtime_service.usage(used)
    assert {k: v for k, v in ga.items() if k != "input_token_details"} == {**totals, **output}
    assert ga["input_token_details"]["text_tokens"] == 10 and ga["input_token_details"]["image_tokens"] == 0
