"""The 8 kHz <-> 16 kHz resamplers (Live's PCM rate) meet the 24 kHz path's bar: passband, rejection of aliases and
images, level, exact streaming, whole-sample delay, exactly the published filter."""

from __future__ import annotations

import numpy as np
import pytest
from _signals import FULL, amplitude, db, frames_of, multitone, run, spectrum, steady, tone, xcorr_lag

from bridge.audio import converters
from bridge.audio.resample import (
    DELAY_HIGH_16K,
    INTERPOLATOR_TAPS_16K,
    NUM_TAPS_16K,
    TAPS_16K,
    Downsampler16k,
    Upsampler,
    Upsampler16k,
)

LOW, HIGH = 8000, 16000


def up(x: np.ndarray, chunk: int = 160) -> np.ndarray:
    return run(Upsampler16k().process, x, frames_of(x, chunk))


def down(x: np.ndarray, chunk: int = 320) -> np.ndarray:
    return run(Downsampler16k().process, x, frames_of(x, chunk))


def response_db(freqs: np.ndarray, taps: np.ndarray) -> np.ndarray:
    n = np.arange(len(taps))
    h = np.exp(-2j * np.pi * np.outer(freqs, n) / HIGH) @ taps
    return 20 * np.log10(np.abs(h) / taps.sum())


def test_filters_are_linear_phase_exact_and_meet_the_24k_bar() -> None:
    assert NUM_TAPS_16K == 65 and DELAY_HIGH_16K == 32  # 2 ms, 16 samples at 8 kHz: whole samples both ways
    for taps, gain in ((TAPS_16K, 1.0), (INTERPOLATOR_TAPS_16K, 2.0)):
        assert np.array_equal(taps, taps[::-1]) and taps.sum() == gain
        passband = response_db(np.linspace(0, 3400, 500), taps)
        assert passband.max() < 0.04 and passband.min() > -0.04
        assert response_db(np.linspace(4600, 8000, 4000), taps).max() < -83


@pytest.mark.parametrize("freq", [1020, 3020])
def test_tones_keep_frequency_and_level_both_ways(freq: int) -> None:
    seg = steady(up(tone(freq, LOW)), HIGH)
    assert int(np.argmax(spectrum(seg))) == freq
    assert abs(20 * np.log10(amplitude(seg, freq) / (0.5 * FULL))) < 0.2
    seg = steady(down(tone(freq, HIGH)), LOW)
    assert int(np.argmax(spectrum(seg))) == freq
    assert abs(20 * np.log10(amplitude(seg, freq) / (0.5 * FULL))) < 0.2


@pytest.mark.parametrize("freq", [4620, 5020, 7020])
def test_high_tones_do_not_alias_into_the_8k_output(freq: int) -> None:
    ref = steady(down(tone(1020, HIGH, level=0.9 * FULL)), LOW)
    out = steady(down(tone(freq, HIGH, level=0.9 * FULL)), LOW)
    assert db(np.mean(ref**2) / np.mean(out**2)) >= 80  # everything that lands, rounding noise included


def test_the_alias_measurement_fails_without_a_filter() -> None:
    x, ref = tone(5020, HIGH, level=0.9 * FULL), tone(1020, HIGH, level=0.9 * FULL)
    assert db(np.mean(ref[::2].astype(float) ** 2) / np.mean(x[::2].astype(float) ** 2)) < 1


@pytest.mark.parametrize("freq", [1020, 3020, 3400])
def test_upsampling_images_are_80_db_down(freq: int) -> None:
    p = spectrum(steady(up(tone(freq, LOW, level=0.9 * FULL)), HIGH))
    assert db(p[:4001].sum() / p[4001:].sum()) >= 80


def _noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3 * FULL, n).clip(-32768, 32767).astype(np.int16)
    x[n // 2 : n // 2 + 400] = np.where(np.arange(400) % 40 < 20, 32767, -32768)  # full-scale square: clips
    return x


def test_streams_equal_one_shot_for_any_chunk_size() -> None:
    rng = np.random.default_rng(2)
    x8, x16 = _noise(16_000, 1), _noise(32_000, 3)
    whole_up, whole_down = Upsampler16k().process(x8.tobytes()), Downsampler16k().process(x16.tobytes())
    assert len(whole_up) == 4 * len(x8) and len(whole_down) // 2 == (len(x16) - 1) // 2 + 1
    sizes = [*rng.integers(1, 900, 60), 1, 2, 3, 1234, len(x16)]
    assert run(Upsampler16k().process, x8, sizes).tobytes() == whole_up
    assert run(Downsampler16k().process, x16, sizes).tobytes() == whole_down


def test_output_is_the_rounded_convolution_with_the_published_filter() -> None:
    x8, x16 = _noise(4000, 7) // 2, _noise(8000, 8) // 2  # halved: no clipping here
    stuffed = np.zeros(2 * len(x8))
    stuffed[::2] = x8
    ref_up = np.rint(np.convolve(stuffed, INTERPOLATOR_TAPS_16K)[: len(stuffed)])
    assert np.array_equal(up(x8), ref_up.astype(np.int16))
    ref_down = np.rint(np.convolve(x16.astype(float), TAPS_16K)[: len(x16) : 2])
    assert np.array_equal(down(x16), ref_down.astype(np.int16))


def test_each_direction_delays_by_exactly_2_ms_and_the_loopback_keeps_the_waveform() -> None:
    assert xcorr_lag(up(multitone(LOW)), multitone(HIGH), 300) == pytest.approx(32, abs=0.05)
    assert xcorr_lag(down(multitone(HIGH)), multitone(LOW), 200) == pytest.approx(16, abs=0.05)
    x = multitone(LOW)
    y = down(up(x))
    assert xcorr_lag(y, x, 200) == pytest.approx(32, abs=0.01)
    err = y[32:].astype(float) - x[: len(y) - 32]
    assert db(np.mean(x.astype(float) ** 2) / np.mean(err[100:] ** 2)) > 40


def test_drain_and_reset() -> None:
    x = tone(1020, HIGH, seconds=0.1)
    d = Downsampler16k()
    body, tail = d.process(x.tobytes()), d.drain()
    assert body + tail == Downsampler16k().process(x.tobytes() + bytes(2 * DELAY_HIGH_16K))
    assert len(tail) // 2 == 16 and d.process(x.tobytes()) == body
    u = Upsampler16k()
    body, tail = u.process(x[:800].tobytes()), u.drain()
    assert len(tail) // 2 == 32 and body + tail == Upsampler16k().process(x[:800].tobytes() + bytes(32))


def test_no_c_kernel_runs_this_ratio() -> None:
    assert Upsampler16k().c_kernel() is None and not Upsampler16k().native and not Downsampler16k().native
    with pytest.raises(RuntimeError, match="none for 8 <-> 16 kHz"):
        Upsampler16k(native=True)
    with pytest.raises(RuntimeError, match="none for 8 <-> 16 kHz"):
        Downsampler16k(native=True)


def test_the_dialplan_format_picks_the_converters() -> None:
    uplink, downlink = converters("pcm16_16k")
    assert isinstance(uplink, Upsampler16k) and isinstance(downlink, Downsampler16k)
    assert type(converters("pcm16")[0]) is Upsampler
    assert len(uplink.process(bytes(320))) == 640 and len(downlink.process(bytes(640))) == 320
