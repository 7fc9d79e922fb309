"""A telephone line that returns what its caller is played: the echo a hybrid or a speakerphone makes.

Pure, for the virtual phone of replays, the echo set of call scripts and tests: each 20 ms frame the caller hears
comes back ``delay_ms`` later, ``level_db`` down, with optional white line noise at ``noise_dbfs``, added to what
the caller says (ITU-T G.168's echo path model with a flat filter: a pure delay and the echo return loss).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from bridge.audio.frames import SAMPLE_RATE, SAMPLES_PER_FRAME


@dataclass(frozen=True, slots=True)
class LineEcho:
    """A line's echo: ``level_db`` (negative: the echo return loss), ``delay_ms``, noise (None: a quiet line)."""

    level_db: float
    delay_ms: float
    noise_dbfs: float | None = None

    def __post_init__(self) -> None:
        if not -60.0 <= self.level_db <= 0.0:
            raise ValueError(f"echo level_db must be -60..0, got {self.level_db:g}")
        if not 0.0 <= self.delay_ms <= 1000.0:
            raise ValueError(f"echo delay_ms must be 0..1000, got {self.delay_ms:g}")
        if self.noise_dbfs is not None and not -90.0 <= self.noise_dbfs <= -20.0:
            raise ValueError(f"echo noise_dbfs must be -90..-20, got {self.noise_dbfs:g}")


class EchoingLine:
    """Feed :meth:`step` the frame the caller hears and the frame the caller says; it returns what the line
    carries back to the bridge: the caller's frame plus the returned agent audio (and noise)."""

    def __init__(self, echo: LineEcho, seed: int = 39) -> None:
        self.echo = echo
        self._gain = 10.0 ** (echo.level_db / 20.0)
        self._delay = round(echo.delay_ms * SAMPLE_RATE / 1000.0)
        self._past: deque[float] = deque([0.0] * self._delay)
        self._rng = np.random.default_rng(seed)
        self._noise = 32768.0 * 10.0 ** (echo.noise_dbfs / 20.0) if echo.noise_dbfs is not None else 0.0

    def step(self, heard: bytes, said: bytes) -> bytes:
        h = np.frombuffer(heard, dtype="<i2").astype(np.float64)
        s = np.frombuffer(said, dtype="<i2").astype(np.float64)
        n = min(len(s), SAMPLES_PER_FRAME) if len(s) else SAMPLES_PER_FRAME
        self._past.extend(h.tolist() if len(h) else [0.0] * n)
        back = np.array([self._past.popleft() for _ in range(min(n, len(self._past)))], dtype=np.float64)
        out = np.zeros(n, dtype=np.float64)
        out[: len(back)] += self._gain * back
        if len(s):
            out[: len(s)] += s[:n]
        if self._noise:
            out += self._rng.normal(0.0, self._noise, n)
        return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()
