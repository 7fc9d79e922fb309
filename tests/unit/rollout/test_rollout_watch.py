"""The guarded rollout where the candidate serves most traffic (pure, seeded): each arm's variance from its own rate,
the final step's checks whatever step leaves only the holdout, margins of its own for the last step, the watch that
never ends, and a verdict that says when a candidate is stuck at its margin."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from bridge.rollout import stats, watch
from bridge.rollout.experiment import Decision, Experiment, ExperimentSpec, epoch_of
from bridge.rollout.guardrails import GUARDRAILS

SAFE, CAND = "safe", "cand"


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


def test_a_line_drawn_at_a_share_of_the_safe_rate_carries_the_safe_rates_variance() -> None:
    """Tested against ``margin * safe``, the statistic is ``candidate - (1 + margin) * safe``: the holdout's part of
    the variance times ``(1 + margin)^2``, the candidate's unchanged. At 95/5 and a 25 % margin the standard error
    grows by about a quarter, and a difference just past the known-line bound is no longer surely past the line."""
    strata = stats.Strata(True)
    for hour in range(20):
        for i in range(950):
            strata.add(hour, True, float(i < 100))  # 10.5 %
        for i in range(50):
            strata.add(hour, False, float(i < 3))  # 6 %
    e = strata.estimate()
    assert e is not None
    safe_part = 0.06 * 0.94 / 1000
    assert math.isclose(e.var_s, safe_part, rel_tol=0.08), e.var_s / safe_part
    wide = e.relative_to(0.25)
    assert math.isclose(wide.var - e.var, (1.25**2 - 1) * e.var_s)
    assert wide.diff == e.diff and wide.calls == e.calls
    line = 0.25 * 0.06
    assert e.harm(0.2, 0.0125, above=line) and not wide.harm(0.2, 0.0125, above=line)


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

    def __init__(self, spec: ExperimentSpec, weights: dict[str, float], seed: int, per_hour: float = 1000.0) -> None:
        self.gap = 3600.0 / per_hour
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
            t = self.i * self.gap
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
                    self.decisions += out
                    return out
        self.decisions += out
        return out


FAST = {"step_min_s": 600.0, "cycle_s": 3600.0, "guard_s": 3600.0}  # a ramp's clocks, shortened for a unit test


def test_with_two_candidates_a_step_that_leaves_only_the_holdout_is_the_final_step_with_its_checks() -> None:
    """Two equal candidates: the first promoted as far as the other leaves room (``100 - holdout`` less the other's
    5 %, not ``100 - holdout``) takes that step as the last one (a business cycle, non-inferiority), is then tested
    on the last step's own calls and kept for its guard period."""
    spec = ExperimentSpec(auto_promote=(5, 25, 50, 100), **FAST)
    loop = Loop(spec, {"a": 5.0, "b": 5.0, SAFE: 90.0}, seed=31)
    loop.run(60_000, {SAFE: 0.1}, until="complete")
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
    assert loop.decisions[-1].action == "complete" and loop.decisions[-1].variant == top
    assert spec.at_last({"a": 95.0 - spec.holdout, "b": 5.0, SAFE: spec.holdout}, "a", SAFE)
    assert not spec.at_last({"a": 50.0, "b": 5.0, SAFE: 45.0}, "a", SAFE)


# ------------------------------------------------------------------------------------------------ margins per test
def test_the_last_steps_harm_line_has_a_margin_of_its_own() -> None:
    """Failures 10 % -> 14 % at the last step (an 80/20 split): within a last-step margin of 50 %, kept; beyond one
    of 10 %, rolled back by the last step's own test, naming that line."""
    weights = {CAND: 80.0, SAFE: 20.0}
    wide = ExperimentSpec(
        auto_promote=(100,), holdout=20, promote=False, guardrails={"failure_rate": {"last_margin": 0.5}}
    )
    kept = Loop(wide, weights, seed=32)
    assert kept.run(20_000, {SAFE: 0.10, CAND: 0.14}) == []
    tight = ExperimentSpec(
        auto_promote=(100,), holdout=20, promote=False, guardrails={"failure_rate": {"last_margin": 0.1}}
    )
    loop = Loop(tight, weights, seed=32)
    [d] = loop.run(20_000, {SAFE: 0.10, CAND: 0.14}, until="rollback")
    assert d.action == "rollback" and "(last step)" in d.reason, d.reason
    line = float(d.reason.split("beyond the margin ")[1].split()[0])
    assert 0.005 <= line < 0.02, d.reason  # 10 % of the safe variant's rate (at least the floor), not 50 %


def test_a_last_margin_is_for_rates_and_means() -> None:
    with pytest.raises(ValidationError, match=r"guardrails\.greeting_ms\.last_margin"):
        ExperimentSpec(guardrails={"greeting_ms": {"last_margin": 0.1}})
    with pytest.raises(ValidationError, match="last_margin"):
        ExperimentSpec(guardrails={"failure_rate": {"last_margin": 0}})
    spec = ExperimentSpec(guardrails={"failure_rate": {"margin": 0.4}, "abandon_rate": {"last_margin": 0.1}})
    assert spec.last_margin(GUARDRAILS["failure_rate"]) == 0.4  # none given: its margin
    assert spec.last_margin(GUARDRAILS["abandon_rate"]) == 0.1
    defaults = ExperimentSpec()  # neither given: the failure rate's own 10 %, any other guardrail's margin
    assert defaults.last_margin(GUARDRAILS["failure_rate"]) == 0.1
    assert defaults.last_margin(GUARDRAILS["abandon_rate"]) == GUARDRAILS["abandon_rate"].margin


# ------------------------------------------------------------------------------------------------ the watch
def _hours(
    days: float, base: float, cand: float, change_day: float, seed: int, calls: int = 100
) -> Iterator[tuple[int, stats.Strata]]:
    """Hourly strata at an 80/20 split, failures ``base`` on both arms, ``cand`` on the candidate from
    ``change_day``; yields (hour, the strata so far) after each hour."""
    rng = random.Random(seed)
    strata = stats.Strata(True)
    for hour in range(int(days * 24)):
        rate = cand if hour >= change_day * 24 else base
        for _ in range(calls):
            on = rng.random() < 0.8
            strata.add(hour, on, float(rng.random() < (rate if on else base)))
        yield hour, strata


def _watch(days: float, base: float, cand: float, change_day: float, seed: int) -> tuple[watch.Detector, int | None]:
    detector, limit = watch.Detector(), watch.threshold(365, 4)
    line = 0.5 * base  # the margin of 50 % in points
    for hour, strata in _hours(days, base, cand, change_day, seed):
        detector.feed(strata, strata, line, line)
        if detector.log_r >= limit:
            return detector, hour
    return detector, None


def test_the_watch_stays_quiet_on_an_equal_stream_for_ninety_days() -> None:
    detector, tripped = _watch(90, 0.1, 0.1, math.inf, seed=41)
    assert tripped is None, detector.state(watch.threshold(365, 4))
    assert detector.blocks >= 90 * 24 / 2  # a block once 20 values of each arm (about 20 safe calls an hour)


def test_the_watch_sees_a_doubling_after_a_week_that_the_cumulative_test_averages_away() -> None:
    detector, tripped = _watch(30, 0.1, 0.2, 7, seed=42)
    assert tripped is not None and 7 * 24 < tripped < 12 * 24, detector.state(watch.threshold(365, 4))
    *_, (_, strata) = _hours(tripped / 24 + 1 / 48, 0.1, 0.2, 7, seed=42)  # the same calls, cumulative
    e = strata.estimate()
    assert e is not None and not e.harm(0.2, 0.05 / 4 / 2, above=0.05)


def test_the_watchs_threshold_is_the_log_of_its_average_run_length_in_hours() -> None:
    assert math.isclose(watch.threshold(365, 4), math.log(24 * 365 * 4))
    assert watch.log_lr(0.05, 0.01, 0.05, 0.05) < 0 < watch.log_lr(0.1, 0.01, 0.05, 0.05)  # at the line: no drift up


def test_a_doubling_a_week_into_the_last_step_is_rolled_back_by_the_watch_naming_it() -> None:
    """100 calls an hour at 80/20: failures 10 % -> 20 % after a week on the last step. The cumulative tests average
    it with the week before; the watch, against the 10 % line and tuned to a doubling, rolls it back within a day (a
    day and more with the line's own change as its tuning), its statistic in the decision and the verdict."""
    spec = ExperimentSpec(auto_promote=(100,), holdout=20, promote=False)
    loop = Loop(spec, {CAND: 80.0, SAFE: 20.0}, seed=43, per_hour=100)
    assert [d.action for d in loop.run(7 * 24 * 100, {SAFE: 0.1})] == ["complete"]
    shown = loop.exp.verdict(CAND)["watch"]["failure_rate"]
    assert shown["statistic"] < shown["threshold"] == round(loop.exp.watch_limit, 3) and shown["blocks"] > 80
    [d] = loop.run(6 * 24 * 100, {SAFE: 0.1, CAND: 0.2}, until="rollback")
    assert d.action == "rollback" and "failure_rate changed on the last step (the watch" in d.reason, d.reason
    assert d.evidence["watch_alarm"] == ["failure_rate"]
    assert d.evidence["watch"]["failure_rate"]["statistic"] >= d.evidence["watch"]["failure_rate"]["threshold"]
    assert d.t - 7 * 24 * 3600 < 86400  # within a day of the change


def test_a_step_waits_while_the_watch_leans_toward_a_change_the_first_step_included() -> None:
    """The watch is each step's fresh evidence: on the first step (whose own calls are all since arming) a
    promotion waits while a guardrail's statistic stands at the hold level, and the verdict says which."""
    spec = ExperimentSpec(auto_promote=(5, 25, 50, 100), **FAST)
    loop = Loop(spec, {CAND: 5.0, SAFE: 95.0}, seed=45)
    loop.run(3000, {SAFE: 0.1})
    detectors = loop.exp.watch_state(CAND)
    assert set(detectors) == {"failure_rate", "abandon_rate", "greeting_ms", "first_reply_ms"}
    assert all(d["blocks"] >= 1 for d in detectors.values()), detectors
    detector = loop.exp._watched(CAND, loop.exp.cands[CAND]).detectors["failure_rate"]
    detector.log_r = watch.HOLD_LOG_R
    held = loop.exp.blocking(CAND, final=False)
    assert "failure_rate: the watch's recent hours lean toward a clear regression" in held
    detector.log_r = watch.HOLD_LOG_R - 0.01
    assert not any("the watch" in b for b in loop.exp.blocking(CAND, final=False))


# ------------------------------------------------------------------------------------------------ stuck
def test_a_candidate_at_its_margin_after_a_business_cycle_is_stuck_and_the_verdict_gives_the_choices() -> None:
    """Failures 10 % -> 15 % at 50 % (the 50 % margin exactly): neither within it nor surely beyond. After a cycle
    on the step the verdict says so, with the three choices and their weights, instead of millions of calls."""
    spec = ExperimentSpec(auto_promote=(50, 100), **FAST)
    loop = Loop(spec, {CAND: 50.0, SAFE: 50.0}, seed=44)
    loop.run(500, {SAFE: 0.1, CAND: 0.15})
    assert not loop.exp.verdict(CAND)["next"].startswith("stuck")  # not before a business cycle on the step
    assert [d.action for d in loop.run(4000, {SAFE: 0.1, CAND: 0.15})] == []
    verdict = loop.exp.verdict(CAND)
    assert verdict["next"].startswith("stuck at its margin: failure_rate"), verdict
    choices = {c["choice"]: c for c in verdict["stuck"]["choices"]}
    assert choices["roll back"]["weights"] == {CAND: 0.0, SAFE: 100.0}
    assert choices["accept the step"]["weights"] == {CAND: 100 - spec.holdout, SAFE: spec.holdout}
    assert "failure_rate" in choices["accept the step"]["cost"] and "at 50 %" in choices["wait"]["cost"]
    equal = Loop(spec, {CAND: 50.0, SAFE: 50.0}, seed=44)
    equal.run(4500, {SAFE: 0.1})
    assert "stuck" not in equal.exp.verdict(CAND)


def test_at_low_traffic_the_verdict_suggests_a_first_step_that_fits_a_business_cycle() -> None:
    """10 calls an hour at a 5 % first step: the step would take days, and the verdict offers a larger first step
    whose time fits a business cycle; at 1,000 calls an hour it offers none."""
    spec = ExperimentSpec(auto_promote=(5, 25, 50, 100))
    slow = Loop(spec, {CAND: 5.0, SAFE: 95.0}, seed=46, per_hour=10)
    slow.run(10 * 48, {SAFE: 0.1})
    verdict = slow.exp.verdict(CAND)
    assert verdict["first_step_time_s"] > 2 * spec.cycle_s, verdict
    assert verdict["first_step_suggested"] > 5.0
    assert verdict["first_step_suggested_time_s"] <= spec.cycle_s or verdict["first_step_suggested"] == 50.0
    assert verdict["first_step_suggested_time_s"] < verdict["first_step_time_s"]
    busy = Loop(spec, {CAND: 5.0, SAFE: 95.0}, seed=46)
    busy.run(3000, {SAFE: 0.1})
    assert "first_step_suggested" not in busy.exp.verdict(CAND)


def test_a_fixed_split_holds_the_candidate_to_its_last_margin() -> None:
    """At a fixed 50/50 split (no promotion: the step it stays on) failures 10 % -> 16 %, within the 50 % margin but
    60 % worse: rolled back by the step's own test against the failure rate's 10 % line; with a last margin of 50 %,
    kept."""
    weights = {CAND: 50.0, SAFE: 50.0}
    fail = {SAFE: 0.10, CAND: 0.16}
    [d] = Loop(ExperimentSpec(promote=False), weights, seed=33).run(20_000, fail, until="rollback")
    assert d.action == "rollback" and "(last step)" in d.reason, d.reason
    line = float(d.reason.split("beyond the margin ")[1].split()[0])
    assert 0.008 <= line < 0.012, d.reason  # 10 % of the safe variant's 10 %
    wide = ExperimentSpec(promote=False, guardrails={"failure_rate": {"last_margin": 0.5}})
    assert Loop(wide, weights, seed=33).run(20_000, fail) == []
