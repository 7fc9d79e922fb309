"""What one call's recordings score: PESQ (ITU-T P.862, narrow band) against the clean speech, gaps, turns.

The reference is found in the recording by cross-correlation (the call's set-up and the jitter buffer shift it
by an unknown delay); PESQ then gets the recording from there, as long as the reference, and aligns what is left
itself (P.862 follows a delay that changes between utterances, as an adaptive jitter buffer's does).

- ``gaps``: 20 ms frames of digital silence (every sample within +-2) where the reference has speech (above
  -45 dBFS): audio that was neither received nor concealed. PLC makes up a lost frame; a gap is one it did not.
- ``turns``: for the bridge paths, the speech_started events the emulator's VAD sent during the call; for the
  anchor, the same VAD (bridge.audio.vad, the plan's knobs) run over what the callee heard.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from bench.network.paths import VAD, Heard
from bench.network.signals import NARROW, to_narrow
from bridge.audio.vad import EnergyVad, VadKind

FRAME = 160  # 20 ms at 8 kHz
SPEECH_DBFS = -45.0
SILENT = 2  # |sample| at most this: digital silence


def have_pesq() -> str | None:
    """Why PESQ cannot be measured here, or None."""
    try:
        for name in ("pesq", "soxr"):
            importlib.import_module(name)
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[test]')"
    return None


def align(reference: np.ndarray, recording: np.ndarray) -> int | None:
    """Where ``reference`` starts in ``recording`` (samples), by FFT cross-correlation; None if it cannot be there."""
    if len(recording) < len(reference) // 2 or not len(reference):
        return None
    ref = reference.astype(np.float64)
    rec = recording.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(ref) + len(rec))))
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(rec)]
    return int(np.argmax(corr))


def segment(reference: np.ndarray, recording: np.ndarray) -> np.ndarray | None:
    """The part of ``recording`` that carries ``reference`` (as long as it, zero-padded at the end)."""
    at = align(reference, recording)
    if at is None:
        return None
    part = recording[at : at + len(reference)]
    return np.concatenate([part, np.zeros(len(reference) - len(part), part.dtype)])


def pesq_nb(reference: np.ndarray, degraded: np.ndarray | None) -> float | None:
    if degraded is None:
        return None
    pesq = importlib.import_module("pesq")  # no type information: called through its module
    try:
        return round(float(pesq.pesq(NARROW, reference, degraded, "nb")), 2)
    except pesq.PesqError:
        return None


def gaps(reference: np.ndarray, degraded: np.ndarray | None) -> int | None:
    if degraded is None:
        return None
    frames = min(len(reference), len(degraded)) // FRAME
    ref = reference[: frames * FRAME].astype(np.float64).reshape(frames, FRAME)
    deg = degraded[: frames * FRAME].astype(np.int32).reshape(frames, FRAME)
    speech = 20 * np.log10(np.sqrt(np.mean(ref**2, axis=1)) / 32768.0 + 1e-12) > SPEECH_DBFS
    silent = np.max(np.abs(deg), axis=1) <= SILENT
    return int(np.sum(speech & silent))


def vad_turns(pcm: np.ndarray, rate: int) -> int:
    vad = EnergyVad(
        rate,
        threshold=float(VAD["threshold"]),
        prefix_padding_ms=float(VAD["prefix_padding_ms"]),
        silence_duration_ms=float(VAD["silence_duration_ms"]),
    )
    return sum(1 for event in vad.feed(pcm.astype("<i2").tobytes()) if event.kind is VadKind.START)


def score(heard: Heard, agent_ref: np.ndarray, caller_ref: np.ndarray) -> dict[str, Any]:
    """A row's figures: caller-heard and model-received PESQ and gaps, turns, the line's counters."""
    model = heard.model if heard.model_rate == NARROW else to_narrow(heard.model, heard.model_rate)
    heard_part = segment(agent_ref, heard.caller)
    model_part = segment(caller_ref, model)
    turns = heard.turns if heard.turns is not None else vad_turns(heard.model, heard.model_rate)
    return {
        "caller_pesq": pesq_nb(agent_ref, heard_part),
        "model_pesq": pesq_nb(caller_ref, model_part),
        "caller_gaps": gaps(agent_ref, heard_part),
        "model_gaps": gaps(caller_ref, model_part),
        "turns": turns,
        "line": heard.line,
        "errors": heard.errors,
    }
