"""The speech the network bench sends both ways, and the clean references PESQ compares against.

- The agent (what the caller hears): the bundled greeting and opening-hours replies (24 kHz speech), one after
  the other. The emulator says it as its greeting: at 24 kHz on the resampled path (the bridge resamples it to
  8 kHz), at 8 kHz on the G.711 path (the bridge passes it through) and from the callee phone on the anchor. The
  8 kHz reference is the 24 kHz speech band-limited by a high-quality resampler (soxr), so that what the bridge's
  own resampler does is measured, not the reference's making.
- The caller (what the model receives): two caller turns of the call scripts (8 kHz speech, espeak-ng), with a
  pause shorter than the plan's silence duration between them: one turn, as the VAD hears it.

The caller's WAV starts with silence for as long as the greeting plays, so that the caller speaks after it, as
callers do (speaking over it would be a barge-in: the bridge would cut the greeting).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.audio.wav import read_wav, write_wav

ROOT = Path(__file__).resolve().parents[2]
AGENT_PARTS = (ROOT / "bridge/assets/agent_greeting.wav", ROOT / "bridge/assets/agent_hours.wav")
CALLER_PARTS = (ROOT / "bridge/assets/caller_hours.wav", ROOT / "call_scripts/idle_timeout/q2_account.wav")
AGENT_RATE = 24000
NARROW = 8000
PAUSE_S = 0.3  # between the parts of each side's speech
LEAD_S = 1.5  # after the greeting, before the caller speaks
TAIL_S = 2.5  # after the caller's speech: the VAD's silence ends the turn, then the caller hangs up
AGENT_LEAD_S = 1.0  # silence before the agent's speech: the caller's recording starts once its media is up


@dataclass(frozen=True)
class Signals:
    agent_24k: Path  # the emulator's voice on the resampled path (silence, then the speech)
    agent_8k: Path  # the same at 8 kHz: the voice on the G.711 path and the anchor
    agent_ref: Path  # the reference of what the caller hears: the speech alone, 8 kHz
    caller_ref: Path  # the reference of what the model receives
    caller_play: Path  # what the caller plays: silence through the greeting, then its speech
    agent_s: float
    caller_s: float

    @property
    def speech_at_s(self) -> float:
        """When the caller starts speaking, from the start of its audio."""
        return self.agent_s + LEAD_S

    @property
    def call_s(self) -> float:
        """How long a call lasts (the caller hangs up then)."""
        return self.speech_at_s + self.caller_s + TAIL_S


def _read_24k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, AGENT_RATE):
            raise ValueError(f"{path}: expected 24 kHz mono PCM16")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _write_24k(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(AGENT_RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def to_narrow(samples: np.ndarray, rate: int) -> np.ndarray:
    """PCM16 at ``rate`` as 8 kHz PCM16, through soxr (very high quality)."""
    import soxr

    out: np.ndarray = soxr.resample(samples.astype(np.float32), rate, NARROW, quality="VHQ")
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def build(directory: Path) -> Signals:
    directory.mkdir(parents=True, exist_ok=True)
    pause_24k = np.zeros(round(PAUSE_S * AGENT_RATE), np.int16)
    agent = np.concatenate([_read_24k(AGENT_PARTS[0]), pause_24k, _read_24k(AGENT_PARTS[1])])
    lead_24k = np.zeros(round(AGENT_LEAD_S * AGENT_RATE), np.int16)
    agent_24k = directory / "agent-24k.wav"
    _write_24k(agent_24k, np.concatenate([lead_24k, agent]))
    narrow = to_narrow(agent, AGENT_RATE)
    agent_ref = directory / "agent.wav"
    write_wav(agent_ref, narrow.tobytes())
    agent_8k = directory / "agent-8k.wav"
    write_wav(agent_8k, np.concatenate([np.zeros(round(AGENT_LEAD_S * NARROW), np.int16), narrow]).tobytes())
    pause = np.zeros(round(PAUSE_S * NARROW), np.int16)
    caller = np.concatenate([np.frombuffer(read_wav(CALLER_PARTS[0]), "<i2"), pause])
    caller = np.concatenate([caller, np.frombuffer(read_wav(CALLER_PARTS[1]), "<i2")])
    caller_ref = directory / "caller.wav"
    write_wav(caller_ref, caller.tobytes())
    agent_s = AGENT_LEAD_S + len(agent) / AGENT_RATE
    lead = np.zeros(round((agent_s + LEAD_S) * NARROW), np.int16)
    caller_play = directory / "caller-play.wav"
    write_wav(caller_play, np.concatenate([lead, caller]).tobytes())
    return Signals(agent_24k, agent_8k, agent_ref, caller_ref, caller_play, agent_s, len(caller) / NARROW)
