"""Audio comparisons shared by the SIP and bridge integration tests (numpy only, no project imports)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def best_correlation(haystack: NDArray[np.float64], needle: NDArray[np.float64]) -> tuple[float, int]:
    """Max over lags of the normalized cross-correlation of ``needle`` against windows of ``haystack``."""
    n, m = len(haystack), len(needle)
    if m == 0 or n < m:
        return 0.0, 0
    size = 1 << (n + m).bit_length()
    corr = np.fft.irfft(np.fft.rfft(haystack, size) * np.conj(np.fft.rfft(needle, size)), size)[: n - m + 1]
    energy = np.concatenate([[0.0], np.cumsum(np.square(haystack))])
    window = np.sqrt(np.maximum(energy[m:] - energy[:-m], 1e-9))[: n - m + 1]
    score = corr / (window * np.linalg.norm(needle))
    lag = int(np.argmax(score))
    return float(score[lag]), lag


def pieces_heard(heard: NDArray[np.float64], sent: NDArray[np.float64], piece: int) -> list[tuple[float, int]]:
    """``sent`` cut into pieces of ``piece`` samples, each found in ``heard`` on its own: (correlation, where it
    starts in ``heard`` minus where it starts in ``sent``). Found piece by piece, a jitter buffer's dropped or
    concealed frame costs the one piece it falls in, not the whole comparison."""
    return [
        (score, lag - start)
        for start in range(0, len(sent) - piece + 1, piece)
        for score, lag in [best_correlation(heard, sent[start : start + piece])]
    ]
