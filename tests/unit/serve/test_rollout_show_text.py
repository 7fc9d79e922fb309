"""``callbridge rollout show``'s text (pure): the window's rollback rule only for a plan whose file names one, and a
verdict's calls to go with how long they take at the current traffic, in words."""

from __future__ import annotations

import datetime as dt

import pytest

from bridge.rollout.health import WindowStats
from bridge.rollout.policy import RolloutSpec, legacy_spec
from bridge.serve.experiment_cli import how_long, verdict_text
from bridge.serve.rollout_cli import Shown, describe

VARIANTS = [{"name": "ga", "dialect": "ga", "model": "gpt-realtime", "fallback_model": "gpt-4o-realtime-preview"},
            {"name": "beta", "dialect": "beta", "model": "gpt-4o-realtime-preview", "weight": 100}]  # fmt: skip
TODAY = dt.date(2026, 1, 1)


def _text(spec: RolloutSpec) -> str:
    window = {n: WindowStats() for n in spec.names}
    return describe(Shown("canary", spec, spec.default_flag(), "alloy", True, window), TODAY)


def test_show_names_the_window_rule_only_for_a_plan_that_has_one() -> None:
    named = RolloutSpec.model_validate({"safe": "beta", "variants": VARIANTS, "rollback": {"min_calls": 5}})
    unnamed = RolloutSpec.model_validate({"safe": "beta", "variants": VARIANTS})
    text = _text(named)
    assert "\nrollback      over 300 s, at least 5 calls of a variant: model failure rate > 20.0%" in text, text
    assert "health        last 300 s\n" in text
    for spec in (unnamed, legacy_spec()):
        text = _text(spec)
        assert "\nrollback " not in text and "failure rate >" not in text, text
        assert "health        last 300 s (for reference: no rollback rule)\n" in text, text


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (20, "about a minute"),
        (89, "about a minute"),
        (600, "about 10 minutes"),
        (89 * 60, "about 89 minutes"),
        (90 * 60, "about 2 hours"),
        (3 * 3600 + 600, "about 3 hours"),
        (35 * 3600, "about 35 hours"),
        (36 * 3600, "about 2 days"),
        (3 * 86400 + 3600, "about 3 days"),
        (20 * 86400, "about 20 days"),
    ],
)
def test_a_duration_is_said_in_the_unit_people_use(seconds: float, said: str) -> None:
    assert how_long(seconds) == said


def test_a_verdict_says_how_long_its_calls_take_at_the_current_traffic() -> None:
    verdict = {"state": "testing", "share": 5.0, "next": "promote to 25 %", "more_calls": 240,
               "more_time_s": 3 * 86400 + 7200}  # fmt: skip
    assert verdict_text(verdict).endswith("; about 240 more candidate calls (about 3 days at current traffic)")
    unknown = {**verdict, "more_time_s": None}  # too few calls on the step to know the traffic
    assert verdict_text(unknown).endswith("; about 240 more candidate calls")


def test_a_verdict_names_the_latest_probe_of_the_safe_variants_model() -> None:
    verdict = {"state": "testing", "share": 95.0, "holdout": 5.0, "next": "watch: last step, rollback armed"}
    opened = {"at": "2027-01-15T08:00:11.000Z", "at_unix": 1_800_000_011.0, "ok": True, "ms": 412.4}
    assert verdict_text({**verdict, "probe": opened}).endswith(
        "; latest probe of the safe variant's model: opened in 412 ms at 2027-01-15T08:00:11.000Z"
    )
    failed = {**opened, "ok": False, "ms": None, "error": "timeout"}
    assert verdict_text({**verdict, "probe": failed}).endswith("model: failed (timeout) at 2027-01-15T08:00:11.000Z")
    assert "probe" not in verdict_text({**verdict, "probe": None})
