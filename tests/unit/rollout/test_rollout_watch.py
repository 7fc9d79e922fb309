"""The guarded rollout where the candidate serves most traffic (pure, seeded): each arm's variance from its own rate,
the final step's checks whatever step leaves only the holdout, margins of its own for the last step, the watch that
never ends, and a verdict that says when a candidate is stuck at its margin."""

from __future__ import annotations

import math
import random

from bridge.rollout import stats
from bridge.rollout.experiment import Decision, Experiment, ExperimentSpec, epoch_of

SAFE = "safe"


# ------------------------------------------------------------------------------------------------ variance
def test_at_a_95_5_split_a_doublings_z_is_the_per_arm_formulas() -> None:
    """Failures 4 % on the candidate's 95 %, 2 % on the 5 % holdout: the variance is each arm's own
    ``p (1 - p) / n`` summed, not the holdout charged with the pooled (candidate's) rate, 1.8 times larger."""
    strata = stats.Strata(True)
    for hour in range(20):
        for i in range(950):
            strata.add(hour, True, float(i < 38))
        for i in range(50):
            strata.add(hour, False, float(i < 1))
    e = strata.estimate()
    assert e is not None and e.calls == (19_000, 1000)
    per_arm = 0.04 * 0.96 / 19_000 + 0.02 * 0.98 / 1000
    assert math.isclose(e.diff, 0.02)
    assert math.isclose(e.var, per_arm, rel_tol=0.08), e.var / per_arm
    assert math.isclose(e.diff / math.sqrt(e.var), 0.02 / math.sqrt(per_arm), rel_tol=0.04)


def test_an_hour_both_arms_fail_together_still_widens_the_variance() -> None:
    """A shared outage (both arms at 50 % for one hour) is as uncertain as it is: its own rates, not the calm ones."""
    calm, outage = stats.Strata(True), stats.Strata(True)
    for strata, bad in ((calm, 0), (outage, 1)):
        for hour in range(10):
            rate = 0.5 if bad and hour == 5 else 0.02
            for i in range(500):
                strata.add(hour, True, float(i < rate * 500))
                strata.add(hour, False, float(i < rate * 500))
    a, b = calm.estimate(), outage.estimate()
    assert a is not None and b is not None and b.var > 1.5 * a.var


# ------------------------------------------------------------------------------------------------ several candidates
class Loop:
    """A closed loop of several candidates against one safe variant: each call drawn with the weights the engine last
    set, 1,000 calls an hour."""

    def __init__(self, spec: ExperimentSpec, weights: dict[str, float], seed: int) -> None:
        self.weights = dict(weights)
        self.exp = Experiment(spec, SAFE, tuple(weights), weights=weights)
        self.epoch = epoch_of(self.weights, False)
        self.rng = random.Random(seed)
        self.i = 0
        self.decisions: list[Decision] = []

    def run(self, calls: int, fail: dict[str, float], *, until: str | None = None) -> list[Decision]:
        out: list[Decision] = []
        names = list(self.weights)
        for _ in range(calls):
            self.i += 1
            t = self.i * 3.6
            [variant] = self.rng.choices(names, [self.weights[n] for n in names])
            record = {
                "t": t,
                "started": t,
                "call_id": f"c{self.i}",
                "variant": variant,
                "epoch": self.epoch,
                "outcome": "connect_failure" if self.rng.random() < fail.get(variant, fail[SAFE]) else "ok",
                "abandoned": self.rng.random() < 0.08,
                "greeting_ms": 700.0 * math.exp(0.6 * self.rng.gauss(0, 1)),
                "first_reply_ms": 900.0 * math.exp(0.6 * self.rng.gauss(0, 1)),
            }
            for d in self.exp.feed(record):
                out.append(d)
                if d.weights is not None:
                    self.weights, self.epoch = d.weights, epoch_of(d.weights, False)
                if until is not None and d.action == until:
                    break
        self.decisions += out
        return out


FAST = {"step_min_s": 600.0, "cycle_s": 3600.0, "guard_s": 3600.0}  # a ramp's clocks, shortened for a unit test


def test_with_two_candidates_a_step_that_leaves_only_the_holdout_is_the_final_step_with_its_checks() -> None:
    """Two equal candidates: the first promoted as far as the other leaves room (90 %, not 95 %) takes that step
    as the last one (a business cycle, non-inferiority), is then tested on the last step's own calls and kept for
    its guard period."""
    spec = ExperimentSpec(auto_promote=(5, 25, 50, 100), **FAST)
    loop = Loop(spec, {"a": 5.0, "b": 5.0, SAFE: 90.0}, seed=31)
    loop.run(60_000, {SAFE: 0.1})
    steps = [d for d in loop.decisions if d.action == "promote" and d.weights is not None]
    final = [d for d in steps if d.weights is not None and d.weights[SAFE] <= spec.holdout + 1e-9]
    assert final, [(d.variant, d.weights) for d in steps]
    for d in final:
        assert "after a business cycle" in d.reason, d.reason
        armed = loop.exp.cands[d.variant].armed_t
        assert armed is not None and d.t - armed >= spec.cycle_s
    for d in steps[: steps.index(final[0])]:
        assert d.weights is not None and d.weights[SAFE] > spec.holdout  # no middle step leaves only the holdout
    top = final[0].variant
    assert loop.exp.cands[top].last_started is not None and loop.exp.verdict(top)["holdout"] == spec.holdout
    assert "rollback" not in [d.action for d in loop.decisions]
    assert any(d.action == "complete" and d.variant == top for d in loop.decisions)
    assert spec.at_last({"a": 90.0, "b": 5.0, SAFE: 5.0}, "a", SAFE)
    assert not spec.at_last({"a": 50.0, "b": 5.0, SAFE: 45.0}, "a", SAFE)
