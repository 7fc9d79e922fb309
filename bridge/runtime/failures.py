"""One failure counter: failures counted per key, each for ``window_s`` seconds (``None``: until the key succeeds),
and a key over its ``limit`` once that many are counted. Pure: no I/O, a monotonic ``clock`` given, not
thread-safe (its users lock around it where threads share it).

Its users: a worker's circuit breaker (``bridge/serve/breaker.py``: consecutive failed connects, one key, no
window), the console's sign-in limits (``bridge/supervisor/auth.py``: per address and per account, in a sliding
window) and a worker's digest-auth lockout (``bridge/sip/access.py``: per source address, in a sliding window).
Bounded: at most ``max_keys`` keys are remembered, the least recently failed forgotten first (a spray of addresses
cannot grow it).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_KEYS = 10_000


class Failures:
    def __init__(
        self,
        limit: int,
        window_s: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit, self.window_s, self.clock, self.max_keys = limit, window_s, clock, max_keys
        self._times: OrderedDict[str, deque[float]] = OrderedDict()  # key -> its failures' times, oldest first

    def __len__(self) -> int:
        """The keys remembered (at most ``max_keys``)."""
        return len(self._times)

    def remembered(self) -> list[str]:
        """The keys remembered, the least recently failed first."""
        return list(self._times)

    def add(self, key: str = "", at: float | None = None) -> float:
        """Count one failure of ``key`` (at ``at``, by default now); the time it was counted at."""
        now = self.clock() if at is None else at
        times = self.recent(key, now)
        times.append(now)
        self._times[key] = times
        self._times.move_to_end(key)
        while len(self._times) > self.max_keys:
            self._times.popitem(last=False)
        return now

    def recent(self, key: str = "", now: float | None = None) -> deque[float]:
        """The times of ``key``'s failures that still count (at ``now``, by default now), oldest first."""
        times = self._times.get(key)
        if times is None:
            return deque()
        if self.window_s is not None:
            cutoff = (self.clock() if now is None else now) - self.window_s
            while times and times[0] <= cutoff:
                times.popleft()
        return times

    def count(self, key: str = "") -> int:
        return len(self.recent(key))

    def over(self, key: str = "") -> bool:
        """``key`` has ``limit`` failures or more that count."""
        return self.count(key) >= self.limit

    def retry_after(self, key: str = "") -> float:
        """Seconds until ``key`` is under its limit again (0: it is; infinite with no window, until it succeeds)."""
        times = self.recent(key)
        if len(times) < self.limit:
            return 0.0
        if self.window_s is None:
            return float("inf")
        return times[-self.limit] + self.window_s - self.clock()

    def withdraw(self, key: str, at: float) -> None:
        """The failure counted at ``at`` was none (the attempt it counted in advance succeeded)."""
        times = self._times.get(key)
        if times is not None and at in times:
            times.remove(at)

    def clear(self, key: str = "") -> None:
        """``key`` succeeded: none of its failures count any more."""
        self._times.pop(key, None)
