"""A count of the Python and builtin calls the event loop's thread makes per beat per call (``bench calls
--count-calls``): a measure of the loop's Python work that does not depend on the machine's load.

A worker whose environment has :data:`COUNT_CALLS_ENV` (a directory) installs a :class:`CallCounter` on its loop's
thread with :func:`sys.setprofile` when its metronome is made (:func:`bridge.runtime.metronome.for_loop`). The
profile function counts every ``call`` (a Python function, or a generator or coroutine resumed) and every
``c_call`` (a builtin or a C method) on that thread, and cuts the count into intervals at each start of the
metronome's beat (:meth:`Metronome._run`). In each interval it also counts the calls' beats (``bridge.call.
perform.Beat``: one per call per beat) and the Realtime sockets' reads (``RealtimeSocket.data_received``, or as the
reader of every socket in C tells them: ``bridge.realtime.readset._reads_made``), and files
the interval by them: ``deltas`` (at least one read per call's beat: the model's audio arriving), ``none`` (no read)
or ``some``. It also keeps, for the ``deltas`` intervals, each Python function's calls (``by``: the file's path
from the package or the standard library down, its first line and its name), so a count says where the calls are.
Once a second it appends the running totals per kind, with ``time.monotonic()`` (system-wide, as the bench's
window), as one JSON line to ``calls-<pid>.jsonl`` in the directory; the bench takes the difference over its
window.

Profiling slows the loop severalfold: a run that counts measures calls, not CPU. Nothing here runs unless the
variable is set.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

COUNT_CALLS_ENV = "CALLBRIDGE_COUNT_CALLS"  # a directory: the worker counts its loop's calls per beat into it
KINDS = ("deltas", "some", "none")
# where each interval's edges and marks are: (the end of the file's path, the function's name)
RUN: tuple[str, str] = ("bridge/runtime/metronome.py", "_run")
BEAT: tuple[str, str] = ("bridge/call/perform.py", "__call__")  # Beat.__call__
READ: tuple[str, str] = ("bridge/realtime/ws_fastpath.py", "data_received")
READS: tuple[str, str] = ("bridge/realtime/readset.py", "_reads_made")  # its argument: the reads the C call made
_OTHER, _RUN, _BEAT, _READ, _READS = 0, 1, 2, 3, 4


class CallCounter:
    """The profile function and its totals (see the module doc). ``run``, ``beat``, ``read``: which functions cut
    the intervals, count the calls' beats and count the socket's reads."""

    def __init__(
        self,
        out: Path,
        run: tuple[str, str] = RUN,
        beat: tuple[str, str] = BEAT,
        read: tuple[str, str] = READ,
        every_s: float = 1.0,
    ) -> None:
        self.out = out
        self._marks = {run: _RUN, beat: _BEAT, read: _READ, READS: _READS}
        self._codes: dict[CodeType, int] = {}
        self.every_s = every_s
        self._written = time.monotonic()
        self._started = False  # the first interval starts at the first beat
        self._py = self._c = self._beats = self._reads = 0  # the open interval's
        self._calls: dict[CodeType, int] = {}  # the open interval's Python calls by function
        # per kind: [intervals, calls' beats, python calls, builtin calls]
        self.totals: dict[str, list[int]] = {kind: [0, 0, 0, 0] for kind in KINDS}
        self.by: dict[str, int] = {}  # the deltas intervals' Python calls by function (where)
        self._names: dict[CodeType, str] = {}

    def _mark(self, code: CodeType) -> int:
        name = code.co_filename.replace(os.sep, "/")
        mark = next((m for (tail, fn), m in self._marks.items() if fn == code.co_name and name.endswith(tail)), _OTHER)
        self._codes[code] = mark
        return mark

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            self._c += 1
            return
        if event != "call":
            return
        self._py += 1
        code = frame.f_code
        mark = self._codes.get(code)
        if mark is None:
            mark = self._mark(code)
        if mark == _RUN:
            self._close()
        elif mark == _BEAT:
            self._beats += 1
        elif mark == _READ:
            self._reads += 1
        elif mark == _READS:
            self._reads += frame.f_locals["count"]
        calls = self._calls
        calls[code] = calls.get(code, 0) + 1

    def _close(self) -> None:
        """A beat starts: file the interval that ends here (one with no call's beat in it is not a call's)."""
        beats, reads = self._beats, self._reads
        if self._started and beats:
            kind = "none" if not reads else "deltas" if reads >= beats else "some"
            total = self.totals[kind]
            total[0] += 1
            total[1] += beats
            total[2] += self._py - 1  # this beat's own call opens the next interval
            total[3] += self._c
            if reads >= beats:  # deltas: every call's socket read
                by, names = self.by, self._names
                for code, n in self._calls.items():
                    name = names.get(code) or names.setdefault(code, where(code))
                    by[name] = by.get(name, 0) + n
        self._started = True
        self._py, self._c, self._beats, self._reads = 1, 0, 0, 0
        self._calls = {}
        now = time.monotonic()
        if now - self._written >= self.every_s:
            self._written = now
            self.write(now)

    def write(self, now: float) -> None:
        line = {"t": now} | {kind: list(total) for kind, total in self.totals.items()} | {"by": dict(self.by)}
        with self.out.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def install(self) -> None:
        """Count the calls of this thread from now on."""
        sys.setprofile(self.profile)


def where(code: CodeType) -> str:
    """A function as ``by`` names it: its file from the package (``bridge/...``), the library's folder or the working
    directory down, its first line and its name."""
    path = code.co_filename.replace(os.sep, "/")
    for root in ("/site-packages/", "/lib/python3."):
        if root in path:
            path = path.split(root, 1)[1]
            path = path.split("/", 1)[1] if root == "/lib/python3." else path
            break
    else:
        if "/bridge/" in path:
            path = "bridge/" + path.rsplit("/bridge/", 1)[1]
        elif not (near := os.path.relpath(path)).startswith(".."):
            path = near  # a test's, or a script's beside the checkout
    return f"{path}:{code.co_firstlineno}:{code.co_name}"


def install_from_env() -> CallCounter | None:
    """On the loop's thread: a counter into ``$CALLBRIDGE_COUNT_CALLS/calls-<pid>.jsonl`` if the variable is set."""
    where = os.environ.get(COUNT_CALLS_ENV)
    if not where:
        return None
    counter = CallCounter(Path(where) / f"calls-{os.getpid()}.jsonl")
    counter.install()
    return counter


def window(lines: list[dict[str, Any]], t0: float, t1: float) -> dict[str, list[int]]:
    """Per kind, the totals' growth between the last line written by ``t0`` and the last by ``t1`` (a process
    that wrote none by ``t0`` counts from zero)."""
    zero = {kind: [0, 0, 0, 0] for kind in KINDS}
    start = next((line for line in reversed(lines) if line["t"] <= t0), None) or zero
    end = next((line for line in reversed(lines) if line["t"] <= t1), None) or zero
    grown = {}
    for kind in KINDS:
        before, after = start.get(kind, zero[kind]), end.get(kind, zero[kind])
        grown[kind] = [b - a for a, b in zip(before, after, strict=True)]
    return grown


def window_by(lines: list[dict[str, Any]], t0: float, t1: float) -> dict[str, int]:
    """As :func:`window`, the ``deltas`` intervals' Python calls by function (``by``)."""
    start = next((line for line in reversed(lines) if line["t"] <= t0), None) or {}
    end = next((line for line in reversed(lines) if line["t"] <= t1), None) or {}
    before, after = start.get("by", {}), end.get("by", {})
    return {name: n - before.get(name, 0) for name, n in after.items() if n > before.get(name, 0)}
