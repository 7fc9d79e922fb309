"""The console's marks on a call (bridge/supervisor/flags.py): each flag from the stream entries that raise it, held
``now`` while it lasts, kept once raised; the activity words, and the steady word shown for at least a second."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.dialplan import Watch
from bridge.store.read import StreamEntry
from bridge.supervisor.flags import STEADY_S, CallWatch, Flag, Steady, call_marks, worst


def entries(*items: tuple[str, float, dict[str, str]]) -> list[StreamEntry]:
    return [StreamEntry(f"{i + 1}-0", kind, "", t, data) for i, (kind, t, data) in enumerate(items)]


def flags(marks: list[dict[str, Any]]) -> dict[str, bool]:
    return {m["flag"]: m["now"] for m in marks}


def phase(new: str, t: float) -> tuple[str, float, dict[str, str]]:
    return ("phase", t, {"old": "", "new": new})


def test_a_call_with_nothing_wrong_has_no_mark() -> None:
    calm = entries(("ringing", 1, {}), ("answered", 1.1, {}), phase("LISTENING", 1.1), ("speech_started", 2, {}),
                   ("speech_stopped", 3, {}), phase("THINKING", 3.2), phase("SPEAKING", 3.9), phase("LISTENING", 5),
                   ("ended", 6, {"outcome": "completed"}))  # fmt: skip
    assert call_marks(calm) == []
    assert worst([]) == ""


def test_a_hold_is_marked_now_while_it_lasts_and_kept_after_it() -> None:
    w = CallWatch()
    w.feed(entries(("hold_started", 1, {})))
    assert flags(w.marks()) == {"on_hold": True}
    assert w.activity({"phase": "LISTENING"}) == "on hold"
    w.feed(entries(("hold_ended", 2, {"held_s": "1.0"})))
    assert flags(w.marks()) == {"on_hold": False}
    assert w.marks()[0] == {"flag": "on_hold", "label": "on hold", "severity": "warn", "now": False}


def test_a_soft_hold_is_a_hold() -> None:
    w = CallWatch()
    w.feed(entries(("wait_hold", 1, {"on": "1"})))
    assert flags(w.marks()) == {"on_hold": True}
    w.feed(entries(("wait_hold", 2, {"on": "0"})))
    assert flags(w.marks()) == {"on_hold": False}


def test_a_lost_session_is_an_outage_until_it_is_back_and_then_a_recovered_one() -> None:
    w = CallWatch()
    w.feed(entries(("realtime_closed", 1, {"retryable": "1", "error_class": "network"})))
    assert flags(w.marks()) == {"outage": True}
    assert worst(w.marks()) == "bad"
    assert w.activity({"phase": "RECOVERING"}) == "reconnecting"
    w.feed(entries(("recovered", 1.2, {})))
    assert flags(w.marks()) == {"outage": False, "recovered": False}
    assert [m["flag"] for m in w.marks()] == ["outage", "recovered"]  # the table's order


def test_errors_a_failover_and_a_failed_end_are_errors() -> None:
    stored: list[tuple[str, dict[str, str]]] = [
        ("error", {"code": "server_error", "error_class": "server"}),
        ("recovery_failed", {}),
        ("failed_over", {"failover": "goodbye"}),
        ("ended", {"outcome": "failed", "ended_by": "fault"}),
    ]
    for kind, data in stored:
        assert flags(call_marks(entries((kind, 1, data)))) == {"error": False}, kind
    assert call_marks(entries(("ended", 1, {"outcome": "transferred", "ended_by": "agent"}))) == []


def test_a_long_wait_is_one_above_the_plans_threshold() -> None:
    watch = Watch(silence_ms=2000)
    assert call_marks(entries(("longest_silence", 1, {"longest_silence_ms": "2000"})), watch) == []
    marked = call_marks(entries(("longest_silence", 1, {"longest_silence_ms": "2000.5"})), watch)
    assert flags(marked) == {"long_silence": False}


def test_a_slow_reply_is_one_slower_than_the_plans_target() -> None:
    watch = Watch(reply_ms=1500)
    quick = entries(("speech_stopped", 10, {}), phase("THINKING", 10.2), phase("SPEAKING", 11.4))
    assert call_marks(quick, watch) == []
    slow = entries(("speech_stopped", 10, {}), ("wait_hold", 11, {"on": "1"}), ("wait_hold", 11.6, {"on": "0"}),
                   phase("SPEAKING", 11.6))  # fmt: skip
    assert "slow_agent" in flags(call_marks(slow, watch))  # the hold audio did not answer the caller


def test_a_caller_still_waiting_is_slow_as_of_now() -> None:
    w = CallWatch(Watch(reply_ms=1500))
    w.feed(entries(("speech_stopped", 100, {}), phase("THINKING", 100.3)))
    assert w.marks(now=101.0) == []
    assert w.activity({"phase": "THINKING"}) == "waiting for the agent"
    assert flags(w.marks(now=101.6)) == {"slow_agent": False}


def test_the_callers_own_hold_is_marked_while_it_lasts_and_is_no_wait_for_the_agent() -> None:
    """The caller stops, then puts the call on hold with their phone for 30 s: "held by caller" now, no slow agent
    however long the hold; off hold, the wait goes on from where it was, and an answer 0.8 s of felt wait after the
    caller stopped is quick. The mark stays once the hold is over."""
    w = CallWatch(Watch(reply_ms=1500))
    w.feed(entries(("speech_stopped", 100, {}), phase("THINKING", 100.2), ("caller_held", 100.5, {})))
    assert flags(w.marks(now=130.0)) == {"caller_hold": True}
    assert w.activity({"phase": "THINKING"}) == "held by the caller"
    w.feed(entries(("caller_resumed", 130.5, {"held_s": "30.0"})))
    assert flags(w.marks(now=130.7)) == {"caller_hold": False}  # 0.7 s waited so far, not 30.7
    w.feed(entries(phase("SPEAKING", 130.8)))
    assert flags(w.marks(now=131.0)) == {"caller_hold": False}
    assert w.marks()[0] == {"flag": "caller_hold", "label": "held by caller", "severity": "info", "now": False}
    # held past the plan's target with no hold of the caller's: slow, as before
    slow = entries(("speech_stopped", 100, {}), phase("SPEAKING", 102))
    assert "slow_agent" in flags(call_marks(slow, Watch(reply_ms=1500)))


def test_a_turn_the_caller_spoke_again_in_is_not_measured() -> None:
    w = CallWatch(Watch(reply_ms=1000))
    w.feed(entries(("speech_stopped", 1, {}), ("speech_started", 1.5, {}), ("speech_stopped", 5, {}),
                   phase("SPEAKING", 5.5)))  # fmt: skip
    assert w.marks(now=6) == []


def test_repeated_barge_ins_from_the_plans_count() -> None:
    two = entries(("barge_in", 1, {}), ("barge_in", 2, {}))
    assert call_marks(two, Watch(barge_ins=3)) == []
    assert flags(call_marks([*two, *entries(("barge_in", 3, {}))], Watch(barge_ins=3))) == {"barge_ins": False}


@pytest.mark.parametrize(
    ("state", "told", "word"),
    [
        ({"phase": "SPEAKING"}, [], "agent speaking"),
        ({"phase": "LISTENING"}, [("speech_started", 1, {})], "caller speaking"),
        ({"phase": "CANCELLING"}, [], "caller speaking"),
        ({"phase": "THINKING"}, [], "waiting for the agent"),
        ({"phase": "LISTENING"}, [("speech_stopped", 1, {})], "waiting for the agent"),
        ({"phase": "LISTENING"}, [], "listening"),
        ({"phase": "IDLE"}, [], "connecting"),
        ({"phase": "SPEAKING", "on_hold": True}, [], "on hold"),
        ({"phase": "LISTENING", "in_outage": "1"}, [], "reconnecting"),
        ({"phase": "LISTENING", "transfer": "ringing"}, [], "transferring"),
        ({"phase": "ENDED"}, [], "ended"),
    ],
)
def test_activity_in_words(state: dict[str, Any], told: list[tuple[str, float, dict[str, str]]], word: str) -> None:
    w = CallWatch()
    w.feed(entries(*told))
    assert w.activity(state) == word


def test_a_shown_word_holds_for_a_second() -> None:
    steady = Steady()
    assert steady.show("listening", 10.0) == "listening"
    assert steady.show("caller speaking", 10.3) == "listening"  # a flicker within the second is not shown
    assert steady.show("agent speaking", 10.6) == "listening"
    assert steady.show("agent speaking", 10.0 + STEADY_S) == "agent speaking"  # the latest word, once it may change
    assert steady.show("listening", 11.2) == "agent speaking"
    assert steady.show("agent speaking", 11.5) == "agent speaking"  # back to what is shown: nothing moves
    assert steady.show("listening", 12.1) == "listening"


def test_every_flag_has_a_label_and_a_severity() -> None:
    from bridge.supervisor.flags import FLAGS

    assert set(FLAGS) == set(Flag)


def test_a_call_on_its_fallback_model_is_marked_from_its_hash() -> None:
    # the variant's model failed to connect and the call went on on its fallback model: no stream entry says so, the
    # call's hash does (``fallback``, "1" as stored; True in a row read from it)
    calm = entries(("answered", 1, {}), ("ended", 6, {"outcome": "completed"}))
    assert call_marks(calm, state={"fallback": "1"}) == [
        {"flag": "fallback", "label": "fallback model", "severity": "warn", "now": False}
    ]
    assert call_marks(calm, state={"fallback": ""}) == call_marks(calm, state={"fallback": False}) == []
    w = CallWatch()
    w.note({"fallback": True})
    w.feed(entries(("realtime_closed", 1, {}), ("recovered", 2, {"attempts": "1"})))
    assert list(flags(w.marks())) == ["outage", "fallback", "recovered"]  # in the order marks are shown
    assert worst(w.marks()) == "bad"
