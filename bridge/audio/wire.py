"""Wire encoding of audio for the model's WebSocket: base64 inside JSON text.

A dialect's audio append (:class:`AppendTemplate`, e.g. the Realtime ``input_audio_buffer.append``) carries the
audio as base64 in one string field. The base64 alphabet (RFC 4648 §4: A-Z a-z 0-9 + / =) needs no escaping inside
a JSON string (RFC 8259 §7), so the event text is a constant prefix, the base64 text and a constant suffix: faster
than building a dict and serializing it, even with orjson. pybase64 (SIMD) replaces the stdlib's base64 on this hot
path; `callbridge bench audio` compares the three ways. The C uplink (``bridge/native/cport.c``) builds the same
text around its own base64, from the same template (``bridge/sip/cport.py`` hands it over).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pybase64


@dataclass(frozen=True, slots=True)
class AppendTemplate:
    """``{"type": <event_type>, <audio_field>: <base64>}`` as constant text around the base64."""

    event_type: str
    audio_field: str = "audio"
    prefix: str = field(init=False)
    suffix: str = field(init=False)

    def __post_init__(self) -> None:
        for name in (self.event_type, self.audio_field):
            if json.dumps(name) != f'"{name}"':
                raise ValueError(f"{name!r} needs escaping in JSON: it cannot be a constant template")
        object.__setattr__(self, "prefix", f'{{"type":"{self.event_type}","{self.audio_field}":"')
        object.__setattr__(self, "suffix", '"}')

    def encode(self, pcm: bytes) -> str:
        """The JSON text of one append carrying ``pcm``."""
        b64: str = pybase64.b64encode_as_string(pcm)
        return self.prefix + b64 + self.suffix


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
