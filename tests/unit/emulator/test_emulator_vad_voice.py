"""The energy VAD and the reply voice: pure functions, golden positions."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.vad import EnergyVad, VadEvent, threshold_dbfs
from bridge.emulator import voice

RATE = 24000


def sine(hz: float, seconds: float, rate: int = RATE, dbfs: float = -20.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    amp = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)  # RMS at dbfs
    return bytes(np.round(amp * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes())


def zeros(seconds: float, rate: int = RATE) -> bytes:
    return b"\x00\x00" * int(rate * seconds)


def peak(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x))


def test_threshold_mapping() -> None:
    assert threshold_dbfs(0.5) == pytest.approx(-35.0)
    assert threshold_dbfs(0.0) == pytest.approx(-60.0)
    assert threshold_dbfs(1.0) == pytest.approx(-10.0)
    assert threshold_dbfs(7) == threshold_dbfs(1.0)


def test_vad_start_and_stop_positions_include_padding_and_silence() -> None:
    vad = EnergyVad(RATE, threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    events = vad.feed(zeros(1.0)) + vad.feed(sine(300, 2.0)) + vad.feed(zeros(1.0))
    assert events == [VadEvent("start", 1000.0 - 300.0), VadEvent("stop", 3000.0 + 500.0)]


def test_vad_is_streaming_and_chunking_does_not_matter() -> None:
    pcm = zeros(0.5) + sine(300, 1.0) + zeros(0.8)
    whole = EnergyVad(RATE, prefix_padding_ms=100, silence_duration_ms=300).feed(pcm)
    vad = EnergyVad(RATE, prefix_padding_ms=100, silence_duration_ms=300)
    pieces = [e for i in range(0, len(pcm), 734) for e in vad.feed(pcm[i : i + 734])]  # odd, unaligned chunks
    assert whole == pieces == [VadEvent("start", 400.0), VadEvent("stop", 1800.0)]


def test_vad_threshold_rejects_quiet_audio_and_short_clicks() -> None:
    assert EnergyVad(RATE, threshold=0.5).feed(sine(300, 1.0, dbfs=-45)) == []  # below -35 dBFS
    assert EnergyVad(RATE, threshold=0.1).feed(sine(300, 1.0, dbfs=-45))[0].kind == "start"  # -55 dBFS threshold
    assert EnergyVad(RATE).feed(zeros(0.2) + sine(300, 0.03) + zeros(0.5)) == []  # 30 ms click


def test_tone_frequency_level_and_duration() -> None:
    pcm = voice.tone(600, 1000, RATE, dbfs=-12)
    x = np.frombuffer(pcm, dtype="<i2")
    assert len(x) == RATE
    assert peak(pcm, RATE) == pytest.approx(600, abs=1)
    assert 20 * np.log10(np.abs(x).max() / 32767) == pytest.approx(-12, abs=0.1)
    assert abs(int(x[0])) < 50 and abs(int(x[-1])) < 50  # faded edges


def test_reply_duration_and_chunking() -> None:
    assert voice.reply_duration_ms("a" * 10, ms_per_char=60, min_ms=500, max_ms=6000) == 600
    assert voice.reply_duration_ms("", ms_per_char=60, min_ms=500, max_ms=6000) == 500
    assert voice.reply_duration_ms("a" * 1000, ms_per_char=60, min_ms=500, max_ms=6000) == 6000
    chunks = voice.chunk(voice.silence(1050, 8000), 8000, 100)
    assert [len(c) for c in chunks] == [1600] * 10 + [800]


def test_wav_is_resampled(tmp_path: Path) -> None:
    path = tmp_path / "v.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(sine(500, 1.0, rate=16000))
    pcm = voice.load_wav(path, RATE)
    assert len(pcm) == 2 * RATE
    assert peak(pcm, RATE) == pytest.approx(500, abs=1)
    stereo = tmp_path / "s.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00" * 64)
    with pytest.raises(ValueError, match="mono 16-bit"):
        voice.load_wav(stereo, RATE)
