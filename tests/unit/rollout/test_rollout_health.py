"""Health, quality and cost per variant (no Redis): one call's numbers from its reports, a window's sums, the
rollback rule and its numbers, the price and shutdown tables, and the dialplan's rollout section."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from bridge import events as ev
from bridge.dialplan import check_file, load_dialplans, rollout_specs
from bridge.errors import ConfigError
from bridge.rollout import catalog
from bridge.rollout.health import CallStats, WindowStats, p95, should_rollback
from bridge.rollout.policy import RollbackRule, RolloutSpec, Variant

ROOT = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------------------------------------------ one call
def test_a_calls_numbers_come_from_its_reports_and_its_usage() -> None:
    stats = CallStats()
    for report in (
        ev.Answered(),
        ev.Latency("greeting", 812.34),
        ev.Latency("first_reply", 640.04),
        ev.Latency("first_reply", 9999.0),  # only the first counts
        ev.BargeIn("caller spoke over the agent", 12.0),
        ev.TruncateSent("item_1", 900),
        ev.TruncateSent("item_2", 0),
        ev.Truncated("item_1", 900),  # the second truncate was never confirmed
        ev.ToolCalled("end_call", "{}", '{"ok":true,"note":"bye"}'),
        ev.ToolCalled("teleport", "{}", '{"ok":false,"error":"unknown tool \'teleport\'"}'),
        ev.CallEnded("caller hung up", "completed", ev.EndedBy.CALLER),
    ):
        stats(report)
    stats.add_usage(ev.Usage(total_tokens=150, input_tokens=100, output_tokens=50))
    stats.add_usage(ev.Usage(total_tokens=30, input_tokens=20, output_tokens=10))
    stats.cost_usd = 0.0123456789
    assert stats.record() == {
        "outcome": "ok", "fallback": False, "failed": False, "greeting_ms": 812.3, "first_reply_ms": 640.0,
        "barge_ins": 1, "truncates": 2, "truncate_failures": 1, "tool_calls": 2, "tool_failures": 1,
        "input_tokens": 120, "output_tokens": 60, "cost_usd": 0.012346,
    }  # fmt: skip


def test_a_fallback_counts_as_a_connect_failure_of_the_variant_recovered_not_failed() -> None:
    stats = CallStats()
    stats.fallback = True  # the variant's model failed to connect; its fallback model took the call
    assert (stats.outcome, stats.failed) == ("connect_failure", False)
    stats(ev.RealtimeUnavailable("the fallback failed too", ev.ErrorClass.NETWORK))  # no model at all: a failed call
    assert (stats.outcome, stats.failed) == ("connect_failure", True)


def test_failed_calls_count_only_calls_that_failed_their_caller_and_the_rule_still_counts_the_models() -> None:
    records = [{"outcome": "connect_failure", "fallback": True, "failed": False}] * 2 + [{"outcome": "ok"}] * 2
    s = WindowStats.of(records)  # half the calls ran on the fallback model: none failed its caller
    assert (s.connect_failures, s.fallbacks, s.failed, s.failed_rate, s.failure_rate) == (2, 2, 0, 0.0, 0.5)
    shown = s.to_json()
    assert (shown["failed_rate"], shown["failure_rate"]) == (0.0, 0.5)
    reason = should_rollback("new", s, WindowStats.of([{"outcome": "ok"}]), RollbackRule(min_calls=4))
    assert reason is not None and "failure rate 50.0% (2 connection failures + 0 dropped of 4 calls" in reason
    assert reason.endswith("2 of the connection failures recovered on fallback"), reason
    older = WindowStats.of([{"outcome": "connect_failure", "fallback": True}, {"outcome": "dropped"}])  # no "failed"
    assert (older.failed, older.failures) == (1, 2)


LOST = ev.SessionLost(ev.ErrorClass.NETWORK, None, "connection reset", True)


@pytest.mark.parametrize(
    ("reports", "outcome"),
    [
        ([LOST, ev.Recovered(1)], "recovered"),  # the session came back: the call went on
        ([LOST], "dropped"),  # it ended without its session
        ([LOST, ev.Recovered(1), LOST], "dropped"),  # lost again, and not back
        ([LOST, ev.Recovered(1), LOST, ev.Recovered(2)], "recovered"),
        ([ev.RealtimeUnavailable("no session", ev.ErrorClass.NETWORK), ev.Recovered(1)], "recovered"),
        ([ev.RealtimeUnavailable("no session", ev.ErrorClass.NETWORK)], "connect_failure"),
        ([], "ok"),
    ],
)
def test_a_lost_session_that_came_back_is_recovered_not_dropped(reports: list[ev.Report], outcome: str) -> None:
    stats = CallStats()
    for report in [
        ev.Answered(),
        *reports,
        ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER),
    ]:
        stats(report)
    assert stats.outcome == outcome


def test_a_variant_whose_only_trouble_was_a_recovered_session_has_not_failed() -> None:
    window = WindowStats.of([{"outcome": "recovered"}, *[{"outcome": "ok"}] * 24])
    assert (window.calls, window.recovered, window.failures, window.failure_rate) == (25, 1, 0, 0.0)
    assert window.to_json()["recovered"] == 1 and window.to_json()["failure_rate"] == 0.0
    assert should_rollback("v2", window, WindowStats(), RULE) is None
    all_recovered = WindowStats.of([{"outcome": "recovered"}] * 25)
    assert all_recovered.failure_rate == 0.0 and should_rollback("v2", all_recovered, WindowStats(), RULE) is None
    # the same calls, dropped: a rollback, whose reason counts them
    dropped = WindowStats.of([{"outcome": "dropped"}] * 5 + [{"outcome": "ok"}] * 20)
    reason = should_rollback("v2", dropped, WindowStats(), RULE)
    assert reason is not None and "0 connection failures + 5 dropped of 25 calls" in reason


# ------------------------------------------------------------------------------------------------ a window
def test_a_window_sums_its_calls() -> None:
    records = [
        {"outcome": "ok", "first_reply_ms": 100.0 + i, "cost_usd": 0.01, "tool_calls": 1, "tool_failures": 0}
        for i in range(18)
    ]
    records += [
        {"outcome": "connect_failure", "fallback": True, "first_reply_ms": 3000.0, "cost_usd": 0.03},
        {"outcome": "dropped", "truncates": 4, "truncate_failures": 1, "tool_calls": 2, "tool_failures": 1},
    ]
    records[0]["greeting_ms"] = 900.0  # one call greeted; the others' callers spoke first
    s = WindowStats.of(records)
    assert (s.calls, s.connect_failures, s.dropped, s.fallbacks, s.failures, s.failed) == (20, 1, 1, 1, 2, 1)
    assert s.failure_rate == 0.1 and s.truncate_failure_rate == 0.25
    assert s.first_reply_p95_ms == 3000.0  # 19 samples: the 95th percentile is the 19th (nearest rank)
    assert s.greeting_p95_ms == 900.0
    assert s.function_call_success_rate == pytest.approx(19 / 20)
    assert (s.priced_calls, s.cost_per_call) == (19, pytest.approx(0.21 / 19))
    empty = WindowStats.of([])
    assert (empty.failure_rate, empty.greeting_p95_ms, empty.first_reply_p95_ms, empty.function_call_success_rate,
            empty.cost_per_call) == (0.0, None, None, None, None)  # fmt: skip
    assert p95([5.0]) == 5.0 and p95(range(1, 101)) == 95


# ------------------------------------------------------------------------------------------------ the rollback rule
RULE = RollbackRule(min_calls=20, failure_rate_threshold=0.1, window_s=300)


def stats(calls: int, fails: int = 0, dropped: int = 0, **kw: Any) -> WindowStats:
    return WindowStats(calls=calls, connect_failures=fails, dropped=dropped, **kw)


@pytest.mark.parametrize(
    ("variant", "safe", "fires"),
    [
        (stats(40, 8), stats(100, 1, 1), True),  # 20 % vs 2 %: roll back
        (stats(40, 2, 4), stats(100), True),  # dropped sessions count too
        (stats(40, 8), stats(0), True),  # no safe traffic: 0 %
        (stats(19, 19), stats(100), False),  # under the minimum sample
        (stats(40, 4), stats(100), False),  # 10 % is not above 10 %
        (stats(40, 8), stats(100, 30), False),  # the safe one is worse: not the variant's fault
        (stats(40, 8), stats(100, 20), False),  # equal rates: not worse
        (stats(0), stats(0), False),
    ],
)
def test_the_failure_rate_rule(variant: WindowStats, safe: WindowStats, fires: bool) -> None:
    reason = should_rollback("v2", variant, safe, RULE)
    assert (reason is not None) == fires, reason
    if reason:
        assert reason.startswith(f"v2: failure rate {variant.failure_rate:.1%}")
        assert "exceeds 10.0%" in reason and "in 300 s" in reason


def test_the_optional_checks_fire_past_their_thresholds_and_name_the_numbers() -> None:
    rule = RULE.model_copy(
        update={"first_audio_p95_excess_ms": 500, "barge_in_failure_excess": 0.1, "function_call_success_drop": 0.2,
                "cost_ratio_threshold": 1.5}
    )  # fmt: skip
    safe = stats(50, greeting_p95_ms=700.0, first_reply_p95_ms=500.0, truncates=20, truncate_failures=1,
                 tool_calls=10, tool_failures=0, priced_calls=50, cost_usd=1.0)  # fmt: skip
    fine = stats(40, greeting_p95_ms=1100.0, first_reply_p95_ms=1000.0, truncates=10, truncate_failures=1,
                 tool_calls=10, tool_failures=1, priced_calls=40, cost_usd=1.2)  # fmt: skip
    assert should_rollback("v2", fine, safe, rule) is None
    bad = stats(40, greeting_p95_ms=1300.0, first_reply_p95_ms=1100.0, truncates=10, truncate_failures=3,
                tool_calls=10, tool_failures=4, priced_calls=40, cost_usd=1.7)  # fmt: skip
    reason = should_rollback("v2", bad, safe, rule)
    assert reason is not None
    assert "greeting p95 1300 ms is 600 ms above the safe variant's 700 ms (allowed: 500 ms)" in reason
    assert "first-reply p95 1100 ms is 600 ms above the safe variant's 500 ms (allowed: 500 ms)" in reason
    assert "barge-in recovery failures 30.0% (3 of 10 truncates) vs the safe variant's 5.0%" in reason
    assert "function-call success 60.0% (6 of 10) vs the safe variant's 100.0%" in reason
    assert "cost per call $0.0425 is 2.12x the safe variant's $0.0200 (allowed: 1.5x)" in reason
    assert should_rollback("v2", bad, safe, RULE) is None  # the same numbers with the checks off: no rollback


# ------------------------------------------------------------------------------------------------ the tables
def test_prices_per_model_with_dated_snapshots_and_overrides(tmp_path: Path) -> None:
    prices = catalog.load_prices()
    assert prices.as_of and prices.per_tokens == 1_000_000
    assert prices.cost("gpt-realtime", 1_000_000, 500_000) == pytest.approx(32.0 + 32.0)
    assert prices.price("gpt-realtime-2025-08-28") == prices.price("gpt-realtime")  # a snapshot: its model's price
    successor = prices.price("gpt-realtime-2.1")
    assert successor is not None and successor.assumed  # not published when the table was dated: marked so
    assert prices.cost("gpt-realtime-9", 10, 10) is None  # no price: no estimate, never a guess
    own = tmp_path / "prices.yaml"
    own.write_text("as_of: '2026-11-01'\nper_tokens: 1000\nmodels: {gpt-realtime: {input: 1, output: 2}}\n")
    assert catalog.load_prices(own).cost("gpt-realtime", 1000, 1000) == 3.0
    own.write_text("models: {gpt-realtime: {input: cheap}}\n")
    with pytest.raises(ConfigError) as exc:
        catalog.load_prices(own)
    assert exc.value.field == "models.gpt-realtime"


def test_a_variant_on_a_model_shutting_down_is_due_sixty_days_before() -> None:
    spec = RolloutSpec(
        safe="old",
        variants=(
            Variant(name="old", dialect="ga", model="gpt-realtime", weight=1),
            Variant(name="new", dialect="ga", model="gpt-realtime-2.1", fallback_model="gpt-realtime-mini"),
        ),
    )
    found = catalog.shutdowns(("support", v) for v in spec.variants)
    assert sorted((s.dialplan, s.variant, s.model, s.role, s.date) for s in found) == [
        ("support", "new", "gpt-realtime-mini", "fallback model", dt.date(2027, 1, 20)),
        ("support", "old", "gpt-realtime", "model", dt.date(2027, 1, 20)),
    ]
    assert catalog.due(found, dt.date(2026, 11, 20)) == []  # 61 days ahead
    due = catalog.due(found, dt.date(2026, 11, 21))  # 60 days ahead
    assert len(due) == 2
    assert next(d for d in due if d.variant == "old").warning(dt.date(2026, 11, 23)) == (
        "dialplan support, variant old: model gpt-realtime has an announced shutdown on 2027-01-20 "
        "(in 58 days); move its traffic to another variant"
    )


def test_no_shipped_plan_names_a_model_with_an_announced_shutdown() -> None:
    specs = rollout_specs(load_dialplans(ROOT / "dialplans"))
    assert catalog.shutdowns((dp, v) for dp, spec in specs.items() for v in spec.variants) == []


# ------------------------------------------------------------------------------------------------ the dialplan
def test_the_shipped_support_plan_is_a_rollout_of_two_ga_variants() -> None:
    [support] = [p for p in load_dialplans(ROOT / "dialplans") if p.name == "support"]
    spec = support.rollout_spec
    assert spec is not None and spec.safe == "gpt-realtime-2.1"
    assert [(v.name, v.dialect, v.model, v.models()) for v in spec.variants] == [
        ("gpt-realtime-2.1", "ga", "gpt-realtime-2.1", ("gpt-realtime-2.1", None)),
        ("gpt-realtime-2.1-mini", "ga", "gpt-realtime-2.1-mini", ("gpt-realtime-2.1-mini", "gpt-realtime-2.1")),
    ]
    assert spec.default_flag().weights == {"gpt-realtime-2.1": 100, "gpt-realtime-2.1-mini": 0}
    profile = support.variant_profile(spec.variants[1])
    assert (profile.model, profile.voice, profile.tools) == ("gpt-realtime-2.1-mini", "alloy", support.profile.tools)


ROLLOUT = """name: x
match: ['1']
dialect: rollout
rollout:
  safe: a
  variants:
    - {name: a, dialect: ga, model: gpt-realtime, weight: 1}
    - {name: b, dialect: %s, model: m, voice: verse, profile: %s}
"""


@pytest.mark.parametrize(
    ("dialect", "profile", "field", "words"),
    [
        ("gamma", "{}", "rollout.variants[1].dialect", "unknown dialect 'gamma'"),
        ("ga", "{speed: 9}", "rollout.variants[1].profile.speed", "less than or equal to 1.5"),
        ("ga", "{temperature: 0.8}", "rollout.variants[1].profile.temperature", "(dialect ga)"),
        ("ga", "{tools: [teleport]}", "rollout.variants[1].profile", "unknown built-in tool"),
    ],
)
def test_a_variants_errors_name_its_field(tmp_path: Path, dialect: str, profile: str, field: str, words: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(ROLLOUT % (dialect, profile))
    [error] = check_file(path)
    assert error.field == field and words in error.message, error


def test_a_variants_profile_overrides_apply_to_its_calls_only(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(ROLLOUT % ("beta", "{temperature: 0.8, extra: {}}"))
    assert check_file(path) == []
    [plan] = load_dialplans(tmp_path)
    assert plan.rollout_spec is not None
    a, b = (plan.variant_profile(v) for v in plan.rollout_spec.variants)
    assert (a.temperature, a.voice, a.model) == (None, "alloy", "gpt-realtime")
    assert (b.temperature, b.voice, b.model) == (0.8, "verse", "m")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\nmatch: ['1']\ndialect: ga\nrollout: {safe: a, variants: [{name: a, dialect: ga, model: m}]}\n",
         "rollout"),
        ("name: x\nmatch: ['1']\ndialect: rollout\nrollout: {safe: b, variants: [{name: a, dialect: ga, model: m}]}\n",
         "rollout"),
        ("name: x\nmatch: ['1']\ndialect: rollout\nrollout: {safe: a, variants: [{name: A!, dialect: ga, model: m}]}\n",
         "rollout.variants[0].name"),
    ],
)  # fmt: skip
def test_a_rollout_section_needs_a_rollout_plan_and_its_safe_variant(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    errors = check_file(path)
    assert errors and errors[0].field == field, errors
