"""G.711 μ-law and A-law as numpy lookup tables (ITU-T G.711, 11/1988).

The tables are computed here with the segment/quantization algorithm of ITU-T G.711 (Tables 1 and 2, as coded
in the CCITT/Sun reference `g711.c` that CPython's `audioop` also follows), so that they match
`audioop.lin2ulaw/ulaw2lin/lin2alaw/alaw2lin` (width 2) for every input while not depending on `audioop`,
which is gone in Python 3.13. Encoders take 16-bit linear PCM: μ-law quantizes its top 14 bits, A-law its top 13
bits, as G.711 specifies; decoders return the reconstruction level scaled back to 16 bits.

Framing follows RFC 3551 §4.5.14: 8000 samples/s, one byte per sample, 20 ms packets (160 samples).
"""

from __future__ import annotations

from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

ULAW_SILENCE: Final = 0xFF  # μ-law code of linear 0 (all bits inverted, G.711 Table 2)
ALAW_SILENCE: Final = 0xD5  # A-law code of linear 0 (even bits inverted, G.711 Table 1)

_ULAW_BIAS: Final = 0x84  # 132 = 33 << 2: μ-law offsets the magnitude so segments double in size
_SEG_END_ULAW = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])  # on the 14-bit scale
_SEG_END_ALAW = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])  # on the 13-bit scale
_A = TypeVar("_A", bound=NDArray[np.generic])


def _readonly(a: _A) -> _A:
    a.setflags(write=False)
    return a


def _ulaw_encode_table() -> NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit two's complement
    mask = np.where(pcm < 0, 0x7F, 0xFF)  # μ-law transmits all bits inverted
    # G.711 Table 2: magnitudes from 8158 up all fall in the top interval (code 0x7F before inversion)
    mag = np.minimum(np.abs(pcm), 8158) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_END_ULAW, mag)  # first segment whose end >= magnitude: 0..7
    code = ((seg << 4) | ((mag >> (seg + 1)) & 0x0F)) ^ mask
    # index by the int16 sample reinterpreted as uint16: 0..32767 then -32768..-1
    return np.roll(code.astype(np.uint8), -32768)


def _ulaw_decode_table() -> NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_encode_table() -> NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit two's complement
    mask = np.where(pcm >= 0, 0xD5, 0x55)  # A-law inverts the even bits; sign bit 1 = positive
    mag = np.where(pcm >= 0, pcm, -pcm - 1)  # 0..4095
    seg = np.searchsorted(_SEG_END_ALAW, mag)  # 0..7
    shift = np.maximum(seg, 1)  # segments 0 and 1 share the same step size (G.711 Table 1)
    code = ((seg << 4) | ((mag >> shift) & 0x0F)) ^ mask
    return np.roll(code.astype(np.uint8), -32768)


def _alaw_decode_table() -> NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    # reconstruct at the middle of the interval; segments 0 and 1 share one step size
    t = (((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)) << np.maximum(seg - 1, 0)
    return np.asarray(np.where(a & 0x80, t, -t), dtype=np.int16)


ULAW_ENCODE: Final = _readonly(_ulaw_encode_table())  # 65536 x uint8, indexed by sample.view(uint16)
ULAW_DECODE: Final = _readonly(_ulaw_decode_table())  # 256 x int16
ALAW_ENCODE: Final = _readonly(_alaw_encode_table())
ALAW_DECODE: Final = _readonly(_alaw_decode_table())


def _pcm16(pcm16: bytes) -> NDArray[np.uint16]:
    if len(pcm16) & 1:
        raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm16)}")
    return np.frombuffer(pcm16, dtype=np.uint16)  # the sample's bit pattern is the table index


# `take` rather than fancy indexing: same result, about 1 µs less per 20 ms frame.


def ulaw_encode_array(samples: NDArray[np.int16]) -> NDArray[np.uint8]:
    return ULAW_ENCODE.take(samples.view(np.uint16))


def ulaw_decode_array(codes: NDArray[np.uint8]) -> NDArray[np.int16]:
    return ULAW_DECODE.take(codes)


def alaw_encode_array(samples: NDArray[np.int16]) -> NDArray[np.uint8]:
    return ALAW_ENCODE.take(samples.view(np.uint16))


def alaw_decode_array(codes: NDArray[np.uint8]) -> NDArray[np.int16]:
    return ALAW_DECODE.take(codes)


def ulaw_encode(pcm16: bytes) -> bytes:
    """16-bit native-order (little-endian) linear PCM -> μ-law, one byte per sample."""
    return ULAW_ENCODE.take(_pcm16(pcm16)).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """μ-law bytes -> 16-bit native-order linear PCM."""
    return ULAW_DECODE.take(np.frombuffer(data, dtype=np.uint8)).tobytes()


def alaw_encode(pcm16: bytes) -> bytes:
    """16-bit native-order (little-endian) linear PCM -> A-law, one byte per sample."""
    return ALAW_ENCODE.take(_pcm16(pcm16)).tobytes()


def alaw_decode(data: bytes) -> bytes:
    """A-law bytes -> 16-bit native-order linear PCM."""
    return ALAW_DECODE.take(np.frombuffer(data, dtype=np.uint8)).tobytes()
