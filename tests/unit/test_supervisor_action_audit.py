"""The call-actions audit is written before an action is sent and its outcome after: readers fold the two into one
entry, and a follower holds a request back until its outcome is in (or the wait for it is over)."""

from __future__ import annotations

import time

from bridge.supervisor.action_audit import OUTCOME, PENDING_S, _settled, fold


def request(entry_id: str, request_id: str, at: float, call_id: str = "c-1") -> dict[str, str]:
    return {"id": entry_id, "action": "whisper", "who": "sam", "call_id": call_id, "request": request_id,
            "at": f"{at:.3f}"}  # fmt: skip


def outcome(entry_id: str, request_id: str, at: float, call_id: str = "c-1") -> dict[str, str]:
    return {**request(entry_id, request_id, at, call_id), "event": OUTCOME, "worker": "127.0.0.1:5070"}


def test_each_outcome_is_folded_into_its_request_and_a_request_without_one_names_no_worker() -> None:
    now = time.time()
    audio = {"id": "3-0", "action": "takeover-audio", "who": "sam", "call_id": "c-1", "event": "start"}
    entries = [request("1-0", "r1", now), outcome("2-0", "r1", now), audio, request("4-0", "r2", now)]
    folded = fold(entries)
    assert [(e["id"], e.get("worker")) for e in folded] == [("1-0", "127.0.0.1:5070"), ("3-0", None), ("4-0", "")]


def test_a_follower_holds_a_fresh_request_back_until_its_outcome_or_the_wait_is_over() -> None:
    now = time.time()
    waiting = [request("1-0", "r1", now - 1), outcome("2-0", "r1", now - 1), request("3-0", "r2", now - 1),
               request("4-0", "r3", now - 1, "c-2")]  # fmt: skip
    assert _settled(waiting, now) == 2  # r2 has no outcome yet: it and all after it wait
    assert _settled([*waiting, outcome("5-0", "r2", now)], now) == 3  # r3 (another call's) still waits
    assert _settled(waiting, now + PENDING_S) == len(waiting)  # no worker took them: shown as such
