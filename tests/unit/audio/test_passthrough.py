"""G.711 passthrough converters and the format -> converters factory."""

from __future__ import annotations

import numpy as np
import pytest
from _signals import run, tone, xcorr_lag

from bridge.audio import (
    AudioConverter,
    Downsampler,
    PassthroughDownlink,
    PassthroughUplink,
    Upsampler,
    converters,
    g711,
)


def test_factory_picks_resamplers_for_pcm16() -> None:
    uplink, downlink = converters("pcm16")
    assert isinstance(uplink, Upsampler) and isinstance(downlink, Downsampler)
    x = tone(1020, 8000, seconds=0.5)
    y = run(downlink.process, run(uplink.process, x, [160] * 25), [480] * 25)
    assert xcorr_lag(y, x, 200) == pytest.approx(32, abs=0.01)  # the same 4 ms loopback as the resamplers


@pytest.mark.parametrize(("fmt", "silence"), [("g711_ulaw", 0xFF), ("g711_alaw", 0xD5)])
def test_g711_round_trip_is_lossless_on_g711_levels(fmt: str, silence: int) -> None:
    uplink, downlink = converters(fmt)
    decode = g711.ulaw_decode if fmt == "g711_ulaw" else g711.alaw_decode
    encode = g711.ulaw_encode if fmt == "g711_ulaw" else g711.alaw_encode
    levels = decode(bytes(range(256)))  # every level a G.711 channel can carry
    coded = uplink.process(levels)
    assert len(coded) == 256 and coded == encode(levels)
    assert downlink.process(coded) == levels  # caller audio that came in as G.711 leaves unchanged
    assert uplink.process(bytes(320)) == bytes([silence]) * 160  # 20 ms of silence, RFC 3551 framing


def test_g711_round_trip_of_a_tone_keeps_it_within_companding_error() -> None:
    uplink, downlink = PassthroughUplink("ulaw"), PassthroughDownlink("ulaw")
    x = tone(1020, 8000, seconds=0.2)
    y = np.frombuffer(downlink.process(uplink.process(x.tobytes())), np.int16).astype(float)
    snr = 10 * np.log10(np.mean(x.astype(float) ** 2) / np.mean((y - x) ** 2))
    assert 35 < snr < 45  # G.711 μ-law: about 38 dB SQNR for a loud tone (no resampling, no delay)


def test_downlink_takes_any_chunk_size() -> None:
    codes = bytes(range(256)) * 3
    down = PassthroughDownlink("alaw")
    assert b"".join(down.process(codes[i : i + 37]) for i in range(0, len(codes), 37)) == g711.alaw_decode(codes)


def test_all_converters_share_one_interface() -> None:
    convs: list[AudioConverter] = [*converters("pcm16"), *converters("g711_ulaw"), *converters("g711_alaw")]
    for conv in convs:
        conv.reset()
        assert isinstance(conv.drain(), bytes)
    assert PassthroughUplink().drain() == b""  # G.711 holds nothing back


def test_unknown_format_is_refused() -> None:
    expected = r"^unknown audio format 'opus', expected one of pcm16, pcm16_16k, g711_ulaw, g711_alaw$"
    with pytest.raises(ValueError, match=expected):
        converters("opus")
