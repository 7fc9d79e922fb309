"""Which stored rollout flag is obeyed (bridge/rollout/seal.py): only one a valid audit entry of its dialplan holds
exactly, and no later valid entry changed; with keys, only entries signed with one of them count, and a change is
signed with the first. A refused flag that asks for the kill switch (or cannot say) keeps asking for it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bridge.rollout import evidence, records, seal

KEY = b"k" * 32
NEW, OLD, GONE = b"n" * 32, b"o" * 32, b"g" * 32  # a rotation: new first, old still listed; gone no more
FLAG = {"weights": '{"a": 100, "b": 0}', "kill": "0"}


def entry(entry_id: str, flag: dict[str, str], key: bytes | None = KEY, dialplan: str = "support") -> seal.Entry:
    fields = {"dialplan": dialplan, "who": "ops", "flag": seal.flag_text(flag), "os_user": "svc"}
    return entry_id, seal.signed((key,) if key is not None else (), entry_id, fields)


def stored(entry_id: str, flag: dict[str, str]) -> dict[str, str]:
    return {**flag, seal.AUDIT_FIELD: entry_id}


def test_a_flag_its_signed_entry_holds_is_obeyed() -> None:
    assert seal.refusal((KEY,), "support", stored("5-0", FLAG), [entry("5-0", FLAG)]) is None
    assert seal.refusal((), "support", stored("5-0", FLAG), [entry("5-0", FLAG, key=None)]) is None


def test_a_raw_write_a_replay_a_forged_entry_and_another_plans_entry_are_refused() -> None:
    keys = (KEY,)
    moved = {**FLAG, "weights": '{"a": 0, "b": 100}'}
    assert seal.refusal(keys, "support", moved, []) == "it names no audit entry (a write outside callbridge)"
    why = seal.refusal(keys, "support", stored("5-0", moved), [entry("5-0", FLAG)])
    assert why == "it differs from its audit entry 5-0"
    # an old signed flag put back: a later signed entry changed it since
    why = seal.refusal(keys, "support", stored("5-0", FLAG), [entry("5-0", FLAG), entry("6-0", moved)])
    assert why == "a later audit entry (6-0) changed it since"
    # an entry added without the key, or with another one, vouches for nothing and changes nothing
    forged = entry("7-0", moved, key=b"x" * 32)
    assert seal.refusal(keys, "support", stored("7-0", moved), [forged]) == (
        "its audit entry 7-0 is not signed with a key of rollout_key here (another key, or changed since)"
    )
    unsigned = entry("7-0", moved, key=None)
    assert seal.refusal(keys, "support", stored("7-0", moved), [unsigned]) == "its audit entry 7-0 is not signed"
    assert seal.refusal(keys, "support", stored("5-0", FLAG), [entry("5-0", FLAG), forged]) is None
    # an entry's fields changed after signing (who, reason): not valid any more
    entry_id, fields = entry("5-0", FLAG)
    assert not seal.valid_entry(keys, (entry_id, {**fields, "who": "someone else"}), "support")
    # another plan's entry
    assert seal.refusal(keys, "sales", stored("5-0", FLAG), [entry("5-0", FLAG)]) == (
        "its audit entry 5-0 is not a flag change of sales"
    )
    assert seal.refusal(keys, "support", stored("5-0", FLAG), []) == "its audit entry 5-0 is not in the audit stream"


def test_the_last_valid_flag_is_the_newest_valid_entry_of_the_plan() -> None:
    moved = {**FLAG, "kill": "1"}
    newest_first = [entry("9-0", moved, key=None), entry("8-0", FLAG, dialplan="sales"), entry("7-0", FLAG)]
    assert seal.last_valid((KEY,), "support", newest_first) == ("7-0", FLAG)
    assert seal.last_valid((), "support", newest_first) == ("9-0", moved)  # without a key any entry counts
    assert seal.last_valid((KEY,), "other", newest_first) is None


def test_changes_are_signed_with_the_first_key_and_any_listed_key_vouches() -> None:
    fields = {"dialplan": "support", "flag": seal.flag_text(FLAG)}
    by_rotation = seal.signed((NEW, OLD), "5-0", fields)
    assert by_rotation == seal.signed((NEW,), "5-0", fields)  # the first key signs
    assert by_rotation[seal.SIG_FIELD] == seal.entry_sig(NEW, "5-0", fields)
    # during a rotation (new,old) a change signed by either key is obeyed
    for signer in (NEW, OLD):
        assert seal.refusal((NEW, OLD), "support", stored("5-0", FLAG), [entry("5-0", FLAG, key=signer)]) is None
    assert seal.last_valid((NEW, OLD), "support", [entry("5-0", FLAG, key=OLD)]) == ("5-0", FLAG)
    # a key dropped from the list (or never listed) vouches for nothing
    for keys, signer in (((NEW,), OLD), ((NEW, OLD), GONE)):
        why = seal.refusal(keys, "support", stored("5-0", FLAG), [entry("5-0", FLAG, key=signer)])
        assert why is not None and "not signed with a key of rollout_key here" in why
        assert seal.last_valid(keys, "support", [entry("5-0", FLAG, key=signer)]) is None


def test_outcome_records_are_signed_with_the_first_key_and_any_listed_key_vouches() -> None:
    record = {"t": 1.0, "variant": "b", "outcome": "ok"}
    signed = seal.sign_record((NEW, OLD), record)
    assert signed[seal.SIG_FIELD] == seal.record_sig(NEW, record)
    assert seal.record_refusal((NEW, OLD), signed) is None
    assert seal.record_refusal((OLD, NEW), signed) is None  # its key listed second still vouches
    assert seal.record_refusal((NEW, OLD), seal.sign_record((OLD,), record)) is None
    assert seal.record_refusal((NEW,), seal.sign_record((OLD,), record)) == "bad signature"  # dropped: no evidence
    assert seal.record_refusal((NEW, OLD), seal.sign_record((GONE,), record)) == "bad signature"
    assert seal.record_refusal((NEW,), record) == "unsigned"
    assert seal.SIG_FIELD not in seal.sign_record((), record)


def test_a_refused_flag_asking_for_the_kill_switch_or_unreadable_says_kill() -> None:
    killed = {**FLAG, "kill": "1"}
    assert seal.says_kill(stored("5-0", killed), [])  # the hash says it
    assert seal.says_kill(stored("5-0", FLAG), [entry("5-0", killed)])  # its audit entry says it
    assert not seal.says_kill(stored("5-0", FLAG), [entry("5-0", FLAG)])
    assert not seal.says_kill(FLAG, [entry("5-0", killed)])  # an entry it does not name says nothing of it
    assert not seal.says_kill({"weights": FLAG["weights"]}, [])  # no kill field: the default, off
    for word in ("true", "on", "YES", "maybe", "2"):  # on, or neither on nor off: as good as on
        assert seal.says_kill({**FLAG, "kill": word}, []), word
    for word in ("0", "false", "off", "no"):
        assert not seal.says_kill({**FLAG, "kill": word}, []), word
    entry_id, fields = entry("5-0", FLAG)
    assert seal.says_kill(stored("5-0", FLAG), [(entry_id, {**fields, "flag": "{not json"})])
    assert seal.says_kill(stored("5-0", FLAG), [(entry_id, {**fields, "flag": json.dumps([1])})])


def test_entry_ids_follow_the_stream_and_the_clock() -> None:
    assert seal.next_id("0-0", 1000) == "1000-0"
    assert seal.next_id("1000-4", 1000) == "1000-5"
    assert seal.next_id("2000-0", 1000) == "2000-1"  # a clock behind the stream: after its last id still
    assert seal.os_user()


def test_a_signature_that_is_no_ascii_text_matches_nothing_and_raises_nothing() -> None:
    entry_id, fields = entry("5-0", FLAG)
    for sig in ("é" * 64, "\ufffd" * 64, "\ud800", ""):
        forged = (entry_id, {**fields, "sig": sig})
        assert not seal.valid_entry((KEY,), forged, "support")
        assert not seal.signed_with(KEY, forged)
        assert seal.refusal((KEY,), "support", stored("5-0", FLAG), [forged]) is not None
        assert seal.last_valid((KEY,), "support", [forged]) is None
    record = seal.sign_record((KEY,), {"call_id": "c1", "variant": "safe"})
    for bad in ("ü" * 64, 7, ["x"]):
        assert seal.record_refusal((KEY,), {**record, "sig": bad}) in ("bad signature", "unsigned")
    assert not seal.snapshot_valid((KEY,), "support", "spec", "1-0", b"state", "é" * 64)
    assert seal.same_mac(record["sig"], seal.record_sig(KEY, record))


def test_the_kept_states_format_follows_every_field_of_the_engines_dataclasses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slots dataclass is pickled by position: a release that adds a field must not take up an older state."""
    before = records.state_format()
    fields = [(f.name, f.type, f) for f in dataclasses.fields(evidence._Epoch)]
    grown = dataclasses.make_dataclass("_Epoch", [*fields, ("added", int, dataclasses.field(default=0))], slots=True)
    grown.__module__ = evidence.__name__
    try:
        monkeypatch.setattr(evidence, "_Epoch", grown)
        records.state_format.cache_clear()
        assert records.state_format() != before
        monkeypatch.undo()
        records.state_format.cache_clear()
        assert records.state_format() == before
        monkeypatch.setattr(records, "STATE_FORMAT", records.STATE_FORMAT + 1)
        records.state_format.cache_clear()
        assert records.state_format() != before
    finally:
        monkeypatch.undo()
        records.state_format.cache_clear()
