"""Which stored rollout flag is obeyed (bridge/rollout/seal.py): only one a valid audit entry of its dialplan holds
exactly, and no later valid entry changed; with a key, only signed entries count."""

from __future__ import annotations

from bridge.rollout import seal

KEY = b"k" * 32
FLAG = {"weights": '{"a": 100, "b": 0}', "kill": "0"}


def entry(entry_id: str, flag: dict[str, str], key: bytes | None = KEY, dialplan: str = "support") -> seal.Entry:
    fields = {"dialplan": dialplan, "who": "ops", "flag": seal.flag_text(flag), "os_user": "svc"}
    return entry_id, seal.signed(key, entry_id, fields)


def stored(entry_id: str, flag: dict[str, str]) -> dict[str, str]:
    return {**flag, seal.AUDIT_FIELD: entry_id}


def test_a_flag_its_signed_entry_holds_is_obeyed() -> None:
    assert seal.refusal(KEY, "support", stored("5-0", FLAG), [entry("5-0", FLAG)]) is None
    assert seal.refusal(None, "support", stored("5-0", FLAG), [entry("5-0", FLAG, key=None)]) is None


def test_a_raw_write_a_replay_a_forged_entry_and_another_plans_entry_are_refused() -> None:
    moved = {**FLAG, "weights": '{"a": 0, "b": 100}'}
    assert seal.refusal(KEY, "support", moved, []) == "it names no audit entry (a write outside callbridge)"
    why = seal.refusal(KEY, "support", stored("5-0", moved), [entry("5-0", FLAG)])
    assert why == "it differs from its audit entry 5-0"
    # an old signed flag put back: a later signed entry changed it since
    why = seal.refusal(KEY, "support", stored("5-0", FLAG), [entry("5-0", FLAG), entry("6-0", moved)])
    assert why == "a later audit entry (6-0) changed it since"
    # an entry added without the key, or with another one, vouches for nothing and changes nothing
    forged = entry("7-0", moved, key=b"x" * 32)
    assert seal.refusal(KEY, "support", stored("7-0", moved), [forged]) == (
        "its audit entry 7-0 is not a signed change of support"
    )
    assert seal.refusal(KEY, "support", stored("5-0", FLAG), [entry("5-0", FLAG), forged]) is None
    # an entry's fields changed after signing (who, reason): not valid any more
    entry_id, fields = entry("5-0", FLAG)
    assert not seal.valid_entry(KEY, (entry_id, {**fields, "who": "someone else"}), "support")
    # another plan's entry
    assert seal.refusal(KEY, "sales", stored("5-0", FLAG), [entry("5-0", FLAG)]) is not None
    assert seal.refusal(KEY, "support", stored("5-0", FLAG), []) == "its audit entry 5-0 is not in the audit stream"


def test_the_last_valid_flag_is_the_newest_valid_entry_of_the_plan() -> None:
    moved = {**FLAG, "kill": "1"}
    newest_first = [entry("9-0", moved, key=None), entry("8-0", FLAG, dialplan="sales"), entry("7-0", FLAG)]
    assert seal.last_valid(KEY, "support", newest_first) == ("7-0", FLAG)
    assert seal.last_valid(None, "support", newest_first) == ("9-0", moved)  # without a key any entry counts
    assert seal.last_valid(KEY, "other", newest_first) is None


def test_entry_ids_follow_the_stream_and_the_clock() -> None:
    assert seal.next_id("0-0", 1000) == "1000-0"
    assert seal.next_id("1000-4", 1000) == "1000-5"
    assert seal.next_id("2000-0", 1000) == "2000-1"  # a clock behind the stream: after its last id still
    assert seal.os_user()
