"""The kill switch's holder (bridge/supervisor/kill_switch.py, pure): whoever turns it on holds it, written on the flag
(and so in its audit entry and under its seal); only the holder or a role at least as high turns it off; a higher
role turning it on again takes it over; a switch whose flag names no holder counts as an admin's; and no other
change touches it."""

from __future__ import annotations

import pytest

from bridge.errors import ConfigError
from bridge.rollout import seal
from bridge.rollout.policy import RolloutFlag, legacy_spec
from bridge.rollout.store import decode_flag, encode_flag
from bridge.supervisor.kill_switch import (
    CLI_ROLE,
    HOLDER_FIELDS,
    Holder,
    KillHeld,
    holder_of,
    kill_changes,
    lift_refusal,
)

AT = "2025-03-04T05:06:07Z"
OFF = legacy_spec().default_flag()  # ga | beta (safe)


def killed(by: str, role: str, at: str = AT) -> RolloutFlag:
    return OFF.model_copy(update={"kill": True, "kill_by": by, "kill_role": role, "kill_at": at})


def apply(old: RolloutFlag, changes: dict[str, object], who: str, role: str) -> RolloutFlag:
    return old.model_copy(update=kill_changes("canary", old, changes, who, role, AT))


def test_turning_it_on_writes_the_holder_and_turning_it_off_clears_it() -> None:
    on = apply(OFF, {"kill": True}, "sam", "supervisor")
    assert (on.kill, on.kill_by, on.kill_role, on.kill_at) == (True, "sam", "supervisor", AT)
    assert holder_of(on) == Holder("sam", "supervisor", AT) and holder_of(OFF) is None
    off = apply(on, {"kill": False}, "sam", "supervisor")
    assert (off.kill, off.kill_by, off.kill_role, off.kill_at) == (False, "", "", "")


@pytest.mark.parametrize(
    ("holder", "who", "role", "allowed"),
    [
        (Holder("ada", "admin", AT), "sam", "supervisor", False),  # the case this rule exists for
        (Holder("ada", "admin", AT), "bea", "admin", True),  # another admin
        (Holder("ada", "admin", AT), "ada", "admin", True),
        (Holder("sam", "supervisor", AT), "sam", "supervisor", True),  # its setter
        (Holder("sam", "supervisor", AT), "sue", "supervisor", True),  # the same role
        (Holder("sam", "supervisor", AT), "ada", "admin", True),  # a higher role
        (Holder("sam", "supervisor", AT), "vic", "viewer", False),
        (Holder("ada", "admin", AT), "ada", "supervisor", True),  # its setter, whatever the role is since
        (Holder("", "admin", ""), "sam", "supervisor", False),  # no holder recorded: an admin's
        (Holder("", "admin", ""), "ops", CLI_ROLE, True),  # the command line on the node
        (Holder("ada", "admin", AT), "sam", "no-such-role", False),
    ],
)
def test_only_the_holder_or_a_role_at_least_as_high_turns_it_off(
    holder: Holder, who: str, role: str, allowed: bool
) -> None:
    assert (lift_refusal(holder, who, role) is None) is allowed


def test_a_refusal_names_the_holder_the_role_needed_and_the_role_asking() -> None:
    admins = killed("ada", "admin")
    with pytest.raises(KillHeld) as refused:
        kill_changes("canary", admins, {"kill": False}, "sam", "supervisor", AT)
    assert str(refused.value) == (
        f"the kill switch of canary is held by ada (admin, since {AT}): turning it off needs the admin role or ada, "
        "who turned it on (you are signed in as a supervisor)"
    )
    assert refused.value.to_json() == {
        "error": f"forbidden: {refused.value}",
        "held_by": {"by": "ada", "role": "admin", "at": AT},
        "needs": "admin",
    }
    with pytest.raises(KillHeld) as unnamed:
        kill_changes("canary", OFF.model_copy(update={"kill": True}), {"kill": False}, "sam", "supervisor", AT)
    assert "held by nobody recorded (counted as admin): turning it off needs the admin role (you are" in str(
        unnamed.value
    )


def test_a_kill_switch_with_no_holder_on_its_flag_is_an_admins() -> None:
    bare = OFF.model_copy(update={"kill": True})  # a flag written without holder fields, or the fail-safe
    assert holder_of(bare) == Holder("", "admin", "")
    assert holder_of(killed("x", "superuser")) == Holder("x", "admin", AT)  # a role no account has: an admin's
    assert apply(bare, {"kill": False}, "ada", "admin").kill is False
    retaken = apply(bare, {"kill": True}, "ada", "admin")  # an admin turning it on again puts a name on it
    assert (retaken.kill_by, retaken.kill_role) == ("ada", "admin")


def test_a_higher_role_turning_it_on_again_takes_it_over_the_same_role_does_not() -> None:
    sams = killed("sam", "supervisor")
    assert apply(sams, {"kill": True}, "sue", "supervisor") == sams  # nothing changes: no audit entry
    taken = apply(sams, {"kill": True}, "ada", "admin")
    assert holder_of(taken) == Holder("ada", "admin", AT)
    with pytest.raises(KillHeld):
        apply(taken, {"kill": False}, "sam", "supervisor")  # sam turned it on, and may not turn ada's off
    assert apply(killed("ada", "admin"), {"kill": True}, "sam", "supervisor") == killed("ada", "admin")


def test_no_other_change_turns_it_off_or_moves_its_holder() -> None:
    admins = killed("ada", "admin")
    weights = {"weights": {"ga": 100, "beta": 0}, "allow": {"ga": ["+15550100"]}, "sticky": "call"}
    after = apply(admins, weights, "ops", CLI_ROLE)
    assert (after.kill, holder_of(after)) == (True, Holder("ada", "admin", AT))
    assert after.weights == {"ga": 100, "beta": 0}  # the split the switch hides until it is turned off
    # a holder's field in a change is dropped: nobody names a holder but by turning the switch on
    forged = {"kill_by": "sam", "kill_role": "supervisor", "kill_at": "2000-01-01T00:00:00Z"}
    assert kill_changes("canary", admins, forged, "sam", "supervisor", AT) == {}
    with pytest.raises(KillHeld):
        kill_changes("canary", admins, {"kill": False, **forged}, "sam", "supervisor", AT)


def test_a_kill_that_is_not_a_yes_or_no_is_refused_and_a_spelled_one_is_read() -> None:
    with pytest.raises(KillHeld):  # "false" is off: checked like false
        kill_changes("canary", killed("ada", "admin"), {"kill": "false"}, "sam", "supervisor", AT)
    assert kill_changes("canary", OFF, {"kill": "true"}, "sam", "supervisor", AT)["kill_by"] == "sam"
    with pytest.raises(ConfigError, match="kill"):
        kill_changes("canary", OFF, {"kill": "maybe"}, "sam", "supervisor", AT)


def test_the_holder_is_stored_with_the_flag_and_covered_by_its_audit_entry() -> None:
    flag = killed("ada", "admin")
    stored = {str(k): str(v) for k, v in encode_flag(flag).items()}
    assert {name: stored[name] for name in HOLDER_FIELDS} == {"kill_by": "ada", "kill_role": "admin", "kill_at": AT}
    assert decode_flag(stored) == flag
    entry = ("1-0", {"dialplan": "canary", seal.FLAG_FIELD: seal.flag_text(stored)})
    keys = (b"k" * 32,)
    signed = ("1-0", seal.signed(keys, "1-0", entry[1]))
    assert seal.refusal(keys, "canary", {**stored, seal.AUDIT_FIELD: "1-0"}, [signed]) is None
    forged = {**stored, "kill_by": "sam", "kill_role": "supervisor", seal.AUDIT_FIELD: "1-0"}  # a raw HSET
    assert seal.refusal(keys, "canary", forged, [signed]) == "it differs from its audit entry 1-0"
