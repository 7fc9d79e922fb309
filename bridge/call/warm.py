"""A warm transfer (the plan's ``transfer: {mode: warm}``): the agent stays until a human has taken the call.

::

    transfer_to_human, its line played ──► the caller hears the hold audio (pjsua2's file player: the session
                                            is out of the caller's call both ways, so the model hears nothing of
                                            it); the worker calls transfer.target on a second SIP leg
                                            (bridge/sip/outbound.py)                         step: ringing
      ├─ answered ──► with brief: the human hears the session's voice; the model is asked for a briefing (who
      │               calls, what they asked, what was tried) and the human hears it in the agent's own
      │               voice, up to brief_timeout_s                                        step: briefing
      │               then accept: answer takes the call, accept: dtmf waits accept_window_s for "1"
      │                                                                                    step: accepting
      │     ──► the hold stops; caller and human are joined in pjsua2's conference bridge; the model session ends
      │         (outcome completed; the call lasts until either side hangs up, then the other is hung up)
      ├─ 486 / 600 (busy), ring_timeout_s with no answer (or 408 / 480), 603 or no "1" (declined), anything else
      │     ──► the human's leg is hung up, the hold stops, the model gets a system note and answers: the agent
      │         tells the caller (outcome busy, no_answer, declined, failed)
      └─ the caller hangs up meanwhile ──► the human's leg is hung up too (outcome caller_hung_up)

Where the attempt is, is the transfer axis of the call's core (:class:`bridge.call.core.Transfer`; its rows are in
``bridge.call.core.TABLE``, drawn in ``docs/call.md``): :class:`WarmTransfer` turns the human leg's events, the
table's time limits and the plan's ``brief`` and ``accept`` into triggers, and carries out the transfer's actions.
The briefing ends when the call's own triggers say it has played out (a response or audio came, then the playout
emptied), not by looking at the audio.

Each step is a :class:`~bridge.events.TransferStepped` and each attempt ends with one
:class:`~bridge.events.WarmTransferEnded` in the call's timeline (and ``transfer`` in the report and in the call's
hash: the console shows where a transfer is). The briefing is a response of the call's own model session, so it is
in the conversation: an agent who comes back after a busy human knows what it told them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bridge import events as ev
from bridge.call.core import ATTEMPT, BRIEFING, Do, Enter, State, Timer, Transfer, TransferAction, Trigger
from bridge.call.flow import CallFlow
from bridge.call.leg import Dialer, HumanLeg, PhoneLeg, dialer
from bridge.call.report import CallReport
from bridge.dialplan import TransferPlan

log = logging.getLogger("bridge.call")
Outcome = ev.TransferOutcome

BUSY_CODES = frozenset({486, 600})
NO_ANSWER_CODES = frozenset({408, 480, 487})  # 487: our CANCEL at the ring timeout
DECLINED_CODES = frozenset({603})
NOTES = {
    Outcome.BUSY: "The human agent is busy.",
    Outcome.NO_ANSWER: "The human agent did not answer.",
    Outcome.DECLINED: "The human agent declined the call.",
    Outcome.FAILED: "The call to the human agent could not be placed.",
}


def outcome_of(sip_code: int, answered: bool) -> Outcome:
    """The outcome of a human leg that ended before it was taken, by its final status."""
    if answered or sip_code in DECLINED_CODES:
        return Outcome.DECLINED  # answered but not accepted (hung up, or no "1") is a decline too
    if sip_code in BUSY_CODES:
        return Outcome.BUSY
    if sip_code in NO_ANSWER_CODES:
        return Outcome.NO_ANSWER
    return Outcome.FAILED


BRIEF = (
    "A human agent has answered your transfer and is listening now; the caller is on hold and cannot hear you. "
    "Brief the human agent in one or two short sentences: who is calling, what they asked for, and what you have "
    "tried. Speak to the human agent, not to the caller, and do not greet the caller."
)


def note(outcome: Outcome) -> str:
    """The system note for the model after a transfer that did not complete."""
    return f"{NOTES[outcome]} The caller is still with you: tell them, and offer to help or to try again later."


TRIGGERS = {
    Outcome.BUSY: Trigger.HUMAN_BUSY,
    Outcome.NO_ANSWER: Trigger.HUMAN_NO_ANSWER,
    Outcome.DECLINED: Trigger.HUMAN_DECLINED,
    Outcome.FAILED: Trigger.HUMAN_FAILED,
}
STEPS: dict[State, ev.TransferStep] = {
    Transfer.RINGING: ev.TransferStep.RINGING,
    Transfer.BRIEFING: ev.TransferStep.BRIEFING,
    Transfer.ACCEPTING: ev.TransferStep.ACCEPTING,
}


class WarmTransfer:
    """One call's warm transfers (at most one at a time): the shell of the core's transfer axis. It turns the human
    leg's events and the time limits into triggers of the call's table, and carries out its transfer actions."""

    def __init__(
        self,
        plan: TransferPlan,
        leg: PhoneLeg,
        hold_wav: str,
        report: CallReport,
        *,
        flow: CallFlow,
        send: Callable[[ev.Command], None],
        emit: Callable[[ev.Report], None],
        end: Callable[[str, ev.EndedBy, ev.CallOutcome], None],
    ) -> None:
        self._plan = plan
        self._leg = leg
        self._hold_wav = hold_wav
        self._report = report
        self._flow = flow
        self._send = send
        self._emit = emit
        self._end = end
        flow.core.limits |= {
            Timer.RING: plan.ring_timeout_s,
            Timer.BRIEF: plan.brief_timeout_s,
            Timer.ACCEPT: plan.accept_window_s,
        }
        flow.carry(TransferAction, self._carry_out)
        flow.watch(Transfer, self._entered)
        self._task: asyncio.Task[None] | None = None  # the human leg's events into the table
        self._human: HumanLeg | None = None
        self._held: tuple[Dialer, float] | None = None  # the caller is on the transfer's hold (since)
        self.joined: HumanLeg | None = None  # completed: the human's leg, joined with the caller's
        self._t0 = 0.0
        self._target = self._asked = ""
        self._code = 0  # the SIP status the attempt ends with

    def start(self, target: str) -> None:
        """Put the caller on hold and call ``target`` (the pending ``transfer_to_human``'s); a transfer under way
        goes on (the table has no row for a second one)."""
        self._asked = target
        self._flow.fire(Trigger.WARM_TRANSFER, f"warm transfer to {target}")

    def _carry_out(self, do: Do) -> None:
        match do.action:
            case TransferAction.HOLD_AND_DIAL:
                self._hold_and_dial()
            case TransferAction.BRIEF_HUMAN:
                self._brief()
            case TransferAction.END_BRIEFING:
                if self._human is not None:
                    self._human.hear_agent(False)
            case TransferAction.JOIN_HUMAN:
                self._join()
            case TransferAction.RELEASE_HUMAN:
                human, self._human = self._human, None
                if human is not None:
                    human.hangup()
                self._finish(do.outcome or Outcome.FAILED)

    def _entered(self, enter: Enter) -> None:
        step = STEPS.get(enter.new)
        if step is not None:
            self._emit(ev.TransferStepped(step))
        if enter.new is Transfer.RINGING and self._human is not None:
            self._task = asyncio.create_task(self._listen(self._human), name=f"warm-{self._leg.call_id}")
        elif enter.new is Transfer.BRIEFED:
            self._taken()
        elif enter.new in (Transfer.JOINED, Transfer.BACK):
            task = self._task  # the attempt may end on a trigger of the call's own (the briefing played out)
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    def _taken(self) -> None:
        """Answered (and briefed): ``accept: answer`` takes the call; ``accept: dtmf`` waits for "1"."""
        take = Trigger.HUMAN_TO_ACCEPT if self._plan.accept == "dtmf" else Trigger.HUMAN_READY
        self._flow.fire(take, "the human answered" if self._plan.brief else "the human answered unbriefed")

    def _hold_and_dial(self) -> None:
        target = self._target = self._asked
        self._emit(ev.TransferStarted(target))
        self._t0, self._code = self._flow.now(), 0
        can = dialer(self._leg)
        try:
            if can is None:
                raise RuntimeError("this leg cannot place a second call")
            can.hold(self._hold_wav)
            self._held = can, self._flow.now()
            self._emit(ev.HoldStarted())
            self._human = can.dial(target)
        except Exception as exc:
            log.warning("%s: warm transfer to %s: %s", self._leg.call_id, target, exc)
            self._flow.fire(Trigger.HUMAN_FAILED, f"the call to {target} could not be placed")
            return
        self._flow.fire(Trigger.HUMAN_DIALLED)

    async def _listen(self, human: HumanLeg) -> None:
        """The human leg's events into the table while the attempt is under way; at a state's time limit (the
        ring, the briefing, the accept window), a timeout."""
        while self._flow.core.transfer in ATTEMPT:
            deadline = self._flow.core.deadline
            wait = None if deadline is None else max(0.0, deadline - self._flow.now())
            try:
                e = await asyncio.wait_for(human.events.get(), wait)
            except TimeoutError:
                if self._flow.core.transfer in BRIEFING:
                    left = "%s: no briefing within %.0f s: the human takes the call unbriefed"
                    log.warning(left, self._leg.call_id, self._plan.brief_timeout_s)
                self._code = 0
                self._flow.fire(Trigger.TIMEOUT, "time limit")
                continue
            self._heard(e)

    def _heard(self, e: ev.Event) -> None:
        if isinstance(e, ev.HumanLegChanged) and e.state is ev.LegState.ENDED:
            self._code = e.sip_code
            outcome = outcome_of(e.sip_code, self._flow.core.transfer is not Transfer.RINGING)
            self._flow.fire(TRIGGERS[outcome], f"the human's leg ended ({e.sip_code})")
        elif isinstance(e, ev.HumanLegChanged) and e.state is ev.LegState.ANSWERED:
            if self._plan.brief:
                self._flow.fire(Trigger.HUMAN_ANSWERED, "the human answered")
            else:
                self._taken()
        elif isinstance(e, ev.Dtmf) and e.digit == "1" and self._plan.accept == "dtmf":
            self._flow.fire(Trigger.HUMAN_PRESSED_1, "the human pressed 1")

    def _brief(self) -> None:
        """The human hears the agent brief them, up to ``brief_timeout_s`` (then the human takes the call
        unbriefed rather than wait on a model that does not answer). With ``accept: dtmf``, a "1" pressed meanwhile
        takes the call at once."""
        try:
            if self._human is None:
                raise RuntimeError("no human leg")
            self._human.hear_agent(True)
        except Exception as exc:
            log.warning("%s: the human cannot hear the briefing: %s", self._leg.call_id, exc)
            self._code = 0
            self._flow.fire(Trigger.HUMAN_FAILED, "the human cannot hear the briefing")
            return
        self._send(ev.AddText(BRIEF, ev.Role.SYSTEM))
        self._send(ev.CreateResponse())

    def _join(self) -> None:
        human = self._human
        try:
            if human is None:
                raise RuntimeError("no human leg")
            human.join()
        except Exception as exc:
            log.warning("%s: joining the human failed: %s", self._leg.call_id, exc)
            self._code = 0
            self._flow.fire(Trigger.HUMAN_FAILED, "the join failed")
            return
        self.joined, self._human, self._code = human, None, 200
        self._finish(Outcome.COMPLETED)

    def _finish(self, outcome: Outcome) -> None:
        code, target, now = self._code, self._target, self._flow.now()
        held, self._held = self._held, None
        if held is not None:
            can, since = held
            if outcome is not Outcome.COMPLETED:  # joined: the join ended the hold
                try:
                    can.unhold()
                except Exception as exc:
                    log.warning("%s: taking the caller off hold: %s", self._leg.call_id, exc)
            self._emit(ev.HoldEnded(round(now - since, 3)))
        seconds = round(now - self._t0, 3)
        self._report.transfer = dict(mode="warm", target=target, outcome=str(outcome), sip_code=code, seconds=seconds)
        self._emit(ev.WarmTransferEnded(outcome, target, code, seconds))
        if outcome is Outcome.COMPLETED:
            self._end("transferred (warm)", ev.EndedBy.AGENT, ev.CallOutcome.TRANSFERRED)
        elif outcome is not Outcome.CALLER_HUNG_UP:
            self._send(ev.AddText(note(outcome), ev.Role.SYSTEM))
            self._send(ev.CreateResponse())  # the agent comes back and says so

    async def close(self) -> None:
        """The session is over. An attempt under way: the caller hung up, the human's leg ends too. Joined: the
        bridged call lasts until either side hangs up; then the other side is hung up."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._flow.core.transfer in ATTEMPT:
            self._code = 0
            self._flow.fire(Trigger.CALLER_LEFT, "the caller hung up")
            return
        joined = self.joined
        if joined is None:
            return
        gone = [asyncio.ensure_future(joined.ended.wait()), asyncio.ensure_future(self._leg.disconnected.wait())]
        try:
            await asyncio.wait(gone, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for each in gone:
                each.cancel()
            joined.hangup()
            self._leg.hangup()
