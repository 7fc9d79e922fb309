"""The rollout card's description (pure): which rollback rule the plan really runs, the calls that ran on the fallback
model, and the experiment's metric labels."""

from __future__ import annotations

from bridge.rollout.experiment import GUARDRAILS
from bridge.rollout.health import WindowStats
from bridge.rollout.policy import RolloutSpec, legacy_spec
from bridge.supervisor.accounts import allows
from bridge.supervisor.rollout import KILL_NEEDS
from bridge.supervisor.rollout_view import HEALTH_COLUMNS, METRIC_LABELS, dialplan_panel

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


def test_each_variants_calls_on_its_fallback_model_are_a_health_column() -> None:
    stats = WindowStats.of([{"outcome": "connect_failure", "fallback": True}, {"outcome": "ok"}])
    spec = legacy_spec()
    panel = dialplan_panel("canary", spec, spec.default_flag(), False, {"ga": stats})
    assert ("fallbacks", "On the fallback model") in HEALTH_COLUMNS
    ga, beta = panel["health"]["rows"]
    assert (ga["variant"], ga["calls"], ga["fallbacks"], beta["fallbacks"]) == ("ga", 2, 1, 0)


def test_every_metric_of_the_engine_has_a_label() -> None:
    assert set(METRIC_LABELS) == set(GUARDRAILS)


def test_the_kill_switch_is_a_supervisors_and_an_admins_not_a_viewers() -> None:
    assert [role for role in ("viewer", "supervisor", "admin") if allows(role, KILL_NEEDS)] == ["supervisor", "admin"]
