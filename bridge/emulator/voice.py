"""Reply audio: a tone, a WAV file or silence, as PCM16 at the rate the session's output format needs.

The emulator's "voice" is real audio so that tests can check it end to end: a tone's frequency survives resampling,
G.711 and the bridge's playout, and an FFT finds it again.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from bridge.emulator.annotations import Reply
from bridge.emulator.faults import Settings

log = logging.getLogger("bridge.emulator")

FADE_MS: Final = 5.0  # raised-cosine ramps at both ends: no clicks at the edges of a reply


def reply_duration_ms(text: str, *, ms_per_char: float, min_ms: float, max_ms: float) -> float:
    """How long the emulator "speaks" ``text``: proportional to its length, clamped."""
    return float(min(max_ms, max(min_ms, len(text) * ms_per_char)))


def _fade(x: NDArray[np.float64], rate: int) -> NDArray[np.float64]:
    n = min(len(x) // 2, int(rate * FADE_MS / 1000))
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


@lru_cache(maxsize=8)
def tone(freq_hz: float, duration_ms: float, rate: int, *, dbfs: float = -12.0) -> bytes:
    """A sine at ``freq_hz`` whose peak is ``dbfs`` relative to full scale (32767), as PCM16 mono.

    Cached: every session of a load test asks for the same reply, and a long one took 40 ms to synthesize
    (96 calls greeted at once under ``bench calls`` stalled the emulator's loop for seconds)."""
    n = round(rate * duration_ms / 1000.0)
    t = np.arange(n, dtype=np.float64) / rate
    amplitude = 32767.0 * 10.0 ** (dbfs / 20.0)
    x = _fade(amplitude * np.sin(2.0 * np.pi * freq_hz * t), rate)
    return np.round(x).astype("<i2").tobytes()


def silence(duration_ms: float, rate: int) -> bytes:
    return b"\x00\x00" * round(rate * duration_ms / 1000.0)


def resample_linear(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Linear-interpolation resampling: crude (no anti-alias filter) but enough for the emulator's voice."""
    if src_rate == dst_rate or not pcm:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n_out = int(len(x) * dst_rate / src_rate)
    t = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    y = np.interp(t, np.arange(len(x), dtype=np.float64), x)
    return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


def load_wav(path: str | Path, rate: int) -> bytes:
    """A mono PCM16 WAV file as PCM16 at ``rate``. Raises ValueError for other WAV layouts."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: need a mono 16-bit PCM WAV (got {w.getnchannels()} ch, {w.getsampwidth()} B)")
        src_rate = w.getframerate()
        pcm = w.readframes(w.getnframes())
    return resample_linear(pcm, src_rate, rate)


def chunk(pcm: bytes, rate: int, delta_ms: float) -> list[bytes]:
    """Split PCM16 into pieces of ``delta_ms`` (the last one may be shorter)."""
    step = max(2, 2 * round(rate * delta_ms / 1000.0))
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


@lru_cache(maxsize=8)
def wire_chunks(
    pcm: bytes, rate: int, delta_ms: float, encode: Callable[[bytes], bytes]
) -> tuple[tuple[bytes, ...], tuple[float, ...]]:
    """A reply as the audio of its deltas (``chunk``, then ``encode``d to the wire format) and their lengths in
    ms. Cached like :func:`tone`: cutting and encoding a long reply took 8 ms per session."""
    pieces = chunk(pcm, rate, delta_ms)
    return tuple(encode(piece) for piece in pieces), tuple(len(piece) / 2 / rate * 1000.0 for piece in pieces)


def speak(settings: Settings, text: str, rate: int, reply: Reply | None) -> bytes:
    """The audio of one reply as PCM16 at ``rate``: the reply's WAV or the settings' (unless the reply asks for a
    tone or silence), else silence or a tone, as long as the reply says or as its text takes."""
    s = settings
    ms = reply.duration_ms if reply is not None and reply.duration_ms else None
    ms = ms or reply_duration_ms(text, ms_per_char=s.ms_per_char, min_ms=s.min_reply_ms, max_ms=s.max_reply_ms)
    wav = reply.wav if reply is not None and reply.wav else None
    if wav is None and s.wav_path and not (reply is not None and (reply.tone_hz or reply.silence)):
        wav = s.wav_path
    if wav is not None:
        try:
            return load_wav(wav, rate)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("emulator: cannot use %s (%s); replying with a tone", wav, exc)
    if (reply is not None and reply.silence) or (s.reply_audio == "silence" and reply is None):
        return silence(ms, rate)
    hz = reply.tone_hz if reply is not None and reply.tone_hz else s.tone_hz
    return tone(hz, ms, rate, dbfs=s.tone_dbfs)
