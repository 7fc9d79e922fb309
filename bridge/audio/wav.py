"""Tiny WAV helpers for telephone audio: 8 kHz mono, PCM16 or G.711 (µ-law / A-law) in, PCM16 or G.711 out.

The stdlib ``wave`` module reads only integer PCM (format tag 1), so G.711 WAVs (WAVE_FORMAT_ALAW = 6,
WAVE_FORMAT_MULAW = 7, or WAVE_FORMAT_EXTENSIBLE = 0xFFFE with either as its sub-format) are parsed here from
the RIFF chunks. Everything is returned as PCM16 little-endian, 8000 Hz, mono. Anything else is refused with a
:class:`WavFormatError` that names the file and what is wrong: the bridge does not resample test fixtures.

G.711 (ITU-T G.711) conversion is ``bridge.audio.g711``'s.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path
from typing import Literal

from bridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

__all__ = ["WavFormatError", "alaw_decode", "read_wav", "ulaw_decode", "write_wav"]

from bridge.audio.frames import SAMPLE_RATE

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

Encoding = Literal["pcm16", "ulaw", "alaw"]


class WavFormatError(ValueError):
    """The file is not an 8 kHz mono PCM16 / G.711 WAV."""


def _chunks(blob: bytes, path: Path) -> dict[bytes, bytes]:
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavFormatError(f"{path}: not a RIFF/WAVE file")
    chunks: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(blob):
        chunk_id, size = struct.unpack_from("<4sI", blob, offset)
        body = blob[offset + 8 : offset + 8 + size]
        chunks.setdefault(chunk_id, body)
        offset += 8 + size + (size & 1)  # RIFF chunks are padded to an even length
    return chunks


def read_wav(path: str | Path) -> bytes:
    """Read an 8 kHz mono WAV (PCM16, µ-law or A-law) and return PCM16 little-endian samples."""
    path = Path(path)
    chunks = _chunks(path.read_bytes(), path)
    fmt = chunks.get(b"fmt ")
    data = chunks.get(b"data")
    if fmt is None or len(fmt) < 16:
        raise WavFormatError(f"{path}: no fmt chunk")
    if data is None:
        raise WavFormatError(f"{path}: no data chunk")
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the sub-format GUID
    if channels != 1:
        raise WavFormatError(f"{path}: {channels} channels, expected mono")
    if rate != SAMPLE_RATE:
        raise WavFormatError(f"{path}: {rate} Hz, expected {SAMPLE_RATE} Hz")
    if tag == WAVE_FORMAT_PCM and bits == 16:
        return data[: len(data) - len(data) % 2]
    if tag == WAVE_FORMAT_MULAW and bits == 8:
        return ulaw_decode(data)
    if tag == WAVE_FORMAT_ALAW and bits == 8:
        return alaw_decode(data)
    raise WavFormatError(f"{path}: format tag {tag} with {bits} bits, expected PCM16, µ-law or A-law")


def write_wav(path: str | Path, pcm: bytes, encoding: Encoding = "pcm16") -> None:
    """Write PCM16 8 kHz mono samples as a WAV: PCM16 (via ``wave``) or G.711 (format tag 7 / 6)."""
    path = Path(path)
    if encoding == "pcm16":
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(pcm)
        return
    if encoding == "ulaw":
        tag, payload = WAVE_FORMAT_MULAW, ulaw_encode(pcm)
    elif encoding == "alaw":
        tag, payload = WAVE_FORMAT_ALAW, alaw_encode(pcm)
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    # Non-PCM formats carry cbSize (0) in fmt and a fact chunk with the sample count.
    fmt = struct.pack("<HHIIHHH", tag, 1, SAMPLE_RATE, SAMPLE_RATE, 1, 8, 0)
    fact = struct.pack("<I", len(payload))
    pad = b"\0" if len(payload) & 1 else b""
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<I", len(fact))
        + fact
        + b"data"
        + struct.pack("<I", len(payload))
        + payload
        + pad
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
