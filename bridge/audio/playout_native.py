"""The playout ring in C (``bridge/native/playout.c``): :class:`NativePlayout`, the same contract as
:class:`~bridge.audio.playout.PlayoutBuffer` with every frame and all the accounting kept in C.

The call's loop pushes a run of the model's audio in one call and the consumer takes a block of frames in one call
(:meth:`NativePlayout.pop_frames`: the native media port's top-up takes a beat's frames at once, and the taps on the
way, ``bridge.call.leg.TeeSource`` and its kin, see that block); the loop reads the counters only when it asks for
them (a barge-in's flush, an item's played milliseconds, the call's totals), never per frame. Item ids stay here (C
has a small integer for each); the downstream stage (the native port's queue ahead of the wire) is spoken to from
here, on a push into an empty ring and on a flush, exactly as the Python buffer does. Where nothing between the
ring and the native port needs the frames, the port's drain pops the ring in C itself (:meth:`NativePlayout.c_ring`,
``bridge/native/cport.c``, "Pull"): the same pops, so the same accounting, and no Python per beat for the frames.
On the producer's side, once the call has taken the first chunk of an item, the socket's C downlink pushes the
item's later runs into the ring itself (:meth:`NativePlayout.c_sink`, ``bridge/native/downlink.c``, "The sink"):
the same ``cbq_push`` as :meth:`NativePlayout.push`, with no Python per read.

:func:`make_playout` gives a call its buffer: the C ring where the library builds and the ``native_playout``
setting is on (the default, :func:`configure`), else the Python buffer. ``CALLBRIDGE_NATIVE_AUDIO=0`` turns it off
with the other audio kernels.
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS
from bridge.audio.native import load_native
from bridge.audio.playout import Downstream, FlushResult, Playout, PlayoutBuffer, checked_silence
from bridge.native.build import LoadOnce

_P, _I, _D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
_I64P = ctypes.POINTER(ctypes.c_int64)
_SIGNATURES: tuple[tuple[str, Any, list[Any]], ...] = (
    ("cbq_new", _P, [_I, _I, ctypes.c_char_p]),
    ("cbq_free", None, [_P]),
    ("cbq_push", _I, [_P, _I, ctypes.c_char_p, _I]),
    ("cbq_end_item", _I, [_P, _I]),
    ("cbq_pop", _I, [_P, _P, _I, _D]),
    ("cbq_flush", None, [_P, _I, _I64P, ctypes.POINTER(ctypes.c_int32), _I]),
    ("cbq_trailing_silence", _I, [_P]),
    ("cbq_forget_silence", _I, [_P, _I]),
    ("cbq_dry", _I, [_P, _I]),
    ("cbq_idle", _I, [_P, _I]),
    ("cbq_held_of", _I, [_P, _I, _I]),
    ("cbq_item_state", None, [_P, _I, _I64P, ctypes.POINTER(_D)]),
    ("cbq_counters", None, [_P, _I64P]),
    ("cbq_underrun_times", _I, [_P, ctypes.POINTER(_D), _I]),
    ("cbq_underrun_times_max", _I, []),
)
_LATER_MAX: Final = 256  # later items a flush reports (a ring holds a few at most)
_POP_BLOCK: Final = 16  # frames the pop buffer holds: a native port's top-up takes at most 16 (cport.c, OUT_FRAMES)

_enabled = True
log = logging.getLogger("bridge.audio")


@dataclass(frozen=True, slots=True)
class CSink:
    """Where C code pushes an item's audio into a ring itself (:meth:`NativePlayout.c_sink`): ``cbq_push``'s
    address, the ring, the item's id there and its name; ``refilled`` after a push into an empty ring (the
    downstream's trailing silence is taken back, as :meth:`NativePlayout.push` does)."""

    push: int
    ring: int
    ring_id: int
    item_id: str
    refilled: Callable[[], None]


def configure(on: bool) -> None:
    """The ``native_playout`` setting of this process (a worker sets it at start)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def _prepare(lib: ctypes.CDLL) -> None:
    probe = NativePlayout(lib, max_ms=100)
    probe.push("probe", bytes(range(256)) * 3)
    probe.end_item("probe")
    if probe.pop_frames(3) != (bytes(range(256)) * 3 + bytes(BYTES_PER_FRAME_PCM16 * 3 - 768)):
        raise OSError("playout.c does not give back what it was given")


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    native = load_native("playout.c", _SIGNATURES, _prepare)
    if native.lib is None:
        log.warning("native playout ring unavailable, the Python buffer plays out: %s", native.why)
    return native.lib, native.why or None


_LIB = LoadOnce(_load)


def native_playout() -> ctypes.CDLL | None:
    """``playout.c`` built, loaded and checked once per process; None if it cannot be (:func:`problem`)."""
    return _LIB.get()


def problem() -> str | None:
    return _LIB.problem()


def make_playout(clock: Callable[[], float] = time.monotonic) -> Playout:
    """A call's playout buffer: the C ring where it loads and the setting is on, else the Python buffer."""
    lib = native_playout() if _enabled else None
    return NativePlayout(lib, clock=clock) if lib is not None else PlayoutBuffer(clock=clock)


class NativePlayout:
    """A call's playout ring in C, with :class:`~bridge.audio.playout.PlayoutBuffer`'s surface (see its module
    doc for the threading contract and the accounting, which are the same)."""

    def __init__(
        self,
        lib: ctypes.CDLL,
        max_ms: int = 60_000,
        frame_bytes: int = BYTES_PER_FRAME_PCM16,
        silence: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        silence = checked_silence(max_ms, frame_bytes, silence)
        handle = lib.cbq_new(frame_bytes, max_ms // FRAME_MS, silence)
        if not handle:
            raise MemoryError("cbq_new")
        self._lib, self._h = lib, int(handle)
        self._free = weakref.finalize(self, lib.cbq_free, self._h)
        self._fb: Final = frame_bytes
        self._clock = clock
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._downstream: Downstream | None = None
        self._out = (ctypes.c_int64 * 6)()  # a flush's or an item's state
        self._counts = (ctypes.c_int64 * 6)()  # the counters (any thread may read them: a read is one call)
        self._later = (ctypes.c_int32 * _LATER_MAX)()
        self._first = ctypes.c_double()
        self._pop = ctypes.create_string_buffer(_POP_BLOCK * frame_bytes)
        self._pop_fn = ctypes.cast(lib.cbq_pop, ctypes.c_void_p).value  # for the native port (c_ring)
        self._push_fn = ctypes.cast(lib.cbq_push, ctypes.c_void_p).value  # for the C downlink (c_sink)

    def set_downstream(self, downstream: Downstream | None) -> None:
        """Register (or, with None, forget) the stage that holds popped frames before the wire."""
        self._downstream = downstream

    def _id(self, item_id: str) -> int:
        known = self._ids.get(item_id)
        if known is None:
            known = self._ids[item_id] = len(self._names)
            self._names.append(item_id)
        return known

    # -- producer ------------------------------------------------------------------------------------------

    def push(self, item_id: str, pcm8k: bytes) -> None:
        """Queue audio of `item_id`, any length. A new item id ends the previous item (its tail is padded)."""
        data = pcm8k if isinstance(pcm8k, bytes) else bytes(pcm8k)
        was_empty = self._lib.cbq_push(self._h, self._id(item_id), data, len(data))
        if was_empty < 0:
            raise MemoryError("cbq_push")
        if was_empty and self._downstream is not None:
            self._play_next(self._downstream)

    def c_sink(self, item_id: str) -> CSink | None:
        """``cbq_push``, this ring and ``item_id``'s id in it, for the socket's C downlink to push that item's later
        runs itself (``downlink.c``, "The sink"): what it pushes is accounted exactly as :meth:`push`'s audio."""
        if not self._push_fn:
            return None
        return CSink(self._push_fn, self._h, self._id(item_id), item_id, self._refilled)

    def _refilled(self) -> None:
        """C pushed audio into the empty ring (``c_sink``): as :meth:`push` does then."""
        if self._downstream is not None:
            self._play_next(self._downstream)

    def end_item(self, item_id: str) -> None:
        """No more audio for `item_id`: queue its tail padded to a whole frame so it plays."""
        known = self._ids.get(item_id)
        if known is not None and self._lib.cbq_end_item(self._h, known) and self._downstream is not None:
            self._play_next(self._downstream)

    def _play_next(self, downstream: Downstream) -> None:
        """Audio was queued into an empty ring: trailing silence the stage holds is taken back (PlayoutBuffer)."""
        trailing = self._lib.cbq_trailing_silence(self._h)
        if trailing <= 0:
            return
        taken = downstream.drop_newest(trailing)
        if taken > 0:
            self._lib.cbq_forget_silence(self._h, taken)
            downstream.top_up()

    def flush(self) -> FlushResult:
        """Drop everything queued at once (barge-in) and report what of the current item was played."""
        downstream = self._downstream
        held = downstream.flush_out() if downstream is not None else 0
        out, later = self._out, self._later
        self._lib.cbq_flush(self._h, held, out, later, _LATER_MAX)
        current = out[0]
        if current < 0:
            return FlushResult(None, 0, 0)
        received_ms = out[2] * FRAME_MS // self._fb
        played_ms = min(out[1] * FRAME_MS, received_ms)
        names = self._names
        unplayed = tuple(names[later[k]] for k in range(out[3]))
        return FlushResult(names[current], played_ms, received_ms - played_ms, unplayed)

    # -- consumer ------------------------------------------------------------------------------------------

    def pop_frame(self) -> bytes:
        """The next frame, or silence. Never blocks for long; always exactly `frame_bytes` bytes."""
        self._lib.cbq_pop(self._h, self._pop, 1, self._clock())
        return ctypes.string_at(self._pop, self._fb)

    def pop_frames(self, frames: int) -> bytes:
        """The next ``frames`` frames (silence where there is none), in one block."""
        buf = self._pop if frames <= _POP_BLOCK else ctypes.create_string_buffer(frames * self._fb)
        self._lib.cbq_pop(self._h, buf, frames, self._clock())
        return ctypes.string_at(buf, frames * self._fb)

    def c_ring(self) -> tuple[int, int] | None:
        """``cbq_pop`` and this ring, for the native media port to take the frames in C itself (``cport.c``,
        "Pull"; it stamps them with ``CLOCK_MONOTONIC``): only where this ring's clock is ``time.monotonic``, the
        same clock (a virtual clock pops through Python). Frames of the call's audio only (``frame_bytes`` 320)."""
        if self._clock is not time.monotonic or not self._pop_fn or self._fb != BYTES_PER_FRAME_PCM16:
            return None
        return self._pop_fn, self._h

    # -- readers -------------------------------------------------------------------------------------------

    def ran_dry(self, item_id: str) -> bool:
        """As :meth:`PlayoutBuffer.ran_dry`: the item's audio all went out and the dead air since has been sent."""
        known = self._ids.get(item_id)
        trailing = self._lib.cbq_dry(self._h, known) if known is not None else -1
        if trailing < 0:
            return False
        downstream = self._downstream
        return trailing > (downstream.depth() if downstream is not None else 0)

    def _state(self, item_id: str) -> tuple[int, int, float]:
        known = self._ids.get(item_id)
        if known is None:
            return 0, 0, math.nan
        self._lib.cbq_item_state(self._h, known, self._out, ctypes.byref(self._first))
        return self._out[0], self._out[1], self._first.value

    def played_ms(self, item_id: str) -> int:
        """Milliseconds of `item_id` handed to the phone side so far."""
        played, received, _first = self._state(item_id)
        return min(played * FRAME_MS, received * FRAME_MS // self._fb)

    def sent_ms(self, item_id: str) -> int:
        """Milliseconds of `item_id` gone past the downstream stage (on the wire): played, less what it holds."""
        downstream, known = self._downstream, self._ids.get(item_id)
        held = downstream.depth() if downstream is not None else 0
        of_item = int(self._lib.cbq_held_of(self._h, held, known)) if held > 0 and known is not None else 0
        return max(0, self.played_ms(item_id) - of_item * FRAME_MS)

    def first_played_at(self, item_id: str) -> float | None:
        """The clock's time when the first frame of `item_id` was handed out, None if not yet."""
        first = self._state(item_id)[2]
        return None if math.isnan(first) else first

    def _counter(self, index: int) -> int:
        out = self._counts
        self._lib.cbq_counters(self._h, out)
        return int(out[index])

    @property
    def frames_played(self) -> int:
        return self._counter(0)

    @property
    def underruns(self) -> int:
        return self._counter(1)

    @property
    def dropped_frames(self) -> int:
        return self._counter(2)

    @property
    def late_frames(self) -> int:
        return self._counter(3)

    @property
    def depth_ms(self) -> int:
        return self._counter(4) * FRAME_MS

    @property
    def allocated_frames(self) -> int:
        """Frames the ring has room for now (it grows with the audio queued and is given back on a flush)."""
        return self._counter(5)

    @property
    def underrun_times(self) -> list[float]:
        """The clock's time of the latest underruns (up to a minute of them), oldest first."""
        most = int(self._lib.cbq_underrun_times_max())
        out = (ctypes.c_double * most)()
        n = self._lib.cbq_underrun_times(self._h, out, most)
        return list(out[:n])

    @property
    def c_busy(self) -> tuple[Callable[[int, int], int], int]:
        """The first look :attr:`idle` takes, as a C function and its handle: ``fn(handle, 0)`` false means frames
        are still queued or an item is open, so not idle; for a caller that looks on every beat without a Python
        call while the agent speaks (the call's beat, ``bridge.call.perform.Beat``)."""
        return self._lib.cbq_idle, self._h

    @property
    def idle(self) -> bool:
        """Everything queued has been sent and no item is open (e.g. goodbye audio has finished)."""
        if not self._lib.cbq_idle(self._h, 0):
            return False
        downstream = self._downstream
        held = downstream.depth() if downstream is not None else 0
        return held <= 0 or bool(self._lib.cbq_idle(self._h, held))

    @property
    def frame_bytes(self) -> int:
        return self._fb
