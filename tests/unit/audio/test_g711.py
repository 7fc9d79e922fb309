"""G.711 tables: equal to audioop's for every input, plus golden values from ITU-T G.711."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from bridge.audio import frames, g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the oracle, while the stdlib still has it (3.11/3.12)

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16).tobytes()
ALL_CODES = bytes(range(256))
Codec = Callable[[bytes], bytes]


def test_framing_constants() -> None:
    assert (frames.SAMPLE_RATE, frames.FRAME_MS, frames.SAMPLES_PER_FRAME) == (8000, 20, 160)
    assert (frames.BYTES_PER_FRAME_PCM16, frames.BYTES_PER_FRAME_G711) == (320, 160)
    assert len(frames.SILENCE) == frames.FRAME_BYTES == 320


def test_tables_have_the_documented_shapes() -> None:
    assert g711.ULAW_ENCODE.shape == g711.ALAW_ENCODE.shape == (65536,)
    assert g711.ULAW_ENCODE.dtype == g711.ALAW_ENCODE.dtype == np.uint8
    assert g711.ULAW_DECODE.shape == g711.ALAW_DECODE.shape == (256,)
    assert g711.ULAW_DECODE.dtype == g711.ALAW_DECODE.dtype == np.int16
    assert not g711.ULAW_ENCODE.flags.writeable


def test_ulaw_encode_equals_audioop_for_all_65536_samples() -> None:
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)


def test_alaw_encode_equals_audioop_for_all_65536_samples() -> None:
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)


def test_ulaw_decode_equals_audioop_for_all_256_codes() -> None:
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_equals_audioop_for_all_256_codes() -> None:
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_golden_values() -> None:
    # ITU-T G.711: zero is 0xFF in μ-law (all bits inverted) and 0xD5 in A-law (even bits inverted)
    assert g711.ulaw_encode(np.array([0, 32767, -32768], np.int16).tobytes()) == b"\xff\x80\x00"
    assert g711.alaw_encode(np.array([0, 32767, -32768], np.int16).tobytes()) == b"\xd5\xaa\x2a"
    assert np.frombuffer(g711.ulaw_decode(b"\x00\x80\xff\x7f"), np.int16).tolist() == [-32124, 32124, 0, 0]
    assert np.frombuffer(g711.alaw_decode(b"\x2a\xaa\xd5\x55"), np.int16).tolist() == [-32256, 32256, 8, -8]


@pytest.mark.parametrize(
    ("encode", "decode"), [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)]
)
def test_decoded_levels_encode_back_to_a_code_of_the_same_level(encode: Codec, decode: Codec) -> None:
    levels = decode(ALL_CODES)
    assert decode(encode(levels)) == levels


def test_array_variants_match_the_bytes_variants() -> None:
    pcm = np.frombuffer(ALL_PCM, np.int16)
    codes = np.frombuffer(ALL_CODES, np.uint8)
    assert g711.ulaw_encode_array(pcm).tobytes() == g711.ulaw_encode(ALL_PCM)
    assert g711.alaw_encode_array(pcm).tobytes() == g711.alaw_encode(ALL_PCM)
    assert g711.ulaw_decode_array(codes).tobytes() == g711.ulaw_decode(ALL_CODES)
    assert g711.alaw_decode_array(codes).tobytes() == g711.alaw_decode(ALL_CODES)


def test_odd_pcm_length_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^PCM16 audio must have an even number of bytes, got 319$"):
        g711.ulaw_encode(bytes(319))
    with pytest.raises(ValueError, match=r"^PCM16 audio must have an even number of bytes, got 1$"):
        g711.alaw_encode(b"\x00")
