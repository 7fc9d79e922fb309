"""``callbridge bench audio [--json]``: the 8 kHz <-> 24 kHz and 8 kHz <-> 16 kHz converters against their anchors,
in one run.

Every path runs on the same signals, in 20 ms frames, with its state carried from frame to frame:

- ``ours``: `Upsampler` / `Downsampler`, one pair per call (their C kernels where they build);
- ``ours_numpy``: the same classes on their numpy path (the reference the C kernels match bit for bit);
- ``ours_batch32``: `BatchUpsampler` / `BatchDownsampler`, 32 calls per 20 ms tick, µs divided by 32;
- ``audioop``: stdlib ``audioop.ratecv`` (linear interpolation, no filter);
- ``soxr_hq``: ``soxr.ResampleStream(quality="HQ")``;
- ``ours_16k``: `Upsampler16k` / `Downsampler16k` (8 <-> 16 kHz, Live's PCM rate; numpy only), and
  ``soxr_hq_16k`` its anchor: the same measurements with 16 kHz in place of 24 kHz;
- ``g711_passthrough``: the G.711 tables only (µs only: nothing is resampled).

Columns:

- ``us_in``: 8k -> 24k (or 16k) of one 20 ms frame, then base64 + the JSON text of ``input_audio_buffer.append``;
  ``us_out``: base64 decoding of a 20 ms delta, then 24k (or 16k) -> 8k. Median of 9 runs of 500 frames after a warm-up.
  All paths use the same wire code (`bridge.audio.wire`); the ``wire/*`` rows compare the wire choices.
  The runs of all paths are interleaved, so a load spike from another process hits them alike.
- ``alias_db_5020`` / ``alias_db_7020``: a 24 kHz tone at 5020 / 7020 Hz (0.9 of full scale) goes down to 8 kHz;
  the rejection is the output power of a 1020 Hz tone of the same level minus everything that comes out for the
  high tone (its alias, the rounding noise, anything), in dB. Higher is better.
- ``image_db``: an 8 kHz 1020 Hz tone goes up to 24 kHz; in-band (0-4 kHz) power minus the power above 4 kHz.
- ``sinad_db_1020`` / ``sinad_db_3020``: SINAD of the tone through each direction alone (8k -> 24k, and a 24 kHz
  tone -> 8k), the worse of the two; everything that is not the tone counts as noise and distortion.
- ``delay_ms``: the two directions added (caller -> model plus model -> caller). Each is measured, not computed:
  the lag of the output behind a band-limited multitone by cross-correlation, plus the longest time the path
  held output back from a real-time consumer (soxr releases its output in bursts: that wait is delay too).

Signals are generated coherently (whole cycles in the analysis window), so the FFT needs no window.

BLAS runs single-threaded (``OPENBLAS_NUM_THREADS=1``, set here before numpy loads unless already set), as a
worker should run: the batched matmuls are big enough for OpenBLAS to spread them over spinning threads, which
on a loaded 2-core machine makes them up to 20x slower and starves pjmedia's clock thread.
"""

# ruff: noqa: E402  # the BLAS thread count must be in the environment before numpy is imported
from __future__ import annotations

import os
import sys

NUMPY_ALREADY_LOADED = "numpy" in sys.modules
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import base64
import json
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
import pybase64
import soxr
from numpy.typing import NDArray

from bridge.audio import g711, resample, wire
from bridge.realtime.dialects import GA

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib until 3.13: an anchor here, never a dependency of the bridge

LOW, HIGH, HIGH_16K = 8000, 24000, 16000
FRAME_LOW = 160  # 20 ms (RFC 3551 §4.5)
LEVEL = 0.9 * 32767
BATCH = 32
APPEND = GA.append  # the wire code the bridge runs (its appends are the same text in every Realtime dialect)
REPS, FRAMES, WARMUP = 9, 500, 100

Convert = Callable[[bytes], bytes]


@dataclass
class Row:
    path: str
    us_in: float | None
    us_out: float | None
    us_total: float | None
    alias_db_5020: float | None
    alias_db_7020: float | None
    image_db: float | None
    sinad_db_1020: float | None
    sinad_db_3020: float | None
    delay_ms: float | None


@dataclass
class Path:
    """A path: factories of per-call streaming converters, and per-frame steps for the timing."""

    name: str
    up: Callable[[], Convert] | None
    down: Callable[[], Convert] | None
    step_in: Callable[[], Callable[[int], None]]
    step_out: Callable[[], Callable[[int], None]]
    calls_per_step: int = 1
    rate: int = HIGH  # the model's side


# -- signals -------------------------------------------------------------------------------------------------


def tone(freq: float, rate: int, seconds: float, level: float = LEVEL) -> NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def multitone(rate: int, seconds: float, seed: int = 7) -> NDArray[np.int16]:
    """Band-limited noise (200-3400 Hz, 120 tones): the same waveform at any rate, sharp autocorrelation."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(200, 3400, 120)
    phases = rng.uniform(0, 2 * np.pi, 120)
    t = np.arange(int(rate * seconds)) / rate
    x = np.cos(2 * np.pi * np.outer(t, freqs) + phases).sum(axis=1)
    return np.asarray(np.round(x / np.abs(x).max() * 0.5 * 32767), dtype=np.int16)


def frames(x: NDArray[np.int16], size: int) -> list[bytes]:
    return [x[i : i + size].tobytes() for i in range(0, len(x) - size + 1, size)]


def stream(convert: Convert, chunks: Sequence[bytes]) -> tuple[NDArray[np.int16], list[int]]:
    """Run chunks through a converter; the output and its cumulative length after each chunk."""
    out: list[bytes] = []
    counts: list[int] = []
    total = 0
    for chunk in chunks:
        y = convert(chunk)
        out.append(y)
        total += len(y) // 2
        counts.append(total)
    return np.frombuffer(b"".join(out), dtype=np.int16), counts


def steady(y: NDArray[np.int16], rate: int, seconds: float = 1.0) -> NDArray[np.float64]:
    """`seconds` of output from 0.2 s on: start-up transients (and soxr's latency) are over by then."""
    start = int(0.2 * rate)
    seg = y[start : start + int(seconds * rate)].astype(np.float64)
    if len(seg) < int(seconds * rate):
        raise RuntimeError("converter produced too little output")
    return seg


def db(ratio: float) -> float:
    return float(10 * np.log10(max(ratio, 1e-30)))


# -- quality -------------------------------------------------------------------------------------------------


def alias_db(down: Callable[[], Convert], freq: float, rate: int = HIGH) -> float:
    ref, _ = stream(down(), frames(tone(1020, rate, 1.5), rate // 50))
    out, _ = stream(down(), frames(tone(freq, rate, 1.5), rate // 50))
    return db(float(np.mean(steady(ref, LOW) ** 2) / np.mean(steady(out, LOW) ** 2)))


def image_db(up: Callable[[], Convert], rate: int = HIGH) -> float:
    out, _ = stream(up(), frames(tone(1020, LOW, 1.5), FRAME_LOW))
    spec = np.abs(np.fft.rfft(steady(out, rate))) ** 2  # 1 s: bin k is k Hz
    return db(spec[:4001].sum() / spec[4001:].sum())


def sinad(y: NDArray[np.float64], freq: int) -> float:
    spec = np.abs(np.fft.rfft(y)) ** 2  # 1 s, whole cycles: the tone is exactly bin `freq`
    return db(spec.sum() / (spec.sum() - spec[freq]))


def sinad_db(up: Callable[[], Convert], down: Callable[[], Convert], freq: int, rate: int = HIGH) -> float:
    hi, _ = stream(up(), frames(tone(freq, LOW, 1.5), FRAME_LOW))
    lo, _ = stream(down(), frames(tone(freq, rate, 1.5), rate // 50))
    return min(sinad(steady(hi, rate), freq), sinad(steady(lo, LOW), freq))


def delay_one_way_ms(convert: Convert, rate_in: int, rate_out: int) -> float:
    """Lag behind the input (cross-correlation, sub-sample) plus the longest hold-back of output."""
    seconds = 2.0
    size_in = rate_in // 50
    x = multitone(rate_in, seconds)
    ref = multitone(rate_out, seconds).astype(np.float64)
    y, counts = stream(convert, frames(x, size_in))
    n = 1 << int(np.ceil(np.log2(len(ref) + len(y))))
    corr = np.fft.irfft(np.fft.rfft(y.astype(np.float64), n) * np.conj(np.fft.rfft(ref, n)), n)
    max_lag = int(0.3 * rate_out)
    k = int(np.argmax(corr[:max_lag]))
    a, b, c = corr[k - 1], corr[k], corr[k + 1]
    lag = k + 0.5 * (a - c) / (a - 2 * b + c)  # parabolic interpolation of the peak
    due = np.arange(1, len(counts) + 1) * (rate_out // 50)  # a zero-latency path has this much out by then
    held = max(0, int((due - np.asarray(counts)).max()))
    return float((lag + held) / rate_out * 1000)


# -- paths ---------------------------------------------------------------------------------------------------


def _audioop(rate_in: int, rate_out: int) -> Convert:
    state: Any = None

    def convert(data: bytes) -> bytes:
        nonlocal state
        out, state = audioop.ratecv(data, 2, 1, rate_in, rate_out, state)
        return out

    return convert


def _soxr(rate_in: int, rate_out: int) -> Convert:
    rs = soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16", quality="HQ")

    def convert(data: bytes) -> bytes:
        out: bytes = rs.resample_chunk(np.frombuffer(data, dtype=np.int16)).tobytes()
        return out

    return convert


class Inputs:
    """The frames every path is timed on: speech-band noise at 8 kHz in, model deltas (base64) at 24 kHz (and at
    16 kHz for the 16 kHz paths)."""

    def __init__(self) -> None:
        self.low = frames(multitone(LOW, 4.0, seed=1), FRAME_LOW)
        self.b64 = {
            rate: [wire.encode_b64(f) for f in frames(multitone(rate, 4.0, seed=2), rate // 50)]
            for rate in (HIGH, HIGH_16K)
        }
        self.b64_high = self.b64[HIGH]
        self.b64_ulaw = [wire.encode_b64(g711.ulaw_encode(f)) for f in self.low]
        self.ticks_low = [[self.low[(i + c) % len(self.low)] for c in range(BATCH)] for i in range(len(self.low))]
        self.ticks_b64 = [
            [self.b64_high[(i + c) % len(self.b64_high)] for c in range(BATCH)] for i in range(len(self.b64_high))
        ]


def per_call_path(
    name: str, up: Callable[[], Convert], down: Callable[[], Convert], inp: Inputs, rate: int = HIGH
) -> Path:
    def step_in() -> Callable[[int], None]:
        convert, encode, src, n = up(), APPEND.encode, inp.low, len(inp.low)

        def step(i: int) -> None:
            encode(convert(src[i % n]))

        return step

    def step_out() -> Callable[[int], None]:
        convert, decode, src, n = down(), wire.decode_b64, inp.b64[rate], len(inp.b64[rate])

        def step(i: int) -> None:
            convert(decode(src[i % n]))

        return step

    return Path(name, up, down, step_in, step_out, rate=rate)


def batch_path(inp: Inputs) -> Path:
    def step_in() -> Callable[[int], None]:
        bu, encode, ticks, n = resample.BatchUpsampler(BATCH), APPEND.encode, inp.ticks_low, len(inp.ticks_low)

        def step(i: int) -> None:
            for frame in bu.process(ticks[i % n]):
                encode(frame)

        return step

    def step_out() -> Callable[[int], None]:
        bd, decode, ticks, n = resample.BatchDownsampler(BATCH), wire.decode_b64, inp.ticks_b64, len(inp.ticks_b64)

        def step(i: int) -> None:
            bd.process([decode(s) for s in ticks[i % n]])

        return step

    def up() -> Convert:  # slot 0 of a full batch, for the quality measurements
        bu = resample.BatchUpsampler(BATCH)
        return lambda data: bu.process([data] * BATCH)[0]

    def down() -> Convert:
        bd = resample.BatchDownsampler(BATCH)
        return lambda data: bd.process([data] * BATCH)[0]

    return Path("ours_batch32", up, down, step_in, step_out, calls_per_step=BATCH)


def passthrough_path(inp: Inputs) -> Path:
    def step_in() -> Callable[[int], None]:
        encode, src, n = APPEND.encode, inp.low, len(inp.low)

        def step(i: int) -> None:
            encode(g711.ulaw_encode(src[i % n]))

        return step

    def step_out() -> Callable[[int], None]:
        decode, src, n = wire.decode_b64, inp.b64_ulaw, len(inp.b64_ulaw)

        def step(i: int) -> None:
            g711.ulaw_decode(decode(src[i % n]))

        return step

    return Path("g711_passthrough", None, None, step_in, step_out)


# -- timing --------------------------------------------------------------------------------------------------


Step = Callable[[int], None]


def timings(makers: dict[str, tuple[Callable[[], Step], int]]) -> dict[str, float]:
    """Median µs per call of each step. The runs of all steps are interleaved, so that load from other processes
    hits every path alike and the ratios hold even on a busy machine."""
    steps = {name: (make(), calls) for name, (make, calls) in makers.items()}
    for step, _ in steps.values():
        for i in range(WARMUP):
            step(i)
    runs: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(REPS):
        for name, (step, calls) in steps.items():
            t0 = time.perf_counter_ns()
            for i in range(FRAMES):
                step(i)
            runs[name].append((time.perf_counter_ns() - t0) / FRAMES / calls / 1000)
    return {name: statistics.median(r) for name, r in runs.items()}


def quality(path: Path, us: dict[str, float]) -> Row:
    us_in, us_out = us[path.name + " in"], us[path.name + " out"]
    row = Row(path.name, us_in, us_out, us_in + us_out, *([None] * 6))
    if path.up is not None and path.down is not None:
        up, down, rate = path.up, path.down, path.rate
        row.alias_db_5020 = alias_db(down, 5020, rate)
        row.alias_db_7020 = alias_db(down, 7020, rate)
        row.image_db = image_db(up, rate)
        row.sinad_db_1020 = sinad_db(up, down, 1020, rate)
        row.sinad_db_3020 = sinad_db(up, down, 3020, rate)
        row.delay_ms = delay_one_way_ms(up(), LOW, rate) + delay_one_way_ms(down(), rate, LOW)
    return row


def _repeat(fn: Callable[[], object]) -> Callable[[], Step]:
    def make() -> Step:
        def step(_i: int) -> None:
            fn()

        return step

    return make


def wire_steps() -> dict[str, tuple[Callable[[], Step], int]]:
    """Serialization alone, per 20 ms of 24 kHz PCM16: encode an append event, decode a delta's base64."""
    pcm = frames(multitone(HIGH, 0.1), HIGH // 50)[0]
    b64 = base64.b64encode(pcm).decode("ascii")
    kind = APPEND.event_type
    variants: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "wire/stdlib base64+json",
            lambda: json.dumps({"type": kind, "audio": base64.b64encode(pcm).decode("ascii")}),
            lambda: base64.b64decode(b64, validate=True),
        ),
        (
            "wire/pybase64+orjson",
            lambda: orjson.dumps({"type": kind, "audio": pybase64.b64encode_as_string(pcm)}).decode(),
            lambda: pybase64.b64decode(b64, validate=True),
        ),
        ("wire/pybase64+template (ours)", lambda: APPEND.encode(pcm), lambda: wire.decode_b64(b64)),
    ]
    steps: dict[str, tuple[Callable[[], Step], int]] = {}
    for name, enc, dec in variants:
        steps[name + " in"], steps[name + " out"] = (_repeat(enc), 1), (_repeat(dec), 1)
    return steps


# -- report --------------------------------------------------------------------------------------------------


def _fmt(value: float | None, width: int, decimals: int = 1) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


def human(rows: list[Row]) -> str:
    cols = ("µs in", "µs out", "µs tot", "alias5020", "alias7020", "image", "SINAD1k", "SINAD3k", "delay ms")
    widths = (7, 7, 7, 9, 9, 7, 7, 7, 8)
    head = f"{'path':<30} " + " ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    lines = [
        f"BLAS threads: {blas}" + (" (numpy was loaded before this module: may not apply)" * NUMPY_ALREADY_LOADED),
        f"filter: {resample.NUM_TAPS} taps Kaiser (beta {resample.KAISER_BETA}), cutoff {resample.CUTOFF_HZ:.0f} Hz "
        f"at 24 kHz, {resample.DELAY_HIGH} samples (2 ms) delay each way; at 16 kHz the same over "
        f"{resample.NUM_TAPS_16K} taps, {resample.DELAY_HIGH_16K} samples (2 ms)",
        "µs per call per 20 ms frame (in: 8k->24k + base64 + JSON; out: base64 + 24k->8k); "
        "rejection and SINAD in dB, higher is better",
        head,
        "-" * len(head),
    ]
    for r in rows:
        values = [r.us_in, r.us_out, r.us_total, r.alias_db_5020, r.alias_db_7020, r.image_db]
        values += [r.sinad_db_1020, r.sinad_db_3020, r.delay_ms]
        decimals = (2, 2, 2, 1, 1, 1, 1, 1, 2)
        cells = " ".join(_fmt(v, w, d) for v, w, d in zip(values, widths, decimals, strict=True))
        lines.append(f"{r.path:<30} {cells}")
    ours = next(r for r in rows if r.path == "ours")
    assert ours.us_total is not None and ours.alias_db_5020 is not None and ours.image_db is not None
    lines.append("")
    for r in rows:
        if r.path == "ours" or r.path.startswith("wire/") or r.us_total is None:
            continue
        speed = r.us_total / ours.us_total
        faster = f"ours {speed:.1f}x faster" if speed >= 1 else f"{r.path} {1 / speed:.1f}x faster"
        parts = [f"ours vs {r.path}: {faster}"]
        if r.alias_db_5020 is not None and r.image_db is not None and r.path != "ours_batch32":
            parts.append(
                f"alias rejection {ours.alias_db_5020:.0f} vs {r.alias_db_5020:.0f} dB, "
                f"image rejection {ours.image_db:.0f} vs {r.image_db:.0f} dB"
            )
        if r.delay_ms is not None and ours.delay_ms is not None and r.path != "ours_batch32":
            parts.append(f"delay {ours.delay_ms:.1f} vs {r.delay_ms:.1f} ms")
        lines.append("; ".join(parts))
    by_path = {r.path: r for r in rows}
    x2, x3 = by_path.get("ours_16k"), by_path.get("ours_numpy")
    if x2 is not None and x3 is not None:
        assert x2.us_total is not None and x3.us_total is not None and x2.alias_db_5020 is not None
        assert x3.alias_db_5020 is not None and x2.image_db is not None and x3.image_db is not None
        assert x2.delay_ms is not None and x3.delay_ms is not None
        lines.append(
            f"16 kHz vs 24 kHz, numpy both: {x2.us_total:.1f} vs {x3.us_total:.1f} µs per frame "
            f"({x3.us_total / x2.us_total:.2f}x); alias rejection {x2.alias_db_5020:.0f} vs {x3.alias_db_5020:.0f} "
            f"dB, image rejection {x2.image_db:.0f} vs {x3.image_db:.0f} dB, delay {x2.delay_ms:.1f} vs "
            f"{x3.delay_ms:.1f} ms"
        )
    wires = [r for r in rows if r.path.startswith("wire/")]
    if wires:
        stdlib = wires[0].us_total
        lines += ["", "wire encoding per 20 ms of 24 kHz PCM16 (encode an append event + decode a delta):"]
        for r in wires:
            assert r.us_in is not None and r.us_out is not None and r.us_total is not None and stdlib
            lines.append(
                f"  {r.path[5:]:<28} {r.us_in:6.2f} + {r.us_out:5.2f} = {r.us_total:6.2f} µs "
                f"({stdlib / r.us_total:.1f}x the stdlib)"
            )
    return "\n".join(lines)


def run(json_output: bool = False) -> int:
    inp = Inputs()
    paths = [
        per_call_path("ours", lambda: resample.Upsampler().process, lambda: resample.Downsampler().process, inp),
        per_call_path(
            "ours_numpy",
            lambda: resample.Upsampler(native=False).process,
            lambda: resample.Downsampler(native=False).process,
            inp,
        ),
        batch_path(inp),
        per_call_path("audioop", lambda: _audioop(LOW, HIGH), lambda: _audioop(HIGH, LOW), inp),
        per_call_path("soxr_hq", lambda: _soxr(LOW, HIGH), lambda: _soxr(HIGH, LOW), inp),
        per_call_path(
            "ours_16k",
            lambda: resample.Upsampler16k().process,
            lambda: resample.Downsampler16k().process,
            inp,
            HIGH_16K,
        ),
        per_call_path("soxr_hq_16k", lambda: _soxr(LOW, HIGH_16K), lambda: _soxr(HIGH_16K, LOW), inp, rate=HIGH_16K),
        passthrough_path(inp),
    ]
    makers = wire_steps()
    for p in paths:
        makers[p.name + " in"] = (p.step_in, p.calls_per_step)
        makers[p.name + " out"] = (p.step_out, p.calls_per_step)
    us = timings(makers)
    rows = [quality(p, us) for p in paths]
    wires = dict.fromkeys(name.rsplit(" ", 1)[0] for name in makers if name.startswith("wire/"))
    for name in wires:
        rows.append(Row(name, us[name + " in"], us[name + " out"], us[name + " in"] + us[name + " out"], *[None] * 6))
    if json_output:
        for r in rows:
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(r).items()}))
    else:
        print(human(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbridge bench audio", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per path and line")
    args = parser.parse_args(argv)
    return run(args.json)


if __name__ == "__main__":
    sys.exit(main())
