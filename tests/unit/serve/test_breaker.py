"""The worker's circuit breaker (bridge/serve/breaker.py): opens after N consecutive failures, closes on the
first success, and asks for one log line per cause between successes."""

from __future__ import annotations

import pytest

from bridge.serve.breaker import Breaker, Breakers, BreakerState


def test_it_opens_after_the_threshold_of_consecutive_failures_and_a_success_closes_it() -> None:
    breaker = Breaker(3)
    breaker.failed("a")
    breaker.failed("a")
    assert breaker.state is BreakerState.CLOSED
    breaker.failed("a")
    assert breaker.open
    assert breaker.succeeded() is True
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0
    assert breaker.succeeded() is False


def test_a_success_between_failures_restarts_the_count() -> None:
    breaker = Breaker(2)
    breaker.failed("a")
    breaker.succeeded()
    breaker.failed("a")
    assert not breaker.open


def test_each_cause_is_logged_once_between_successes() -> None:
    breaker = Breaker(5)
    assert [breaker.failed(c) for c in ("401", "401", "refused", "401")] == [True, False, True, False]
    breaker.succeeded()
    assert breaker.failed("401") is True


def test_a_threshold_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Breaker(0)


def test_one_models_failures_open_its_breaker_alone() -> None:
    breakers = Breakers(3)
    for _ in range(3):
        breakers.of("candidate").failed("server:503:handshake refused")
    assert breakers.of("candidate").open and breakers.all_open  # the only model tried: the worker's model is down
    assert not breakers.of("safe").open  # the safe variant's calls go on connecting
    assert not breakers.all_open  # and the worker is up: /healthz stays ready
    for _ in range(3):
        breakers.of("safe").failed("server:503:handshake refused")
    assert breakers.all_open
    breakers.of("candidate").succeeded()
    assert not breakers.all_open
