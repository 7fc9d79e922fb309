"""The rate limit of the supervisor API: ``http_api_requests_per_minute`` requests per credential (an API token, or a
console session), as a token bucket that holds a minute's worth and refills evenly (pure).

A request past it is answered ``429`` ``{"error": "rate limit: ..."}`` with ``Retry-After`` (the seconds until one
more request fits) by the auth middleware (:mod:`.api`), before its handler runs. An event stream or a listen-in
counts once, when it opens. The buckets are this process's memory, keyed by the token's digest or the session's id
(never the token); the :data:`RateLimit.MAX_KEYS` least recently used are kept.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimit:
    """``per_minute`` requests a minute per key, in bursts of up to ``per_minute``."""

    MAX_KEYS = 10_000

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute: at least 1 (got {per_minute})")
        self.per_minute, self.clock = per_minute, clock
        self._rate = per_minute / 60.0  # requests a second
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (requests left, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """One request for ``key``: 0 if it fits (and it is counted), else the seconds until one more would."""
        with self._lock:
            now = self.clock()
            left, at = self._buckets.pop(key, (float(self.per_minute), now))
            left = min(float(self.per_minute), left + (now - at) * self._rate)
            wait = 0.0 if left >= 1.0 else (1.0 - left) / self._rate
            self._buckets[key] = (left - 1.0 if wait == 0.0 else left, now)
            while len(self._buckets) > self.MAX_KEYS:
                self._buckets.popitem(last=False)
            return wait
