"""The guarded rollout's engine (pure, seeded): its statistics (the mixture SPRT, the one-sided bound, the breaker,
the sample-ratio e-value, the stratified difference), its settings and their errors, and what it decides: rollback,
each step, the holdout, the sample-ratio stop, re-arming, signed evidence."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bench import rollout as bench
from bridge import events as ev
from bridge.call.report import CallReport
from bridge.dialplan import check_file, load_dialplans
from bridge.rollout import seal, stats
from bridge.rollout.experiment import Decision, Experiment, ExperimentSpec, GuardrailSetting, epoch_of, step_weights
from bridge.rollout.guardrails import span
from bridge.rollout.outcomes import RECORD_FIELDS, evaluate
from bridge.rollout.policy import RolloutFlag, RolloutSpec, Variant
from bridge.rollout.records import decision_changes, next_step
from bridge.serve import outcome as outcomes
from bridge.serve.outcome import outcome_record

SAFE, CAND = "safe", "cand"


def _call(
    t: float,
    variant: str,
    *,
    failed: bool = False,
    greeting: float | None = 700.0,
    reply: float | None = 900.0,
    abandoned: bool = False,
    epoch: str = "e",
) -> dict[str, Any]:
    return {
        "t": t,
        "started": t,
        "variant": variant,
        "epoch": epoch,
        "outcome": "connect_failure" if failed else "ok",
        "abandoned": abandoned,
        "greeting_ms": None if failed else greeting,
        "first_reply_ms": None if failed else reply,
    }


class Loop:
    """A closed loop: each call drawn with the weights the engine last set (``bench/rollout.py`` in small)."""

    def __init__(self, spec: ExperimentSpec, share: float, seed: int) -> None:
        self.weights = {SAFE: 100.0 - share, CAND: share}
        self.exp = Experiment(spec, SAFE, (CAND, SAFE), weights=self.weights)
        self.epoch = epoch_of(self.weights, False)
        self.rng = random.Random(seed)
        self.i = 0
        self.decisions: list[Decision] = []

    def run(self, calls: int, *, fail: float = 0.02, cand_fail: float | None = None, greeting: float = 700.0,
            cand_greeting: float | None = None, sigma: float = 0.6, cand_sigma: float | None = None,
            lose: float = 0.0, until: str | None = None) -> list[Decision]:  # fmt: skip
        out: list[Decision] = []
        for _ in range(calls):
            self.i += 1
            t = self.i * 3.6
            on = self.rng.random() < self.weights[CAND] / 100
            f = cand_fail if on and cand_fail is not None else fail
            g = cand_greeting if on and cand_greeting is not None else greeting
            s = cand_sigma if on and cand_sigma is not None else sigma
            if on and lose and self.rng.random() < lose:
                continue
            record = _call(
                t,
                CAND if on else SAFE,
                failed=self.rng.random() < f,
                greeting=g * math.exp(s * self.rng.gauss(0, 1)),
                reply=900 * math.exp(0.6 * self.rng.gauss(0, 1)),
                abandoned=self.rng.random() < 0.08,
                epoch=self.epoch,
            )
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


# ------------------------------------------------------------------------------------------------ the statistics
def test_the_mixture_likelihood_ratio_is_the_formula_by_hand() -> None:
    # z = 2, rho = n_eff tau^2 = 1: L = sqrt(1/2) * exp(4 * 1 / (2 * 2)) = e / sqrt(2)
    assert float(stats.log_mixture_lr(2.0, 1.0)) == pytest.approx(math.log(math.e / math.sqrt(2)))
    # the one-sided mixture: 2 Phi(z sqrt(rho / (1 + rho))) times the two-sided one
    phi = 0.5 * math.erfc(-2.0 * math.sqrt(0.5) / math.sqrt(2))
    assert stats.log_one_sided_lr(2.0, 1.0) == pytest.approx(math.log(2 * phi * math.e / math.sqrt(2)))


def test_the_intervals_end_where_the_ratios_reach_one_over_alpha() -> None:
    for var, rho, alpha in ((0.01, 2.0, 0.05), (1e-4, 50.0, 0.0125), (3.0, 0.3, 0.01)):
        w = float(stats.half_width(var, rho, alpha))
        assert float(stats.log_mixture_lr(w / math.sqrt(var), rho)) == pytest.approx(math.log(1 / alpha))
        z = stats.one_sided_z(rho, alpha)
        assert stats.log_one_sided_lr(z, rho) >= math.log(1 / alpha) - 1e-6
        assert z < w / math.sqrt(var)  # one side of the question: a nearer bound at the same level


def test_the_breaker_needs_longer_runs_when_the_safe_variant_fails_more_and_is_off_when_it_is_down() -> None:
    runs = [float(stats.breaker_run(p * 1000, 1000, 5, 1e-6)) for p in (0.01, 0.05, 0.1, 0.2, 0.3)]
    assert runs == sorted(runs) and runs[0] == 5 and runs[-1] > runs[0]
    assert math.isinf(float(stats.breaker_run(600, 1000, 5, 1e-6)))
    # weighed against the calls the candidate began in the span: h^-k exp(-(1 - h) n) reaches 1 / per_call
    high = stats.breaker_high(20, 1000)
    assert high is not None and 0.02 < high < 0.04
    for began in (0.0, 10.0, 40.0):
        need = stats.breaker_need(20, 1000, 5, 1e-6, began)
        assert need * math.log(1 / high) - (1 - high) * began >= math.log(1e6)
        assert (need - 1) * math.log(1 / high) - (1 - high) * began < math.log(1e6) or need == 5
    assert stats.breaker_need(20, 1000, 5, 1e-6, 40.0) > stats.breaker_need(20, 1000, 5, 1e-6)
    assert [stats.breaker_need(round(p * 1000), 1000, 5, 1e-6) for p in (0.01, 0.05, 0.1, 0.2, 0.3)] == runs


def test_the_sample_ratio_e_value_stays_low_on_the_promised_split_and_grows_on_a_lost_tenth() -> None:
    rng = random.Random(1)
    shares = {SAFE: 0.75, CAND: 0.25}
    fair = {SAFE: 0, CAND: 0}
    lossy = {SAFE: 0, CAND: 0}
    for _ in range(20_000):
        v = CAND if rng.random() < 0.25 else SAFE
        fair[v] += 1
        if v == SAFE or rng.random() > 0.1:
            lossy[v] += 1
    assert stats.log_srm_bf(fair, shares, 1000.0) < math.log(1 / 0.01)
    assert stats.log_srm_bf(lossy, shares, 1000.0) > math.log(1 / 0.01)


def test_the_stratified_difference_sees_no_difference_where_pooling_sees_one() -> None:
    """Simpson's paradox: the candidate gets 5 % of a quiet hour and 50 % of a bad one; within each hour both
    variants fail alike, so the stratified difference is zero where the pooled one is large."""
    strata = stats.Strata(proportion=True)
    pooled = {True: [0, 0], False: [0, 0]}
    for hour, share, rate in ((0, 0.05, 0.02), (1, 0.5, 0.4)):
        for i in range(2000):
            cand = i < 2000 * share
            failed = (i if cand else i - 2000 * share) % round(1 / rate) == 0
            strata.add(hour, cand, float(failed))
            pooled[cand][0] += failed
            pooled[cand][1] += 1
    e = strata.estimate()
    assert e is not None and abs(e.diff) < 0.01
    assert pooled[True][0] / pooled[True][1] - pooled[False][0] / pooled[False][1] > 0.1


# ------------------------------------------------------------------------------------------------ the settings
def test_margins_are_relative_with_a_floor_and_alpha_is_split_across_the_guardrails_that_are_on() -> None:
    spec = ExperimentSpec()
    assert [(g.name, m) for g, m, _ in spec.active] == [
        ("failure_rate", 0.5),
        ("abandon_rate", 0.25),
        ("greeting_ms", 0.25),
        ("first_reply_ms", 0.25),
    ]
    assert spec.test_alpha == pytest.approx(0.05 / 4)
    more = ExperimentSpec(
        guardrails={
            "cost_per_call_usd": GuardrailSetting(margin=0.1, floor=0.01),
            "abandon_rate": GuardrailSetting(on=False),
        }
    )
    assert {g.name: (m, f) for g, m, f in more.active}["cost_per_call_usd"] == (0.1, 0.01)
    assert more.test_alpha == pytest.approx(0.05 / 4)
    assert spec.next_share(50.0) is None  # no steps: none
    ramp = ExperimentSpec(auto_promote=(5, 25, 50, 100))
    last = 100 - ramp.holdout  # the default holdout stays
    assert 50 < last < 100 and ramp.last_share == last
    assert [ramp.next_share(s) for s in (0, 5, 25, 50, last)] == [5, 25, 50, last, None]


def test_yaml_1_1_reads_on_as_true_and_the_guardrail_takes_it_as_on(tmp_path: Path) -> None:
    spec = ExperimentSpec.model_validate(
        {"guardrails": {"abandon_rate": {True: False}, "transfer_rate": {"enabled": True}}}
    )
    names = [g.name for g, _, _ in spec.active]
    assert "abandon_rate" not in names and "transfer_rate" in names
    path = tmp_path / "x.yaml"
    path.write_text(PLAN + "  experiment: {guardrails: {abandon_rate: {on: false}}}\n")  # as docs/configuration.md
    assert check_file(path) == []


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"guardrails": {"latency": {}}}, "latency"),
        ({"auto_promote": [50, 25]}, "auto_promote"),
        (
            {
                "guardrails": {
                    g: {"on": False} for g in ("failure_rate", "abandon_rate", "greeting_ms", "first_reply_ms")
                }
            },
            "at least one",
        ),
        ({"tau": 0}, "tau"),
        ({"guardrails": {"greeting_ms": {"margin": 300}}}, "margin"),  # an absolute margin of old: now a share
        ({"holdout": 60}, "holdout"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError, match=names):
        ExperimentSpec.model_validate(settings)


# ------------------------------------------------------------------------------------------------ decisions
def test_equal_variants_ramp_to_the_last_step_keeping_a_holdout_and_are_never_rolled_back() -> None:
    spec = ExperimentSpec(auto_promote=(5, 25, 50, 100), **FAST)
    loop = Loop(spec, 5.0, seed=3)
    loop.run(30_000, fail=0.1)
    actions = [(d.action, d.weights and d.weights[CAND]) for d in loop.decisions]
    last = 100 - spec.holdout
    assert actions[:3] == [("promote", 25.0), ("promote", 50.0), ("promote", last)], actions
    assert "rollback" not in [a for a, _ in actions]
    assert loop.weights == {CAND: last, SAFE: spec.holdout}
    verdict = loop.exp.verdict(CAND)
    assert verdict["holdout"] == spec.holdout and verdict["next"].startswith("watch")
    assert any(d.action == "complete" for d in loop.decisions)  # the guard period passed; still watched


def test_a_candidate_that_dies_after_reaching_the_last_step_is_rolled_back_by_the_breaker() -> None:
    spec = ExperimentSpec(auto_promote=(5, 25, 50, 100), **FAST)
    loop = Loop(spec, 5.0, seed=4)
    loop.run(30_000, fail=0.1, until="complete")
    assert loop.weights[CAND] == 100 - spec.holdout
    [d] = loop.run(200, cand_fail=1.0)
    assert d.action == "rollback" and "breaker" in d.evidence and d.weights == {CAND: 0.0, SAFE: 100.0}


def test_failures_that_double_at_the_last_step_are_seen_by_the_last_steps_own_test() -> None:
    loop = Loop(ExperimentSpec(auto_promote=(5, 25, 50, 100), **FAST), 5.0, seed=5)
    loop.run(40_000, fail=0.1, until="complete")
    out = loop.run(40_000, fail=0.1, cand_fail=0.3, until="rollback")
    reason = out[-1].reason
    assert out[-1].action == "rollback" and "failure_rate surely worse beyond the margin" in reason, reason
    assert "(last step)" in reason, reason


def test_a_slower_greeting_and_a_heavier_tail_with_the_same_median_are_rolled_back() -> None:
    slower = Loop(ExperimentSpec(), 20.0, seed=6).run(6000, cand_greeting=1050.0, until="rollback")
    assert slower[-1].action == "rollback" and "greeting_ms" in slower[-1].reason
    tail = Loop(ExperimentSpec(), 50.0, seed=7).run(20_000, cand_sigma=1.2, until="rollback")
    assert tail[-1].action == "rollback" and "greeting_ms" in tail[-1].reason


def test_a_lost_share_of_the_candidates_records_stops_promotion_and_keeps_rollback_armed() -> None:
    loop = Loop(ExperimentSpec(auto_promote=(25, 50, 100), **FAST), 25.0, seed=8)
    out = loop.run(30_000, lose=0.15, until="srm")
    assert out[-1].action == "srm" and out[-1].variant == CAND and out[-1].weights is None
    after = loop.run(3000, cand_fail=1.0)
    assert [d.action for d in after] == ["rollback"]
    assert "promote" not in [d.action for d in loop.decisions[loop.decisions.index(out[-1]) :]]
    assert loop.exp.verdict(CAND)["srm"] is True


def test_a_rearmed_candidate_is_tested_afresh() -> None:
    loop = Loop(ExperimentSpec(**FAST), 20.0, seed=9)
    [back] = loop.run(5000, cand_fail=1.0, until="rollback")
    assert back.action == "rollback" and loop.exp.verdict(CAND)["state"] == "rolled_back"
    loop.exp.feed({"rearm": CAND, "t": loop.i * 3.6})
    loop.weights, loop.epoch = {CAND: 20.0, SAFE: 80.0}, epoch_of({CAND: 20.0, SAFE: 80.0}, False)
    loop.exp.known_weights(loop.weights)
    assert loop.exp.verdict(CAND)["state"] == "testing"
    assert [d.action for d in loop.run(20_000, until="promote")] == ["promote"]


def test_an_interval_is_shown_only_from_min_calls_and_the_verdict_says_what_is_awaited() -> None:
    loop = Loop(ExperimentSpec(min_calls=50), 50.0, seed=10)
    loop.run(60)
    metric = loop.exp.estimates()[CAND]["failure_rate"]
    assert metric["vs_safe"] is None and metric["too_few"] > 0
    loop.run(2000)
    est = loop.exp.estimates()
    lo, hi = est[CAND]["failure_rate"]["vs_safe"]["ci95"]
    assert lo < est[CAND]["failure_rate"]["vs_safe"]["diff"] < hi
    verdict = est[CAND]["verdict"]
    assert verdict["next"].startswith("promote") and any("business cycle" in w for w in verdict["waiting_for"])
    assert "verdict" not in est[SAFE] and "vs_safe" not in est[SAFE]["failure_rate"]


def test_a_late_call_of_the_old_weights_counts_in_its_epochs_split_but_not_in_the_tests() -> None:
    assert epoch_of({"a": 1, "b": 1}, False) == epoch_of({"a": 50, "b": 50, "c": 0}, False)
    assert epoch_of({"a": 1}, False) != epoch_of({"a": 1}, True)
    exp = Experiment(ExperimentSpec(), SAFE, (CAND, SAFE))
    exp.feed(_call(10.0, SAFE, epoch="old") | {"started": 5.0})
    exp.feed(_call(20.0, CAND, epoch="new") | {"started": 15.0})
    exp.feed(_call(21.0, SAFE, epoch="old") | {"started": 8.0})  # drawn before the change, ended after it
    assert exp.epoch == "new" and exp.epochs["old"].counts == {SAFE: 2}
    assert exp.safe_arm["failure_rate"].n == 1


def test_evaluate_replays_records_in_time_order() -> None:
    loop = Loop(ExperimentSpec(), 20.0, seed=11)
    records: list[dict[str, Any]] = []
    for i in range(3000):
        records.append(_call(i * 3.6, CAND if i % 5 == 0 else SAFE, failed=i % 5 == 0 and i % 10 == 0))
    result = evaluate(loop.exp.spec, SAFE, (CAND, SAFE), reversed(records), {SAFE: 80, CAND: 20})
    assert [d["action"] for d in result["decisions"]] == ["rollback"]
    assert "trend" not in result["estimates"][CAND]["failure_rate"]


# ------------------------------------------------------------------------------------------------ signed evidence
def test_an_outcome_record_is_evidence_only_with_its_signature() -> None:
    record = _call(1.0, CAND)
    signed = seal.sign_record((b"k" * 32,), record)
    assert seal.record_refusal((b"k" * 32,), signed) is None
    assert seal.record_refusal((b"k" * 32,), signed | {"id": "1-0", "repeat": True}) is None  # added on read
    assert seal.record_refusal((b"k" * 32,), record) == "unsigned"
    assert seal.record_refusal((b"k" * 32,), signed | {"outcome": "dropped"}) == "bad signature"
    assert seal.record_refusal((b"other key 123456",), signed) == "bad signature"
    assert seal.record_refusal((), record) is None  # no key: everything (rollout show says so)


# ------------------------------------------------------------------------------------------------ the dialplan
PLAN = "name: x\nmatch: ['1']\ndialect: rollout\nrollout:\n  safe: a\n  variants: [{name: a, dialect: ga, model: m}]\n"


def test_a_dialplans_experiment_section_is_read_and_its_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(PLAN + "  experiment: {alpha: 0.01, guardrails: {cost_per_call_usd: {margin: 0.05}}}\n")
    assert check_file(path) == []
    [plan] = load_dialplans(tmp_path)
    assert plan.rollout_spec is not None and plan.rollout_spec.experiment.test_alpha == pytest.approx(0.01 / 5)
    path.write_text(PLAN + "  experiment: {guardrails: {latency: {}}}\n")
    [error] = check_file(path)
    assert error.source == str(path) and error.field.startswith("rollout.experiment"), error
    assert "latency" in str(error)


# ------------------------------------------------------------------------------------------------ outcome records
def _report(*reports: tuple[float, ev.Report], **fields: Any) -> CallReport:
    report = CallReport("c1", "ga", "support", **fields)
    for t, r in reports:
        report.note(t, r)
    return report


def test_a_calls_outcome_record_has_the_issues_fields() -> None:
    report = _report(
        (100.0, ev.Answered()),
        (5000.0, ev.TransferDecided("sales", ev.TransferMode.WARM)),
        (65_100.0, ev.CallEnded("transferred", ev.CallOutcome.COMPLETED, ev.EndedBy.AGENT)),
        answered=True,
        first_audio_ms=800.0,
        ended_by=ev.EndedBy.AGENT,
        end_reason="transferred",
    )
    stats_ = {"outcome": "recovered", "greeting_ms": 800.0, "first_reply_ms": None, "cost_usd": 0.0123}
    shares = {CAND: 0.25, SAFE: 0.75}
    record = outcome_record(report, stats_, t=2000.0, started=1934.9, variant="cand", epoch="e1", shares=shares)
    assert tuple(record) == RECORD_FIELDS and record["shares"] == shares
    assert record["transferred"] is True and record["abandoned"] is False and record["handle_time_s"] == 65.0
    assert (record["outcome"], record["greeting_ms"], record["first_reply_ms"]) == ("recovered", 800.0, None)
    assert record["repeat"] is False and record["disposition"] is None and record["failed_checks"] is None
    report.post_call = {"summary": "Refund asked.", "disposition": "refund", "fields": None, "status": "ok"}
    report.checks = [{"name": "disclosure", "passed": True, "detail": ""},
                     {"name": "never_say", "passed": False, "detail": "the agent said 'guaranteed'"}]  # fmt: skip
    record = outcome_record(report, stats_, t=2000.0, started=1934.9, variant="cand", epoch="e1")
    assert (record["disposition"], record["failed_checks"]) == ("refund", ["never_say"])


def test_a_candidate_failing_compliance_checks_more_often_is_estimated_and_rolled_back_when_guarded() -> None:
    rng = random.Random(11)
    calls = [
        {**_call(i * 3.6, v), "failed_checks": ["never_say"] if rng.random() < (0.2 if v == CAND else 0.02) else []}
        for i, v in enumerate(CAND if rng.random() < 0.5 else SAFE for _ in range(3000))
    ]
    unguarded = evaluate(ExperimentSpec(promote=False), SAFE, (CAND, SAFE), calls)
    assert unguarded["decisions"] == []  # off by default: estimated, never acted on
    rate = unguarded["estimates"][CAND]["check_fail_rate"]
    assert rate["value"] > 0.1 and rate["vs_safe"]["ci95"][0] > 0
    guarded = ExperimentSpec(promote=False, guardrails={"check_fail_rate": GuardrailSetting()})
    decisions = evaluate(guarded, SAFE, (CAND, SAFE), calls)["decisions"]
    assert [(d["variant"], d["action"]) for d in decisions] == [(CAND, "rollback")]
    assert "check_fail_rate surely worse" in decisions[0]["reason"]


def test_a_caller_hanging_up_on_a_failed_connects_apology_is_a_connect_failure_not_an_abandon() -> None:
    report = _report(
        (100.0, ev.Answered()),
        (4100.0, ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER)),
        answered=True,
        first_audio_ms=None,
        ended_by=ev.EndedBy.CALLER,
        end_reason="caller hung up",
    )
    assert outcomes.abandoned(report)  # as the caller saw it: never served
    failed = outcome_record(report, {"outcome": "connect_failure"}, t=2000.0, started=1996.0, variant="c", epoch="e")
    assert (failed["outcome"], failed["abandoned"]) == ("connect_failure", False)
    served_late = outcome_record(report, {"outcome": "ok"}, t=2000.0, started=1996.0, variant="c", epoch="e")
    assert served_late["abandoned"] is True


@pytest.mark.parametrize(
    ("fields", "abandoned"),
    [
        ({"answered": False, "ended_by": ev.EndedBy.CALLER}, True),
        ({"answered": True, "ended_by": ev.EndedBy.CALLER, "first_audio_ms": None}, True),
        (
            {
                "answered": True,
                "ended_by": ev.EndedBy.CALLER,
                "first_audio_ms": 700.0,
                "caller_transcript": ["hi", "hello?"],
                "turn_wait_ms": [900.0],
            },
            True,
        ),
        (
            {
                "answered": True,
                "ended_by": ev.EndedBy.CALLER,
                "first_audio_ms": 700.0,
                "caller_transcript": ["hi"],
                "turn_wait_ms": [900.0],
            },
            False,
        ),
        ({"answered": False, "ended_by": ev.EndedBy.CALLER, "end_reason": "caller abandoned while ringing"}, True),
        ({"answered": True, "ended_by": ev.EndedBy.AGENT, "first_audio_ms": None}, False),
        # a parallel ring answered elsewhere (a CANCEL with Reason SIP cause 200), a network's failure: no abandon
        ({"answered": False, "ended_by": ev.EndedBy.NETWORK, "end_reason": "call completed elsewhere"}, False),
        ({"answered": True, "ended_by": ev.EndedBy.NETWORK, "first_audio_ms": None}, False),
    ],
)
def test_abandoned_means_the_caller_left_before_being_served(fields: dict[str, Any], abandoned: bool) -> None:
    assert outcomes.abandoned(_report(**fields)) is abandoned


# ---------------------------------------------------------------------------------------------- what decisions change
def _rollout(steps: tuple[float, ...]) -> RolloutSpec:
    return RolloutSpec(
        safe=SAFE,
        variants=(
            Variant(name=CAND, dialect="ga", model="m2"),
            Variant(name=SAFE, dialect="ga", model="m", weight=100),
        ),
        experiment=ExperimentSpec(auto_promote=steps),
    )


def test_auto_promote_moves_the_candidate_one_step_keeps_the_holdout_and_acts_only_on_its_epoch() -> None:
    spec = _rollout((5, 25, 50, 100))
    flag = RolloutFlag(weights={CAND: 5, SAFE: 95})
    promote = Decision(1.0, CAND, "promote", "not worse", {"epoch": epoch_of(flag.weights, False)})
    assert decision_changes(spec, promote, flag) == {"weights": {CAND: 25, SAFE: 75}}
    holdout = spec.experiment.holdout
    at_half = RolloutFlag(weights={CAND: 1, SAFE: 1})
    assert next_step(spec, at_half, CAND) == {CAND: 100 - holdout, SAFE: holdout}
    assert next_step(spec, RolloutFlag(weights={CAND: 100 - holdout, SAFE: holdout}), CAND) is None
    moved = RolloutFlag(weights={CAND: 25, SAFE: 75})  # another worker took the step already
    assert decision_changes(spec, promote, moved) is None
    rollback = Decision(1.0, CAND, "rollback", "worse", {"epoch": epoch_of(moved.weights, False)})
    assert decision_changes(spec, rollback, moved) == {"weights": {CAND: 0.0, SAFE: 100.0}}
    assert decision_changes(spec, rollback, moved.model_copy(update={"kill": True})) is None
    srm = Decision(1.0, CAND, "srm", "split", {"epoch": epoch_of(moved.weights, False)})
    assert decision_changes(spec, srm, moved) is None  # changes no weight


def test_a_step_keeps_the_other_candidates_share_and_stops_at_the_room_they_leave_above_the_holdout() -> None:
    spec = RolloutSpec(
        safe=SAFE,
        variants=(
            Variant(name=CAND, dialect="ga", model="m2"),
            Variant(name="other", dialect="ga", model="m3"),
            Variant(name=SAFE, dialect="ga", model="m", weight=100),
        ),
        experiment=ExperimentSpec(auto_promote=(5, 25, 50, 100)),
    )
    assert next_step(spec, RolloutFlag(weights={CAND: 10, "other": 10, SAFE: 80}), CAND) == {
        CAND: 25,
        "other": 10,
        SAFE: 65,
    }
    holdout = spec.experiment.holdout
    room = 100 - holdout - 10  # what "other" leaves above the holdout
    assert next_step(spec, RolloutFlag(weights={CAND: 50, "other": 10, SAFE: 40}), CAND) == {
        CAND: room,
        "other": 10,
        SAFE: holdout,
    }
    assert next_step(spec, RolloutFlag(weights={CAND: room, "other": 10, SAFE: holdout}), CAND) is None  # no room
    flag = RolloutFlag(weights={CAND: 50, "other": 10, SAFE: 40})
    engine_step = {CAND: room, "other": 10.0, SAFE: holdout}
    promote = Decision(1.0, CAND, "promote", "ok", {"epoch": epoch_of(flag.weights, False)}, engine_step)
    assert decision_changes(spec, promote, flag) == {"weights": engine_step}


def test_the_estimates_and_the_sample_ratio_state_are_exported_as_gauges() -> None:
    from prometheus_client import REGISTRY

    from bridge import metrics

    loop = Loop(ExperimentSpec(), 50.0, seed=12)
    loop.run(800)
    est = loop.exp.estimates()
    metrics.export_estimates("gauged", est)

    def sample(variant: str, metric: str, stat: str) -> float | None:
        labels = {"dialplan": "gauged", "variant": variant, "metric": metric, "stat": stat}
        return REGISTRY.get_sample_value("callbridge_rollout_estimate", labels)

    assert sample(SAFE, "failure_rate", "value") == pytest.approx(est[SAFE]["failure_rate"]["value"])
    vs = est[CAND]["greeting_ms"]["vs_safe"]
    assert [sample(CAND, "greeting_ms", s) for s in ("diff", "ci95_low", "ci95_high")] == pytest.approx(
        [vs["diff"], *vs["ci95"]]
    )
    assert sample(SAFE, "greeting_ms", "diff") is None
    assert REGISTRY.get_sample_value("callbridge_rollout_srm", {"dialplan": "gauged"}) == 0.0


def test_the_bench_runs_its_goals_through_the_engine() -> None:
    result = bench.run(bench.Scenario("dies", after=bench.Truth(fail=1.0), change_at=5.0, calls=2000), seed=1)
    assert result["rollback"] is not None and result["breaker"] and result["rollback"][1] <= 50


# ------------------------------------------------------------------------------------------------ real traffic
def test_a_shared_outage_trips_no_breaker_and_a_candidate_failing_alone_still_does() -> None:
    """Both variants failing at the same moment is not the candidate's fault; the candidate failing alone is."""
    exp = Experiment(ExperimentSpec(), SAFE, (CAND, SAFE), weights={SAFE: 5.0, CAND: 95.0})
    rng = random.Random(21)
    for i in range(2000):  # a calm hour at the last step's split: the safe variant's recent calls are fine
        variant = CAND if rng.random() < 0.95 else SAFE
        exp.feed(_call(i * 1.8, variant, failed=rng.random() < 0.02) | {"call_id": f"a{i}"})
    out = []
    for i in range(300):  # ten minutes in which every call of both variants fails
        variant = CAND if rng.random() < 0.95 else SAFE
        out += exp.feed(_call(3600 + i * 2.0, variant, failed=True) | {"call_id": f"b{i}"})
    assert out == [] and exp.verdict(CAND)["state"] == "testing"
    for i in range(300):  # the candidate alone fails: rolled back by the breaker within 100 of its calls
        variant = CAND if rng.random() < 0.95 else SAFE
        out += exp.feed(_call(4400 + i * 2.0, variant, failed=variant == CAND) | {"call_id": f"c{i}"})
        if out:
            break
    [d] = out
    assert d.action == "rollback" and "breaker" in d.evidence and d.evidence["breaker"]["safe_calls_meanwhile"] >= 1
    assert d.evidence["breaker"]["consecutive_failures"] <= 100, d.evidence


def test_callers_are_clusters_and_the_design_effect_grows_with_their_repeats() -> None:
    alone, repeated = stats.Clusters(), stats.Clusters()
    rng = random.Random(22)
    for k in range(400):
        p = rng.choice((0.0, 0.5))  # each caller's own propensity
        for _ in range(5):
            x = float(rng.random() < p)
            alone.add(None, x, 0.0)
            repeated.add(f"k{k}", x, 0.0)
    assert alone.deff() == 1.0
    assert 2.0 < repeated.deff() < 3.5  # 1 + (m - 1) ICC: five calls, ICC about 1/3 (p(1-p) between over within)
    before = repeated.deff()
    moved = repeated.callers.forget(1.0)
    assert moved is not None and repeated.callers.ids == {}
    repeated.remap(moved)
    assert len(repeated.sums) == 0 and repeated.deff() == before  # forgotten callers' sums stay counted


def test_the_sample_ratio_test_counts_callers_not_the_calls_of_those_who_call_back() -> None:
    """Candidate callers call back twice as often (the treatment changed the traffic): no sample-ratio alarm, and
    the counts of calls show why."""
    exp = Experiment(ExperimentSpec(), SAFE, (CAND, SAFE), weights={SAFE: 50.0, CAND: 50.0})
    rng = random.Random(23)
    out, seen = [], set()
    for i in range(20_000):
        k = rng.randrange(4000)
        variant = CAND if k % 2 else SAFE
        if variant == SAFE and k in seen and rng.random() < 0.5:
            continue  # once served, the safe variant's callers call back half as often
        seen.add(k)
        out += exp.feed(_call(i * 3.6, variant) | {"caller": f"k{k}", "call_id": f"c{i}"})
    assert [d for d in out if d.action == "srm"] == []
    calls = exp.calls
    assert calls[CAND] > 1.5 * calls[SAFE]  # a call-level test would have fired long ago
    assert abs(exp.callers(CAND) - exp.callers(SAFE)) < 150
    assert exp.estimates()[CAND]["verdict"]["callers"] == {CAND: exp.callers(CAND), SAFE: exp.callers(SAFE)}


def test_a_regression_within_its_margin_is_shown_and_never_rolled_back() -> None:
    """Greeting 10 % slower with the default 25 % margin: tolerable; 60 % slower: rolled back."""
    tolerable = Loop(ExperimentSpec(promote=False), 50.0, seed=24)
    assert tolerable.run(20_000, cand_greeting=770.0) == []
    metric = tolerable.exp.estimates()[CAND]["greeting_ms"]
    assert metric["reading"] == "slightly worse, within tolerance", metric
    worse = Loop(ExperimentSpec(promote=False), 50.0, seed=25).run(20_000, cand_greeting=1120.0, until="rollback")
    assert worse[-1].action == "rollback" and "greeting_ms surely worse" in worse[-1].reason


def test_a_step_needs_its_own_evidence_and_a_candidate_that_degrades_on_it_is_held() -> None:
    spec = ExperimentSpec(auto_promote=(5, 25, 50, 100), **FAST)
    loop = Loop(spec, 5.0, seed=26)
    [first] = loop.run(20_000, fail=0.1, until="promote")
    assert first.weights == {CAND: 25.0, SAFE: 75.0} and "this step's own calls" in first.reason
    loop.run(2000, fail=0.1, cand_fail=0.4)  # on the new step, the candidate fails four times as often
    assert loop.weights[CAND] == 25.0
    waiting = loop.exp.verdict(CAND).get("waiting_for", [])
    assert loop.exp.verdict(CAND)["state"] == "rolled_back" or any("this step's own" in w for w in waiting), waiting


def test_each_record_counts_once_and_a_replayed_old_record_is_stale() -> None:
    exp = Experiment(ExperimentSpec(), SAFE, (CAND, SAFE))
    failed = _call(100.0, CAND, failed=True) | {"call_id": "one"}
    for _ in range(201):
        exp.feed(failed)
    assert exp.calls[CAND] == 1 and exp.refused["duplicate"] == 200
    exp.feed(_call(30_000.0, SAFE) | {"call_id": "two"})
    exp.feed(_call(100.0, CAND, failed=True) | {"call_id": "three"})  # hours older than the newest: a replay
    assert exp.calls[CAND] == 1 and exp.refused["stale"] == 1
    exp.feed({"rearm": CAND, "rearm_id": "r1", "t": 30_001.0})
    exp.cands[CAND].run = 3
    exp.feed({"rearm": CAND, "rearm_id": "r1", "t": 30_002.0})  # the same re-arm again: taken once
    assert exp.cands[CAND].run == 3 and exp.refused["duplicate"] == 201


def test_a_late_repeat_counts_when_its_window_closes_whatever_the_record_claims() -> None:
    spec = ExperimentSpec(guardrails={"repeat_rate": {"on": True}})
    exp = Experiment(spec, SAFE, (CAND, SAFE))
    exp.feed(_call(0.0, CAND) | {"call_id": "a", "repeat": True})  # a record cannot make itself a repeat
    exp.feed(_call(1.0, SAFE) | {"call_id": "b"})
    exp.feed({"late": True, "call_id": "b", "t": 3600.0, "repeat": True})
    assert exp.safe_arm["repeat_rate"].n == 0  # its window (72 h) is still open
    exp.feed(_call(72 * 3600.0 + 10, SAFE) | {"call_id": "c"})
    arm = exp.cands[CAND].since["repeat_rate"].test
    assert (exp.safe_arm["repeat_rate"].n, exp.safe_arm["repeat_rate"].total) == (1, 1.0)
    assert arm.arm_c is not None and (arm.arm_c.n, arm.arm_c.total) == (1, 0.0)


def test_handle_time_is_compared_on_its_mean_so_a_heavy_tail_counts() -> None:
    spec = ExperimentSpec(promote=False, guardrails={"handle_time_s": {"on": True}})
    exp = Experiment(spec, SAFE, (CAND, SAFE), weights={SAFE: 50.0, CAND: 50.0})
    rng = random.Random(27)
    out = []
    for i in range(20_000):
        variant = CAND if rng.random() < 0.5 else SAFE
        handle = 180.0 * math.exp(rng.gauss(0, 1)) * (10.0 if variant == CAND and rng.random() < 0.05 else 1.0)
        out += exp.feed(_call(i * 3.6, variant) | {"handle_time_s": handle, "call_id": f"h{i}"})
    [d] = [d for d in out if d.action == "rollback"]
    assert "handle_time_s surely worse beyond the margin" in d.reason
    metric = exp.estimates()[CAND]["handle_time_s"]
    assert metric["vs_safe"]["diff"] > 0.3 * exp.estimates()[SAFE]["handle_time_s"]["value"]  # the mean, in seconds


def test_a_promotion_keeps_another_candidates_weight() -> None:
    names = ("a", "b", SAFE)
    assert step_weights(names, SAFE, "a", 25.0, {"a": 5.0, "b": 5.0, SAFE: 90.0}) == {"a": 25.0, "b": 5.0, SAFE: 70.0}
    exp = Experiment(ExperimentSpec(auto_promote=(5, 50, 100)), SAFE, names, weights={"a": 50, "b": 45, SAFE: 5})
    exp.feed(_call(0.0, SAFE, epoch=epoch_of({"a": 50, "b": 45, SAFE: 5}, False)) | {"call_id": "x"})
    nxt, held = exp.next_step("a")
    assert nxt is None and held is not None and "no room above the holdout" in held
    assert exp.verdict("a")["next"].startswith("hold: other candidates hold")
    assert exp.alpha_g == pytest.approx(ExperimentSpec().alpha / 4 / 2)  # alpha shared by the two candidates


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0 s"), (44.6, "45 s"), (240, "4 min"), (3599, "1:00 h"), (86400, "24:00 h"), (5400, "1:30 h")],
)
def test_a_duration_reads_in_seconds_minutes_or_hours_and_minutes(seconds: float, shown: str) -> None:
    assert span(seconds) == shown
