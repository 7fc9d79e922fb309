"""The rollout's decision engine (pure, seeded): the mSPRT and its interval, the breaker, the Bonferroni split, the
settings' errors, and that bench/rollout.py's vectorized run decides what :class:`Experiment` decides call by call."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from bench import rollout as bench
from bridge import events as ev
from bridge.call.report import CallReport
from bridge.dialplan import check_file, load_dialplans
from bridge.rollout.experiment import (
    Decision,
    Experiment,
    ExperimentSpec,
    GuardrailSetting,
    breaker_run,
    half_width,
    log_mixture_lr,
    replay,
)
from bridge.rollout.outcomes import RECORD_FIELDS, EpochReplay, epoch_of
from bridge.rollout.policy import RolloutFlag, RolloutSpec, Variant
from bridge.rollout.records import decision_changes, next_step
from bridge.serve import outcome as outcomes
from bridge.serve.outcome import outcome_record


def _call(
    t: float,
    variant: str,
    *,
    failed: bool = False,
    greeting: float | None = 900.0,
    reply: float | None = 700.0,
    abandoned: bool = False,
) -> dict[str, Any]:
    return {
        "t": t,
        "variant": variant,
        "outcome": "connect_failure" if failed else "ok",
        "abandoned": abandoned,
        "greeting_ms": None if failed else greeting,
        "first_reply_ms": None if failed else reply,
    }


def _stream(
    rng: random.Random,
    n: int,
    share: float,
    fail: tuple[float, float] = (0.05, 0.05),
    greeting: tuple[float, float] = (900.0, 900.0),
) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        cand = rng.random() < share
        out.append(
            _call(
                float(i),
                "cand" if cand else "safe",
                failed=rng.random() < fail[cand],
                greeting=greeting[cand] * math.exp(0.4 * rng.gauss(0, 1)),
                reply=700 * math.exp(0.6 * rng.gauss(0, 1)),
                abandoned=rng.random() < 0.05,
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ the statistics
def test_the_mixture_likelihood_ratio_is_the_formula_by_hand() -> None:
    # z = 2, rho = I tau^2 = 1: L = sqrt(1/2) * exp(4 * 1 / (2 * 2)) = e / sqrt(2)
    assert float(log_mixture_lr(2.0, 1.0)) == pytest.approx(math.log(math.e / math.sqrt(2)))
    # z = 3, rho = 4: L = sqrt(1/5) * exp(9 * 4 / 10)
    assert float(log_mixture_lr(3.0, 4.0)) == pytest.approx(-0.5 * math.log(5) + 3.6)


def test_the_interval_ends_where_the_ratio_reaches_one_over_alpha() -> None:
    for var, rho, alpha in ((0.01, 2.0, 0.05), (1e-4, 50.0, 0.0125), (3.0, 0.3, 0.01)):
        w = float(half_width(var, rho, alpha))
        assert float(log_mixture_lr(w / math.sqrt(var), rho)) == pytest.approx(math.log(1 / alpha))


def test_the_breaker_needs_longer_runs_when_the_safe_variant_fails_more_and_is_off_when_it_is_down() -> None:
    runs = [float(breaker_run(p * 1000, 1000, 5, 1e-6)) for p in (0.01, 0.05, 0.1, 0.2, 0.3)]
    assert runs == sorted(runs) and runs[0] == 5 and runs[-1] > runs[0]
    assert math.isinf(float(breaker_run(600, 1000, 5, 1e-6)))


# ------------------------------------------------------------------------------------------------ the settings
def test_alpha_is_split_across_the_guardrails_that_are_on() -> None:
    spec = ExperimentSpec()
    assert [g.name for g, _ in spec.active] == ["failure_rate", "abandon_rate", "greeting_ms", "first_reply_ms"]
    assert spec.test_alpha == pytest.approx(0.05 / 4)
    more = ExperimentSpec(
        guardrails={"cost_per_call_usd": GuardrailSetting(margin=0.05), "abandon_rate": GuardrailSetting(on=False)}
    )
    assert dict((g.name, m) for g, m in more.active)["cost_per_call_usd"] == 0.05
    assert more.test_alpha == pytest.approx(0.05 / 4)


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
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError, match=names):
        ExperimentSpec.model_validate(settings)


# ------------------------------------------------------------------------------------------------ decisions
def test_an_identical_stream_never_rolls_back() -> None:
    rng = random.Random(1)
    exp = Experiment(ExperimentSpec(promote=False), "safe", ["cand", "safe"])
    for i in range(3000):
        call = _stream(rng, 1, 1.0, fail=(0.2, 0.2))[0]
        for variant in ("safe", "cand"):
            assert exp.add({**call, "t": float(i), "variant": variant}) == []
    assert exp.estimates()["cand"]["failure_rate"]["vs_safe"]["diff"] == 0


def test_a_variant_failing_every_call_is_broken_by_the_breaker_within_a_few_calls() -> None:
    rng = random.Random(2)
    exp = Experiment(ExperimentSpec(), "safe", ["cand", "safe"])
    decisions = []
    for call in _stream(rng, 400, 0.2):
        decisions += exp.add({**call, "outcome": "dropped"} if call["variant"] == "cand" else call)
        if decisions:
            break
    [d] = decisions
    assert d.action == "rollback" and "breaker" in d.evidence and d.variant == "cand"
    assert exp.arms["cand"].calls <= d.evidence["breaker"]["trip_at"] < 10


def test_the_breaker_stays_quiet_when_the_safe_variant_fails_as_well() -> None:
    exp = Experiment(ExperimentSpec(promote=False, min_calls=10_000), "safe", ["cand", "safe"])
    for i in range(200):
        assert exp.add(_call(float(i), "cand" if i % 2 else "safe", failed=True)) == []


def test_a_clearly_worse_candidate_is_rolled_back_on_evidence_and_never_promoted() -> None:
    decisions, exp = replay(
        ExperimentSpec(), "safe", ["cand", "safe"], _stream(random.Random(3), 6000, 0.3, fail=(0.05, 0.15))
    )
    [d] = decisions
    assert d.action == "rollback" and "failure_rate" in d.reason and "breaker" not in d.evidence
    lo, hi = d.evidence["failure_rate"]["ci"]
    assert 0 < lo < d.evidence["failure_rate"]["diff"] < hi
    assert d.evidence["failure_rate"]["log_lr"] >= d.evidence["failure_rate"]["threshold_log_lr"]
    assert exp.decided == {"cand": d}


def test_a_slower_greeting_is_a_regression_only_past_its_margin() -> None:
    slow, _ = replay(
        ExperimentSpec(promote=False),
        "safe",
        ["cand", "safe"],
        _stream(random.Random(4), 4000, 0.5, greeting=(900.0, 1600.0)),
    )
    assert [d.action for d in slow] == ["rollback"] and "greeting_ms" in slow[0].reason
    within, exp = replay(
        ExperimentSpec(promote=False),
        "safe",
        ["cand", "safe"],
        _stream(random.Random(5), 4000, 0.5, greeting=(900.0, 1000.0)),
    )
    assert within == []
    est = exp.estimates()["cand"]["greeting_ms"]
    assert est["vs_safe"]["ci95"][0] > 0  # surely slower, but by less than the margin
    assert est["value"] > exp.estimates()["safe"]["greeting_ms"]["value"]


def test_equal_variants_are_promoted_and_the_estimates_have_the_issues_shape() -> None:
    decisions, exp = replay(ExperimentSpec(), "safe", ["cand", "safe"], _stream(random.Random(6), 8000, 0.5))
    assert [d.action for d in decisions] == ["promote"]
    est = exp.estimates()
    assert set(est) == {"cand", "safe"} and est["cand"]["calls"] + est["safe"]["calls"] == 8000
    assert "vs_safe" not in est["safe"]["failure_rate"]
    lo, hi = est["cand"]["failure_rate"]["vs_safe"]["ci95"]
    assert lo < est["cand"]["failure_rate"]["vs_safe"]["diff"] < hi


def test_the_engine_says_how_many_more_calls_it_needs_before_min_calls() -> None:
    exp = Experiment(ExperimentSpec(min_calls=50), "safe", ["cand", "safe"])
    for call in _stream(random.Random(7), 40, 0.5):
        exp.add(call)
    more = exp.estimates()["cand"]["failure_rate"]["more_calls"]
    assert more == 50 - min(exp.arms["cand"].sums["failure_rate"].n, exp.arms["safe"].sums["failure_rate"].n)


# ------------------------------------------------------------------------------------------------ the bench's twin
@pytest.mark.parametrize(
    ("safe", "cand", "share", "seed"),
    [
        (bench.Truth(), bench.Truth(fail=0.12), 0.3, 11),
        (bench.Truth(), bench.Truth(greeting_ms=1500), 0.2, 12),
        (bench.Truth(), bench.Truth(fail=1.0), 0.5, 13),
        (bench.Truth(0.1, 0.1), bench.Truth(0.1, 0.1), 0.5, 14),
    ],
)
def test_the_bench_decides_what_the_engine_decides(
    safe: bench.Truth, cand: bench.Truth, share: float, seed: int
) -> None:
    spec = ExperimentSpec()
    sim = bench.simulate(np.random.default_rng(seed), safe, cand, share, 12000)
    run = bench.evaluate(spec, sim, {})
    exp = Experiment(spec, "safe", ["cand", "safe"])
    first = next(((i, ds[0].action) for i, r in enumerate(bench.records(sim)) if (ds := exp.add(r))), None)
    assert first == run.first and first is not None
    if first[1] == "rollback":
        assert run.breaker == ("breaker" in exp.decided["cand"].evidence)


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
    stats = {"outcome": "recovered", "greeting_ms": 800.0, "first_reply_ms": None, "cost_usd": 0.0123}
    record = outcome_record(report, stats, t=2000.0, started=1934.9, variant="cand", epoch="e1")
    assert tuple(record) == RECORD_FIELDS
    assert record["transferred"] is True and record["abandoned"] is False and record["handle_time_s"] == 65.0
    assert (record["outcome"], record["greeting_ms"], record["first_reply_ms"]) == ("recovered", 800.0, None)
    assert record["repeat"] is False and record["disposition"] is None and record["failed_checks"] is None
    report.post_call = {"summary": "Refund asked.", "disposition": "refund", "fields": None, "status": "ok"}
    report.checks = [{"name": "disclosure", "passed": True, "detail": ""},
                     {"name": "never_say", "passed": False, "detail": "the agent said 'guaranteed'"}]  # fmt: skip
    record = outcome_record(report, stats, t=2000.0, started=1934.9, variant="cand", epoch="e1")
    assert (record["disposition"], record["failed_checks"]) == ("refund", ["never_say"])


def test_a_candidate_failing_compliance_checks_more_often_is_estimated_and_rolled_back_when_guarded() -> None:
    rng = random.Random(11)
    calls = [{**c, "failed_checks": ["never_say"] if rng.random() < (0.2 if c["variant"] == "cand" else 0.02) else []}
             for c in _stream(rng, 3000, 0.5)]  # fmt: skip
    unguarded, exp = replay(ExperimentSpec(promote=False), "safe", ["cand", "safe"], calls)
    assert unguarded == []  # off by default: estimated, never acted on
    rate = exp.estimates()["cand"]["check_fail_rate"]
    assert rate["value"] > 0.1 and rate["vs_safe"]["ci95"][0] > 0
    guarded = ExperimentSpec(promote=False, guardrails={"check_fail_rate": GuardrailSetting()})
    decisions, _ = replay(guarded, "safe", ["cand", "safe"], calls)
    assert [(d.variant, d.action) for d in decisions] == [("cand", "rollback")]
    assert decisions[0].reason.startswith("cand: check_fail_rate:")


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
    ],
)
def test_abandoned_means_the_caller_left_before_being_served(fields: dict[str, Any], abandoned: bool) -> None:
    assert outcomes.abandoned(_report(**fields)) is abandoned


def test_an_epoch_is_the_weights_as_shares_and_a_late_call_of_the_old_weights_stays_out() -> None:
    assert epoch_of({"a": 1, "b": 1}, False) == epoch_of({"a": 50, "b": 50, "c": 0}, False)
    assert epoch_of({"a": 1, "b": 1}, False) != epoch_of({"a": 1, "b": 3}, False)
    assert epoch_of({"a": 1}, False) != epoch_of({"a": 1}, True)
    replay = EpochReplay(ExperimentSpec(), "safe", ["cand", "safe"])
    replay.feed(_call(10.0, "safe") | {"epoch": "old", "started": 5.0})
    replay.feed(_call(20.0, "cand") | {"epoch": "new", "started": 15.0})
    replay.feed(_call(21.0, "safe") | {"epoch": "old", "started": 8.0})  # drawn before the change, ended after it
    assert replay.epoch == "new" and replay.experiment.arms["safe"].calls == 0
    replay.feed(_call(30.0, "safe") | {"epoch": "old", "started": 25.0})  # the weights went back: a new epoch
    assert replay.epoch == "old" and replay.experiment.arms["safe"].calls == 1


# ---------------------------------------------------------------------------------------------- what decisions change
def _rollout(steps: tuple[float, ...]) -> RolloutSpec:
    return RolloutSpec(
        safe="safe",
        variants=(
            Variant(name="cand", dialect="ga", model="m2"),
            Variant(name="safe", dialect="ga", model="m", weight=100),
        ),
        experiment=ExperimentSpec(auto_promote=steps),
    )


def test_auto_promote_moves_the_candidate_one_step_and_only_on_the_epoch_it_decided_on() -> None:
    spec = _rollout((5, 25, 50, 100))
    flag = RolloutFlag(weights={"cand": 5, "safe": 95})
    promote = Decision(1.0, "cand", "promote", "not worse", {"epoch": epoch_of(flag.weights, False)})
    assert decision_changes(spec, promote, flag) == {"weights": {"cand": 25, "safe": 75}}
    at_half = RolloutFlag(weights={"cand": 1, "safe": 1})
    assert next_step(spec, at_half, "cand") == {"cand": 100, "safe": 0}
    assert next_step(spec, RolloutFlag(weights={"cand": 100, "safe": 0}), "cand") is None
    moved = RolloutFlag(weights={"cand": 25, "safe": 75})  # another worker took the step already
    assert decision_changes(spec, promote, moved) is None
    rollback = Decision(1.0, "cand", "rollback", "worse", {"epoch": epoch_of(moved.weights, False)})
    assert decision_changes(spec, rollback, moved) == {"weights": {"cand": 0.0, "safe": 100.0}}
    assert decision_changes(spec, rollback, moved.model_copy(update={"kill": True})) is None


def test_the_estimates_are_exported_as_gauges() -> None:
    from prometheus_client import REGISTRY

    from bridge import metrics

    _, exp = replay(ExperimentSpec(), "safe", ["cand", "safe"], _stream(random.Random(8), 400, 0.5))
    est = exp.estimates()
    metrics.export_estimates("gauged", est)

    def sample(variant: str, metric: str, stat: str) -> float | None:
        labels = {"dialplan": "gauged", "variant": variant, "metric": metric, "stat": stat}
        return REGISTRY.get_sample_value("callbridge_rollout_estimate", labels)

    assert sample("safe", "failure_rate", "value") == pytest.approx(est["safe"]["failure_rate"]["value"])
    vs = est["cand"]["greeting_ms"]["vs_safe"]
    assert [sample("cand", "greeting_ms", s) for s in ("diff", "ci95_low", "ci95_high")] == pytest.approx(
        [vs["diff"], *vs["ci95"]]
    )
    assert sample("safe", "greeting_ms", "diff") is None
