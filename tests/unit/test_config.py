"""Settings: file < environment < flags, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.audio.frames import BEAT_FRAMES
from bridge.config import Settings, load_settings, load_settings_with_sources, masked
from bridge.errors import ConfigError


def test_media_beat_comes_from_the_file_then_the_environment_then_a_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLBRIDGE_MEDIA_BEAT", raising=False)
    assert load_settings().media_beat_frames == BEAT_FRAMES
    path = tmp_path / "serve.yaml"
    path.write_text("media_beat_frames: 2\n")
    assert load_settings(path).media_beat_frames == 2
    monkeypatch.setenv("CALLBRIDGE_MEDIA_BEAT", "1")
    assert load_settings(path).media_beat_frames == 1
    assert load_settings(path, media_beat_frames=4).media_beat_frames == 4


def test_a_bad_media_beat_names_the_file_and_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLBRIDGE_MEDIA_BEAT", raising=False)
    path = tmp_path / "serve.yaml"
    path.write_text("media_beat_frames: 9\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert (caught.value.source, caught.value.field) == (f"file {path}", "media_beat_frames")
    monkeypatch.setenv("CALLBRIDGE_MEDIA_BEAT", "0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert (caught.value.source, caught.value.field) == ("variable CALLBRIDGE_MEDIA_BEAT", "media_beat_frames")


def test_a_jitter_buffer_floor_out_of_range_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("sip_jitter_buffer_ms: 60\n")
    assert load_settings(path).sip_jitter_buffer_ms == 60
    path.write_text("sip_jitter_buffer_ms: 500\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert (caught.value.source, caught.value.field) == (f"file {path}", "sip_jitter_buffer_ms")


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("javascript:alert(1)//{trace_id}", "http:// or https://"),
        ("https://user:pw@tempo.example.com/trace/{trace_id}", "no credentials"),
        ("https://tempo.example.com/trace/", "{trace_id} marks where"),
        ('https://tempo.example.com/trace/{trace_id}"><script>', "no spaces, quotes"),
        ("https://tempo.example.com/trace/{trace_id} x", "no spaces, quotes"),
    ],
)
def test_a_trace_ui_url_is_an_http_template_with_the_trace_id_and_nothing_else(template: str, why: str) -> None:
    with pytest.raises(ValidationError, match="tracing_ui_url") as caught:
        Settings(tracing_ui_url=template)
    assert why in str(caught.value)
    good = "https://tempo.example.com/explore?trace={trace_id}&orgId=1"
    assert Settings(tracing_ui_url=good).tracing_ui_url == good and Settings().tracing_ui_url == ""


def test_the_parts_of_the_settings_keep_the_flat_keys_of_the_file(tmp_path: Path) -> None:
    file = tmp_path / "serve.yaml"
    file.write_text(
        "tracing: otlp\ntracing_ui_url: https://jaeger.example.com/trace/{trace_id}\nwebhook_caller: masked\n"
    )
    settings, sources = load_settings_with_sources(file)
    assert (settings.tracing, settings.webhook_caller) == ("otlp", "masked")
    assert settings.tracing_ui_url == "https://jaeger.example.com/trace/{trace_id}"
    assert sources["tracing_ui_url"] == f"file {file}"
    assert masked(settings)["tracing_ui_url"] == settings.tracing_ui_url  # no secret: shown as it is


def test_the_console_links_only_a_trace_id_into_the_template() -> None:
    from bridge.supervisor.trace_link import trace_url, with_trace_url

    template = "https://tempo.example.com/trace/{trace_id}"
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_url(template, trace) == f"https://tempo.example.com/trace/{trace}"
    assert trace_url("", trace) == "" and trace_url(template, "") == ""
    assert trace_url(template, trace.upper()) == "" and trace_url(template, '"><b>x</b>') == ""
    assert with_trace_url(template, {"call_id": "c1"}) == {"call_id": "c1"}
    assert with_trace_url(template, {"trace_id": trace})["trace_url"].endswith(trace)
