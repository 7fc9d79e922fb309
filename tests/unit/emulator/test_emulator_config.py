"""Session, response and item schemas per dialect: the service's error codes, params and messages."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.emulator.annotations import Annotations
from bridge.emulator.config import DialectConfig
from bridge.emulator.faults import Settings
from bridge.realtime.dialects import BETA, GA
from bridge.realtime.dialects.schema import ClientError

BETA_CONFIG, GA_CONFIG = DialectConfig(BETA), DialectConfig(GA)


def rejected(fn: Any, *args: Any, **kw: Any) -> ClientError:
    with pytest.raises(ClientError) as info:
        fn(*args, **kw)
    return info.value


def test_ga_rejects_a_beta_field_by_name() -> None:
    s = GA_CONFIG.defaults("gpt-realtime")
    err = rejected(GA_CONFIG.update, s, {"type": "realtime", "modalities": ["audio", "text"]})
    assert (err.code, err.param, err.message) == (
        "unknown_parameter",
        "session.modalities",
        "Unknown parameter: 'session.modalities'.",
    )


def test_ga_requires_type() -> None:
    err = rejected(GA_CONFIG.update, GA_CONFIG.defaults("gpt-realtime"), {"instructions": "hi"})
    assert (err.code, err.param, err.message) == (
        "missing_required_parameter",
        "session.type",
        "Missing required parameter: 'session.type'.",
    )


@pytest.mark.parametrize(
    ("update", "param"),
    [
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "session.audio.input.format.rate"),
        ({"audio": {"output": {"format": {"type": "audio/opus"}}}}, "session.audio.output.format.type"),
        ({"audio": {"output": {"voice": "nova"}}}, "session.audio.output.voice"),
        ({"output_modalities": ["audio", "text"]}, "session.output_modalities"),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}}},
            "session.audio.input.turn_detection.threshold",
        ),
    ],
)
def test_ga_invalid_values(update: dict[str, Any], param: str) -> None:
    err = rejected(GA_CONFIG.update, GA_CONFIG.defaults("gpt-realtime"), {"type": "realtime", **update})
    assert (err.code, err.param) == ("invalid_value", param)


def test_ga_nested_unknown_and_wrong_type() -> None:
    s = GA_CONFIG.defaults("gpt-realtime")
    err = rejected(
        GA_CONFIG.update,
        s,
        {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_ms": 3}}}},
    )
    assert (err.code, err.param) == ("unknown_parameter", "session.audio.input.turn_detection.silence_ms")
    err = rejected(GA_CONFIG.update, s, {"type": "realtime", "instructions": 5})
    assert (err.code, err.param) == ("invalid_type", "session.instructions")
    assert err.message == "Invalid type for 'session.instructions': expected a string, but got an integer instead."


def test_ga_update_merges_nested_audio_and_replaces_turn_detection() -> None:
    s = GA_CONFIG.defaults("gpt-realtime")
    s = GA_CONFIG.update(
        s,
        {
            "type": "realtime",
            "audio": {
                "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 700, "idle_timeout_ms": 6000}}
            },
        },
    )
    s = GA_CONFIG.update(s, {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}})
    view = GA_CONFIG.view(s)
    assert (view.input_format, view.output_format) == ("pcm16", "g711_ulaw")
    assert view.turn_detection == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 700,
        "create_response": True,
        "interrupt_response": True,
        "idle_timeout_ms": 6000,
    }
    assert s["audio"]["output"]["voice"] == "marin"  # untouched by the format update


def test_beta_rules() -> None:
    s = BETA_CONFIG.defaults("gpt-4o-realtime-preview")
    for update, code, param in [
        ({"output_modalities": ["audio"]}, "unknown_parameter", "session.output_modalities"),
        ({"type": "realtime"}, "unknown_parameter", "session.type"),
        ({"modalities": ["audio"]}, "invalid_value", "session.modalities"),
        ({"voice": "marin"}, "invalid_value", "session.voice"),  # marin needs a gpt-realtime model
        ({"input_audio_format": "audio/pcmu"}, "invalid_value", "session.input_audio_format"),
        (
            {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000}},
            "unknown_parameter",
            "session.turn_detection.idle_timeout_ms",
        ),
        ({"temperature": 0.1}, "invalid_value", "session.temperature"),
    ]:
        err = rejected(BETA_CONFIG.update, s, update)
        assert (err.code, err.param) == (code, param), update
    s = BETA_CONFIG.update(s, {"input_audio_format": "g711_alaw", "modalities": ["text", "audio"]})
    assert BETA_CONFIG.view(s).input_format == "g711_alaw"
    assert BETA_CONFIG.update(BETA_CONFIG.defaults("gpt-realtime"), {"voice": "cedar"})["voice"] == "cedar"


def test_response_params_per_dialect() -> None:
    ga = GA_CONFIG.response_params(
        {
            "conversation": "none",
            "metadata": {"k": "v"},
            "instructions": "x",
            "audio": {"output": {"voice": "ash", "format": {"type": "audio/pcma"}}},
        }
    )
    assert (ga.out_of_band, ga.voice, ga.output_format, ga.metadata) == (True, "ash", "g711_alaw", {"k": "v"})
    beta = BETA_CONFIG.response_params({"modalities": ["text"], "output_audio_format": "g711_ulaw"})
    assert (beta.output_modalities, beta.output_format, beta.out_of_band) == (("text",), "g711_ulaw", False)
    err = rejected(GA_CONFIG.response_params, {"modalities": ["audio", "text"]})
    assert (err.code, err.param) == ("unknown_parameter", "response.modalities")


def test_settings_from_query_strings() -> None:
    s = Settings().with_values({"speed": "0", "drop_after_s": "2.5", "beta_disabled": "true", "seed": "7"})
    assert (s.speed, s.faults.drop_after_s, s.faults.beta_disabled, s.seed) == (0.0, 2.5, True, 7)
    assert s.with_values({"drop_after_s": "none"}).faults.drop_after_s is None
    assert s.scaled(100) == 0.0 and Settings(speed=4).scaled(100) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="unknown emulator setting 'sped'"):
        Settings().with_values({"sped": "1"})
    with pytest.raises(ValueError, match="cannot read 'x' as float"):
        Settings().with_values({"speed": "x"})


def test_annotation_forms() -> None:
    a = Annotations.parse({"greeting": "Welcome.", "turns": [{"hears": "hi", "reply": {"tone_hz": 500}}]})
    a.extend(
        [
            {"greeting": {"text": "Hello again."}},
            {"reply": {"tool_call": {"name": "end_call", "arguments": {"why": "done"}}}},
        ]
    )
    assert a.take_greeting() is not None and a.take_greeting() is None
    first, second = a.next_turn(), a.next_turn()
    assert first is not None and first.hears == "hi" and first.reply is not None and first.reply.tone_hz == 500
    assert second is not None and second.reply is not None and second.reply.tool_call is not None
    assert second.reply.tool_call.arguments == '{"why": "done"}'
    with pytest.raises(ValueError, match="unknown reply field"):
        Annotations.parse([{"reply": {"txt": "typo"}}])


def test_cli_options() -> None:
    from bridge.emulator.server import main, options, parser

    args = parser().parse_args(["--port", "0", "--speed", "2", "--record", "/tmp/x", "--set", "drop_after_s=3",
                                "--model", "gpt-realtime*"])  # fmt: skip
    assert options(args) == {
        "api_key": None,
        "models": ["gpt-realtime*"],
        "client_secret_ttl_s": 60.0,
        "ping_interval_s": 20.0,
        "record_dir": "/tmp/x",
        "speed": 2.0,
        "drop_after_s": "3",
    }
    assert main(["--set", "bogus=1"]) == 2


def test_cli_settings_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.emulator.server import main, options, parser

    argv = ["--model-set", "gpt-realtime-2.1-mini:response_latency_ms=2150", "--model-set", "gpt-live-*:speed=1"]
    assert options(parser().parse_args(argv))["model_settings"] == {
        "gpt-realtime-2.1-mini": {"response_latency_ms": "2150"},
        "gpt-live-*": {"speed": "1"},
    }
    assert main(["--model-set", "gpt-realtime-2.1-mini:latency=1"]) == 2
    assert "model 'gpt-realtime-2.1-mini': unknown emulator setting 'latency'" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--model-set needs MODEL:NAME=VALUE"):
        options(parser().parse_args(["--model-set", "speed=1"]))


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/realtime", {"OpenAI-Beta": "realtime=v1"}, "beta"),
        ("/realtime", {"OpenAI-Beta": "assistants=v2, realtime=v1"}, "beta"),
        ("/realtime", {}, "ga"),
        ("/realtime", {"OpenAI-Beta": "assistants=v2"}, "ga"),
        ("/live/sessions", {}, "live"),
        ("/live/other", {}, None),
    ],
)
def test_the_dialect_is_picked_by_path_and_headers_as_the_service_does(
    path: str, headers: dict[str, str], expected: str | None
) -> None:
    from bridge.emulator.server import dialect_of

    dialect = dialect_of(path, headers)
    assert (dialect.name if dialect is not None else None) == expected
