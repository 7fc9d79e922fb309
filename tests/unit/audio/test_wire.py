"""Wire encoding: the append event's JSON text, strict base64 decoding with a clear error."""

from __future__ import annotations

import base64
import json

import pytest
from openai.types.beta.realtime import InputAudioBufferAppendEvent as BetaAppend
from openai.types.realtime import InputAudioBufferAppendEvent as GAAppend

from bridge.audio import decode_b64, encode_append
from bridge.audio.wire import encode_b64


def test_append_event_golden_text() -> None:
    assert encode_append(b"\x00\x01\xff") == '{"type":"input_audio_buffer.append","audio":"AAH/"}'


@pytest.mark.parametrize("size", [0, 1, 2, 3, 320, 960])
def test_append_event_is_valid_json_in_both_dialects(size: int) -> None:
    pcm = bytes((i * 37) % 256 for i in range(size))
    event = json.loads(encode_append(pcm))
    assert event == {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    for model in (BetaAppend, GAAppend):
        assert base64.b64decode(model.model_validate(event, strict=True).audio) == pcm


def test_decode_round_trip() -> None:
    pcm = bytes(range(256)) * 4
    assert decode_b64(encode_b64(pcm)) == pcm
    assert decode_b64("") == b""


@pytest.mark.parametrize("text", ["AAA", "AA=A", "AAAA\n", "A A=", "é", "AAH/" + "!" * 10, "AAH/===="])
def test_invalid_base64_raises_a_clear_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=rf"^invalid base64 audio \({len(text)} chars\)$") as info:
        decode_b64(text)
    assert text not in str(info.value)  # the payload is never echoed
