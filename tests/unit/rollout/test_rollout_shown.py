"""What the guarded rollout shows of a candidate (``bridge.rollout.experiment``, pure and seeded): a guardrail's trend
has points as its calls grow (not only at each hour), ends on the current estimate the table shows, and each step,
decision and re-arm is placed at the candidate's calls then."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from bridge.rollout.engine import State
from bridge.rollout.experiment import POINT_CALLS, Experiment, ExperimentSpec, epoch_of, shares_of

SAFE, CAND = "safe", "cand"
HOUR0 = 472_300 * 3600.0  # the start of an hour: the engine's strata are hours
SPEC = ExperimentSpec(
    min_calls=20, auto_promote=(10, 50), step_min_s=600.0, cycle_s=3600.0,
    guardrails={"failure_rate": {"margin": 1.0, "floor": 0.05}, "abandon_rate": {"on": False},
                "first_reply_ms": {"on": False}},
)  # fmt: skip


def _feed(exp: Experiment, rng: random.Random, weights: dict[str, float], t: float, n: int, **kw: Any) -> Any:
    """One call drawn with ``weights``; its decisions."""
    shares = shares_of(weights)
    variant = kw.get("variant") or rng.choices(list(shares), list(shares.values()))[0]
    failed = rng.random() < (kw.get("cand_fail", 0.03) if variant == CAND else 0.03)
    return exp.feed({
        "t": t, "started": t, "call_id": f"c{n}", "caller": f"k{n}", "variant": variant,
        "epoch": epoch_of(weights, False), "shares": shares, "outcome": "connect_failure" if failed else "ok",
        "greeting_ms": None if failed else 800 * math.exp(0.3 * rng.gauss(0, 1)),
    })  # fmt: skip


def test_a_busy_first_hour_has_points_as_its_calls_grow_and_the_last_point_is_the_tables_estimate() -> None:
    exp, rng = Experiment(SPEC, SAFE, (CAND, SAFE), weights={CAND: 50, SAFE: 50}), random.Random(1)
    for i in range(400):  # all in one hour
        _feed(exp, rng, {CAND: 50, SAFE: 50}, HOUR0 + 8.0 * i, i, variant=CAND if i % 2 else SAFE)
    metric = exp.estimates()[CAND]["failure_rate"]
    calls = [p["calls"] for p in metric["trend"]]
    assert len(calls) >= 10 and calls == sorted(set(calls)), calls  # one point per number of calls, growing
    assert calls[0] == SPEC.min_calls and calls[-1] == 200
    gaps = [b - a for a, b in itertools.pairwise(calls[:-1])]
    assert all(g >= POINT_CALLS for g in gaps), gaps  # by calls: at least POINT_CALLS apart (the last: the current)
    last = metric["trend"][-1]
    assert [last["diff"], [last["lo"], last["hi"]]] == [metric["vs_safe"]["diff"], metric["vs_safe"]["ci95"]]
    assert last["t"] == HOUR0 + 8.0 * 399


def test_the_hourly_points_stay_in_time_order_among_the_points_by_calls() -> None:
    exp, rng = Experiment(SPEC, SAFE, (CAND, SAFE), weights={CAND: 50, SAFE: 50}), random.Random(2)
    for i in range(600):  # five hours, a call every 30 s
        _feed(exp, rng, {CAND: 50, SAFE: 50}, HOUR0 + 30.0 * i, i, variant=CAND if i % 2 else SAFE)
    trend = exp.estimates()[CAND]["greeting_ms"]["trend"]
    hourly = exp.cands[CAND].history["greeting_ms"]
    assert {p["t"] for p in hourly} <= {p["t"] for p in trend}  # every hourly point is drawn...
    assert [p["t"] for p in trend] == sorted(p["t"] for p in trend)  # ... in time order, by calls among them
    assert len(trend) > len(hourly) + 1
    assert exp._evidence(CAND)["greeting_ms"]["trend"] == hourly[-24:]  # a decision's evidence: the hourly points


def test_each_step_and_decision_is_placed_at_the_candidates_calls_and_a_rearm_starts_the_axis_again() -> None:
    weights = {CAND: 5.0, SAFE: 95.0}
    exp, rng = Experiment(SPEC, SAFE, (CAND, SAFE), weights=weights), random.Random(3)
    n, t = 0, HOUR0
    while len(exp.cands[CAND].marks) < 2 and n < 50_000:  # promoted to 10 %, then to 50 %
        n, t = n + 1, t + 5.0
        for d in _feed(exp, rng, weights, t, n):
            weights = d.weights or weights
    marks = exp.estimates()[CAND]["verdict"]["marks"]
    assert [(m["action"], m["share"]) for m in marks] == [("promote", 10.0), ("promote", 50.0)], marks
    for m in marks:
        assert set(m["calls"]) == {"failure_rate", "greeting_ms"}  # the guardrails that are on
    assert marks[0]["calls"]["failure_rate"] < marks[1]["calls"]["failure_rate"] <= exp.calls[CAND]
    while exp.cands[CAND].state == State.TESTING and n < 100_000:  # then it fails and is rolled back
        n, t = n + 1, t + 5.0
        for d in _feed(exp, rng, weights, t, n, cand_fail=0.9):
            weights = d.weights or weights
    exp.feed({"rearm": CAND, "rearm_id": "r1", "t": t + 1.0})
    marks = exp.estimates()[CAND]["verdict"]["marks"]
    assert [m["action"] for m in marks] == ["promote", "promote", "rollback", "rearm"]
    assert all("calls" not in m for m in marks[:3])  # on the axis of an arming that has ended
    assert set(marks[3]["calls"].values()) == {0}  # the re-armed candidate's axis starts at its re-arm
    assert exp.estimates()[CAND]["failure_rate"]["trend"] == []  # and its trend with it
