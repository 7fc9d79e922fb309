"""The one dBFS: a full-scale sine reads -3.01 dBFS, a level per frame agrees with the level of each frame, and
silence reads the floor it is given."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bridge.audio.echo import dbfs as echo_dbfs
from bridge.audio.level import FULL_SCALE, QUIET, SILENT, dbfs, rms
from bridge.audio.vad import EnergyVad


def test_a_full_scale_sine_reads_minus_3_dbfs() -> None:
    sine = FULL_SCALE * np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000)
    assert dbfs(rms(sine)) == pytest.approx(-3.01, abs=0.01)
    assert dbfs(FULL_SCALE / 10) == pytest.approx(-20.0)


def test_frames_and_a_frame_agree() -> None:
    amplitudes = np.array([0.0, 1.0, 327.68, FULL_SCALE])
    levels = dbfs(amplitudes)
    assert levels.tolist() == pytest.approx([dbfs(float(a)) for a in amplitudes])
    assert levels[2] == pytest.approx(-40.0)


def test_silence_reads_its_floor() -> None:
    assert dbfs(0.0) == pytest.approx(20 * math.log10(SILENT / FULL_SCALE))
    assert dbfs(0.0, QUIET) == pytest.approx(-210.31, abs=0.01)
    assert rms(np.zeros(0)) == 0.0
    assert echo_dbfs(np.zeros(0)) == -120.0 and echo_dbfs(np.zeros(160)) == dbfs(0.0, QUIET)


def test_the_vad_hears_a_frame_above_its_threshold_in_dbfs() -> None:
    vad = EnergyVad(8000, threshold=0.5, prefix_padding_ms=0, silence_duration_ms=100)  # -35 dBFS
    loud = np.full(160 * 10, 0.1 * FULL_SCALE, dtype="<i2").tobytes()  # -20 dBFS
    quiet = np.full(160 * 10, 0.001 * FULL_SCALE, dtype="<i2").tobytes()  # -60 dBFS
    assert vad.feed(quiet) == []
    assert [e.kind for e in vad.feed(loud)] == ["start"]
