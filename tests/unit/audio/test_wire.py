"""Wire encoding: an append template's JSON text, strict base64 decoding with a clear error."""

from __future__ import annotations

import base64
import json

import pytest
from openai.types.beta.realtime import InputAudioBufferAppendEvent as BetaAppend
from openai.types.realtime import InputAudioBufferAppendEvent as GAAppend

from bridge.audio import AppendTemplate, decode_b64
from bridge.audio.wire import encode_b64

REALTIME_APPEND = AppendTemplate("input_audio_buffer.append")


def test_append_event_golden_text() -> None:
    assert REALTIME_APPEND.encode(b"\x00\x01\xff") == '{"type":"input_audio_buffer.append","audio":"AAH/"}'
    assert AppendTemplate("a.b", "pcm").encode(b"\x00") == '{"type":"a.b","pcm":"AA=="}'


def test_a_name_that_needs_escaping_cannot_be_a_template() -> None:
    with pytest.raises(ValueError, match="needs escaping"):
        AppendTemplate('say "hi"')


@pytest.mark.parametrize("size", [0, 1, 2, 3, 320, 960])
def test_append_event_is_valid_json_in_both_dialects(size: int) -> None:
    pcm = bytes((i * 37) % 256 for i in range(size))
    event = json.loads(REALTIME_APPEND.encode(pcm))
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
