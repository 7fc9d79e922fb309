"""Quality of the 8 kHz <-> 24 kHz resamplers: frequency, level, rejection, exact streaming, alignment."""

from __future__ import annotations

import numpy as np
import pytest
from _signals import FULL, amplitude, db, frames_of, multitone, run, spectrum, steady, tone, xcorr_lag

from bridge.audio import Downsampler, Upsampler
from bridge.audio.resample import (
    DELAY_HIGH,
    DELAY_LOW,
    INTERPOLATOR_TAPS,
    NUM_TAPS,
    TAPS,
    BatchDownsampler,
    BatchUpsampler,
)

LOW, HIGH = 8000, 24000


def up(x: np.ndarray, chunk: int = 160) -> np.ndarray:
    return run(Upsampler().process, x, frames_of(x, chunk))


def down(x: np.ndarray, chunk: int = 480) -> np.ndarray:
    return run(Downsampler().process, x, frames_of(x, chunk))


def response_db(freqs: np.ndarray, taps: np.ndarray = TAPS) -> np.ndarray:
    n = np.arange(len(taps))
    h = np.exp(-2j * np.pi * np.outer(freqs, n) / HIGH) @ taps
    return 20 * np.log10(np.abs(h) / taps.sum())


def test_filter_is_odd_symmetric_and_fits_the_delay_budget() -> None:
    assert NUM_TAPS % 2 == 1 and NUM_TAPS <= 97
    assert np.array_equal(TAPS, TAPS[::-1])  # linear phase
    assert np.array_equal(INTERPOLATOR_TAPS, INTERPOLATOR_TAPS[::-1])
    assert TAPS.sum() == 1.0 and INTERPOLATOR_TAPS.sum() == 3.0  # exact DC gains
    assert DELAY_HIGH == 48 and DELAY_LOW == 16  # 2 ms each way, whole samples at both rates
    for taps in (TAPS, INTERPOLATOR_TAPS):
        passband = response_db(np.linspace(0, 3400, 500), taps)
        assert passband.max() < 0.1 and passband.min() > -0.1
        assert response_db(np.linspace(4600, 12000, 5000), taps).max() < -80


@pytest.mark.parametrize("freq", [1020, 3020])
def test_upsampled_tone_keeps_frequency_and_level(freq: int) -> None:
    x = tone(freq, LOW)
    seg = steady(up(x), HIGH)
    assert int(np.argmax(spectrum(seg))) == freq
    assert abs(20 * np.log10(amplitude(seg, freq) / (0.5 * FULL))) < 0.2


@pytest.mark.parametrize("freq", [1020, 3020])
def test_downsampled_tone_keeps_frequency_and_level(freq: int) -> None:
    seg = steady(down(tone(freq, HIGH)), LOW)
    assert int(np.argmax(spectrum(seg))) == freq
    assert abs(20 * np.log10(amplitude(seg, freq) / (0.5 * FULL))) < 0.2


@pytest.mark.parametrize("freq", [5020, 7020])
def test_high_tones_do_not_alias_into_the_8k_output(freq: int) -> None:
    ref = steady(down(tone(1020, HIGH, level=0.9 * FULL)), LOW)
    out = steady(down(tone(freq, HIGH, level=0.9 * FULL)), LOW)
    rejection = db(np.mean(ref**2) / np.mean(out**2))  # everything that lands, rounding noise included
    assert rejection >= 80


@pytest.mark.parametrize("freq", [1020, 3020])
def test_upsampling_images_are_80_db_down(freq: int) -> None:
    p = spectrum(steady(up(tone(freq, LOW, level=0.9 * FULL)), HIGH))
    assert db(p[:4001].sum() / p[4001:].sum()) >= 80


def test_alias_measurement_detects_an_unfiltered_path() -> None:
    """The measurement can fail: a path without a filter (plain decimation) lets 5020 Hz through."""
    x = tone(5020, HIGH, level=0.9 * FULL)
    ref = tone(1020, HIGH, level=0.9 * FULL)[::3].astype(float)
    assert db(np.mean(ref**2) / np.mean(x[::3].astype(float) ** 2)) < 1


def _noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3 * FULL, n).clip(-32768, 32767).astype(np.int16)
    x[n // 2 : n // 2 + 400] = np.where(np.arange(400) % 40 < 20, 32767, -32768)  # full-scale square: clips
    return x


def test_upsampler_stream_equals_one_shot() -> None:
    x = _noise(16_000, 1)
    whole = Upsampler().process(x.tobytes())
    assert up(x, 160).tobytes() == whole
    rng = np.random.default_rng(2)
    sizes = [*rng.integers(1, 700, 60), 1, 2, 3, 1234, len(x)]
    assert run(Upsampler().process, x, sizes).tobytes() == whole


def test_downsampler_stream_equals_one_shot_for_any_chunk_size() -> None:
    x = _noise(48_000, 3)
    whole = Downsampler().process(x.tobytes())
    assert len(whole) // 2 == (len(x) - 1) // 3 + 1  # output m for input 3m, as soon as it arrives
    assert down(x, 480).tobytes() == whole
    rng = np.random.default_rng(4)
    sizes = [1234, 1, 2, 5, 7, 1234, *rng.integers(1, 3000, 40), len(x)]
    assert run(Downsampler().process, x, sizes).tobytes() == whole


def test_output_is_the_rounded_convolution_with_the_published_filter() -> None:
    """Both directions equal textbook FIR interpolation / decimation, rounded half to even, exactly."""
    x8, x24 = _noise(4000, 7) // 2, _noise(12_000, 8) // 2  # halved: no clipping here
    stuffed = np.zeros(3 * len(x8))
    stuffed[::3] = x8
    ref_up = np.rint(np.convolve(stuffed, INTERPOLATOR_TAPS)[: len(stuffed)])
    assert np.array_equal(up(x8), ref_up.astype(np.int16))
    ref_down = np.rint(np.convolve(x24.astype(float), TAPS)[: len(x24) : 3])
    assert np.array_equal(down(x24), ref_down.astype(np.int16))


def test_clipping_saturates_instead_of_wrapping() -> None:
    square = np.tile(np.r_[np.full(24, 32767), np.full(24, -32768)], 200).astype(np.int16)
    y = down(square)
    assert y.max() == 32767 and y.min() == -32768  # the filter overshoots full scale: clipped
    assert not np.any((y[:-1] > 30000) & (y[1:] < -30000))  # no wrap-around jumps


@pytest.mark.parametrize(("cls", "rate"), [(Upsampler, LOW), (Downsampler, HIGH)])
def test_dc_passes_exactly(cls: type[Upsampler] | type[Downsampler], rate: int) -> None:
    y = run(cls().process, np.full(rate // 10, 1000, dtype=np.int16), [rate // 10])
    assert np.all(y[len(y) // 2 :] == 1000)  # every polyphase branch has a DC gain of exactly 1


def test_each_direction_delays_by_exactly_2_ms() -> None:
    lag_up = xcorr_lag(up(multitone(LOW)), multitone(HIGH), 500)
    lag_down = xcorr_lag(down(multitone(HIGH)), multitone(LOW), 200)
    assert lag_up == pytest.approx(48, abs=0.05)  # samples at 24 kHz
    assert lag_down == pytest.approx(16, abs=0.05)  # samples at 8 kHz


def test_loopback_is_time_aligned() -> None:
    x = multitone(LOW)
    y = run(Downsampler().process, up(x), frames_of(up(x), 480))
    lag = xcorr_lag(y, x, 200)
    assert lag == pytest.approx(32, abs=0.01)  # an integer: 4 ms, no fractional sample
    err = y[32:].astype(float) - x[: len(y) - 32]
    assert db(np.mean(x.astype(float) ** 2) / np.mean(err[100:] ** 2)) > 40  # and the waveform is kept


def test_drain_flushes_the_tail_and_resets() -> None:
    x = tone(1020, HIGH, seconds=0.1)
    d = Downsampler()
    body, tail = d.process(x.tobytes()), d.drain()
    assert body + tail == Downsampler().process(x.tobytes() + bytes(2 * DELAY_HIGH))
    assert len(tail) // 2 == DELAY_LOW
    assert d.process(x.tobytes()) == body  # reset: as good as new
    u = Upsampler()
    body, tail = u.process(x[:800].tobytes()), u.drain()
    assert len(tail) // 2 == 3 * DELAY_LOW
    assert body + tail == Upsampler().process(x[:800].tobytes() + bytes(2 * DELAY_LOW))


def test_reset_forgets_the_stream() -> None:
    x = _noise(4800, 5)
    for cls in (Upsampler, Downsampler):
        conv = cls()
        first = conv.process(x.tobytes())
        conv.process(_noise(999, 6).tobytes())
        conv.reset()
        assert conv.process(x.tobytes()) == first


def test_odd_byte_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^PCM16 audio must have an even number of bytes, got 3$"):
        Downsampler().process(b"\x00\x01\x02")
    with pytest.raises(ValueError, match=r"^PCM16 audio must have an even number of bytes, got 321$"):
        Upsampler().process(bytes(321))
    assert Upsampler().process(b"") == b"" and Downsampler().process(b"") == b""


def test_batched_form_equals_per_call() -> None:
    calls = 5
    ups, downs = [Upsampler() for _ in range(calls)], [Downsampler() for _ in range(calls)]
    bu, bd = BatchUpsampler(calls), BatchDownsampler(calls)
    signals = [_noise(1600, 10 + c) for c in range(calls)]
    signals24 = [_noise(4800, 20 + c) for c in range(calls)]
    for tick in range(10):
        if tick == 6:  # slot 2 gets a new call
            bu.reset(2), bd.reset(2)
            ups[2], downs[2] = Upsampler(), Downsampler()
        f8 = [s[tick * 160 : (tick + 1) * 160].tobytes() for s in signals]
        f24 = [s[tick * 480 : (tick + 1) * 480].tobytes() for s in signals24]
        assert bu.process(f8) == [u.process(f) for u, f in zip(ups, f8, strict=True)]
        assert bd.process(f24) == [d.process(f) for d, f in zip(downs, f24, strict=True)]
    with pytest.raises(ValueError, match="expected 5 frames of 160 samples"):
        bu.process([bytes(320)] * 4)


def test_c_kernels_match_the_numpy_path_bit_for_bit() -> None:
    """Random full-scale streams (so clipping happens) in random chunk sizes, some longer than one C call takes."""
    from bridge.audio.resample import native_kernels

    if native_kernels().lib is None:
        pytest.skip(f"C kernels unavailable here: {native_kernels().why}")
    rng = np.random.default_rng(7)
    for cls, rate in ((Upsampler, LOW), (Downsampler, HIGH)):
        ref, fast = cls(native=False), cls(native=True)
        assert fast.native and not ref.native
        signal = rng.integers(-32768, 32768, 3 * rate, dtype=np.int16).tobytes()
        offset = 0
        while offset < len(signal):
            size = 2 * int(rng.choice([0, 1, 7, 80, 160, 480, 481, 5000]))
            chunk = signal[offset : offset + size]
            assert fast.process(chunk) == ref.process(chunk), (cls.__name__, offset, size)
            offset += size
        assert fast.drain() == ref.drain()
        tail = signal[:960]
        assert fast.process(tail) == ref.process(tail)  # after drain's reset, both start from silence again
        fast.reset()
        ref.reset()
        assert fast.process(tail) == ref.process(tail)


def test_the_numpy_path_is_used_when_the_c_kernels_are_turned_off() -> None:
    import os
    import subprocess
    import sys

    code = (
        "from bridge.audio.resample import Upsampler, native_kernels\n"
        "print(Upsampler().native, native_kernels().why)\n"
        "try:\n"
        "    Upsampler(native=True)\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    env = dict(os.environ, CALLBRIDGE_NATIVE_AUDIO="0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert first == "False turned off by CALLBRIDGE_NATIVE_AUDIO=0"
    assert second == "C resampler kernels unavailable: turned off by CALLBRIDGE_NATIVE_AUDIO=0"
