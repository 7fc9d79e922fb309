"""The call's table as the session drives it (bridge.call.flow): how a move runs, that every move is legal, that
it is the only place a phase changes, who carries out a mode's actions, and that docs/call.md shows the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.call import flow
from bridge.call.core import Transfer, TransferAction
from bridge.call.flow import TABLE, CallFlow, Trigger
from bridge.call.state import IllegalTransition, Phase, PhaseMachine

REPO = Path(__file__).resolve().parents[3]


def drive(*path: tuple[Trigger, str]) -> tuple[CallFlow, list[tuple[str, str]]]:
    """A flow fired along ``path``; the log interleaves actions (with their reason) and phase changes."""
    log: list[tuple[str, str]] = []
    machine = PhaseMachine("c1", on_change=lambda old, new, why: log.append((f"{old}->{new}", why)))
    call = CallFlow(machine, lambda action, why: log.append((action.name, why)))
    for trigger, why in path:
        call.fire(trigger, why)
    return call, log


def test_a_barge_in_enters_cancelling_cuts_with_its_cause_then_listens() -> None:
    call, log = drive((Trigger.GREET, ""), (Trigger.MODEL_AUDIO, ""), (Trigger.CALLER_STARTS, "caller spoke"))
    assert log == [
        ("ASK_GREETING", ""),  # the actions run first ...
        ("IDLE->THINKING", "greeting"),  # ... then the phase changes, with the table's reason
        ("THINKING->SPEAKING", "model audio"),
        ("SPEAKING->CANCELLING", "caller spoke"),  # no reason in the row: the one it was fired with
        ("CUT_AGENT", "caller spoke"),  # the follow-up trigger, in CANCELLING
        ("CANCELLING->LISTENING", "barge-in handled"),
    ]
    assert call.phase is Phase.LISTENING


def test_while_listening_an_interruption_cuts_without_a_phase_change() -> None:
    call, log = drive((Trigger.READY, ""), (Trigger.CALLER_INTERRUPTS, "caller pressed a key"))
    assert log == [("IDLE->LISTENING", "session ready"), ("CUT_AGENT", "caller pressed a key")]
    assert call.machine.sequence == ["IDLE", "LISTENING"]


def test_the_caller_starting_while_the_agent_is_quiet_does_nothing_but_in_speaking() -> None:
    _, log = drive((Trigger.READY, ""), (Trigger.CALLER_STARTS, "x"), (Trigger.CALLER_STOPPED, ""))
    assert log == [("IDLE->LISTENING", "session ready"), ("LISTENING->THINKING", "caller stopped speaking")]
    _, log = drive((Trigger.READY, ""), (Trigger.CALLER_STOPPED, ""), (Trigger.CALLER_STARTS, "x"))
    assert [entry for entry in log if "CANCELLING" in entry[0]] == []  # THINKING: the turn goes on


def test_a_session_lost_while_thinking_owes_the_answer_and_recovery_answers_it() -> None:
    _, log = drive(
        (Trigger.READY, ""),
        (Trigger.CALLER_STOPPED, ""),
        (Trigger.SESSION_LOST, "realtime closed: gone"),
        (Trigger.RECOVERED_OWING, ""),
    )
    assert log[-5:] == [
        ("OWE_ANSWER", "realtime closed: gone"),
        ("THINKING->RECOVERING", "realtime closed: gone"),
        ("STOP_HOLD", ""),
        ("ANSWER_AGAIN", ""),
        ("RECOVERING->THINKING", "answer again after recovery"),
    ]
    _, log = drive((Trigger.READY, ""), (Trigger.SESSION_LOST, "lost"), (Trigger.RECOVERED, ""))
    assert log[1:] == [
        ("LISTENING->RECOVERING", "lost"),
        ("STOP_HOLD", ""),
        ("FORGET_LOST_TURNS", ""),
        ("RECOVERING->LISTENING", "session recovered"),
    ]


def test_the_cap_mid_answer_asks_the_next_session_again() -> None:
    _, log = drive((Trigger.GREET, ""), (Trigger.MODEL_AUDIO, ""), (Trigger.CAPPED_MID_AUDIO, ""))
    assert log[-3:] == [
        ("SEND_SUMMARY", ""),
        ("RESUME_ANSWER", ""),
        ("SPEAKING->THINKING", "answer again in the next session"),
    ]
    _, log = drive((Trigger.GREET, ""), (Trigger.MODEL_AUDIO, ""), (Trigger.CAPPED, ""))
    assert log[-1] == ("THINKING->SPEAKING", "model audio")  # nothing under way: nothing owed


def test_a_trigger_with_no_row_leaves_a_live_phase_alone_and_is_a_bug_after_the_end() -> None:
    call, log = drive((Trigger.READY, ""), (Trigger.PLAYED_OUT, ""), (Trigger.RESPONSE_SILENT, "x"))
    assert call.phase is Phase.LISTENING and log == [("IDLE->LISTENING", "session ready")]
    call.fire(Trigger.FINISHED, "caller hung up")
    assert call.machine.sequence == ["IDLE", "LISTENING", "ENDED"]
    with pytest.raises(IllegalTransition, match="PLAYED_OUT after the call ended"):
        call.fire(Trigger.PLAYED_OUT)


def test_every_move_is_a_legal_transition_and_every_follow_up_has_a_row() -> None:
    flow.check()
    for (state, trigger), move in TABLE.items():
        assert move.then is None or (move.to or state, move.then) in TABLE, (state, trigger)


def test_a_modes_actions_go_to_the_part_that_carries_them_and_its_changes_to_its_watcher() -> None:
    log: list[object] = []
    call = CallFlow(PhaseMachine("c1"), lambda action, why: log.append(action))
    call.carry(TransferAction, lambda do: log.append(do.action))
    call.watch(Transfer, lambda enter: log.append(enter.new))
    call.fire(Trigger.READY)
    call.fire(Trigger.TRANSFER_DECIDED)
    call.fire(Trigger.WARM_TRANSFER)
    # the change first: DIAL is its follow-up
    assert log == [Transfer.ANNOUNCING, Transfer.HOLDING, TransferAction.HOLD_AND_DIAL]
    assert call.core.transfer is Transfer.HOLDING and call.phase is Phase.LISTENING


def test_the_table_driver_is_the_only_caller_of_the_phase_setter() -> None:
    setter = re.compile(r"\.set\(\s*(Phase\.|move\.to|new\b)|\bphase\.set\(|machine\.set\(")
    callers = [
        path.relative_to(REPO).as_posix()
        for path in sorted((REPO / "bridge").rglob("*.py"))
        if setter.search(path.read_text(encoding="utf-8"))
    ]
    assert callers == ["bridge/call/flow.py"]


def test_docs_call_md_shows_the_current_table() -> None:
    text = (REPO / "docs" / "call.md").read_text(encoding="utf-8")
    assert text.count(flow.BEGIN) == 1 and text.count(flow.END) == 1
    assert flow.rewrite(text) == text, "docs/call.md is stale: run `python -m bridge.call.flow --write docs/call.md`"


def test_the_diagrams_draw_every_change_on_every_axis() -> None:
    for (src, trigger), move in TABLE.items():
        if move.to is not None and move.to is not src and trigger is not Trigger.FINISHED:
            diagram = flow.mermaid(type(src)).splitlines()
            edge = next(line for line in diagram if line.strip().startswith(f"{src.name} --> {move.to.name}:"))
            assert trigger.name.lower() in edge
