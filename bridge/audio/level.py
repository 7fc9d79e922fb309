"""Levels in dBFS, the one formula: ``20·log10(amplitude / 32768)`` for an RMS (or a frame's peak RMS) of PCM16
samples, so a full-scale sine reads −3.01 dBFS. An amplitude below ``floor`` counts as ``floor`` (silence has a
level: :data:`QUIET` gives −210.3 dBFS, :data:`SILENT` −270.3 dBFS).
"""

from __future__ import annotations

from typing import Final, overload

import numpy as np
from numpy.typing import NDArray

FULL_SCALE: Final = 32768.0
QUIET: Final = 1e-6  # the echo guard's floor (its frames are never quieter than this in practice)
SILENT: Final = 1e-9  # the floor of measurements (the VAD, the test audio's statistics)


@overload
def dbfs(amplitude: float, floor: float = SILENT) -> float: ...


@overload
def dbfs(amplitude: NDArray[np.float64], floor: float = SILENT) -> NDArray[np.float64]: ...


def dbfs(amplitude: float | NDArray[np.float64], floor: float = SILENT) -> float | NDArray[np.float64]:
    """The level of ``amplitude`` (one, or an array of them: one level each) in dBFS."""
    if isinstance(amplitude, np.ndarray):
        return np.asarray(20.0 * np.log10(np.maximum(amplitude, floor) / FULL_SCALE), dtype=np.float64)
    return 20.0 * float(np.log10(max(amplitude, floor) / FULL_SCALE))


def rms(samples: NDArray[np.float64] | NDArray[np.int16]) -> float:
    """The root mean square of ``samples`` (0 for none)."""
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
