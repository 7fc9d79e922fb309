"""A clock the test sets: ``clock()`` reads :attr:`now`, which the test moves by hand."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
