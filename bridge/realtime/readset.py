"""Every call's Realtime socket read in one C call per beat (``cbd_set_read`` in ``bridge/native/downlink.c``).

A worker's loop reads each call's Realtime socket once per media beat (:meth:`RealtimeSocket.gate
<bridge.realtime.ws_fastpath.RealtimeSocket.gate>`). Socket by socket, that is a look (``poll``), a read and the
hand-off to the C scanner in Python per call and beat, while nearly every read brings only the model's audio, which
the scanner's sink pushes into the call's playout ring in C. :class:`ReadSet` is the loop's one reader: a chore
that runs first on every beat of the loop's metronome and makes one C call, which for every registered socket reads
what arrived (non-blocking, no ``poll``), opens it with the connection's TLS engine over ``wss://``
(:mod:`bridge.realtime.tls_native`), scans it and lets the sink take its audio. Only the sockets with something for
the loop are handed back, each with flags: a piece to take (a control event, an item's first run: the socket takes
it and the rest with :meth:`DownlinkScanner.pieces <bridge.realtime.downlink.DownlinkScanner.pieces>`, in the same
beat), the end of the stream or an error (the transport is resumed and meets it on its own read, as the socket's own
beat does), the peer's ``close_notify``, a failed engine, ciphertext to send. asyncio keeps the sockets: it opens
and closes them, writes, pings and waits for the drain; a socket leaves the set before it is closed.

Where the downlink's library does not load (no compiler, ``native_downlink: false``), or a socket is gated with no
metronome to read it on, it reads on its own beat in Python (:meth:`RealtimeSocket.beat
<bridge.realtime.ws_fastpath.RealtimeSocket.beat>`); so does one over asyncio's own TLS. The call counter of
``bench calls --count-calls`` learns the reads the C call made from :func:`_reads_made`.
"""

from __future__ import annotations

import ctypes
import sys
import weakref
from collections.abc import Callable
from typing import Protocol

from bridge.realtime import downlink, tls_native

PIECE, END, TLS_OUT, TLS_CLOSED, TLS_FAILED = 1, 2, 4, 8, 16  # downlink.c's R_* flags
_REPORTS = 256  # sockets reported per call at most (more are read on the next beat)


class Beats(Protocol):
    """Where the reader's chore runs: the loop's metronome (a test beats one by hand)."""

    def add(self, chore: Callable[[], None], first: bool = False) -> Callable[[], None]: ...


class Reader(Protocol):
    """A socket registered with the set: told what its read brought."""

    def ready(self, flags: int) -> None: ...


class ReadSet:
    """The loop's reader of every registered socket (see the module doc). Only the event loop calls it."""

    def __init__(self, lib: ctypes.CDLL, beats: Beats) -> None:
        self._lib = lib
        handle = lib.cbd_set_new()
        if not handle:
            raise MemoryError("cbd_set_new")
        self._handle: int = handle
        weakref.finalize(self, lib.cbd_set_free, handle)
        fns = tls_native.opening_fns()
        self.tls = fns is not None  # sockets over wss:// on the native engine can be registered
        if fns is not None:
            lib.cbd_set_tls(handle, *fns)
        self._out = (ctypes.c_int * (2 * _REPORTS))()
        self._reads = ctypes.c_int()
        self._reads_ref = ctypes.byref(self._reads)
        self._readers: dict[int, Reader] = {}
        self._beats = weakref.ref(beats)  # the sets are kept by their metronome (for_beats): no cycle through it
        self._stop: Callable[[], None] | None = None

    def add(self, reader: Reader, fd: int, scanner: int, tls: int | None) -> int | None:
        """Read ``fd`` on every beat into ``scanner`` (``tls``: its engine over ``wss://``) and tell ``reader``;
        its slot, None if it cannot be (no memory, or TLS without the engine's functions)."""
        if tls is not None and not self.tls:
            return None
        slot = self._lib.cbd_set_add(self._handle, fd, scanner, tls)
        if slot < 0:
            return None
        self._readers[slot] = reader
        beats = self._beats()
        if self._stop is None and beats is not None:
            self._stop = beats.add(self, first=True)
        return int(slot)

    def remove(self, slot: int) -> float:
        """Read ``slot`` no more (before its socket is closed). Returns when it last brought bytes
        (``time.monotonic()``; 0: never)."""
        heard = float(self._lib.cbd_set_heard(self._handle, slot))
        self._lib.cbd_set_remove(self._handle, slot)
        self._readers.pop(slot, None)
        if not self._readers and self._stop is not None:
            stop, self._stop = self._stop, None
            stop()
        return heard

    def heard(self, slot: int) -> float:
        """When ``slot``'s socket last brought bytes (``time.monotonic()``; 0: never)."""
        return float(self._lib.cbd_set_heard(self._handle, slot))

    def __len__(self) -> int:
        return len(self._readers)

    def __call__(self) -> None:
        """The beat's read (a chore of the metronome, run before every other)."""
        reported = self._lib.cbd_set_read(self._handle, self._out, _REPORTS, self._reads_ref)
        if sys.getprofile() is not None:  # bench calls --count-calls: the counter reads the count off this call
            _reads_made(self._reads.value)
        if reported:
            out, readers = self._out, self._readers
            for i in range(0, 2 * reported, 2):
                reader = readers.get(out[i])
                if reader is not None:
                    reader.ready(out[i + 1])


def _reads_made(count: int) -> None:
    """``count`` sockets' reads brought bytes on this beat (the call counter marks it: bridge/runtime/callcount.py)."""


_SETS: weakref.WeakKeyDictionary[Beats, ReadSet | None] = weakref.WeakKeyDictionary()


def for_beats(beats: Beats) -> ReadSet | None:
    """The reader whose chore runs on ``beats`` (a loop's metronome), made on first use; None where the downlink's
    library is not loaded (the setting off, no compiler)."""
    if beats in _SETS:
        return _SETS[beats]
    lib = downlink.load() if downlink.enabled() else None
    found = _SETS[beats] = ReadSet(lib, beats) if lib is not None else None
    return found
