"""The reconnect policy, without sockets: backoff bounds, envelope monotonicity, jitter ranges, determinism with a seed,
and the failure classification table end to end (close codes and HTTP statuses -> step)."""

from __future__ import annotations

import ast
import itertools
import math
import random
from pathlib import Path

import pytest

from bridge.call.retry import Jitter, RetryPolicy, Step, delays, envelope, next_step, worst_case_s
from bridge.errors import classify_close, classify_http_status, classify_server_error
from bridge.events import ErrorClass

# A grid of policies, from call-sized to silly, each with every jitter mode.
_SHAPES = [
    (0, 0.05, 2.0, 0.8),
    (1, 0.0, 1.0, 0.0),
    (4, 0.05, 2.0, 0.8),
    (6, 0.1, 1.5, 1.0),
    (10, 0.01, 3.0, 2.0),
    (50, 0.2, 2.0, 0.2),  # base == cap: the envelope is flat
    (200, 1e-3, 10.0, 30.0),  # factor**n overflows a float long before n = 200
]
POLICIES = [
    RetryPolicy(n, base, factor, cap, jitter)
    for (n, base, factor, cap), jitter in itertools.product(_SHAPES, Jitter)
    if not (jitter is Jitter.DECORRELATED and base == 0)
]
SEEDS = range(25)


def _id(p: RetryPolicy) -> str:
    return f"{p.jitter}-n{p.max_attempts}-b{p.base_s}-f{p.factor}-c{p.cap_s}"


@pytest.mark.parametrize("policy", POLICIES, ids=_id)
def test_bounded_count_and_range(policy: RetryPolicy) -> None:
    for seed in SEEDS:
        ds = list(delays(policy, random.Random(seed)))
        assert len(ds) == policy.max_attempts
        assert all(math.isfinite(d) and 0.0 <= d <= policy.cap_s for d in ds)
        assert sum(ds) <= worst_case_s(policy) + 1e-9


@pytest.mark.parametrize("policy", POLICIES, ids=_id)
def test_envelope_is_monotone_and_capped(policy: RetryPolicy) -> None:
    caps = [envelope(policy, n) for n in range(policy.max_attempts + 5)]
    assert all(a <= b for a, b in itertools.pairwise(caps))
    assert all(c <= policy.cap_s for c in caps)
    assert caps[0] == min(policy.base_s, policy.cap_s)
    assert envelope(policy, 10_000) == policy.cap_s or policy.factor == 1.0


@pytest.mark.parametrize("policy", [p for p in POLICIES if p.jitter is Jitter.FULL], ids=_id)
def test_full_jitter_stays_under_the_envelope_and_spreads(policy: RetryPolicy) -> None:
    draws = [list(delays(policy, random.Random(seed))) for seed in range(200)]
    for n in range(policy.max_attempts):
        column = [d[n] for d in draws]
        assert all(0.0 <= d <= envelope(policy, n) for d in column)
        if envelope(policy, n) > 0:  # full jitter uses the whole range, not a corner of it
            assert min(column) < 0.25 * envelope(policy, n) < 0.75 * envelope(policy, n) < max(column)


@pytest.mark.parametrize("policy", [p for p in POLICIES if p.jitter is Jitter.DECORRELATED], ids=_id)
def test_decorrelated_jitter_stays_between_base_and_cap(policy: RetryPolicy) -> None:
    for seed in SEEDS:
        ds = list(delays(policy, random.Random(seed)))
        assert all(policy.base_s <= d <= policy.cap_s for d in ds)
        # each wait grows at most by `factor` over the previous one (the "decorrelated" recurrence)
        previous = policy.base_s
        for d in ds:
            assert d <= previous * policy.factor + 1e-12
            previous = d


@pytest.mark.parametrize("policy", [p for p in POLICIES if p.jitter is Jitter.NONE], ids=_id)
def test_no_jitter_is_exactly_the_envelope(policy: RetryPolicy) -> None:
    assert list(delays(policy, random.Random(1))) == [envelope(policy, n) for n in range(policy.max_attempts)]
    assert list(delays(policy)) == list(delays(policy))  # no randomness involved at all


@pytest.mark.parametrize("policy", POLICIES, ids=_id)
def test_deterministic_with_a_seed(policy: RetryPolicy) -> None:
    assert list(delays(policy, random.Random(42))) == list(delays(policy, random.Random(42)))


def test_different_seeds_differ() -> None:
    policy = RetryPolicy(max_attempts=6)
    schedules = {tuple(delays(policy, random.Random(seed))) for seed in range(20)}
    assert len(schedules) == 20


def test_default_policy_fits_the_gap_budget() -> None:
    """Issue 7: the caller hears at most a short gap (<= 1 s); the waits alone must leave room for the reconnect."""
    policy = RetryPolicy()
    assert worst_case_s(policy) == pytest.approx(0.05 + 0.1 + 0.2 + 0.4)
    assert worst_case_s(policy) < 1.0
    assert list(delays(RetryPolicy(jitter=Jitter.NONE))) == pytest.approx([0.05, 0.1, 0.2, 0.4])


def test_golden_schedule_for_seed_7() -> None:
    """Pinned so a change to the jitter formula is a visible, reviewed change."""
    full = list(delays(RetryPolicy(max_attempts=4, base_s=0.1, factor=2.0, cap_s=1.0), random.Random(7)))
    rng = random.Random(7)
    assert full == [rng.uniform(0, 0.1), rng.uniform(0, 0.2), rng.uniform(0, 0.4), rng.uniform(0, 0.8)]
    deco = list(delays(RetryPolicy(4, 0.1, 3.0, 1.0, Jitter.DECORRELATED), random.Random(7)))
    rng, prev, expected = random.Random(7), 0.1, []
    for _ in range(4):
        prev = min(1.0, rng.uniform(0.1, prev * 3.0))
        expected.append(prev)
    assert deco == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_attempts": -1}, "max_attempts must be >= 0"),
        ({"base_s": -0.1}, "need 0 <= base_s <= cap_s"),
        ({"base_s": 2.0, "cap_s": 1.0}, "need 0 <= base_s <= cap_s"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"base_s": 0.0, "jitter": "decorrelated"}, "decorrelated jitter needs base_s > 0"),
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]  # the table mixes field types on purpose


def test_jitter_accepts_its_name() -> None:
    assert RetryPolicy(jitter="decorrelated").jitter is Jitter.DECORRELATED  # type: ignore[arg-type]  # from settings
    with pytest.raises(ValueError):
        RetryPolicy(jitter="sometimes")  # type: ignore[arg-type]  # an unknown name is refused


# --------------------------------------------------------------------------------------------------------------
# next_step


@pytest.mark.parametrize(
    "error_class, retryable, step",
    [
        (ErrorClass.NETWORK, True, Step.RECONNECT),
        (ErrorClass.AUTH, True, Step.REFRESH),
        (ErrorClass.SERVER, True, Step.REFRESH),
        (ErrorClass.PROTOCOL, True, Step.REFRESH),
        (ErrorClass.NETWORK, False, Step.GIVE_UP),
        (ErrorClass.AUTH, False, Step.GIVE_UP),
        (ErrorClass.SERVER, False, Step.GIVE_UP),
        (ErrorClass.PROTOCOL, False, Step.GIVE_UP),
        (None, True, Step.GIVE_UP),
        (None, False, Step.GIVE_UP),
    ],
)
def test_classification_table(error_class: ErrorClass | None, retryable: bool, step: Step) -> None:
    assert next_step(error_class, retryable, 0, RetryPolicy()) is step


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_attempts_are_bounded(error_class: ErrorClass) -> None:
    policy = RetryPolicy(max_attempts=3)
    steps = [next_step(error_class, True, attempt, policy) for attempt in range(6)]
    assert steps[3:] == [Step.GIVE_UP] * 3
    assert Step.GIVE_UP not in steps[:3]
    assert next_step(error_class, True, 0, RetryPolicy(max_attempts=0)) is Step.GIVE_UP
    with pytest.raises(ValueError):
        next_step(error_class, True, -1, policy)


@pytest.mark.parametrize(
    "close_code, step",
    [
        (1006, Step.RECONNECT),  # abnormal closure: the socket dropped
        (None, Step.RECONNECT),  # connection lost without a close frame
        (1012, Step.RECONNECT),  # service restart
        (1001, Step.REFRESH),  # going away: the 60-minute session cap
        (1011, Step.REFRESH),  # internal error
        (3000, Step.REFRESH),  # bad, missing or expired credential
        (1008, Step.REFRESH),  # policy violation
        (4000, Step.GIVE_UP),  # bad model / beta shape disabled: a new credential will not help
        (1002, Step.GIVE_UP),  # protocol error
        (1000, Step.GIVE_UP),  # a normal close
    ],
)
def test_close_codes_end_to_end(close_code: int | None, step: Step) -> None:
    cls, retryable = classify_close(close_code)
    assert next_step(cls, retryable, 0, RetryPolicy()) is step


@pytest.mark.parametrize(
    "status, step",
    [(401, Step.REFRESH), (403, Step.REFRESH), (429, Step.REFRESH), (500, Step.REFRESH), (503, Step.REFRESH),
     (400, Step.GIVE_UP), (404, Step.GIVE_UP)],
)  # fmt: skip
def test_http_statuses_end_to_end(status: int, step: Step) -> None:
    cls, retryable = classify_http_status(status)
    assert next_step(cls, retryable, 0, RetryPolicy()) is step


@pytest.mark.parametrize(
    "error_type, code, step",
    [
        ("invalid_request_error", "session_expired", Step.REFRESH),
        ("server_error", "server_error", Step.REFRESH),
        ("invalid_request_error", "expired_client_secret", Step.REFRESH),
        ("invalid_request_error", "invalid_api_key", Step.REFRESH),
        ("invalid_request_error", "unknown_parameter", Step.GIVE_UP),
    ],
)
def test_server_errors_end_to_end(error_type: str, code: str, step: Step) -> None:
    cls, retryable = classify_server_error(error_type, code)
    assert next_step(cls, retryable, 0, RetryPolicy()) is step


def test_the_module_is_pure() -> None:
    """No sockets, no asyncio, no clock: the policy is a function of its arguments."""
    import bridge.call.retry as retry

    tree = ast.parse(Path(retry.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"asyncio", "socket", "time", "websockets", "aiohttp"}, imported
