"""The rollout's rows on the wallboard (pure): each variant's calls now, handled and abandoned in the hour, on its
fallback model (not in trouble), and one verdict word from what the flag applies, never from what was computed."""

from __future__ import annotations

from bridge.rollout.policy import RolloutFlag, legacy_spec
from bridge.rollout.store import AUTO_ROLLBACK_WHO, AuditEntry
from bridge.supervisor.wall_rollout import rows

SPEC = legacy_spec()  # ga and beta (safe)


def _flag(**changes: object) -> RolloutFlag:
    return RolloutFlag.model_validate(SPEC.default_flag().model_dump() | changes)


def _audit(who: str, new: dict[str, object], reason: str = "why") -> AuditEntry:
    return AuditEntry("1-0", "canary", who, "2026-11-28T10:00:00Z", reason, {}, new)


LIVE = [
    {"dialplan": "canary", "variant": "ga", "fallback": True, "worker_alive": True},  # recovered: not in trouble
    {"dialplan": "canary", "variant": "ga", "in_outage": True, "worker_alive": True},
    {"dialplan": "canary", "variant": "beta", "worker_alive": True},
    {"dialplan": "desk", "variant": "ga", "in_outage": True},  # another plan
]
ENDED = [
    {"dialplan": "canary", "variant": "ga", "outcome": "completed"},
    {"dialplan": "canary", "variant": "ga", "outcome": "abandoned"},
    {"dialplan": "canary", "variant": "beta", "outcome": "failed"},
    {"dialplan": "canary", "variant": "beta", "outcome": "completed_elsewhere"},
]


def test_each_variant_counts_its_own_calls_and_a_fallback_call_is_no_trouble() -> None:
    shown = rows("canary", SPEC, _flag(weights={"beta": 90, "ga": 10}), LIVE, ENDED, [])
    by = {v["variant"]: v for v in shown["variants"]}
    assert by["ga"] == {"variant": "ga", "share": 10.0, "calls_now": 2, "handled": 1, "abandoned": 1,
                          "fallback": 1, "trouble": 1, "verdict": "testing"}  # fmt: skip
    assert by["beta"]["calls_now"] == 1 and by["beta"]["handled"] == 1 and by["beta"]["verdict"] == "safe"
    assert shown["kill"] is None and shown["safe"] == SPEC.safe


def test_the_verdict_is_the_flags_rolled_back_only_once_the_flag_is() -> None:
    computed_only = [_audit("ada", {"weights": {"beta": 90, "ga": 10}})]  # a rollback the flag refused left no entry
    assert (
        rows("canary", SPEC, _flag(weights={"beta": 90, "ga": 10}), [], [], computed_only)["variants"][0]["verdict"]
        == "testing"
    )
    applied = [_audit(AUTO_ROLLBACK_WHO, {"weights": {"beta": 100, "ga": 0}}), *computed_only]
    flag = _flag(weights={"beta": 100, "ga": 0})
    assert {v["variant"]: v["verdict"] for v in rows("canary", SPEC, flag, [], [], applied)["variants"]} == {
        "beta": "safe",
        "ga": "rolled back",
    }
    guarded = [AuditEntry("2-0", "canary", "auto-experiment", "2026-11-28T10:00:00Z", "worse", {},
                          {"weights": {"beta": 100, "ga": 0}}, {"action": "rollback", "epoch": "e"})]  # fmt: skip
    assert rows("canary", SPEC, flag, [], [], guarded)["variants"][0]["verdict"] == "rolled back"
    by_hand = [_audit("ada", {"weights": {"beta": 100, "ga": 0}})]
    assert rows("canary", SPEC, flag, [], [], by_hand)["variants"][0]["verdict"] == "off"
    assert rows("canary", SPEC, _flag(weights={"beta": 0, "ga": 100}), [], [], [])["variants"][0]["verdict"] == (
        "promoted"
    )


def test_a_kill_switch_on_names_its_holder_and_the_reason_it_was_turned_on_with() -> None:
    flag = _flag(weights={"beta": 50, "ga": 50}, kill=True, kill_by="olga", kill_role="supervisor",
                 kill_at="2026-11-28T10:52:31Z")  # fmt: skip
    audit = [_audit("olga", {"kill": True}, "ga drops calls"), _audit("ada", {"kill": False}, "fixed")]
    shown = rows("canary", SPEC, flag, [], [], audit)
    assert shown["kill"] == {"by": "olga", "role": "supervisor", "at": "2026-11-28T10:52:31Z",
                             "reason": "ga drops calls"}  # fmt: skip
    assert [v["verdict"] for v in shown["variants"]] == ["held", "safe"]
