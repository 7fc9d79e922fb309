"""A worker's memory policy: what keeps its RSS flat over hours of calls.

Measured on this machine (one worker, batches of 4 calls of 10 s with a socket drop each, RSS read while idle
between batches): RSS grew by about 0.7 MiB per batch, and almost all of it was the malloc heap. The Python objects
a call leaves behind are **reference cycles** (an exception's traceback and its frames, a cancelled task and its
future, the ``websockets`` connection and its protocol, the transport and its socket): about 1,100 objects per
batch, among them every closed Realtime connection with its buffers. Only a full collection frees them, and with
75,000 long-lived objects from start-up (pydantic, aiohttp, redis, numpy, openai) the interpreter runs one only
after tens of calls; by then the freed space is scattered across the heap and the heap has grown.

So:

* :meth:`CycleCollector.freeze_startup` moves everything alive after start-up into the permanent generation
  (``gc.freeze()``): it is never scanned again, so a full collection costs milliseconds, not tens of them;
* :meth:`CycleCollector.call_ended` runs one full collection shortly after a call has been torn down (several
  calls ending together share one), so a call's cycles are freed while their memory is still the most recently
  used, and the next call reuses it. The pause is measured (``callbridge_gc_pause_seconds``).

The pause runs on the event loop and holds the GIL; the clock thread waits for it. It is kept short by the
freeze, and it happens at most once per ``delay_s`` and only when a call has ended.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("bridge.runtime.memory")

SLOW_PAUSE_S = 0.005  # a pause longer than this (a quarter of a frame) is logged at INFO


class CycleCollector:
    def __init__(self, delay_s: float = 0.5, observe: Callable[[float], None] | None = None) -> None:
        self.delay_s = delay_s
        self._observe = observe
        self._pending: asyncio.TimerHandle | None = None
        self.collections = 0
        self.freed = 0  # unreachable objects found, in all collections
        self.last_pause_s = 0.0
        self.max_pause_s = 0.0

    def freeze_startup(self) -> int:
        """Collect once, then freeze every surviving object. Returns how many objects are now frozen."""
        gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
        log.debug("froze %d start-up objects", frozen)
        return frozen

    def call_ended(self) -> None:
        """Schedule one full collection ``delay_s`` from now, unless one is already scheduled."""
        if self._pending is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test, or shutdown): collect now
            self.collect()
            return
        self._pending = loop.call_later(self.delay_s, self.collect)

    def collect(self) -> int:
        self._pending = None
        t0 = time.perf_counter()
        found = gc.collect()
        pause = time.perf_counter() - t0
        self.collections += 1
        self.freed += found
        self.last_pause_s = pause
        self.max_pause_s = max(self.max_pause_s, pause)
        if self._observe is not None:
            self._observe(pause)
        log.log(
            logging.INFO if pause > SLOW_PAUSE_S else logging.DEBUG,
            "full collection: %d unreachable objects, %.1f ms",
            found,
            pause * 1000,
        )
        return found

    def thaw(self) -> None:
        """Cancel a scheduled collection and unfreeze: at shutdown every pjsua2 object must be collectable again
        before ``libDestroy`` (a frozen cycle would survive it and abort the process)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        gc.unfreeze()
