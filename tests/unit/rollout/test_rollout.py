"""The pure rollout decisions: bucketing, precedence, models and voices, and the rollback rule (no Redis)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.rollout.policy import (
    BUCKETS,
    Decision,
    RolloutFlag,
    WindowStats,
    bucket,
    compatible_voice,
    decide,
    fallback,
    normalize_number,
    should_rollback,
)

CALLERS = [f"+1555{n:07d}" for n in range(10_000)]


def ga_share(flag: RolloutFlag, callers: list[str]) -> float:
    return sum(decide(flag, c, f"call-{i}").dialect == "ga" for i, c in enumerate(callers)) / len(callers)


# ------------------------------------------------------------------------------------------------ bucketing
def test_ten_thousand_callers_at_25_percent_give_25_plus_minus_2_percent_ga() -> None:
    share = ga_share(RolloutFlag(ga_percent=25), CALLERS)
    assert 0.23 <= share <= 0.27, share


@pytest.mark.parametrize("percent", [0, 1, 10, 50, 90, 100])
def test_share_follows_the_percentage(percent: float) -> None:
    share = ga_share(RolloutFlag(ga_percent=percent), CALLERS)
    assert abs(share - percent / 100) <= 0.02, share
    if percent in (0, 100):
        assert share == percent / 100


def test_the_same_caller_always_gets_the_same_dialect() -> None:
    flag = RolloutFlag(ga_percent=25)
    for caller in CALLERS[:500]:
        dialects = {decide(flag, caller, f"call-{k}").dialect for k in range(5)}
        assert len(dialects) == 1, caller


def test_caller_spellings_share_one_bucket() -> None:
    assert normalize_number("sip:+1 (555) 000-0042@pbx.example") == "+15550000042"
    assert normalize_number("tel:+15550000042") == "+15550000042"
    assert normalize_number("5550000042") == "5550000042"
    assert normalize_number("Anonymous") == "anonymous"
    flag = RolloutFlag(ga_percent=50)
    a = decide(flag, "+1 555 000 0042", "x")
    b = decide(flag, "sip:+15550000042@host", "y")
    assert (a.dialect, a.bucket) == (b.dialect, b.bucket)


def test_raising_the_percentage_only_moves_callers_to_ga() -> None:
    low, high = RolloutFlag(ga_percent=10), RolloutFlag(ga_percent=30)
    for i, caller in enumerate(CALLERS[:2000]):
        if decide(low, caller, str(i)).dialect == "ga":
            assert decide(high, caller, str(i)).dialect == "ga"


def test_the_salt_reshuffles_and_the_bucket_is_sha256_based() -> None:
    assert 0 <= bucket("s", "+1555") < BUCKETS
    assert bucket("s", "+1555") == bucket("s", "+1555")
    a = {c for c in CALLERS if decide(RolloutFlag(ga_percent=25, salt="one"), c, "").dialect == "ga"}
    b = {c for c in CALLERS if decide(RolloutFlag(ga_percent=25, salt="two"), c, "").dialect == "ga"}
    assert len(a & b) < 0.4 * len(a)  # independent draws overlap about 25 %


def test_sticky_per_call_draws_each_call_afresh() -> None:
    flag = RolloutFlag(ga_percent=50, sticky="call")
    dialects = [decide(flag, "+15550000001", f"call-{k}").dialect for k in range(400)]
    assert 0.4 <= dialects.count("ga") / 400 <= 0.6
    assert decide(flag, "+15550000001", "call-7") == decide(flag, "+15559999999", "call-7")  # by call id only
    assert decide(flag, "+1", "call-7").reason.startswith("call bucket")


def test_an_anonymous_caller_is_bucketed_by_call() -> None:
    flag = RolloutFlag(ga_percent=50)
    dialects = {decide(flag, "anonymous", f"call-{k}").dialect for k in range(50)}
    assert dialects == {"beta", "ga"}
    assert decide(flag, "anonymous", "c").reason.startswith("call bucket")
    assert decide(flag, "+15550000001", "c").reason.startswith("caller bucket")


# ------------------------------------------------------------------------------------------------ precedence
def test_allow_list_forces_ga_and_deny_list_forces_beta() -> None:
    at_zero = RolloutFlag(ga_percent=0, allow=("+15550000001",))
    assert decide(at_zero, "sip:+1-555-000-0001@x", "c") == Decision(
        "ga", "gpt-realtime", "alloy", "allow list", None, "gpt-4o-realtime-preview"
    )
    at_hundred = RolloutFlag(ga_percent=100, deny=("+15550000002",))
    assert decide(at_hundred, "+15550000002", "c").dialect == "beta"
    assert decide(at_hundred, "+15550000002", "c").reason == "deny list"
    assert decide(at_hundred, "+15550000003", "c").dialect == "ga"


def test_kill_switch_beats_both_lists_and_the_percentage() -> None:
    flag = RolloutFlag(ga_percent=100, allow=("+15550000001",), kill=True)
    for caller in ("+15550000001", "+15550000009"):
        d = decide(flag, caller, "c")
        assert (d.dialect, d.reason, d.bucket) == ("beta", "kill switch", None)


def test_deny_beats_allow_and_a_number_cannot_be_on_both_lists() -> None:
    with pytest.raises(ValidationError, match="both the allow and the deny list"):
        RolloutFlag(allow=("+1555",), deny=("sip:+1555@x",))


@pytest.mark.parametrize("bad", [{"ga_percent": 101}, {"ga_percent": -1}, {"sticky": "worker"}, {"nope": 1}])
def test_invalid_flags_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RolloutFlag.model_validate(bad)


def test_a_default_flag_keeps_everyone_on_beta() -> None:
    assert {decide(RolloutFlag(), c, "x").dialect for c in CALLERS[:1000]} == {"beta"}


# ------------------------------------------------------------------------------------------------ models, voices
def test_model_selection() -> None:
    auto = RolloutFlag(ga_percent=100)
    assert (decide(auto, "+1", "c").model, decide(auto, "+1", "c").fallback_model) == (
        "gpt-realtime",
        "gpt-4o-realtime-preview",
    )
    beta = decide(RolloutFlag(ga_percent=0), "+1", "c")
    assert (beta.model, beta.fallback_model) == ("gpt-4o-realtime-preview", None)
    new = decide(RolloutFlag(ga_percent=0, model_selection="new"), "+1", "c")
    assert (new.dialect, new.model, new.fallback_model) == ("beta", "gpt-realtime", None)
    legacy = decide(RolloutFlag(ga_percent=100, model_selection="legacy"), "+1", "c")
    assert (legacy.dialect, legacy.model) == ("ga", "gpt-4o-realtime-preview")


@pytest.mark.parametrize("voice", ["marin", "cedar"])
def test_marin_and_cedar_only_on_gpt_realtime_models(voice: str) -> None:
    on_ga = decide(RolloutFlag(ga_percent=100), "+1", "c", voice=voice)
    assert on_ga.voice == voice
    on_beta = decide(RolloutFlag(ga_percent=0, fallback_voice="verse"), "+1", "c", voice=voice)
    assert on_beta.voice == "verse"
    assert f"voice {voice} -> verse" in on_beta.reason
    assert compatible_voice(voice, "gpt-realtime-2025-08-28", "alloy") == voice
    assert compatible_voice(voice, "gpt-4o-mini-realtime-preview", "alloy") == "alloy"
    assert compatible_voice("echo", "gpt-4o-realtime-preview", "alloy") == "echo"


def test_a_ga_model_that_fails_to_connect_falls_back_to_legacy_with_a_compatible_voice() -> None:
    flag = RolloutFlag(ga_percent=100)
    first = decide(flag, "+1", "c", voice="marin")
    second = fallback(first, voice="marin", fallback_voice=flag.fallback_voice)
    assert second is not None
    assert (second.dialect, second.model, second.voice, second.fallback_model) == (
        "ga",
        "gpt-4o-realtime-preview",
        "alloy",
        None,
    )
    assert "failed to connect" in second.reason
    assert fallback(second, voice="marin", fallback_voice="alloy") is None


def test_the_fallback_voice_must_exist_everywhere() -> None:
    with pytest.raises(ValidationError, match="only on gpt-realtime"):
        RolloutFlag(fallback_voice="marin")


# ------------------------------------------------------------------------------------------------ rollback
FLAG = RolloutFlag(ga_percent=25, min_calls=20, failure_rate_threshold=0.1, window_s=300)


@pytest.mark.parametrize(
    ("ga", "beta", "fires"),
    [
        (WindowStats(40, 8, 0), WindowStats(100, 1, 1), True),  # 20 % vs 2 %: roll back
        (WindowStats(40, 2, 4), WindowStats(100, 0, 0), True),  # dropped sessions count too
        (WindowStats(40, 8, 0), WindowStats(0, 0, 0), True),  # no beta traffic: 0 %
        (WindowStats(19, 19, 0), WindowStats(100, 0, 0), False),  # under the minimum sample
        (WindowStats(40, 4, 0), WindowStats(100, 0, 0), False),  # 10 % is not above 10 %
        (WindowStats(40, 8, 0), WindowStats(100, 30, 0), False),  # beta is worse: not GA's fault
        (WindowStats(40, 8, 0), WindowStats(100, 20, 0), False),  # equal rates: not worse
        (WindowStats(0, 0, 0), WindowStats(0, 0, 0), False),
    ],
)
def test_rollback_decision_table(ga: WindowStats, beta: WindowStats, fires: bool) -> None:
    reason = should_rollback(ga, beta, FLAG)
    assert (reason is not None) == fires, reason
    if reason:
        assert reason.startswith(f"GA failure rate {ga.failure_rate:.1%}")
        assert "exceeds 10.0%" in reason and "in 300 s" in reason


def test_no_rollback_when_nothing_is_on_ga_by_percentage() -> None:
    bad = WindowStats(100, 90, 0)
    assert should_rollback(bad, WindowStats(), FLAG.model_copy(update={"ga_percent": 0})) is None
    assert should_rollback(bad, WindowStats(), FLAG.model_copy(update={"kill": True})) is None


def test_window_stats_from_outcome_counts() -> None:
    s = WindowStats.from_counts({"ok": 10, "connect_failure": 3, "dropped": 2})
    assert (s.calls, s.failures, round(s.failure_rate, 3)) == (15, 5, 0.333)
    assert WindowStats().failure_rate == 0.0
