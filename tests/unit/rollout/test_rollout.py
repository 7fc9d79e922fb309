"""The pure rollout decisions: variants, bucketing by weight, precedence, model rules and voices, migration of the
flags written before variants existed (no Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import ConfigError, ConnectError, ModelRefused, is_refusal
from bridge.events import ErrorClass
from bridge.rollout.policy import (
    BUCKETS,
    Decision,
    RolloutFlag,
    RolloutSpec,
    Variant,
    bucket,
    check_flag,
    compatible_voice,
    decide,
    draw,
    fallback,
    legacy_spec,
    migrate,
    next_healthy,
    normalize_number,
    parse_weights,
    shares,
    validate_flag,
    weights_after_refusal,
)

CALLERS = [f"+1555{n:07d}" for n in range(10_000)]
SPEC = RolloutSpec(
    safe="old",
    variants=(
        Variant(name="old", dialect="ga", model="gpt-realtime", weight=100),
        Variant(name="new", dialect="ga", model="gpt-realtime-2.1", fallback_model="gpt-realtime"),
    ),
)
THREE = RolloutSpec(
    safe="c",
    variants=(
        Variant(name="a", dialect="ga", model="gpt-realtime-2.1"),
        Variant(name="b", dialect="beta", model="gpt-4o-realtime-preview", voice="verse"),
        Variant(name="c", dialect="ga", model="gpt-realtime"),
    ),
)


def flag(**kw: Any) -> RolloutFlag:
    return RolloutFlag(**kw)


def share_of(spec: RolloutSpec, f: RolloutFlag, name: str, callers: list[str] = CALLERS) -> float:
    return sum(decide(spec, f, c, f"call-{i}").variant == name for i, c in enumerate(callers)) / len(callers)


# ------------------------------------------------------------------------------------------------ bucketing
def test_ten_thousand_callers_at_25_75_give_25_plus_minus_2_percent() -> None:
    share = share_of(SPEC, flag(weights={"new": 25, "old": 75}), "new")
    assert 0.23 <= share <= 0.27, share


@pytest.mark.parametrize("percent", [0, 1, 10, 50, 90, 100])
def test_share_follows_the_weights(percent: float) -> None:
    f = flag(weights={"new": percent, "old": 100 - percent})
    share = share_of(SPEC, f, "new")
    assert abs(share - percent / 100) <= 0.02, share
    if percent in (0, 100):
        assert share == percent / 100
    assert shares(SPEC, f) == {"old": 100 - percent, "new": percent}


def test_weights_are_relative_and_three_variants_split_by_them() -> None:
    f = flag(weights={"a": 1, "b": 2, "c": 1})
    assert shares(THREE, f) == {"a": 25.0, "b": 50.0, "c": 25.0}
    for name, expected in (("a", 0.25), ("b", 0.5), ("c", 0.25)):
        assert abs(share_of(THREE, f, name) - expected) <= 0.02
    b = decide(THREE, f, next(c for c in CALLERS if decide(THREE, f, c, "x").variant == "b"), "x")
    assert (b.dialect, b.model, b.voice) == ("beta", "gpt-4o-realtime-preview", "verse")  # the variant's own voice


def test_the_buckets_are_laid_out_in_the_listed_order_with_the_safe_variant_last() -> None:
    f = flag(weights={"a": 10, "b": 30, "c": 60})
    assert [draw(THREE, f, b)[0] for b in (0, 999, 1000, 3999, 4000, BUCKETS - 1)] == ["a", "a", "b", "b", "c", "c"]
    assert draw(THREE, f, 1500) == ("b", 1000, 4000)


def test_the_same_caller_always_gets_the_same_variant() -> None:
    f = flag(weights={"new": 25, "old": 75})
    for caller in CALLERS[:500]:
        assert len({decide(SPEC, f, caller, f"call-{k}").variant for k in range(5)}) == 1, caller


def test_caller_spellings_share_one_bucket() -> None:
    assert normalize_number("sip:+1 (555) 000-0042@pbx.example") == "+15550000042"
    assert normalize_number("tel:+15550000042") == "+15550000042"
    assert normalize_number("5550000042") == "5550000042"
    assert normalize_number("Anonymous") == "anonymous"
    f = flag(weights={"new": 50, "old": 50})
    a = decide(SPEC, f, "+1 555 000 0042", "x")
    b = decide(SPEC, f, "sip:+15550000042@host", "y")
    assert (a.variant, a.bucket) == (b.variant, b.bucket)


def test_raising_the_other_variants_weight_only_moves_callers_from_the_safe_one() -> None:
    low, high = flag(weights={"new": 10, "old": 90}), flag(weights={"new": 30, "old": 70})
    for i, caller in enumerate(CALLERS[:2000]):
        if decide(SPEC, low, caller, str(i)).variant == "new":
            assert decide(SPEC, high, caller, str(i)).variant == "new"


def test_the_salt_reshuffles_and_the_bucket_is_sha256_based() -> None:
    assert 0 <= bucket("s", "+1555") < BUCKETS
    assert bucket("s", "+1555") == bucket("s", "+1555")
    one, two = flag(weights={"new": 25, "old": 75}, salt="one"), flag(weights={"new": 25, "old": 75}, salt="two")
    a = {c for c in CALLERS if decide(SPEC, one, c, "").variant == "new"}
    b = {c for c in CALLERS if decide(SPEC, two, c, "").variant == "new"}
    assert len(a & b) < 0.4 * len(a)  # independent draws overlap about 25 %


def test_sticky_per_call_draws_each_call_afresh() -> None:
    f = flag(weights={"new": 50, "old": 50}, sticky="call")
    names = [decide(SPEC, f, "+15550000001", f"call-{k}").variant for k in range(400)]
    assert 0.4 <= names.count("new") / 400 <= 0.6
    assert decide(SPEC, f, "+15550000001", "call-7") == decide(SPEC, f, "+15559999999", "call-7")  # call id only
    assert decide(SPEC, f, "+1", "call-7").reason.startswith("call bucket")


def test_an_anonymous_caller_is_bucketed_by_call() -> None:
    f = flag(weights={"new": 50, "old": 50})
    assert {decide(SPEC, f, "anonymous", f"call-{k}").variant for k in range(50)} == {"new", "old"}
    assert decide(SPEC, f, "anonymous", "c").reason.startswith("call bucket")
    assert decide(SPEC, f, "+15550000001", "c").reason.startswith("caller bucket")


def test_variants_the_spec_lacks_are_left_out_and_no_weight_means_the_safe_one() -> None:
    assert shares(SPEC, flag(weights={"gone": 100, "new": 100})) == {"old": 0.0, "new": 100.0}
    assert {decide(SPEC, flag(weights={"gone": 5}), c, "x").variant for c in CALLERS[:200]} == {"old"}


# ------------------------------------------------------------------------------------------------ precedence
def test_allow_list_forces_its_variant_and_deny_list_sends_to_the_safe_one() -> None:
    at_zero = flag(weights={"old": 100}, allow={"new": ("+15550000001",)})
    assert decide(SPEC, at_zero, "sip:+1-555-000-0001@x", "c") == Decision(
        "new", "ga", "gpt-realtime-2.1", "alloy", "allow list of new", None, "gpt-realtime"
    )
    at_hundred = flag(weights={"new": 100}, deny={"new": ("+15550000002",)})
    denied = decide(SPEC, at_hundred, "+15550000002", "c")
    assert (denied.variant, denied.model) == ("old", "gpt-realtime")
    assert denied.reason.endswith("; deny list of new -> old")
    assert decide(SPEC, at_hundred, "+15550000003", "c").variant == "new"


def test_kill_switch_beats_both_lists_and_the_weights() -> None:
    f = flag(weights={"new": 100}, allow={"new": ("+15550000001",)}, kill=True)
    for caller in ("+15550000001", "+15550000009"):
        d = decide(SPEC, f, caller, "c")
        assert (d.variant, d.reason, d.bucket) == ("old", "kill switch", None)
    assert shares(SPEC, f) == {"old": 100.0, "new": 0.0}


def test_a_number_is_on_one_allow_list_and_never_allowed_and_denied_by_one_variant() -> None:
    with pytest.raises(ValueError, match="allow lists of both a and b"):
        RolloutFlag(allow={"a": ("+1555",), "b": ("sip:+1555@x",)})
    with pytest.raises(ValueError, match="both the allow and the deny list of a"):
        RolloutFlag(allow={"a": ("+1555",)}, deny={"a": ("+1 555",)})
    RolloutFlag(allow={"a": ("+1555",)}, deny={"b": ("+1555",)})  # allowed on a, kept off b: consistent


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"weights": {"nope": 1}}, "weights.nope"),
        ({"weights": {"old": 0, "new": 0}}, "weights"),
        ({"weights": {"old": 1}, "deny": {"old": ["+1555"]}}, "deny.old"),
        ({"weights": {"old": 1}, "allow": {"ga": ["+1555"]}}, "allow.ga"),
        ({"weights": {"old": -1}}, "weights"),
        ({"weights": {"old": 1}, "sticky": "worker"}, "sticky"),
        ({"weights": {"old": 1}, "nope": 1}, "nope"),
        ({"weights": {"old": 1}, "fallback_voice": "marin"}, "fallback_voice"),
        ({"weights": {"old": 1}, "window_s": 5}, "window_s"),
    ],
)
def test_invalid_flags_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_flag(data, "test", SPEC)
    assert exc.value.field == field, exc.value


def test_the_default_flag_is_the_dialplans_weights() -> None:
    assert SPEC.default_flag().weights == {"old": 100, "new": 0}
    unweighted = RolloutSpec(safe="b", variants=(Variant(name="a", dialect="ga", model="m"),
                                                 Variant(name="b", dialect="ga", model="m")))  # fmt: skip
    assert unweighted.default_flag().weights == {"a": 0, "b": 100}
    check_flag(SPEC.default_flag(), SPEC, "test")
    ruled = SPEC.model_copy(update={"rollback": SPEC.rollback.model_copy(update={"min_calls": 3})})
    assert ruled.default_flag().min_calls == 3


@pytest.mark.parametrize(
    ("text", "field"), [("a=1,b", "weights.b"), ("a=x", "weights.a"), ("=3", "weights.?"), ("a=-1", "weights.a"),
                        ("", "weights")]
)  # fmt: skip
def test_weights_on_the_command_line(text: str, field: str) -> None:
    assert parse_weights("gpt-realtime=75, gpt-realtime-2.1=25") == {"gpt-realtime": 75, "gpt-realtime-2.1": 25}
    with pytest.raises(ConfigError) as exc:
        parse_weights(text)
    assert exc.value.field == field


# ------------------------------------------------------------------------------------------------ models, voices
def test_model_rules_of_a_variant() -> None:
    auto = Variant(name="v", dialect="ga", model="gpt-realtime-2.1", fallback_model="gpt-realtime")
    assert auto.models() == ("gpt-realtime-2.1", "gpt-realtime")
    assert auto.model_copy(update={"model_selection": "new"}).models() == ("gpt-realtime-2.1", None)
    assert auto.model_copy(update={"model_selection": "legacy"}).models() == ("gpt-realtime", None)
    assert Variant(name="v", dialect="ga", model="m").models() == ("m", None)  # auto with no fallback model
    with pytest.raises(ValueError, match="legacy uses fallback_model"):
        Variant(name="v", dialect="ga", model="m", model_selection="legacy")


@pytest.mark.parametrize("voice", ["marin", "cedar"])
def test_marin_and_cedar_only_on_gpt_realtime_models(voice: str) -> None:
    on_ga = decide(legacy_spec(), flag(weights={"ga": 1}), "+1", "c", voice=voice)
    assert on_ga.voice == voice
    on_beta = decide(legacy_spec(), flag(weights={"beta": 1}, fallback_voice="verse"), "+1", "c", voice=voice)
    assert on_beta.voice == "verse"
    assert f"voice {voice} -> verse" in on_beta.reason
    assert compatible_voice(voice, "gpt-realtime-2025-08-28", "alloy") == voice
    assert compatible_voice(voice, "gpt-4o-mini-realtime-preview", "alloy") == "alloy"
    assert compatible_voice("echo", "gpt-4o-realtime-preview", "alloy") == "echo"


def test_a_model_that_fails_to_connect_falls_back_with_the_flags_fallback_voice() -> None:
    spec = RolloutSpec(
        safe="old",
        variants=(
            Variant(name="old", dialect="ga", model="gpt-realtime", weight=1),
            Variant(name="new", dialect="ga", model="gpt-realtime-2.1", voice="marin",
                    fallback_model="gpt-4o-realtime-preview"),
        ),
    )  # fmt: skip
    f = flag(weights={"new": 1}, fallback_voice="verse")
    first = decide(spec, f, "+1", "c", voice="alloy")
    assert (first.model, first.voice, first.fallback_model) == ("gpt-realtime-2.1", "marin", "gpt-4o-realtime-preview")
    second = fallback(first, voice="marin", fallback_voice=f.fallback_voice)
    assert second is not None
    assert (second.variant, second.dialect, second.model, second.voice, second.fallback_model) == (
        "new", "ga", "gpt-4o-realtime-preview", "verse", None,
    )  # fmt: skip
    assert "gpt-realtime-2.1 failed to connect -> gpt-4o-realtime-preview with voice verse" in second.reason
    assert fallback(second, voice="marin", fallback_voice="verse") is None


def test_the_fallback_voice_must_exist_everywhere() -> None:
    with pytest.raises(ValueError, match="only on gpt-realtime"):
        RolloutFlag(fallback_voice="marin")


def test_a_spec_names_its_safe_variant_and_unique_variants() -> None:
    v = Variant(name="a", dialect="ga", model="m")
    with pytest.raises(ValueError, match="'b' is not one of the variants"):
        RolloutSpec(safe="b", variants=(v,))
    with pytest.raises(ValueError, match="unique"):
        RolloutSpec(safe="a", variants=(v, v))


# ------------------------------------------------------------------------------------------------ migration
def test_a_ga_percent_flag_migrates_to_the_same_callers_on_the_same_variants() -> None:
    legacy = {"ga_percent": "25", "allow": ["+15550000001"], "deny": ["+15550000002"], "kill": "0",
              "sticky": "caller", "salt": "callbridge", "model_selection": "auto", "ga_model": "gpt-realtime",
              "legacy_model": "gpt-4o-realtime-preview", "fallback_voice": "alloy", "window_s": "300",
              "min_calls": "20", "failure_rate_threshold": "0.2"}  # fmt: skip
    data, notes = migrate(legacy, legacy_spec())
    assert notes == []  # the model settings were the defaults: nothing lost
    f = validate_flag(data, "test", legacy_spec())
    assert f.weights == {"ga": 25, "beta": 75}
    assert (f.allow, f.deny) == ({"ga": ("+15550000001",)}, {"ga": ("+15550000002",)})
    for i, caller in enumerate(CALLERS[3:3000]):  # the old rule (off the lists): GA iff bucket < ga_percent * 100
        was_ga = bucket("callbridge", caller) < 2500
        assert (decide(legacy_spec(), f, caller, str(i)).variant == "ga") == was_ga, caller
    assert decide(legacy_spec(), f, "+15550000001", "x").variant == "ga"
    assert decide(legacy_spec(), flag(weights={"ga": 100}, deny=f.deny), "+15550000002", "x").variant == "beta"


def test_a_legacy_flag_on_a_plan_with_variants_moves_the_candidate_and_notes_lost_settings() -> None:
    data, notes = migrate({"ga_percent": "10", "model_selection": "legacy", "allow": []}, SPEC)
    assert data == {"weights": {"old": 90.0, "new": 10.0}, "allow": {}}
    assert notes == ["model_selection=legacy is no longer a flag setting: set it on the variants in the dialplan"]
    unchanged, none = migrate({"weights": {"old": 1}, "allow": {"new": ["+1"]}}, SPEC)
    assert (unchanged, none) == ({"weights": {"old": 1}, "allow": {"new": ["+1"]}}, [])


def test_no_call_goes_to_a_refused_variant_whatever_decided_it() -> None:
    live = RolloutSpec(
        safe="ga",
        variants=(
            Variant(name="ga", dialect="ga", model="gpt-realtime"),
            Variant(name="ga2", dialect="ga", model="gpt-realtime-2.1"),
            Variant(name="live", dialect="live", model="gpt-live-1"),
        ),
    )
    f = flag(weights={"ga": 100}, allow={"live": ["+15550000001"]})
    d = decide(live, f, "+15550000009", "c1", refused={"ga"})
    assert (d.variant, d.model) == ("ga2", "gpt-realtime-2.1")
    assert d.reason.endswith("-> ga; ga refused by the service -> ga2")
    assert decide(live, f.model_copy(update={"kill": True}), "+15550000009", "c2", refused={"ga"}).variant == "ga2"
    assert decide(live, f, "+15550000001", "c3", refused={"live"}).variant == "ga"  # the allow list's variant
    assert decide(live, f, "+15550000009", "c4", refused={"ga", "ga2", "live"}).variant == "ga"  # nothing healthy
    # in a call being set up, only a variant of the call's dialect will do
    assert next_healthy(live, ["ga"], dialect="ga") == "ga2"
    assert next_healthy(live, ["ga", "ga2"], dialect="ga") is None
    assert next_healthy(live, ["ga", "ga2"]) == "live"


def test_a_refused_variants_weight_goes_to_the_safe_one_or_is_shared_by_the_healthy_ones() -> None:
    f = flag(weights={"a": 30, "b": 10, "c": 60})
    assert weights_after_refusal(THREE, f, {"a"}) == {"a": 0.0, "b": 10.0, "c": 90.0}
    assert weights_after_refusal(THREE, f, {"c"}) == {"a": 75.0, "b": 25.0, "c": 0.0}
    assert weights_after_refusal(THREE, flag(weights={"c": 100}), {"c"}) == {"a": 50.0, "b": 50.0, "c": 0.0}
    assert weights_after_refusal(THREE, f, {"a", "b", "c"}) is None  # nowhere to go
    assert weights_after_refusal(THREE, flag(weights={"c": 100}), {"a"}) is None  # nothing to move


@pytest.mark.parametrize(
    ("code", "refusal"),
    [("model_not_found", True), ("invalid_model", True), ("server_error", False), ("invalid_api_key", False)],
)
def test_the_services_refusal_of_a_model_is_its_own_error(code: str, refusal: bool) -> None:
    assert is_refusal(code) is refusal
    exc = ModelRefused("gpt-realtime", "model_not_found", "The model 'gpt-realtime' does not exist")
    assert isinstance(exc, ConnectError) and not exc.retryable and exc.error_class is ErrorClass.PROTOCOL
    assert str(exc) == "model gpt-realtime refused: model_not_found (The model 'gpt-realtime' does not exist)"
