"""Settings: file < environment < flags, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.audio.frames import BEAT_FRAMES
from bridge.config import load_settings
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
