"""Streaming polyphase FIR resamplers, 8 kHz <-> 24 kHz (factor 3) and 8 kHz <-> 16 kHz (factor 2, Live's PCM
rate), one instance per call and per direction.

Filter
------
One linear-phase lowpass prototype at 24 kHz serves both directions: a Kaiser-windowed sinc with
``NUM_TAPS = 97`` taps, cutoff 3940 Hz, beta 8.3 (designed with numpy at import, no scipy).

The 16 kHz pair (``Upsampler16k``, ``Downsampler16k``) uses the same design at 16 kHz: the same cutoff and beta
over the same 4 ms span, which is 65 taps there (a delay of 32 samples, 2 ms, 16 at 8 kHz: whole samples at both
rates again). It meets the same bar (passband within ±0.04 dB to 3.4 kHz, >= 83 dB from 4.6 kHz) and has the same
delay, exactness, reset policy and streaming behaviour; it has no C kernel (see ``callbridge bench audio``).

- passband: flat within ±0.04 dB from 0 to 3.4 kHz (the telephone band, ITU-T G.712);
- stopband: >= 83 dB from 4.6 kHz up (>= 80 dB is the requirement; -93 dB at 5020 Hz), -8 dB at 4 kHz;
- delay: (97 - 1) / 2 = 48 samples at 24 kHz = 2 ms each way, an integer number of samples at both rates
  (16 at 8 kHz), so an 8k -> 24k -> 8k loopback is delayed by exactly 32 samples (4 ms) with no fraction.

Choice of the transition band: 24 kHz -> 8 kHz folds everything above 4 kHz around 4 kHz. Content at
4.0-4.6 kHz lands at 3.4-4.0 kHz, above the telephone passband, where a G.711 channel carries little anyway
(G.712 only specifies the channel to 3.4 kHz); everything that would land in the passband (above 4.6 kHz) is at
least 83 dB down. In the other direction the first image of a 3.4 kHz tone sits at 4.6 kHz: same bound. 97 taps
is the most that fits the 2 ms delay budget.

Exactness
---------
The taps are rounded to multiples of 2**-24 (DC gain exactly 1 in every polyphase branch, symmetry kept) and
the float64 history holds the int16 samples as they are. Every product and partial sum is then an exact binary
fraction (under 41 significant bits), whatever order BLAS sums in, so each output sample is bit-for-bit
independent of how the stream was chunked: 20 ms frames, odd chunk sizes and one call on the whole signal give
the same int16 samples.
Tap rounding costs nothing measurable (the response error it adds is below -125 dB). Outputs are rounded
half-to-even and clipped to int16.

Implementation: the float64 buffer holds the history then the chunk. Row r of a window matrix is the stretch
of buffer that the r-th block of 8 output samples at 8 kHz depends on; one BLAS matmul of those rows by a
matrix built from the polyphase branches gives every output of the chunk. No Python loop runs per sample.
`BatchUpsampler` / `BatchDownsampler` do the same for many calls in one matmul per 20 ms tick, when each call
brings exactly one frame per tick: about a third of the per-call CPU time (`callbridge bench audio`).

BLAS threads: run workers with ``OPENBLAS_NUM_THREADS=1`` (set before numpy is imported). The batched matmuls
are big enough for OpenBLAS to spread them over threads that spin; on a busy 2-core machine that was measured
up to 20x slower, and it competes with pjmedia's clock thread. The per-call matmuls stay single-threaded.

Reset policy
------------
- ``Upsampler`` (caller -> model): one per call, never reset mid-call; ``reset()`` only on a new Realtime session.
  Its state is 32 samples (4 ms) of caller audio and decays to exact zero after 4 ms of digital silence anyway.
- ``Downsampler`` (model -> caller): ``reset()`` after a barge-in flush, so no tail of the cut response leaks
  into the next one; at the natural end of an item call ``drain()``, which returns the last 2 ms still inside
  the filter (as if silence followed) and resets.

Threading: an instance keeps mutable state and must be used from one thread at a time.

C kernels
---------
``Upsampler`` and ``Downsampler`` run the same filters in C where it can be built (``cresample.c``, compiled by
:mod:`bridge.native.build`): integer sums of the integer taps, so the output is the numpy path's, sample for sample
(checked when the library loads, and by the tests on random streams in odd chunks). On a 20 ms frame the C
kernel avoids numpy's per-call overhead, which dominated: see ``callbridge bench audio``. Without a compiler,
or with ``CALLBRIDGE_NATIVE_AUDIO=0``, or ``native=False``, the numpy path runs.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, ClassVar, Final

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from bridge.audio.frames import SAMPLES_PER_FRAME
from bridge.audio.native import NativeLib, Signature, load_native

FACTOR: Final = 3
RATE_LOW: Final = 8000
RATE_HIGH: Final = 24000
NUM_TAPS: Final = 97  # odd: linear-phase delay of (N-1)/2 = 48 samples, a multiple of FACTOR
CUTOFF_HZ: Final = 3940.0
KAISER_BETA: Final = 8.3
DELAY_HIGH: Final = (NUM_TAPS - 1) // 2  # 48 samples at 24 kHz = 2 ms, per direction
DELAY_LOW: Final = DELAY_HIGH // FACTOR  # 16 samples at 8 kHz
NUM_TAPS_16K: Final = 65  # the same 4 ms span at 16 kHz: a delay of 32 samples, a multiple of 2

_SCALE_BITS: Final = 24
_INT16_MIN: Final = -32768.0
_INT16_MAX: Final = 32767.0

Float64Array = NDArray[np.float64]


def design_lowpass(
    num_taps: int = NUM_TAPS, cutoff_hz: float = CUTOFF_HZ, beta: float = KAISER_BETA, rate: int = RATE_HIGH
) -> Float64Array:
    """Kaiser-windowed sinc lowpass, unit DC gain."""
    n = np.arange(num_taps) - (num_taps - 1) / 2
    h = 2 * cutoff_hz / rate * np.sinc(2 * cutoff_hz / rate * n) * np.kaiser(num_taps, beta)
    return np.asarray(h / h.sum(), dtype=np.float64)


def _quantize(taps: Float64Array) -> Float64Array:
    """Round to integers on the 2**24 scale; fix the largest tap(s) so the DC gain is exactly 1."""
    q = np.round(taps * 2.0**_SCALE_BITS)
    # At 24 kHz each branch's peak is unique (the centre tap, or in branches 1 and 2 mirror-image taps that get the
    # same fix); at 16 kHz branch 1 is its own mirror image, with two equal peaks that share the fix (the rest is
    # a sum of equal pairs: even). Either way the prototype's symmetry, and with it the linear phase, is kept.
    peaks = np.flatnonzero(q == q.max())
    fix = 2.0**_SCALE_BITS - q.sum()
    if fix % len(peaks):
        peaks = peaks[:1]
    q[peaks] += fix / len(peaks)
    return q


_BLOCK_OUT: Final = 8  # per-call: outputs per block at 8 kHz (8 input samples up, 8 output samples down)
_BATCH_BLOCK_OUT: Final = 16  # batched: a little faster than 8 or 32 for 32 calls (measured, one BLAS thread)
_MAX_CHUNK_BYTES: Final = 2 * 4800  # longer chunks are cut (output unchanged) to bound the work matrices


def _frozen(g: Float64Array) -> Float64Array:
    g *= 2.0**-_SCALE_BITS  # integer taps times 2**-24 stay exact binary fractions (see "Exactness")
    g.setflags(write=False)
    return g


class _Design:
    """One ratio's filters: the prototype at ``RATE_LOW * factor``, its quantized polyphase branches, the delays,
    and the block matrices.

    A stream buffer holds ``hist`` samples of history then the chunk; window row r is
    ``buf[r*block : r*block + hist + block]`` (5 blocks of 8 outputs: the fastest shape for one 20 ms frame,
    measured), and one matmul of the window rows by G gives every output of the chunk."""

    def __init__(self, factor: int, num_taps: int, *, c_kernels: bool) -> None:
        self.factor, self.num_taps = factor, num_taps
        self.c_kernels = c_kernels  # the native library has kernels for this ratio
        self.rate_high = RATE_LOW * factor
        self.prototype = design_lowpass(num_taps, CUTOFF_HZ, KAISER_BETA, self.rate_high)
        # Interpolator branch p, delay k holds factor * h[factor*k + p] (DC gain 1 each).
        self.up_taps = -(-num_taps // factor)
        branches = [factor * self.prototype[p::factor] for p in range(factor)]
        self.up_q = np.stack([_quantize(np.pad(b, (0, self.up_taps - len(b)))) for b in branches])
        self.down_q = _quantize(self.prototype)
        self.taps = self.down_q * 2.0**-_SCALE_BITS  # the decimator's filter as used, exactly (unit DC gain)
        # the interpolator's filter as used, exactly (gain factor): its branches interleaved
        self.interpolator_taps = (self.up_q.T.reshape(-1) * 2.0**-_SCALE_BITS)[:num_taps]
        self.up_hist = self.up_taps - 1  # samples at 8 kHz
        self.dn_hist = num_taps - 1  # samples at the high rate
        self.delay_high = (num_taps - 1) // 2
        self.delay_low = self.delay_high // factor
        self.up_g = self.up_matrix(_BLOCK_OUT)
        self.dn_g = self.down_matrix(_BLOCK_OUT)

    def up_matrix(self, block: int) -> Float64Array:
        """G[t, F*s + p] so that out[F*s + p] = sum_k branch_p[k] * x[s - k], x[s] = row[hist + s]."""
        f, hist = self.factor, self.up_hist
        g = np.zeros((hist + block, f * block))
        for s in range(block):
            for k in range(self.up_taps):
                g[hist + s - k, f * s : f * s + f] = self.up_q[:, k]
        return _frozen(g)

    def down_matrix(self, block_out: int) -> Float64Array:
        """G[t, s] so that out[s] = sum_j h[j] * x[F*s - j], x[i] = row[hist + i]."""
        f = self.factor
        g = np.zeros((self.dn_hist + f * block_out, block_out))
        for s in range(block_out):
            g[f * s : f * s + self.num_taps, s] = self.down_q[::-1]
        return _frozen(g)


_X3: Final = _Design(FACTOR, NUM_TAPS, c_kernels=True)  # 8 <-> 24 kHz
_X2: Final = _Design(2, NUM_TAPS_16K, c_kernels=False)  # 8 <-> 16 kHz: the numpy path only
PROTOTYPE: Final = _X3.prototype
_UP_TAPS: Final = _X3.up_taps  # 33
_UP_Q: Final = _X3.up_q
_DOWN_Q: Final = _X3.down_q
TAPS: Final = _X3.taps
INTERPOLATOR_TAPS: Final = _X3.interpolator_taps
TAPS_16K: Final = _X2.taps
INTERPOLATOR_TAPS_16K: Final = _X2.interpolator_taps
DELAY_HIGH_16K: Final = _X2.delay_high  # 32 samples at 16 kHz = 2 ms
_UP_HIST: Final = _X3.up_hist  # 32 samples at 8 kHz
_DN_HIST: Final = _X3.dn_hist  # 96 samples at 24 kHz
_UP_G_BATCH: Final = _X3.up_matrix(_BATCH_BLOCK_OUT)
_DN_G_BATCH: Final = _X3.down_matrix(_BATCH_BLOCK_OUT)


def _window(buf: Float64Array, block: int, width: int) -> Float64Array:
    """Overlapping rows ``buf[..., r*block : r*block + width]`` of a 1-D or 2-D buffer, as a read-only view."""
    b = buf.itemsize
    rows = (buf.shape[-1] - width) // block + 1
    shape, strides = (*buf.shape[:-1], rows, width), (*buf.strides[:-1], block * b, b)
    view: Float64Array = as_strided(buf, shape, strides, writeable=False)
    return view


def _to_int16(y: Float64Array, lo: Float64Array, hi: Float64Array) -> bytes:
    """Round half to even and clip to int16; `lo`/`hi` are arrays (numpy's scalar-operand loop is slower)."""
    np.rint(y, out=y)
    np.minimum(y, hi, out=y)
    np.maximum(y, lo, out=y)
    return y.astype(np.int16).tobytes()


def _bounds(size: int) -> tuple[Float64Array, Float64Array]:
    return np.full(size, _INT16_MIN), np.full(size, _INT16_MAX)


def _odd(pcm16: bytes) -> ValueError:
    return ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm16)}")


def _split(process: Callable[[bytes], bytes], pcm16: bytes) -> bytes:
    return b"".join(process(pcm16[i : i + _MAX_CHUNK_BYTES]) for i in range(0, len(pcm16), _MAX_CHUNK_BYTES))


_P, _I = ctypes.c_void_p, ctypes.c_int
_SIGNATURES: tuple[Signature, ...] = (
    ("cbr_up_state_size", _I, []),
    ("cbr_down_state_size", _I, []),
    ("cbr_max_in", _I, []),
    ("cbr_set_taps", None, [_P, _P]),
    ("cbr_down_reset", None, [_P]),
    ("cbr_up", _I, [_P, ctypes.c_char_p, _I, _P]),
    ("cbr_down", _I, [_P, ctypes.c_char_p, _I, _P]),
)


@cache
def native_kernels() -> NativeLib:
    """Build, load and check the C kernels once per process (see "C kernels")."""
    return load_native("resample.c", _SIGNATURES, _prepare)


def _prepare(lib: ctypes.CDLL) -> None:
    if lib.cbr_max_in() * 2 != _MAX_CHUNK_BYTES:
        raise OSError("cresample.c and resample.py disagree on the largest chunk")
    up = np.ascontiguousarray(_UP_Q, dtype=np.int64)
    down = np.ascontiguousarray(_DOWN_Q[::-1], dtype=np.int64)
    lib.cbr_set_taps(up.ctypes.data, down.ctypes.data)
    _check(lib)


def _check(lib: ctypes.CDLL) -> None:
    """The C kernels must give the numpy path's samples exactly, on a stream with clipping and odd chunks."""
    rng = np.random.default_rng(20261122)
    signal = rng.integers(-32768, 32768, 2 * 8000 // 10, dtype=np.int16).tobytes()  # 100 ms at 8 kHz
    cuts = (0, 2, 322, 640, 1000, len(signal))
    for kind in (Upsampler, Downsampler):
        ref, fast = kind(native=False), kind(native=True, _lib=lib)
        for a, b in itertools.pairwise(cuts):
            if ref.process(signal[a:b]) != fast.process(signal[a:b]):
                raise OSError(f"cresample.c differs from the numpy {kind.__name__}: not used")
        if ref.drain() != fast.drain():
            raise OSError(f"cresample.c differs from the numpy {kind.__name__} at drain: not used")


class _Fir:
    """Float64 history + input buffer, its window rows (copied contiguous so BLAS can run) and the output.
    With C kernels, ``_c`` is the C state and ``_cout`` the output buffer, and the numpy buffers stay unused."""

    __slots__ = (
        "_block",
        "_bounds",
        "_buf",
        "_c",
        "_call",
        "_cout",
        "_cview",
        "_g",
        "_hist",
        "_lib",
        "_out",
        "_rows",
        "_tail",
        "_views",
        "_win",
        "_work",
    )
    _design: ClassVar[_Design]

    def __init__(
        self,
        hist: int,
        block: int,
        g: Float64Array,
        tail: int,
        native: bool | None,
        lib: ctypes.CDLL | None,
        kernel: str,
    ) -> None:
        """``tail``: the input samples still inside the filter after the last output (its delay at the input rate),
        what :meth:`drain` pushes out; ``kernel``: the C function that runs this filter (``cbr_up``), its state's
        size from ``<kernel>_state_size``."""
        self._hist, self._block, self._g, self._tail = hist, block, g, tail
        self._buf = np.zeros(0)
        self._rows = 0
        self._views: dict[int, tuple[Float64Array, ...]] = {}
        self._c: ctypes.Array[ctypes.c_char] | None = None
        if not self._design.c_kernels:
            if native:
                raise RuntimeError(
                    f"C resampler kernels unavailable: none for 8 <-> {self._design.rate_high // 1000} kHz"
                )
            native, lib = False, None
        self._lib = lib if lib is not None else (native_kernels().lib if native is not False else None)
        if native and self._lib is None:
            raise RuntimeError(f"C resampler kernels unavailable: {native_kernels().why}")
        if self._lib is not None:
            self._c = ctypes.create_string_buffer(getattr(self._lib, f"{kernel}_state_size")())
            self._call: Callable[..., int] = getattr(self._lib, kernel)
            # the largest chunk's output, in an anonymous mapping rather than a zero-filled bytearray: only the pages
            # an output reaches become the process's (a 20 ms frame's: one page of the 28 KiB, per stream of a call)
            out = mmap.mmap(-1, FACTOR * _MAX_CHUNK_BYTES)
            self._cout = (ctypes.c_char * len(out)).from_buffer(out)  # C writes here ...
            self._cview = memoryview(out)  # ... and the result is sliced out of it without another C call
        else:  # the numpy path's matrices, for one 20 ms frame (20 rows; they grow with longer chunks)
            self._grow(SAMPLES_PER_FRAME // _BLOCK_OUT)

    @property
    def native(self) -> bool:
        """True when the C kernels run this instance."""
        return self._c is not None

    def c_kernel(self) -> tuple[int, int] | None:
        """With the C kernels: the addresses of this filter's kernel (``cbr_up``, ``cbr_down``) and of this
        stream's filter state, so that C code elsewhere (the native media port's uplink, or the duplex floor's
        downlink) can carry the stream on exactly where :meth:`process` left it, and hand it back. Nothing may call
        :meth:`process` while that code holds it. None on the numpy path."""
        if self._c is None or self._lib is None:
            return None
        call: Any = self._call  # the library's CFuncPtr, typed as a plain callable for the calls made through it
        kernel = ctypes.cast(call, ctypes.c_void_p).value
        return (kernel, ctypes.addressof(self._c)) if kernel else None

    def _grow(self, rows: int) -> None:
        old = self._buf
        self._buf = np.zeros(self._hist + rows * self._block)
        self._buf[: len(old)] = old
        self._win = _window(self._buf, self._block, self._hist + self._block)
        self._work = np.empty(self._win.shape)
        self._out = np.empty((rows, self._g.shape[1]))
        self._bounds = _bounds(self._out.size)
        self._rows = rows
        self._views.clear()

    def _filter(self, rows: int, count: int) -> bytes:
        views = self._views.get(count)
        if views is None:  # views cached per chunk size: slicing costs more than the arithmetic on 20 ms
            if len(self._views) >= 64:
                self._views.clear()
            out = self._out[:rows]
            lo, hi = self._bounds
            views = (self._win[:rows], self._work[:rows], out, out.reshape(-1)[:count], lo[:count], hi[:count])
            self._views[count] = views
        win, work, out, y, lo, hi = views
        np.copyto(work, win)
        np.matmul(work, self._g, out=out)
        return _to_int16(y, lo, hi)

    def process(self, pcm16: bytes) -> bytes:
        """PCM16 at one rate in, at the other out; any even size, the stream carried on across calls."""
        if len(pcm16) & 1:
            raise _odd(pcm16)
        if len(pcm16) > _MAX_CHUNK_BYTES:
            return _split(self.process, pcm16)
        c = self._c
        if c is not None:
            return bytes(self._cview[: 2 * self._call(c, pcm16, len(pcm16) >> 1, self._cout)])
        return self._numpy(pcm16)

    def _numpy(self, pcm16: bytes) -> bytes:
        raise NotImplementedError

    def drain(self) -> bytes:
        """The 2 ms still inside the filter, as if silence followed; then reset."""
        tail = self.process(bytes(2 * self._tail))
        self.reset()
        return tail

    def reset(self) -> None:
        raise NotImplementedError


class Upsampler(_Fir):
    """8 kHz -> 24 kHz PCM16 (native byte order), streaming; any input size, 3 output samples per input."""

    __slots__ = ()
    _design: ClassVar[_Design] = _X3

    def __init__(self, native: bool | None = None, _lib: ctypes.CDLL | None = None) -> None:
        """``native``: None uses the C kernels where available, True requires them, False never uses them."""
        d = self._design
        super().__init__(d.up_hist, _BLOCK_OUT, d.up_g, d.delay_low, native, _lib, "cbr_up")

    def _numpy(self, pcm16: bytes) -> bytes:
        n = len(pcm16) >> 1
        if n == 0:
            return b""
        rows = -(-n // _BLOCK_OUT)
        if rows > self._rows:
            self._grow(rows)
        buf, hist = self._buf, self._hist
        buf[hist : hist + n] = np.frombuffer(pcm16, dtype=np.int16)
        y = self._filter(rows, self._design.factor * n)
        buf[:hist] = buf[n : n + hist]  # the last inputs become the history (32 at 24 kHz, 16 at 16 kHz)
        return y

    def reset(self) -> None:
        self._buf[:] = 0.0
        if self._c is not None:
            ctypes.memset(self._c, 0, len(self._c))


class Downsampler(_Fir):
    """24 kHz -> 8 kHz PCM16 (native byte order), streaming; any input size, the phase is carried across calls."""

    __slots__ = ("_pending",)
    _design: ClassVar[_Design] = _X3

    def __init__(self, native: bool | None = None, _lib: ctypes.CDLL | None = None) -> None:
        """``native``: None uses the C kernels where available, True requires them, False never uses them."""
        d = self._design
        super().__init__(d.dn_hist, d.factor * _BLOCK_OUT, d.dn_g, d.delay_high, native, _lib, "cbr_down")
        self._pending = d.dn_hist  # samples in the buffer, from the oldest tap of the next output on
        if self._lib is not None:
            self._lib.cbr_down_reset(self._c)

    def _numpy(self, pcm16: bytes) -> bytes:
        d = self._design
        start = self._pending
        total = start + (len(pcm16) >> 1)
        count = (total - d.num_taps) // d.factor + 1  # outputs whose newest input sample has arrived
        rows = -(-count // _BLOCK_OUT)
        if total > len(self._buf):
            self._grow(-(-(total - self._hist) // self._block))
        buf = self._buf
        buf[start:total] = np.frombuffer(pcm16, dtype=np.int16)
        if count <= 0:
            self._pending = total
            return b""
        y = self._filter(rows, count)
        consumed = d.factor * count
        self._pending = total - consumed  # 96, 97 or 98 at 24 kHz; 64 or 65 at 16 kHz
        buf[: self._pending] = buf[consumed:total]
        return y

    def reset(self) -> None:
        self._buf[:] = 0.0
        self._pending = self._hist
        if self._c is not None:
            assert self._lib is not None
            self._lib.cbr_down_reset(self._c)


class Upsampler16k(Upsampler):
    """8 kHz -> 16 kHz PCM16 (native byte order), streaming; any input size, 2 output samples per input. The numpy
    path only (``native=True`` raises): there is no C kernel for this ratio (``c_kernel`` is None)."""

    __slots__ = ()
    _design: ClassVar[_Design] = _X2


class Downsampler16k(Downsampler):
    """16 kHz -> 8 kHz PCM16 (native byte order), streaming; any input size, the phase is carried across calls.
    The numpy path only (``native=True`` raises)."""

    __slots__ = ()
    _design: ClassVar[_Design] = _X2


class _Batch:
    """Many calls at once: exactly one frame per call per tick, one matmul for all calls.

    Slot i of every tick belongs to the same call; ``reset(i)`` when a slot gets a new call. The output is
    identical, sample for sample, to the per-call classes (the sums are exact, see "Exactness").
    """

    __slots__ = ("_bounds", "_buf", "_calls", "_frame", "_g", "_hist", "_out", "_win", "_work")

    def __init__(self, calls: int, frame: int, hist: int, block: int, g: Float64Array) -> None:
        if frame % block:
            raise ValueError(f"frame must be a multiple of {block} samples, got {frame}")
        self._calls, self._frame, self._hist, self._g = calls, frame, hist, g
        self._buf = np.zeros((calls, hist + frame))
        self._win = _window(self._buf, block, hist + block)  # (calls, rows, width)
        self._work = np.empty((calls * self._win.shape[1], hist + block))  # one matmul for all calls
        self._out = np.empty((len(self._work), g.shape[1]))
        self._bounds = _bounds(self._out.size)

    def process(self, frames: Sequence[bytes]) -> list[bytes]:
        """One frame per call, in slot order; returns the converted frames in the same order."""
        calls, frame, hist, buf = self._calls, self._frame, self._hist, self._buf
        data = b"".join(frames)
        if len(frames) != calls or len(data) != 2 * calls * frame:
            raise ValueError(f"expected {calls} frames of {frame} samples")
        buf[:, hist:] = np.frombuffer(data, dtype=np.int16).reshape(calls, frame)
        np.copyto(self._work.reshape(self._win.shape), self._win)
        np.matmul(self._work, self._g, out=self._out)
        buf[:, :hist] = buf[:, frame:]
        out = _to_int16(self._out.reshape(-1), *self._bounds)
        size = len(out) // calls
        return [out[i : i + size] for i in range(0, len(out), size)]

    def reset(self, slot: int) -> None:
        self._buf[slot] = 0.0


class BatchUpsampler(_Batch):
    """`Upsampler` for `calls` calls, one frame of `frame` samples at 8 kHz per call per tick."""

    __slots__ = ()

    def __init__(self, calls: int, frame: int = SAMPLES_PER_FRAME) -> None:
        super().__init__(calls, frame, _UP_HIST, _BATCH_BLOCK_OUT, _UP_G_BATCH)


class BatchDownsampler(_Batch):
    """`Downsampler` for `calls` calls, one frame of `frame` samples at 24 kHz per call per tick."""

    __slots__ = ()

    def __init__(self, calls: int, frame: int = FACTOR * SAMPLES_PER_FRAME) -> None:
        super().__init__(calls, frame, _DN_HIST, FACTOR * _BATCH_BLOCK_OUT, _DN_G_BATCH)
