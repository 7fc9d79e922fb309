"""Audio measurements the SIP tests rely on: a tone reads back at its frequency and level."""

from __future__ import annotations

import pytest

from bridge.audio.analysis import audio_stats, tone


@pytest.mark.parametrize(("hz", "dbfs"), [(600.0, -12.0), (1020.0, -10.0), (3000.0, -30.0)])
def test_tone_reads_back_at_its_frequency_and_level(hz: float, dbfs: float) -> None:
    stats = audio_stats(tone(hz, 1.0, dbfs))
    assert stats["ms"] == 1000
    assert stats["active_ms"] == 1000
    assert stats["peak_hz"] == pytest.approx(hz, abs=0.5)
    assert stats["rms_dbfs"] == pytest.approx(dbfs, abs=0.05)


def test_leading_silence_does_not_dilute_the_level() -> None:
    stats = audio_stats(bytes(8000) + tone(1020.0, 0.5, -10.0))
    assert stats["ms"] == 1000
    assert stats["active_ms"] == 500
    assert stats["rms_dbfs"] == pytest.approx(-10.0, abs=0.05)


def test_silence_has_no_level_or_peak() -> None:
    assert audio_stats(bytes(3200)) == {"ms": 200, "active_ms": 0, "rms_dbfs": None, "peak_hz": None}
    assert audio_stats(b"")["ms"] == 0
