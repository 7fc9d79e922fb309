"""Test signals and measurements shared by the audio tests (coherent: whole cycles in a 1 s window)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from numpy.typing import NDArray

FULL = 32767


def tone(freq: float, rate: int, seconds: float = 1.5, level: float = 0.5 * FULL) -> NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def multitone(rate: int, seconds: float = 1.0, seed: int = 3) -> NDArray[np.int16]:
    """Band-limited noise, 200-3400 Hz: the same waveform whatever the sample rate."""
    rng = np.random.default_rng(seed)
    freqs, phases = rng.uniform(200, 3400, 80), rng.uniform(0, 2 * np.pi, 80)
    t = np.arange(int(rate * seconds)) / rate
    x = np.cos(2 * np.pi * np.outer(t, freqs) + phases).sum(axis=1)
    return np.round(x / np.abs(x).max() * 0.5 * FULL).astype(np.int16)


def run(convert: Callable[[bytes], bytes], x: NDArray[np.int16], chunks: Iterable[int]) -> NDArray[np.int16]:
    """Feed `x` through `convert` in chunks of the given sizes (samples); the concatenated output."""
    out, pos = [], 0
    for size in chunks:
        out.append(convert(x[pos : pos + size].tobytes()))
        pos += size
    assert pos >= len(x)
    return np.frombuffer(b"".join(out), dtype=np.int16)


def frames_of(x: NDArray[np.int16], frame: int) -> list[int]:
    return [frame] * -(-len(x) // frame)


def steady(y: NDArray[np.int16], rate: int) -> NDArray[np.float64]:
    """One second from 0.2 s on, past the filter's start-up transient."""
    seg = y[int(0.2 * rate) : int(1.2 * rate)].astype(np.float64)
    assert len(seg) == rate
    return seg


def spectrum(seg: NDArray[np.float64]) -> NDArray[np.float64]:
    """Power per 1 Hz bin of a 1 s segment (rectangular window: the test tones are coherent)."""
    p: NDArray[np.float64] = np.abs(np.fft.rfft(seg)) ** 2
    return p


def amplitude(seg: NDArray[np.float64], freq: int) -> float:
    return float(np.abs(np.fft.rfft(seg)[freq]) * 2 / len(seg))


def db(x: float) -> float:
    return float(10 * np.log10(x))


def xcorr_lag(y: NDArray[np.int16], ref: NDArray[np.int16], max_lag: int) -> float:
    """Lag of `y` behind `ref` in samples, interpolated to a fraction of a sample."""
    n = 1 << int(np.ceil(np.log2(len(y) + len(ref))))
    c = np.fft.irfft(np.fft.rfft(y.astype(float), n) * np.conj(np.fft.rfft(ref.astype(float), n)), n)
    k = int(np.argmax(c[:max_lag]))
    a, b, d = c[k - 1], c[k], c[k + 1]
    return k + 0.5 * (a - d) / (a - 2 * b + d)
