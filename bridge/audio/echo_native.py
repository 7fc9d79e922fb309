"""The echo guard in C (``bridge/native/echo.c``): :class:`~bridge.audio.echo.EchoGuard`'s decisions at a
fraction of its cost per frame.

The Python guard spends tens of microseconds of numpy calls on every 20 ms frame (the reference kept, the level
test or the held path's residual, the attenuation) and about half a millisecond on each path search; the C twin
does the same steps, in the same order, with the same thresholds, in a few microseconds per frame. Only the
arithmetic's rounding differs (a radix-2 FFT against pocketfft, Gaussian elimination against LAPACK), far below
any threshold; lags tied to rounding are settled the same way in both (the first). ``tests/unit/audio/
test_echo_native.py`` runs both on the same lines and compares every frame sent on and every verdict.

:func:`make_guard` gives a call its guard: the C one when ``echo.c`` builds (once per source version, like the
other C parts: :mod:`bridge.native.build`) and passes a check against the Python guard at load, else the Python
one (also with ``CALLBRIDGE_NATIVE_AUDIO=0``); :func:`native_echo` says why not.

The C guard keeps its own lock: the reference may be fed on one thread while the return is heard on another.
Where the native uplink sends the caller's audio from the media clock thread, the guard runs there too
(:meth:`NativeEchoGuard.c_uplink`, ``cbe_uplink``): each frame is heard and tempered in C before it is upsampled,
and the loop, which judges barge-ins, never sees it. A native media port feeds the reference there too
(:meth:`NativeEchoGuard.c_played`, ``cbe_played``): each frame as it is sent.
"""

from __future__ import annotations

import ctypes
import weakref
from functools import cache

import numpy as np

from bridge.audio.echo import GUARD_DEFAULTS, TAPS, EchoGuard, EchoPath, Guard, GuardSettings, Verdict, spans
from bridge.audio.frames import SAMPLE_RATE, SAMPLES_PER_FRAME
from bridge.audio.native import NativeLib, Signature, load_native

_PATH = 4 + TAPS  # found, lag, level_db, coherence, the taps
_VERDICT = 4 + _PATH  # echo, speaking, inbound_dbfs, residual_dbfs, the path
_MAX_FRAME = 8 * SAMPLES_PER_FRAME  # the most temper takes at once (echo.c: SHORT_WINDOW)


_P, _I, _D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
_SIGNATURES: tuple[Signature, ...] = (
    ("cbe_taps", _I, []),
    ("cbe_verdict_doubles", _I, []),
    ("cbe_new", _P, [_I, _I, _D, _D, _D]),
    ("cbe_free", None, [_P]),
    ("cbe_played", None, [_P, ctypes.c_char_p, _I]),
    ("cbe_unplayed", None, [_P, _I]),
    ("cbe_heard", None, [_P, ctypes.c_char_p, _I]),
    ("cbe_temper", _I, [_P, ctypes.c_char_p, _I, _P]),
    ("cbe_path", None, [_P, _P]),
    ("cbe_estimate", _I, [_P, ctypes.c_longlong, _I, _I, _P]),
    ("cbe_judge", _I, [_P, _P]),
    ("cbe_set_temper", None, [_P, _I]),
    ("cbe_set_onset", None, [_P, _I, _D]),
    ("cbe_counters", None, [_P, _P]),
)


@cache
def native_echo() -> NativeLib:
    """Build, load and check ``echo.c`` once per process."""
    return load_native("echo.c", _SIGNATURES, _prepare)


def _prepare(lib: ctypes.CDLL) -> None:
    if lib.cbe_taps() != TAPS or lib.cbe_verdict_doubles() != _VERDICT:
        raise OSError("echo.c and echo.py disagree on the path's layout")
    _check(lib)


def _check(lib: ctypes.CDLL) -> None:
    """The C guard must send on what the Python guard does, on a line returning noise-like audio 14 dB down and
    100 ms late, with a caller over it from the 40th frame."""
    rng = np.random.default_rng(20261125)
    agent = (rng.standard_normal(SAMPLES_PER_FRAME * 70) * 3000).astype("<i2")
    caller = (rng.standard_normal(SAMPLES_PER_FRAME * 30) * 2000).astype("<i2")
    line = np.concatenate((np.zeros(800), agent[:-800] * 0.2)).astype("<i2")
    line[SAMPLES_PER_FRAME * 40 :] += caller
    ref, fast = EchoGuard(), NativeEchoGuard(_lib=lib)
    for i in range(70):
        part = slice(i * SAMPLES_PER_FRAME, (i + 1) * SAMPLES_PER_FRAME)
        played, heard = agent[part].tobytes(), line[part].tobytes()
        for guard in (ref, fast):
            guard.played(played)
            guard.heard(heard)
        a, b = ref.temper(heard), fast.temper(heard)
        if np.max(np.abs(np.frombuffer(a, "<i2").astype(int) - np.frombuffer(b, "<i2"))) > 1:
            raise OSError(f"echo.c differs from the Python guard at frame {i}: not used")
    if ref.judge().echo != fast.judge().echo:
        raise OSError("echo.c judges differently from the Python guard: not used")


def _path(values: ctypes.Array[ctypes.c_double], at: int = 0) -> EchoPath | None:
    if not values[at]:
        return None
    lag = int(values[at + 1])
    return EchoPath(lag * 1000.0 / SAMPLE_RATE, values[at + 2], values[at + 3], tuple(values[at + 4 : at + _PATH]))


class NativeEchoGuard:
    """:class:`~bridge.audio.echo.EchoGuard` in C: the same settings, methods and decisions."""

    def __init__(self, settings: GuardSettings = GUARD_DEFAULTS, *, _lib: ctypes.CDLL | None = None) -> None:
        self.max_lag, self.window = spans(settings.max_delay_ms, settings.window_ms)
        self.speech_dbfs, self.erle_db = settings.speech_dbfs, settings.erle_db
        lib = _lib or native_echo().lib
        if lib is None:
            raise OSError(f"the C echo guard is unavailable: {native_echo().why}")
        handle = lib.cbe_new(self.max_lag, self.window, self.speech_dbfs, self.erle_db, settings.suppress)
        if not handle:
            raise OSError("the C echo guard could not be made (out of memory?)")
        self._lib, self._g = lib, ctypes.c_void_p(handle)
        weakref.finalize(self, lib.cbe_free, self._g)
        self._out = ctypes.create_string_buffer(2 * _MAX_FRAME)
        self._values = (ctypes.c_double * _VERDICT)()
        self._counts = (ctypes.c_ulonglong * 3)()

    def c_uplink(self, temper: bool, onset: tuple[int, float] | None = None) -> tuple[int, int] | None:
        """``cbe_uplink``'s address and this guard's: the native uplink hears (and tempers, if ``temper``) each
        caller frame through them on the media clock thread, and is told of the caller's onset by ``onset``'s
        rule (frames in a row passed whole, each at most so many dB below the frame heard: ``cbe_set_onset``).
        The caller keeps this object alive while bound."""
        self._lib.cbe_set_temper(self._g, 1 if temper else 0)
        frames, db = onset if onset is not None and temper else (0, 0.0)
        self._lib.cbe_set_onset(self._g, frames, db)
        fn = ctypes.cast(self._lib.cbe_uplink, ctypes.c_void_p).value
        return (fn, int(self._g.value or 0)) if fn else None

    def c_played(self) -> tuple[int, int] | None:
        """``cbe_played``'s address and this guard's: a native media port hands the guard each frame it sends
        through them on the media clock thread (its reference). The caller keeps this object alive meanwhile."""
        fn = ctypes.cast(self._lib.cbe_played, ctypes.c_void_p).value
        return (fn, int(self._g.value or 0)) if fn else None

    def counters(self) -> tuple[int, int, int]:
        self._lib.cbe_counters(self._g, self._counts)
        c = self._counts
        return int(c[0]), int(c[1]), int(c[2])

    def played(self, frame: bytes) -> None:
        """A frame the caller was sent (any thread)."""
        self._lib.cbe_played(self._g, frame, len(frame) // 2)

    def unplayed(self, frames: int) -> None:
        self._lib.cbe_unplayed(self._g, frames * SAMPLES_PER_FRAME)

    def heard(self, frame: bytes) -> None:
        self._lib.cbe_heard(self._g, frame, len(frame) // 2)

    @property
    def path(self) -> EchoPath | None:
        self._lib.cbe_path(self._g, self._values)
        return _path(self._values)

    def estimate(self, n: int | None = None, hint: int | None = None, window: int | None = None) -> EchoPath | None:
        at = -1 if n is None else n
        done = self._lib.cbe_estimate(self._g, at, -1 if hint is None else hint, window or 0, self._values)
        if done == -2:
            raise MemoryError("the C echo guard has no scratch on this thread (out of memory)")
        if done != 0:
            raise ValueError(f"window must be 1..{max(self.window, _MAX_FRAME)} samples, got {window}")
        return _path(self._values)

    def judge(self) -> Verdict:
        v = self._values
        if self._lib.cbe_judge(self._g, v) != 0:
            raise MemoryError("the C echo guard has no scratch on this thread (out of memory)")
        return Verdict(bool(v[0]), v[2], v[3], _path(v, 4), bool(v[1]))

    def temper(self, frame: bytes) -> bytes:
        n = len(frame) // 2
        if n > _MAX_FRAME:
            return b"".join(self.temper(frame[i : i + 2 * _MAX_FRAME]) for i in range(0, len(frame), 2 * _MAX_FRAME))
        if self._lib.cbe_temper(self._g, frame, n, self._out) == 0:
            return frame
        return self._out.raw[: 2 * n]


def make_guard(
    *, max_delay_ms: float = 600.0, speech_dbfs: float = -40.0, erle_db: float = 10.0, suppress_db: float = 30.0
) -> Guard:
    """A call's guard: the C one where it is available (:func:`native_echo`), else the Python one."""
    kind = NativeEchoGuard if native_echo().lib is not None else EchoGuard
    return kind(GuardSettings(max_delay_ms, speech_dbfs=speech_dbfs, erle_db=erle_db, suppress_db=suppress_db))
