"""The call's sans-I/O core (bridge.call.core) in virtual time: triggers in, effects out, no clock and no loop.

Every row of the table is reached by a ``handle()`` call (directly, or as the ``then`` of another row) from the
core's start, with the row's effects and next state; then the sequences worth reading whole: a warm transfer's
paths and time limits, the echo guard's pause, a take-over, the holds."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

import pytest

from bridge import events as ev
from bridge.call.core import (
    AXES,
    START,
    TABLE,
    Action,
    CallCore,
    Control,
    ControlAction,
    Do,
    Echo,
    EchoAction,
    Effect,
    Enter,
    HandoverAction,
    Hold,
    State,
    Timer,
    Transfer,
    TransferAction,
    Trigger,
)
from bridge.call.state import IllegalTransition, Phase

T, X, TA, HA = Trigger, Transfer, TransferAction, HandoverAction
Outcome = ev.TransferOutcome
LIMITS = {Timer.RING: 20.0, Timer.BRIEF: 20.0, Timer.ACCEPT: 10.0}
STEP_S = 100.0  # virtual time between triggers along a path: past every limit, so a TIMEOUT on the way expires
FAMILY_AXIS: dict[type[enum.Enum], type[State]] = {
    Action: Phase,
    TransferAction: Transfer,
    HandoverAction: Transfer,
    EchoAction: Echo,
    ControlAction: Control,
}
ROW_AXIS: dict[enum.Enum, type[State]] = {Action.SAY_GOODBYE: Hold}  # the session's action, on the hold's rows
Row = tuple[State, Trigger]


def on(axis: type[State], effects: Iterable[Effect]) -> list[Effect]:
    """The effects that belong to ``axis`` (its family's actions, its changes)."""
    mine = []
    for effect in effects:
        if isinstance(effect, Enter):
            owner = type(effect.new)
        else:
            owner = ROW_AXIS.get(effect.action) or FAMILY_AXIS[type(effect.action)]
        if owner is axis:
            mine.append(effect)
    return mine


def expected(state: State, trigger: Trigger, why: str) -> tuple[list[Effect], State, list[Row]]:
    """What the table says ``trigger`` does in ``state``: the effects, the state it rests in, the rows it used."""
    move = TABLE[(state, trigger)]
    effects: list[Effect] = [Do(action, why, move.outcome) for action in move.actions]
    new = state
    if move.to is not None and move.to is not state:
        effects.append(Enter(state, move.to, move.why or why))
        new = move.to
    rows: list[Row] = [(state, trigger)]
    if move.then is not None and (new, move.then) in TABLE:
        more, new, used = expected(new, move.then, why)
        effects, rows = effects + more, rows + used
    return effects, new, rows


def paths(axis: type[State]) -> dict[State, list[Trigger]]:
    """The shortest trigger path from the axis's start to each state it can rest in."""
    start = next(s for s in START if isinstance(s, axis))
    found: dict[State, list[Trigger]] = {start: []}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        for (src, trigger), _ in TABLE.items():
            if src is state:
                _, rest, _ = expected(src, trigger, "")
                if rest not in found:
                    found[rest] = [*found[state], trigger]
                    todo.append(rest)
    return found


def drive(*triggers: Trigger, core: CallCore | None = None, at: float = 0.0) -> tuple[CallCore, list[Effect], float]:
    """A core handed ``triggers`` STEP_S apart from ``at``; the effects of the last one."""
    core = core or CallCore(LIMITS, name="c1")
    effects: list[Effect] = []
    for trigger in triggers:
        at += STEP_S
        effects = core.handle(trigger, at, trigger.name.lower())
    return core, effects, at


def test_every_row_of_the_table_is_reached_with_its_effects_and_next_state() -> None:
    covered: set[Row] = set()
    for axis in AXES:
        reach = paths(axis)
        for (state, trigger), _ in TABLE.items():
            if not isinstance(state, axis) or state not in reach:
                continue  # a state left in the move that enters it (CANCELLING): reached as the `then` below
            core, _, at = drive(*reach[state])
            effects = core.handle(trigger, at + STEP_S, "why")
            want, rest, rows = expected(state, trigger, "why")
            assert on(axis, effects) == want, (state, trigger)
            assert next(s for s in core.states() if isinstance(s, axis)) is rest, (state, trigger)
            covered.update(rows)
    assert covered == set(TABLE)


def test_the_tables_rows_each_stay_on_one_axis_and_name_every_trigger_and_action() -> None:
    assert {trigger for _, trigger in TABLE} == set(Trigger)
    used = {action for move in TABLE.values() for action in move.actions}
    assert used == {action for family in FAMILY_AXIS for action in family}
    for (state, _), move in TABLE.items():
        assert state is not Phase.ENDED
        assert move.to is None or type(move.to) is type(state)
        assert (move.outcome is not None) == (move.to is X.BACK)


# -- a warm transfer --------------------------------------------------------------------------------------------
def test_a_briefed_transfer_rings_briefs_and_joins_with_its_steps_in_order() -> None:
    core = CallCore(LIMITS)
    log: list[Effect] = []
    script = [
        (0.0, T.TRANSFER_DECIDED),
        (0.0, T.WARM_TRANSFER),
        (0.1, T.HUMAN_DIALLED),
        (5.0, T.HUMAN_ANSWERED),
        (5.3, T.RESPONSE_STARTED),
        (6.0, T.PLAYED_OUT),
        (6.0, T.HUMAN_READY),
    ]
    for now, trigger in script:
        log += on(Transfer, core.handle(trigger, now))
    assert log == [
        Enter(X.NONE, X.ANNOUNCING, "transfer decided"),
        Enter(X.ANNOUNCING, X.HOLDING, "warm transfer"),
        Do(TA.HOLD_AND_DIAL, ""),
        Enter(X.HOLDING, X.RINGING, "the human's phone rings"),
        Enter(X.RINGING, X.BRIEFING, "the human answered"),
        Do(TA.BRIEF_HUMAN, ""),
        Enter(X.BRIEFING, X.BRIEF_PLAYING, "the briefing began"),
        Do(TA.END_BRIEFING, ""),
        Enter(X.BRIEF_PLAYING, X.BRIEFED, "the briefing played out"),
        Enter(X.BRIEFED, X.JOINED, "the human takes the call"),
        Do(TA.JOIN_HUMAN, ""),
    ]
    assert core.transfer is X.JOINED and core.deadline is None


def test_a_played_out_before_the_briefing_began_does_not_end_it() -> None:
    core, _, at = drive(T.TRANSFER_DECIDED, T.WARM_TRANSFER, T.HUMAN_DIALLED, T.HUMAN_ANSWERED)
    assert on(Transfer, core.handle(T.PLAYED_OUT, at + 0.02)) == []  # every idle beat fires it
    assert core.transfer is X.BRIEFING


def test_the_ring_timer_expires_at_its_limit_and_not_before() -> None:
    core = CallCore(LIMITS)
    core.handle(T.TRANSFER_DECIDED, 0.5)
    core.handle(T.WARM_TRANSFER, 1.0)
    core.handle(T.HUMAN_DIALLED, 1.5)
    assert core.deadline == 21.5
    assert core.handle(T.TIMEOUT, 21.4) == []  # woke early: nothing moves
    assert core.handle(T.TIMEOUT, 21.5) == [
        Do(TA.RELEASE_HUMAN, "", Outcome.NO_ANSWER),
        Enter(X.RINGING, X.BACK, ""),
    ]
    assert core.deadline is None


def test_the_briefing_timer_spans_asking_and_playing_and_the_accept_window_starts_fresh() -> None:
    core = CallCore(LIMITS)
    core.handle(T.TRANSFER_DECIDED, 0.0)
    core.handle(T.WARM_TRANSFER, 0.0)
    core.handle(T.HUMAN_DIALLED, 0.0)
    core.handle(T.HUMAN_ANSWERED, 2.0)
    core.handle(T.MODEL_AUDIO, 10.0)
    assert core.transfer is X.BRIEF_PLAYING and core.deadline == 22.0  # from the answer, not from the audio
    assert core.handle(T.TIMEOUT, 22.0) == [
        Do(TA.END_BRIEFING, ""),
        Enter(X.BRIEF_PLAYING, X.BRIEFED, "no briefing in time"),
    ]
    core.handle(T.HUMAN_TO_ACCEPT, 22.0)
    assert (core.transfer, core.deadline) == (X.ACCEPTING, 32.0)
    assert core.handle(T.TIMEOUT, 32.0)[0] == Do(TA.RELEASE_HUMAN, "", Outcome.DECLINED)


@pytest.mark.parametrize(
    ("trigger", "outcome"),
    [
        (T.HUMAN_BUSY, Outcome.BUSY),
        (T.HUMAN_NO_ANSWER, Outcome.NO_ANSWER),
        (T.HUMAN_DECLINED, Outcome.DECLINED),
        (T.HUMAN_FAILED, Outcome.FAILED),
        (T.CALLER_LEFT, Outcome.CALLER_HUNG_UP),
    ],
)
def test_a_ringing_leg_that_ends_goes_back_with_its_outcome(trigger: Trigger, outcome: Outcome) -> None:
    _, effects, _ = drive(T.TRANSFER_DECIDED, T.WARM_TRANSFER, T.HUMAN_DIALLED, trigger)
    assert effects == [
        Do(TA.RELEASE_HUMAN, trigger.name.lower(), outcome),
        Enter(X.RINGING, X.BACK, trigger.name.lower()),
    ]


def test_a_human_who_hangs_up_mid_briefing_stops_hearing_the_agent_first() -> None:
    _, effects, _ = drive(T.TRANSFER_DECIDED, T.WARM_TRANSFER, T.HUMAN_DIALLED, T.HUMAN_ANSWERED, T.HUMAN_DECLINED)
    assert [e.action for e in effects if isinstance(e, Do)] == [TA.END_BRIEFING, TA.RELEASE_HUMAN]


def test_a_transfer_while_one_is_under_way_is_ignored_and_after_one_came_back_starts_again() -> None:
    core, _, at = drive(T.TRANSFER_DECIDED, T.WARM_TRANSFER, T.HUMAN_DIALLED)
    for trigger in (T.TRANSFER_DECIDED, T.WARM_TRANSFER):
        at += 1
        assert core.handle(trigger, at) == [] and core.transfer is X.RINGING
    core, effects, _ = drive(T.HUMAN_BUSY, T.TRANSFER_DECIDED, T.WARM_TRANSFER, core=core, at=at)
    assert core.transfer is X.HOLDING and Do(TA.HOLD_AND_DIAL, "warm_transfer") in effects


def test_a_warm_transfer_starts_only_once_decided() -> None:
    core, effects, _ = drive(T.WARM_TRANSFER)
    assert effects == [] and core.transfer is X.NONE


# -- a transfer's announcement ------------------------------------------------------------------------------------
def test_a_decided_blind_transfer_announces_then_refers_once_its_line_played_out() -> None:
    core, effects, at = drive(T.READY, T.MODEL_AUDIO, T.TRANSFER_DECIDED)
    assert effects == [Enter(X.NONE, X.ANNOUNCING, "transfer decided")]
    assert on(Transfer, core.handle(T.PLAYED_OUT, at + 1)) == []  # the line played out: the tools fire REFER
    assert (core.phase, core.transfer) == (Phase.LISTENING, X.ANNOUNCING)
    assert core.handle(T.REFER, at + 2, "line played") == [
        Do(HA.SEND_REFER, "line played"),
        Enter(X.ANNOUNCING, X.NONE, "blind transfer"),
    ]
    assert core.handle(T.REFER, at + 3) == []  # one REFER per decision


def test_a_barge_in_over_a_decided_transfer_cuts_the_line_and_the_transfer_goes_ahead() -> None:
    core, _, at = drive(T.READY, T.MODEL_AUDIO, T.TRANSFER_DECIDED)
    effects = core.handle(T.CALLER_INTERRUPTS, at + 1, "barge-in")
    assert core.transfer is X.ANNOUNCING and Do(Action.CUT_AGENT, "barge-in") in effects  # the cut: the line only
    assert core.handle(T.REFER_CUT, at + 2, "cut") == [
        Do(HA.HOLD_CALLER, "cut"),
        Do(HA.SEND_REFER, "cut"),
        Enter(X.ANNOUNCING, X.NONE, "blind transfer, its line cut"),
    ]
    core, _, at = drive(T.READY, T.MODEL_AUDIO, T.TRANSFER_DECIDED, T.CALLER_INTERRUPTS)
    assert on(Transfer, core.handle(T.WARM_TRANSFER, at + 1, "cut")) == [
        Enter(X.ANNOUNCING, X.HOLDING, "warm transfer"),
        Do(TA.HOLD_AND_DIAL, "cut"),
    ]


# -- the echo guard, a take-over, the holds ---------------------------------------------------------------------
def test_an_echo_pause_holds_the_agent_and_a_confirmed_voice_takes_the_barge_in_before_it_resumes() -> None:
    core, effects, _ = drive(T.ECHO_SUSPECTED)
    assert effects == [
        Do(EchoAction.PAUSE_AGENT, "echo_suspected"),
        Enter(Echo.JUDGING, Echo.PAUSED, "a voice over the agent"),
    ]
    assert core.echo is Echo.PAUSED
    assert core.handle(T.ECHO_SUSPECTED, 1.0) == []  # paused already: the window decides
    assert [e.action for e in core.handle(T.ECHO_CONFIRMED, 2.0) if isinstance(e, Do)] == [
        EchoAction.TAKE_BARGE_IN,
        EchoAction.RESUME_AGENT,
    ]
    core.handle(T.ECHO_SUSPECTED, 3.0)
    assert core.handle(T.ECHO_CLEARED, 4.0) == [
        Do(EchoAction.RESUME_AGENT, ""),
        Enter(Echo.PAUSED, Echo.JUDGING, "no words followed"),
    ]


def test_a_take_over_mutes_the_model_once_and_a_hand_back_unmutes_it() -> None:
    core, effects, at = drive(T.READY, T.TAKE_OVER)
    assert effects == [
        Do(ControlAction.MUTE_MODEL, "take_over"),
        Enter(Control.AGENT, Control.SUPERVISOR, "taken over by a supervisor"),
    ]
    assert core.handle(T.TAKE_OVER, at + 1) == []
    assert core.phase is Phase.LISTENING  # orthogonal: the phase goes on as it was
    assert core.handle(T.HAND_BACK, at + 2)[0] == Do(ControlAction.UNMUTE_MODEL, "")
    assert core.control is Control.AGENT


def test_the_outage_hold_is_on_the_hold_axis_while_the_phase_plays_it() -> None:
    core, effects, at = drive(T.READY, T.SESSION_LOST, T.HOLD_DUE)
    assert effects == [Do(Action.PLAY_HOLD, "hold_due"), Enter(Hold.NONE, Hold.OUTAGE, "model away")]
    assert core.handle(T.HOLD_DUE, at + 1) == [Do(Action.PLAY_HOLD, "")]  # the phase's row has no guard
    effects = core.handle(T.RECOVERED, at + 2, "back")
    assert effects == [
        Do(Action.STOP_HOLD, "back"),
        Do(Action.FORGET_LOST_TURNS, "back"),
        Enter(Phase.RECOVERING, Phase.LISTENING, "session recovered"),
        Enter(Hold.OUTAGE, Hold.NONE, "back"),
    ]


def test_the_failovers_goodbye_ends_the_outage_hold_and_says_goodbye_on_any_hold() -> None:
    core, _, at = drive(T.READY, T.SESSION_LOST, T.HOLD_DUE, T.GAVE_UP)
    assert core.hold is Hold.OUTAGE  # the failover may be a transfer: the hold goes on until it completes
    assert core.handle(T.GOODBYE, at + 1, "realtime unavailable") == [
        Do(Action.SAY_GOODBYE, "realtime unavailable"),
        Enter(Hold.OUTAGE, Hold.NONE, "the failover's goodbye"),
    ]
    assert core.phase is Phase.RECOVERING  # the BYE after the apology ends the call
    core, _, at = drive(T.READY, T.TURN_HOLD)  # an orchestrator gone with the model there: no hold to end
    assert core.handle(T.GOODBYE, at + 1, "orchestrator unavailable") == [
        Do(Action.SAY_GOODBYE, "orchestrator unavailable")
    ]
    assert core.hold is Hold.TURN


def test_a_soft_hold_ends_on_its_own_trigger_only() -> None:
    core, _, at = drive(T.TURN_HOLD, T.WAIT_OVER)
    assert core.hold is Hold.TURN
    assert core.handle(T.TURN_OVER, at + 1) == [Enter(Hold.TURN, Hold.NONE, "")]
    core, _, _ = drive(T.READY, T.SESSION_LOST, T.HOLD_DUE, T.WAIT_HOLD)
    assert core.hold is Hold.WAIT  # a tool's wait that outlasts the model: its soft hold is what plays last


def test_after_the_end_a_phase_trigger_is_a_bug_but_a_transfer_under_way_still_ends() -> None:
    core, _, at = drive(T.READY, T.TRANSFER_DECIDED, T.WARM_TRANSFER, T.HUMAN_DIALLED, T.FINISHED)
    assert core.phase is Phase.ENDED
    assert on(Transfer, core.handle(T.CALLER_LEFT, at + 1))[0] == Do(TA.RELEASE_HUMAN, "", Outcome.CALLER_HUNG_UP)
    with pytest.raises(IllegalTransition, match="call c1: PLAYED_OUT after the call ended"):
        core.handle(T.PLAYED_OUT, at + 2)
    assert core.handle(T.TIMEOUT, at + 3) == []
    assert core.handle(T.HUMAN_PRESSED_1, at + 4) == []  # a mode's late event: no row, no bug
