"""When a failed delivery is tried again, and what an answer counts as. Pure.

Svix's schedule (the Standard Webhooks reference) with one more early step: at once, then 5 s, 30 s, 5 min, 30 min,
2 h, 5 h, 10 h and 10 h after each failure: the first retry within seconds (a receiver's restart), the last about
27.6 h after the event, so an endpoint down for a whole day still gets it. Past the last, the delivery is a dead
letter (``callbridge webhooks list --dead``, ``retry``).
"""

from __future__ import annotations

from typing import Final

RETRY_DELAYS_S: Final = (5.0, 30.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
ATTEMPTS: Final = 1 + len(RETRY_DELAYS_S)  # the first, at once, and one per delay
TIMEOUT_S: Final = 10.0  # one attempt: connect, send, and the status line within this
LEASE_S: Final = 60.0  # a claimed delivery is another deliverer's again after this (a deliverer died mid-attempt)


def next_delay(attempts: int, delays: tuple[float, ...] = RETRY_DELAYS_S) -> float | None:
    """After ``attempts`` failed attempts, the wait before the next one; None: no more (a dead letter)."""
    if attempts < 1:
        return 0.0
    return delays[attempts - 1] if attempts - 1 < len(delays) else None


def total_s() -> float:
    """From the first attempt to the last."""
    return sum(RETRY_DELAYS_S)


def delivered(status: int) -> bool:
    """Any 2xx is a delivery; anything else (a redirect too: it is not followed) is a failure to retry."""
    return 200 <= status < 300


def status_class(status: int | None, error: str = "") -> str:
    """A failed attempt's metric label: ``3xx``, ``4xx``, ``5xx``, ``timeout`` or ``error`` (no answer)."""
    if status is None:
        return "timeout" if error == "timeout" else "error"
    return f"{status // 100}xx"
