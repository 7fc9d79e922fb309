"""Virtual time for replays: an asyncio event loop whose clock jumps to the next timer when nothing is ready.

::

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        report = runner.run(session.run())       # a 60 s call takes as long as its CPU work, not 60 s

Everything that waits on the loop's clock (``asyncio.sleep``, ``asyncio.wait_for``, ``loop.call_at``, the call
session's 20 ms ticker, the emulator's paced deltas) runs in virtual seconds. The loop still polls its real file
descriptors (with a zero timeout) so that ``call_soon_threadsafe`` keeps working; when nothing is ready and no timer is
scheduled, the loop waits for real I/O for :data:`STALL_S` and then raises :class:`VirtualTimeStall`, since in a
replay that means every task is waiting for something that can never come (a deadlock, reported instead of hung).

Only the loop's own clock is virtual. ``time.monotonic()`` and ``time.time()`` stay real, so code that measures
wall-clock durations (the session's ``capture`` latency segment) measures real CPU time here.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any, Final

STALL_S: Final = 10.0  # real seconds with nothing ready, no timer and no I/O before a replay is declared stuck


class VirtualTimeStall(RuntimeError):
    """Every task waits, and no timer will ever wake one: the replay cannot make progress."""


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector: polls it without blocking, and turns a timeout into a jump of the virtual clock."""

    def __init__(self, clock: VirtualClock) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:  # nothing ready and no timer: only another thread can still wake the loop
            ready = self._real.select(STALL_S)
            if not ready:
                raise VirtualTimeStall(
                    f"virtual-time loop stalled at t={self._clock.now:.3f} s: no task is ready and no timer is set"
                )
            return ready
        if timeout > 0:
            self._clock.now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualClock:
    """The loop's notion of now, in seconds. Starts at 0."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a :class:`VirtualClock` (see the module docstring)."""

    def __init__(self) -> None:
        self.clock = VirtualClock()
        super().__init__(selector=_VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.now
