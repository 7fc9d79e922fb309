"""What the call does on each action of its table (:class:`~bridge.call.flow.Action` names them) and on each beat of
its media clock: the one place the phase table's decisions and the beat's checks touch the call's collaborators."""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never

from bridge import events as ev
from bridge.call.flow import Action, Trigger
from bridge.call.limit import Goodbye
from bridge.call.outage import GOODBYE_REASON
from bridge.call.recovery import answer_instructions
from bridge.call.state import Phase

if TYPE_CHECKING:
    from bridge.call.session import CallSession


def perform(call: CallSession, action: Action, why: str) -> None:
    """Carry out one action of the table (:class:`~bridge.call.flow.Action` says what each does)."""
    match action:
        case Action.ASK_GREETING:
            call.link.send(ev.CreateResponse(instructions=call.plan.greeting))
        case Action.CUT_AGENT:
            call.barge_in.cut(why, service_cancelled=call.service_cancelled)
            call.tools.interrupted()
            if call.orchestration is not None:
                call.orchestration.interrupted(call.barge_in.last_cut)
        case Action.OWE_ANSWER:
            call.recovery.owe_answer()
        case Action.FORGET_LOST_TURNS:
            call.transcripts.forget_lost()
        case Action.SEND_SUMMARY:
            call.link.send(ev.AddText(call.changes.summary(), ev.Role.SYSTEM))
        case Action.ANSWER_AGAIN | Action.RESUME_ANSWER:
            lost = call.transcripts.forget_lost()
            greeting = call.plan.greeting if call.changes.greeting_owed() else None
            cut, held = action is Action.RESUME_ANSWER, call.recovery.take_after_hold()
            call.link.send(ev.CreateResponse(instructions=answer_instructions(greeting, cut, lost, held)))
        case Action.SWAP_SESSION:
            call.changes.swap_session("rollover at a turn boundary")
        case Action.PLAY_HOLD:
            call.outage.play_hold()
        case Action.STOP_HOLD:
            call.outage.back()
        case Action.FAIL_OVER:
            call.changes.fail_over()
        case Action.ASK_GOODBYE:
            call.link.send(ev.CreateResponse(instructions=call.limit.instructions))
            call.limit.said(Goodbye.AGENT)
        case Action.APOLOGISE:
            call.outage.apologise()
            call.limit.said(Goodbye.APOLOGY)
        case Action.HANG_UP:
            call.leg.hangup(call.limit.bye_reason)
            call.end(call.limit.end_reason, call.limit.ended_by)
        case _:
            assert_never(action)


def beat(call: CallSession) -> None:
    """Every beat (20 ms, or a worker's media beat): notice that the agent's audio has finished playing, and
    run what waited for that; then let the socket be read (on this same wake-up)."""
    call.link.beat()
    if call.leg.disconnected.is_set() and not call.ending:
        # The leg queues its own CallerHungUp (with the SIP code and reason) as it disconnects: take what
        # it queued first, in order, so the report says why; the fallback only covers a silent leg.
        while not call.leg.events.empty():
            call.inbox.put(call.leg.events.get_nowait())
        call.inbox.put(ev.CallerHungUp(sip_code=0, reason="leg disconnected"))
    if call.turns is not None:
        call.turns.beat()
    call.latency.measure_playback(call.playout, call.playback.audio_item)
    idle = call.playback.idle
    if idle:
        call.phase.fire(Trigger.PLAYED_OUT)
    if call.phase.phase is Phase.RECOVERING and call.outage.hold_due:
        call.phase.fire(Trigger.HOLD_DUE, "model away")
    call.outage.beat()
    if call.outage.leaving and call.playout.idle and not call.ending:
        call.leg.hangup(GOODBYE_REASON)  # the apology played out: a clean BYE that says why
        call.end(call.outage.leaving_reason, ev.EndedBy.FAULT, ev.CallOutcome.FAILED)
    if not call.ending and not call.outage.leaving:  # the dialplan's max_call_s (bridge.call.limit)
        if call.limit.due and not call.link.caller_speaking:
            call.phase.fire(Trigger.LIMIT_DUE, ev.MAX_CALL_DURATION)
        if call.limit.over(call.phase.phase, call.playback.idle):
            call.phase.fire(Trigger.LIMIT_OVER, ev.MAX_CALL_DURATION)
    if call.client is not None and not call.ending:
        # after that: the moment a reply has played out is the surest turn boundary
        call.rollover.tick()
        # the caller's audio so far is in the old session's input buffer while they speak
        if call.rollover.ready and idle and call.tools.pending is None and not call.link.caller_speaking:
            call.phase.fire(Trigger.TURN_BOUNDARY)
    if call.turn_hold is not None:
        call.turn_hold.beat()
    call.tools.beat(idle)
    if call.orchestration is not None:
        call.orchestration.beat(idle)
