"""A circuit breaker for one worker's Realtime connections, as a pure state machine (no clock, no I/O).

::

    CLOSED ── ``threshold`` consecutive failed connects ──► OPEN ── a connect succeeds ──► CLOSED

While it is open, new calls skip the attempt before the answer and go straight to the hold message and the outage
policy (``bridge.call.outage``); the reconnects of calls on hold are the probes, and the first that succeeds closes
it. It also says which failures to log: the first of each cause since the last success (a down service fails every
call the same way; the log says so once, with the URL and the status).
"""

from __future__ import annotations

import enum

from bridge.runtime.failures import Failures


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class Breaker:
    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        self.threshold = threshold
        self.state = BreakerState.CLOSED
        self._failures = Failures(threshold)  # consecutive: no window, cleared by a success
        self._causes: set[str] = set()  # logged since the last success

    @property
    def open(self) -> bool:
        return self.state is BreakerState.OPEN

    @property
    def failures(self) -> int:
        """Failed connects since the last success."""
        return self._failures.count()

    def failed(self, cause: str) -> bool:
        """A connect failed; True if ``cause`` is new since the last success (log it)."""
        self._failures.add()
        if self._failures.over():
            self.state = BreakerState.OPEN
        new = cause not in self._causes
        self._causes.add(cause)
        return new

    def succeeded(self) -> bool:
        """A connect succeeded; True if that closed an open breaker."""
        was_open = self.open
        self._failures.clear()
        self.state = BreakerState.CLOSED
        self._causes.clear()
        return was_open


class Breakers:
    """One :class:`Breaker` per model. Every model is reached at the service's one URL, and a model can fail alone
    (a rollout candidate's): its breaker opens, and calls on the other models go on connecting."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._by_model: dict[str, Breaker] = {}

    def of(self, model: str) -> Breaker:
        breaker = self._by_model.get(model)
        if breaker is None:
            breaker = self._by_model[model] = Breaker(self.threshold)
        return breaker

    @property
    def all_open(self) -> bool:
        """Every model this worker has tried has its breaker open: no model answers, the worker's model is down
        (one failing model of several, a rollout candidate's, leaves the worker up)."""
        return bool(self._by_model) and all(b.open for b in self._by_model.values())
