"""Measure and make test audio: what the softphone reports and what the SIP tests assert on.

Level convention: ``dBFS = 20·log10(rms / 32768)`` over PCM16 samples, so a full-scale sine reads −3.01 dBFS and
:func:`tone` at ``dbfs=-12`` has an RMS of −12 dBFS. "Active" audio is the 20 ms frames whose own RMS is above
``floor_dbfs``: the jitter buffer's leading silence and the tail after a hangup do not dilute the level.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from bridge.audio.level import FULL_SCALE, dbfs, rms

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160


class AudioStats(TypedDict):
    ms: int  # total audio measured
    active_ms: int  # frames above the floor
    rms_dbfs: float | None  # over active frames; None if there are none
    peak_hz: float | None  # strongest spectral peak over active frames (Hann window, interpolated)


def tone(freq_hz: float, seconds: float, dbfs: float = -12.0, rate: int = SAMPLE_RATE) -> bytes:
    """A sine at ``freq_hz`` with RMS ``dbfs``, as PCM16 little-endian."""
    n = round(seconds * rate)
    amplitude = FULL_SCALE * 10 ** (dbfs / 20) * math.sqrt(2)
    t = np.arange(n) / rate
    samples = np.round(amplitude * np.sin(2 * np.pi * freq_hz * t))
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 little-endian audio in dBFS (:func:`bridge.audio.level.dbfs`); very low for nothing."""
    return dbfs(rms(np.frombuffer(pcm, dtype="<i2")))


def peak_frequency(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float | None:
    """Frequency of the largest FFT bin (DC excluded), refined by parabolic interpolation on log magnitude."""
    if len(samples) < 32:
        return None
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    if spectrum[k] <= 0:
        return None
    offset = 0.0
    if 0 < k < len(spectrum) - 1:
        a, b, c = (math.log(max(float(v), 1e-12)) for v in spectrum[k - 1 : k + 2])
        denominator = a - 2 * b + c
        if denominator != 0:
            offset = 0.5 * (a - c) / denominator
    return (k + offset) * rate / len(samples)


def audio_stats(pcm: bytes, floor_dbfs: float = -50.0, rate: int = SAMPLE_RATE) -> AudioStats:
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    frame = rate // 50
    whole = len(samples) - len(samples) % frame
    frames = samples[:whole].reshape(-1, frame) if whole else samples[:0].reshape(0, frame)
    floor_rms = FULL_SCALE * 10 ** (floor_dbfs / 20)
    active = frames[np.sqrt(np.mean(np.square(frames), axis=1)) > floor_rms] if len(frames) else frames
    flat = active.reshape(-1)
    return AudioStats(
        ms=len(samples) * 1000 // rate,
        active_ms=len(active) * 20,
        rms_dbfs=round(dbfs(rms(flat)), 2) if len(flat) else None,
        peak_hz=(None if (p := peak_frequency(flat, rate)) is None else round(p, 1)) if len(flat) else None,
    )


def heard_spans(
    pcm: bytes, floor_dbfs: float = -50.0, bridge_ms: int = 400, rate: int = SAMPLE_RATE
) -> list[tuple[int, int, float]]:
    """Where ``pcm`` has sound: ``(start_ms, end_ms, rms_dbfs)`` of each run of 20 ms frames above ``floor_dbfs``,
    runs less than ``bridge_ms`` apart joined (the pauses inside one sentence)."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    frame = rate // 50
    whole = len(samples) - len(samples) % frame
    if not whole:
        return []
    frames = samples[:whole].reshape(-1, frame)
    loud = np.sqrt(np.mean(np.square(frames), axis=1)) > FULL_SCALE * 10 ** (floor_dbfs / 20)
    runs: list[list[int]] = []
    for index in np.flatnonzero(loud).tolist():
        if runs and (index - runs[-1][1]) * 20 <= bridge_ms:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
    return [
        (start * 20, end * 20, round(dbfs(rms(frames[start:end][loud[start:end]].reshape(-1))), 1))
        for start, end in runs
    ]
