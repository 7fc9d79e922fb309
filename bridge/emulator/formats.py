"""Audio formats the emulator speaks on the wire, keyed by the profile's words (``pcm16``, ``pcm16_16k``,
``g711_ulaw``, ``g711_alaw``).

GA spells them ``audio/pcm`` (24 kHz only), ``audio/pcmu`` and ``audio/pcma``; Live has ``audio/pcm`` at 16 or
24 kHz too; each dialect's table maps its spelling onto these keys. PCM16 is little-endian mono at 24 kHz (16 kHz
for ``pcm16_16k``); G.711 is one byte per sample at 8 kHz (ITU-T G.711, RFC 3551 §4.5.14).

G.711 comes from the project's ``bridge.audio.g711`` when it is importable, else from the stdlib ``audioop``
(Python 3.11; deprecated, so its warning is silenced here).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

PCM16_RATE: Final = 24000  # Hz: the only rate of beta pcm16 and GA audio/pcm
PCM16_16K_RATE: Final = 16000  # Hz: Live's other audio/pcm rate
G711_RATE: Final = 8000  # Hz: RFC 3551 §4.5.14

Codec = Callable[[bytes], bytes]


def _load_g711() -> tuple[Codec, Codec, Codec, Codec]:
    try:
        mod = importlib.import_module("bridge.audio.g711")
        funcs = tuple(getattr(mod, n) for n in ("ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode"))
        if all(callable(f) for f in funcs):
            return funcs
    except Exception:  # a half-written sibling module must not break the emulator
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    return (
        lambda b: audioop.lin2ulaw(b, 2),
        lambda b: audioop.ulaw2lin(b, 2),
        lambda b: audioop.lin2alaw(b, 2),
        lambda b: audioop.alaw2lin(b, 2),
    )


_ULAW_ENC, _ULAW_DEC, _ALAW_ENC, _ALAW_DEC = _load_g711()


def _identity(data: bytes) -> bytes:
    return data


@dataclass(frozen=True)
class WireFormat:
    """One wire audio format: its sample rate and its codec to and from PCM16 at that rate."""

    name: str  # the profile's word
    rate: int
    bytes_per_sample: int
    to_pcm16: Codec  # wire bytes -> PCM16 at ``rate``
    from_pcm16: Codec  # PCM16 at ``rate`` -> wire bytes

    def ms(self, nbytes: int) -> float:
        """Duration of ``nbytes`` of wire audio in milliseconds."""
        return nbytes / self.bytes_per_sample * 1000.0 / self.rate

    @property
    def is_g711(self) -> bool:
        return self.bytes_per_sample == 1


FORMATS: Final = {
    "pcm16": WireFormat("pcm16", PCM16_RATE, 2, _identity, _identity),
    "pcm16_16k": WireFormat("pcm16_16k", PCM16_16K_RATE, 2, _identity, _identity),
    "g711_ulaw": WireFormat("g711_ulaw", G711_RATE, 1, _ULAW_DEC, _ULAW_ENC),
    "g711_alaw": WireFormat("g711_alaw", G711_RATE, 1, _ALAW_DEC, _ALAW_ENC),
}
