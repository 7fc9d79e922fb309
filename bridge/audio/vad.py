"""An energy voice-activity detector with the knobs of the service's ``server_vad`` turn detection.

Pure: PCM16 in, start/stop events out, positions in milliseconds of the session's appended audio. The service
documents its knobs this way (``turn_detection`` of ``session.update``):

* ``threshold`` (0.0-1.0, default 0.5): "a higher threshold will require louder audio to activate". Here it maps
  linearly onto a frame-energy threshold in dBFS, see :func:`threshold_dbfs` (0.5 -> -35 dBFS).
* ``prefix_padding_ms``: audio kept before the detected onset; ``audio_start_ms`` of ``speech_started`` includes it.
* ``silence_duration_ms``: silence that ends a turn; ``audio_end_ms`` of ``speech_stopped`` includes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from bridge.audio.level import dbfs

FRAME_MS: Final = 10  # analysis frame
MIN_SPEECH_MS: Final = 60  # voiced audio needed before an onset counts (rejects clicks)
DBFS_AT_ZERO: Final = -60.0  # threshold 0.0
DBFS_SPAN: Final = 50.0  # threshold 1.0 -> -10 dBFS


def threshold_dbfs(threshold: float) -> float:
    """Frame RMS level (dBFS, full scale = 32768) above which a frame counts as voiced."""
    return DBFS_AT_ZERO + DBFS_SPAN * min(1.0, max(0.0, threshold))


class VadKind(enum.StrEnum):
    START = "start"
    STOP = "stop"


@dataclass(frozen=True)
class VadEvent:
    kind: VadKind
    ms: float  # start: onset minus prefix padding (not below 0); stop: last voiced ms plus the silence duration


class EnergyVad:
    """Streaming energy VAD over PCM16 mono at ``rate``; feed it every appended chunk in order."""

    def __init__(
        self, rate: int, *, threshold: float = 0.5, prefix_padding_ms: float = 300, silence_duration_ms: float = 500
    ) -> None:
        self.rate = rate
        self.threshold_db = threshold_dbfs(threshold)
        self.prefix_padding_ms = float(prefix_padding_ms)
        self.silence_duration_ms = float(silence_duration_ms)
        self.frame = rate * FRAME_MS // 1000
        self.speaking = False
        self._rest = b""
        self._pos = 0  # samples analysed so far
        self._voiced_run = 0  # consecutive voiced frames while not speaking
        self._silent_run = 0  # consecutive silent frames while speaking

    def feed(self, pcm: bytes) -> list[VadEvent]:
        data = self._rest + pcm
        nframes = len(data) // (2 * self.frame)
        self._rest = data[nframes * 2 * self.frame :]
        if nframes == 0:
            return []
        samples = np.frombuffer(data[: nframes * 2 * self.frame], dtype="<i2").astype(np.float64)
        rms: NDArray[np.float64] = np.sqrt(np.mean(samples.reshape(nframes, self.frame) ** 2, axis=1))
        level = dbfs(rms)
        out: list[VadEvent] = []
        for voiced in (level > self.threshold_db).tolist():
            self._pos += self.frame
            out.extend(self._step(bool(voiced)))
        return out

    def _ms(self, samples: int) -> float:
        return samples * 1000.0 / self.rate

    def _step(self, voiced: bool) -> list[VadEvent]:
        if not self.speaking:
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run * FRAME_MS >= MIN_SPEECH_MS:
                self.speaking = True
                self._silent_run = 0
                onset = self._pos - self._voiced_run * self.frame
                return [VadEvent(VadKind.START, max(0.0, self._ms(onset) - self.prefix_padding_ms))]
            return []
        self._silent_run = 0 if voiced else self._silent_run + 1
        if self._silent_run * FRAME_MS >= self.silence_duration_ms:
            self.speaking = False
            self._voiced_run = 0
            return [VadEvent(VadKind.STOP, self._ms(self._pos))]
        return []
