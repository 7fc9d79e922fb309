"""Reconnect policy as pure functions: how long to wait, and what to do next. No sockets, no asyncio, no clock.

Modelled on python-websockets' ``backoff()`` generator and ``process_exception()``: the asyncio shell (the call
session) asks :func:`next_step` what a failure means and draws its waits from :func:`delays`; both are tested
without a socket, and a seeded :class:`random.Random` makes every schedule reproducible.

What a failure means (``(error class, retryable)`` come from :mod:`bridge.errors`' classifiers)::

    retryable  class      step
    ---------  ---------  --------------------------------------------------------------------------
    yes        NETWORK    RECONNECT  same credential (socket closed, 1006, timeout, DNS)
    yes        AUTH       REFRESH    fresh credential, new session (401/403, close 3000, expired secret)
    yes        SERVER     REFRESH    fresh credential, new session (session_expired / 1001, server_error, 5xx)
    yes        PROTOCOL   REFRESH    fresh credential, new session (handshake garbage, a broken pump)
    no         any        GIVE_UP    (4000 bad model, beta shape disabled, 4xx other than 401/403)
    -          None       GIVE_UP    a clean close (1000): nothing to recover
    -          -          GIVE_UP    once ``attempt >= policy.max_attempts``

"Same credential" means the source is not invalidated; a callable source may still rotate on its own schedule
(``bridge.realtime.credentials``). A REFRESH calls ``source.invalidate()`` before reconnecting.

Backoff (the "Exponential Backoff And Jitter" schemes): the envelope of attempt *n* is
``min(cap_s, base_s * factor**n)``, non-decreasing in *n* and never above ``cap_s``.

* ``none``: exactly the envelope;
* ``full``: uniform in ``[0, envelope(n)]``, the default: spreads a fleet of calls that lost the same server;
* ``decorrelated``: ``min(cap_s, uniform(base_s, previous * factor))``, starting from ``base_s``; always in
  ``[base_s, cap_s]``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bridge.events import ErrorClass


class Jitter(enum.StrEnum):
    NONE = "none"
    FULL = "full"
    DECORRELATED = "decorrelated"


class Step(enum.StrEnum):
    """What to do after a failure."""

    GIVE_UP = "give_up"
    RECONNECT = "reconnect"  # same credential
    REFRESH = "refresh"  # invalidate the credential source, fetch a fresh credential, then reconnect


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff. The defaults fit a live call: at most 4 attempts, at most 0.75 s of waiting in
    total (0.05 + 0.1 + 0.2 + 0.4 at the envelope), so a reconnect stays inside the 1 s audio-gap budget when the
    service answers quickly."""

    max_attempts: int = 4
    base_s: float = 0.05
    factor: float = 2.0
    cap_s: float = 0.8
    jitter: Jitter = Jitter.FULL

    def __post_init__(self) -> None:
        object.__setattr__(self, "jitter", Jitter(self.jitter))  # accept "full" etc. from settings
        if self.max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, got {self.max_attempts}")
        if not 0 <= self.base_s <= self.cap_s:
            raise ValueError(f"need 0 <= base_s <= cap_s, got base_s={self.base_s}, cap_s={self.cap_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if self.jitter is Jitter.DECORRELATED and self.base_s <= 0:
            raise ValueError("decorrelated jitter needs base_s > 0 (it grows from base_s)")


def envelope(policy: RetryPolicy, attempt: int) -> float:
    """The largest wait before attempt ``attempt`` (0-based): ``min(cap_s, base_s * factor**attempt)``."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    try:
        raw = policy.base_s * policy.factor**attempt
    except OverflowError:  # float ** int past 1e308: the cap applies long before
        return policy.cap_s
    return min(policy.cap_s, raw)


def worst_case_s(policy: RetryPolicy) -> float:
    """The most time :func:`delays` can make a caller wait in total (every attempt at its envelope)."""
    if policy.jitter is Jitter.DECORRELATED:
        return policy.cap_s * policy.max_attempts
    return sum(envelope(policy, n) for n in range(policy.max_attempts))


def delays(policy: RetryPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """The wait before each attempt: exactly ``policy.max_attempts`` values, each in ``[0, cap_s]``.

    Deterministic for a seeded ``rng``; ``None`` draws from a fresh unseeded generator.
    """
    rng = rng if rng is not None else random.Random()
    previous = policy.base_s
    for attempt in range(policy.max_attempts):
        if policy.jitter is Jitter.NONE:
            yield envelope(policy, attempt)
        elif policy.jitter is Jitter.FULL:
            yield rng.uniform(0.0, envelope(policy, attempt))
        else:
            previous = min(policy.cap_s, rng.uniform(policy.base_s, previous * policy.factor))
            yield previous


# (class, retryable=True) -> step. A non-retryable failure always gives up.
ON_RETRYABLE: Mapping[ErrorClass, Step] = MappingProxyType(
    {
        ErrorClass.NETWORK: Step.RECONNECT,
        ErrorClass.AUTH: Step.REFRESH,
        ErrorClass.SERVER: Step.REFRESH,
        ErrorClass.PROTOCOL: Step.REFRESH,
    }
)


def next_step(error_class: ErrorClass | None, retryable: bool, attempt: int, policy: RetryPolicy) -> Step:
    """What to do about a failure, before attempt ``attempt`` (0-based: 0 is the first reconnect)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if error_class is None or not retryable or attempt >= policy.max_attempts:
        return Step.GIVE_UP
    return ON_RETRYABLE[error_class]
