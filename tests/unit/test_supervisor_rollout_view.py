"""The rollout card's description (pure): which rollback rule the plan really runs, the calls that ran on the fallback
model, the experiment's metric labels, and the verdicts following the flag until the first call under it ends."""

from __future__ import annotations

from typing import Any

from bridge.rollout import records
from bridge.rollout.engine import State
from bridge.rollout.experiment import GUARDRAILS, Experiment
from bridge.rollout.health import WindowStats
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.policy import RolloutFlag, RolloutSpec, legacy_spec
from bridge.rollout.store import AuditEntry
from bridge.supervisor.accounts import allows
from bridge.supervisor.rollout import KILL_NEEDS
from bridge.supervisor.rollout_view import (
    FIRST,
    HEALTH_COLUMNS,
    METRIC_LABELS,
    ROLLBACK_PENDING,
    WAITING,
    as_applied,
    dialplan_panel,
    follow_flag,
)

VARIANTS = [{"name": "ga", "dialect": "ga", "model": "gpt-realtime", "fallback_model": "gpt-4o-realtime-preview"},
            {"name": "beta", "dialect": "beta", "model": "gpt-4o-realtime-preview", "weight": 100}]  # fmt: skip


def test_the_window_rule_is_shown_only_for_a_plan_that_names_one() -> None:
    # the worker runs the sliding-window rule only when the plan's rollout names it (bridge.serve.outcome)
    named = RolloutSpec.model_validate({"safe": "beta", "variants": VARIANTS, "rollback": {"min_calls": 5}})
    unnamed = RolloutSpec.model_validate({"safe": "beta", "variants": VARIANTS})
    for spec, shown in ((named, True), (unnamed, False), (legacy_spec(), False)):
        panel = dialplan_panel("canary", spec, spec.default_flag(), False, {})
        assert panel["rollback_rule"] is shown, spec
    panel = dialplan_panel("canary", named, named.default_flag(), False, {})
    assert panel["health"]["rollback"]["min_calls"] == 5  # the rule's numbers, for its text


def test_each_variants_calls_on_its_fallback_model_are_beside_its_connect_failures_and_not_failed_calls() -> None:
    stats = WindowStats.of([{"outcome": "connect_failure", "fallback": True, "failed": False}, {"outcome": "ok"}])
    spec = legacy_spec()
    panel = dialplan_panel("canary", spec, spec.default_flag(), False, {"ga": stats})
    columns = dict(HEALTH_COLUMNS)
    assert (columns["failed_rate"], columns["connect_failures"]) == ("Failed calls", "Connect failures")
    assert columns["failure_rate"] == METRIC_LABELS["failure_rate"] == "Model failure rate"  # one name, one figure
    ga, beta = panel["health"]["rows"]
    assert (ga["variant"], ga["calls"], ga["fallbacks"], beta["fallbacks"]) == ("ga", 2, 1, 0)
    assert (ga["connect_failures"], ga["failed_rate"], ga["failure_rate"]) == (1, 0.0, 0.5)


def test_every_metric_of_the_engine_has_a_label() -> None:
    assert set(METRIC_LABELS) == set(GUARDRAILS)


def test_the_kill_switch_is_a_supervisors_and_an_admins_not_a_viewers() -> None:
    assert [role for role in ("viewer", "supervisor", "admin") if allows(role, KILL_NEEDS)] == ["supervisor", "admin"]


THREE = RolloutSpec.model_validate({
    "safe": "base",
    "variants": [{"name": "base", "dialect": "ga", "model": "gpt-realtime-2.1", "weight": 40},
                 {"name": "ga", "dialect": "ga", "model": "gpt-realtime-2.1-mini", "weight": 60},
                 {"name": "mini", "dialect": "ga", "model": "gpt-realtime", "weight": 0}],
    "experiment": {"auto_promote": [25, 60, 95]},
})  # fmt: skip


def _experiment(weights: dict[str, float], rolled_back: str | None = None) -> dict[str, Any]:
    """What ``records.current`` gives after one call of each variant drawn under ``weights``."""
    exp = Experiment(THREE.experiment, THREE.safe, THREE.names, weights=weights)
    for i, name in enumerate(THREE.names):
        exp.feed({"t": 10.0 + i, "started": 10.0 + i, "call_id": f"c{i}", "variant": name, "outcome": "ok",
                  "epoch": epoch_of(weights, False), "shares": {n: w / 100 for n, w in weights.items()}})  # fmt: skip
    if rolled_back is not None:
        exp.cands[rolled_back].state = State.ROLLED_BACK
    return {"epoch": exp.epoch, "decisions": [], "estimates": exp.estimates(), "srm": None}


def test_the_verdict_follows_the_flag_until_a_call_under_it_ends() -> None:
    at_60 = {"base": 40.0, "ga": 60.0, "mini": 0.0}
    engine = _experiment(at_60, rolled_back="mini")
    assert engine["estimates"]["ga"]["verdict"]["share"] == 60.0
    # the flag on the engine's epoch: the engine's verdicts as they are
    same = follow_flag(engine, THREE, RolloutFlag(weights=at_60))
    assert same["pending"] is None and same["flag_epoch"] == engine["epoch"]
    assert same["estimates"] == engine["estimates"]
    # a step to 95 % taken, no call under it ended yet: the flag's step, waiting for its calls
    shown = follow_flag(engine, THREE, RolloutFlag(weights={"base": 5, "ga": 95, "mini": 0}))
    assert shown["pending"] == {"epoch": epoch_of({"base": 5, "ga": 95}, False), "kill": False,
                                "shares": {"base": 5.0, "ga": 95.0, "mini": 0.0}}  # fmt: skip
    ga = shown["estimates"]["ga"]["verdict"]
    assert (ga["share"], ga["holdout"], ga["waiting_for"], ga["more_calls"], ga["more_time_s"]) == (
        95.0, THREE.experiment.holdout, [WAITING], None, None)  # fmt: skip
    assert ga["next"] == f"wait: no call at 95 % has ended yet; the verdict follows from {WAITING}" and ga["pending"]
    assert ga["state"] == "testing" and ga["marks"] == engine["estimates"]["ga"]["verdict"]["marks"]
    mini = shown["estimates"]["mini"]["verdict"]  # rolled back: still says so, at no weight
    assert mini["next"].startswith("none: rolled back") and (mini["share"], mini["waiting_for"]) == (0.0, [])
    assert shown["estimates"]["ga"]["failure_rate"] == engine["estimates"]["ga"]["failure_rate"]  # the figures kept
    assert "verdict" not in shown["estimates"]["base"]
    # a step that is not the last: no holdout yet
    assert follow_flag(engine, THREE, RolloutFlag(weights={"base": 75, "ga": 25}))["estimates"]["ga"]["verdict"][
        "holdout"] is None  # fmt: skip
    # the kill switch: every call on the safe variant, whatever the weights
    killed = follow_flag(engine, THREE, RolloutFlag(weights=at_60, kill=True))
    assert killed["pending"]["kill"] is True and killed["pending"]["shares"] == {"base": 100.0, "ga": 0.0, "mini": 0.0}
    killed_ga = killed["estimates"]["ga"]["verdict"]
    assert killed_ga["next"] == "hold: the kill switch sends every call to base" and killed_ga["waiting_for"] == []
    # before any call of the plan has ended: the flag's step all the same, waiting for the plan's first calls
    empty = follow_flag(_experiment_empty(), THREE, RolloutFlag(weights=at_60))
    assert empty["pending"] is not None and empty["estimates"]["ga"]["verdict"]["share"] == 60.0
    assert empty["estimates"]["ga"]["verdict"]["waiting_for"] == [FIRST]


def _experiment_empty() -> dict[str, Any]:
    exp = Experiment(THREE.experiment, THREE.safe, THREE.names, weights=THREE.default_flag().weights)
    return {"epoch": exp.epoch, "decisions": [], "estimates": exp.estimates(), "srm": None}


def test_weights_in_the_same_proportions_are_the_engines_epoch_and_wait_for_nothing() -> None:
    flag = RolloutFlag(weights={"base": 1, "ga": 1})  # 1:1 is 50:50
    assert follow_flag(_experiment({"base": 50.0, "ga": 50.0, "mini": 0.0}), THREE, flag)["pending"] is None


def test_the_card_shows_the_decisions_the_audit_holds_never_one_the_flag_refused() -> None:
    """Two promotions computed on one epoch, one taken by the flag (its audit entry), one refused (the flag had moved):
    the card lists the taken one with when it was applied, and draws its mark alone; a rollback the flag has not
    followed is pending, not rolled back."""
    spec = legacy_spec()  # ga and beta (safe)
    flag = RolloutFlag.model_validate(spec.default_flag().model_dump() | {"weights": {"ga": 10.0, "beta": 90.0}})
    taken = {"t": 100.0, "variant": "ga", "action": "promote", "reason": "ga no worse", "evidence": {"epoch": "e1"},
             "weights": {"ga": 10.0, "beta": 90.0}}  # fmt: skip
    refused = {**taken, "t": 160.0, "evidence": {"epoch": "e0"}, "weights": {"ga": 30.0, "beta": 70.0}}
    marks = [{"t": 100.0, "action": "promote"}, {"t": 160.0, "action": "promote"}, {"t": 170.0, "action": "rearm"}]
    experiment: dict[str, Any] = {
        "epoch": "e1",
        "decisions": [taken, refused],
        "estimates": {"ga": {"calls": 5, "verdict": {"state": State.ROLLED_BACK, "marks": marks, "next": "x"}}},
    }
    change = ({"weights": {"ga": 5.0}}, {"weights": {"ga": 10.0}}, {"action": "promote", "epoch": "e1"})
    entry = AuditEntry("5-0", "canary", records.AUTO_DECISION_WHO, "1970-01-01T00:01:43.000Z", "ga no worse", *change)
    person = AuditEntry("6-0", "canary", "ada", "1970-01-01T00:02:00Z", "back to 10", {}, {"weights": {"ga": 10.0}})
    shown = as_applied(experiment, [person, entry], flag)
    assert [(d["t"], d["applied_at"], d["changed_flag"]) for d in shown["decisions"]] == [(100.0, 103.0, True)]
    assert shown["refused_decisions"] == 1
    verdict = shown["estimates"]["ga"]["verdict"]
    assert [(m["t"], m["action"]) for m in verdict["marks"]] == [(100.0, "promote"), (170.0, "rearm")]
    assert verdict["state"] == ROLLBACK_PENDING  # the flag still gives ga 10 %: not rolled back yet
    gone = RolloutFlag.model_validate(flag.model_dump() | {"weights": {"ga": 0.0, "beta": 100.0}})
    assert as_applied(experiment, [entry], gone)["estimates"]["ga"]["verdict"]["state"] == State.ROLLED_BACK
