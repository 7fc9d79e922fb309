"""The one failure counter: consecutive failures until a success, failures in a sliding window, an attempt's
failure withdrawn, and a bounded memory of keys."""

from __future__ import annotations

import math

import pytest

from bridge.runtime.failures import Failures


def test_without_a_window_failures_count_until_a_success() -> None:
    failures = Failures(3)
    failures.add()
    failures.add()
    assert failures.count() == 2 and not failures.over() and failures.retry_after() == 0.0
    failures.add()
    assert failures.over() and math.isinf(failures.retry_after())
    failures.clear()
    assert failures.count() == 0 and not failures.over()


def test_in_a_window_old_failures_stop_counting() -> None:
    now = [100.0]
    failures = Failures(2, 10.0, clock=lambda: now[0])
    failures.add("addr:a")
    now[0] = 104.0
    failures.add("addr:a")
    assert failures.over("addr:a") and not failures.over("addr:b")
    assert failures.retry_after("addr:a") == pytest.approx(6.0)  # the first leaves the window at 110
    now[0] = 110.0
    assert failures.count("addr:a") == 1 and failures.retry_after("addr:a") == 0.0


def test_a_failure_counted_in_advance_is_withdrawn() -> None:
    failures = Failures(1, 60.0, clock=lambda: 5.0)
    stamp = failures.add("account:bob")
    assert failures.over("account:bob")
    failures.withdraw("account:bob", stamp)
    assert failures.count("account:bob") == 0


def test_the_least_recently_failed_keys_are_forgotten_first() -> None:
    failures = Failures(5, 60.0, max_keys=3)
    for key in ("a", "b", "c", "a", "d"):
        failures.add(key)
    assert len(failures) == 3 and failures.count("b") == 0 and failures.count("a") == 2
    with pytest.raises(ValueError, match="limit"):
        Failures(0)
