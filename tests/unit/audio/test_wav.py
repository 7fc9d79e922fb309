"""WAV helpers: PCM16 and G.711 (format tags 7 and 6) round trips, and exact refusals."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.analysis import audio_stats, tone
from bridge.audio.wav import WavFormatError, read_wav, write_wav


def test_pcm16_round_trip_is_exact(tmp_path: Path) -> None:
    pcm = tone(440, 0.5, -6)
    write_wav(tmp_path / "a.wav", pcm)
    assert read_wav(tmp_path / "a.wav") == pcm


@pytest.mark.parametrize(("encoding", "tag"), [("ulaw", 7), ("alaw", 6)])
def test_g711_wav_has_its_format_tag_and_round_trips_within_quantization(
    tmp_path: Path, encoding: str, tag: int
) -> None:
    pcm = tone(1020, 0.5, -10)
    path = tmp_path / f"{encoding}.wav"
    write_wav(path, pcm, encoding)  # type: ignore[arg-type]  # parametrized literal
    blob = path.read_bytes()
    assert blob[:4] == b"RIFF" and blob[8:12] == b"WAVE"
    assert struct.unpack_from("<H", blob, 20)[0] == tag
    decoded = read_wav(path)
    assert len(decoded) == len(pcm)
    error = np.frombuffer(decoded, "<i2").astype(float) - np.frombuffer(pcm, "<i2").astype(float)
    assert np.max(np.abs(error)) < 600  # G.711 segment step at this level
    stats = audio_stats(decoded)
    assert stats["peak_hz"] == pytest.approx(1020, abs=2)
    assert stats["rms_dbfs"] == pytest.approx(-10, abs=0.2)


def test_odd_length_g711_data_is_padded_in_the_riff(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    write_wav(path, b"\x00\x10" * 3, "ulaw")  # 3 samples -> 3 bytes of data, one pad byte
    assert len(path.read_bytes()) % 2 == 0
    assert len(read_wav(path)) == 6


def _riff(tag: int, channels: int, rate: int, bits: int, data: bytes) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"not a wav at all", "not a RIFF/WAVE file"),
        (_riff(1, 2, 8000, 16, b"\0" * 8), "2 channels, expected mono"),
        (_riff(1, 1, 16000, 16, b"\0" * 8), "16000 Hz, expected 8000 Hz"),
        (_riff(3, 1, 8000, 32, b"\0" * 8), "format tag 3 with 32 bits, expected PCM16, µ-law or A-law"),
    ],
)
def test_unsupported_files_are_refused_with_the_reason(tmp_path: Path, blob: bytes, message: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(blob)
    with pytest.raises(WavFormatError) as info:
        read_wav(path)
    assert str(info.value) == f"{path}: {message}"


def test_extensible_format_with_mulaw_subformat_is_read(tmp_path: Path) -> None:
    data = bytes([0xFF, 0x7F, 0x00, 0x80])
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 8000, 1, 8, 22, 8, 4) + struct.pack("<H", 7) + bytes(14)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 4) + data
    path = tmp_path / "ext.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert len(read_wav(path)) == 8
