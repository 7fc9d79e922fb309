"""Wire encoding of audio for the Realtime API: base64 inside JSON text.

``input_audio_buffer.append`` (same name and shape in the beta and GA dialects) carries the audio as base64 in
its ``audio`` field. The base64 alphabet (RFC 4648 §4: A-Z a-z 0-9 + / =) needs no escaping inside a JSON
string (RFC 8259 §7), so the event text is a constant prefix, the base64 text and a constant suffix: faster
than building a dict and serializing it, even with orjson. pybase64 (SIMD) replaces the stdlib's base64 on this
hot path. `callbridge bench audio` measures the three: per 20 ms of 24 kHz audio, encoding an append and
decoding a delta take about 11 µs with base64 + json, 1.9 µs with pybase64 + orjson, 1.5 µs as done here.
"""

from __future__ import annotations

from typing import Final

import pybase64

APPEND_TYPE: Final = "input_audio_buffer.append"
APPEND_PREFIX: Final = '{"type":"' + APPEND_TYPE + '","audio":"'
APPEND_SUFFIX: Final = '"}'  # bridge/native/cport.c builds the same text in C around its own base64 (the uplink)


def encode_append(pcm: bytes) -> str:
    """The JSON text of ``{"type": "input_audio_buffer.append", "audio": <base64 of pcm>}``."""
    b64: str = pybase64.b64encode_as_string(pcm)
    return APPEND_PREFIX + b64 + APPEND_SUFFIX


def encode_b64(data: bytes) -> str:
    """Base64 text of `data` (RFC 4648 §4, padded)."""
    b64: str = pybase64.b64encode_as_string(data)
    return b64


def decode_b64(text: str) -> bytes:
    """Strict base64 decoding (RFC 4648 §4, padding required, no characters outside the alphabet).

    Raises ValueError("invalid base64 audio (N chars)") on bad input; the message never echoes the payload.
    """
    try:
        data: bytes = pybase64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError; so is a non-ASCII str
        raise ValueError(f"invalid base64 audio ({len(text)} chars)") from exc
    return data
