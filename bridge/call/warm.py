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
POLL_S = 0.1  # the briefing: how often the agent's audio is looked at while the human's leg is quiet


def note(outcome: Outcome) -> str:
    """The system note for the model after a transfer that did not complete."""
    return f"{NOTES[outcome]} The caller is still with you: tell them, and offer to help or to try again later."


class WarmTransfer:
    """One call's warm transfers (at most one at a time)."""

    def __init__(
        self,
        plan: TransferPlan,
        leg: PhoneLeg,
        hold_wav: str,
        report: CallReport,
        *,
        send: Callable[[ev.Command], None],
        emit: Callable[[ev.Report], None],
        end: Callable[[str, ev.EndedBy, ev.CallOutcome], None],
        clock: Callable[[], float],
        agent_quiet: Callable[[], bool],
    ) -> None:
        self._plan = plan
        self._leg = leg
        self._hold_wav = hold_wav
        self._report = report
        self._send = send
        self._emit = emit
        self._end = end
        self._clock = clock
        self._agent_quiet = agent_quiet  # no response under way and nothing left to play
        self._task: asyncio.Task[None] | None = None
        self._human: HumanLeg | None = None
        self._held: tuple[Dialer, float] | None = None  # the caller is on the transfer's hold (since)
        self.joined: HumanLeg | None = None  # completed: the human's leg, joined with the caller's
        self._t0 = 0.0
        self._target = ""

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, target: str) -> None:
        """Put the caller on hold and call ``target`` (the pending ``transfer_to_human``'s)."""
        if self.active:
            return
        self._emit(ev.TransferStarted(target))
        self._t0, self._target = self._clock(), target
        can = dialer(self._leg)
        try:
            if can is None:
                raise RuntimeError("this leg cannot place a second call")
            can.hold(self._hold_wav)
            self._held = can, self._clock()
            self._emit(ev.HoldStarted())
            self._human = can.dial(target)
        except Exception as exc:
            log.warning("%s: warm transfer to %s: %s", self._leg.call_id, target, exc)
            self._finish(Outcome.FAILED, 0, target)
            return
        self._emit(ev.TransferStepped(ev.TransferStep.RINGING))
        self._task = asyncio.create_task(self._attempt(self._human, target), name=f"warm-{self._leg.call_id}")

    async def _attempt(self, human: HumanLeg, target: str) -> None:
        ended = await self._ring(human)
        if ended is None and self._plan.brief:
            ended = await self._brief(human)
        outcome, code = ended if ended is not None else await self._accept(human)
        if outcome is Outcome.COMPLETED:
            try:
                human.join()
            except Exception as exc:
                log.warning("%s: joining the human failed: %s", self._leg.call_id, exc)
                outcome, code = Outcome.FAILED, 0
            else:
                self.joined = human
        if outcome is not Outcome.COMPLETED:
            human.hangup()
        self._finish(outcome, code, target)

    async def _next(self, human: HumanLeg, until: float) -> ev.Event | None:
        """The human leg's next event, or None at ``until`` (a clock time)."""
        left = until - self._clock()
        if left <= 0:
            return None
        try:
            return await asyncio.wait_for(human.events.get(), left)
        except TimeoutError:
            return None

    async def _ring(self, human: HumanLeg) -> tuple[Outcome, int] | None:
        """The human's phone rings: None once answered, else how it ended."""
        deadline = self._clock() + self._plan.ring_timeout_s
        while self._clock() < deadline:
            e = await self._next(human, deadline)
            if isinstance(e, ev.HumanLegChanged):
                if e.state == "ended":
                    return outcome_of(e.sip_code, False), e.sip_code
                if e.state == "answered":
                    return None
        return Outcome.NO_ANSWER, 0

    async def _brief(self, human: HumanLeg) -> tuple[Outcome, int] | None:
        """The human hears the agent brief them; None once it has played (or ``brief_timeout_s`` is spent: the
        human takes the call unbriefed rather than wait on a model that does not answer), else how it ended.
        With ``accept: dtmf``, a "1" pressed meanwhile takes the call at once."""
        self._emit(ev.TransferStepped(ev.TransferStep.BRIEFING))
        try:
            human.hear_agent(True)
        except Exception as exc:
            log.warning("%s: the human cannot hear the briefing: %s", self._leg.call_id, exc)
            return Outcome.FAILED, 0
        self._send(ev.AddText(BRIEF, ev.Role.SYSTEM))
        self._send(ev.CreateResponse())
        deadline, spoke = self._clock() + self._plan.brief_timeout_s, False
        try:
            while self._clock() < deadline:
                quiet = self._agent_quiet()
                if spoke and quiet:
                    return None
                spoke = spoke or not quiet
                e = await self._next(human, min(deadline, self._clock() + POLL_S))
                if isinstance(e, ev.HumanLegChanged) and e.state == "ended":
                    return outcome_of(e.sip_code, True), e.sip_code
                if isinstance(e, ev.Dtmf) and e.digit == "1" and self._plan.accept == "dtmf":
                    return Outcome.COMPLETED, 200
            log.warning("%s: no briefing within %.0f s: the human takes the call unbriefed", self._leg.call_id,
                        self._plan.brief_timeout_s)  # fmt: skip
            return None
        finally:
            human.hear_agent(False)

    async def _accept(self, human: HumanLeg) -> tuple[Outcome, int]:
        """Answered (and briefed): ``accept: answer`` takes the call; ``accept: dtmf`` waits for "1"."""
        if self._plan.accept == "answer":
            return Outcome.COMPLETED, 200
        self._emit(ev.TransferStepped(ev.TransferStep.ACCEPTING))
        deadline = self._clock() + self._plan.accept_window_s
        while self._clock() < deadline:
            e = await self._next(human, deadline)
            if isinstance(e, ev.HumanLegChanged) and e.state == "ended":
                return outcome_of(e.sip_code, True), e.sip_code
            if isinstance(e, ev.Dtmf) and e.digit == "1":
                return Outcome.COMPLETED, 200
        return Outcome.DECLINED, 0

    def _finish(self, outcome: Outcome, code: int, target: str) -> None:
        self._human = None
        held, self._held = self._held, None
        if held is not None:
            can, since = held
            if outcome is not Outcome.COMPLETED:  # joined: the join ended the hold
                try:
                    can.unhold()
                except Exception as exc:
                    log.warning("%s: taking the caller off hold: %s", self._leg.call_id, exc)
            self._emit(ev.HoldEnded(round(self._clock() - since, 3)))
        seconds = round(self._clock() - self._t0, 3)
        self._report.transfer = {"mode": "warm", "target": target, "outcome": str(outcome), "sip_code": code,
                                 "seconds": seconds}  # fmt: skip
        self._emit(ev.WarmTransferEnded(outcome, target, code, seconds))
        if outcome is Outcome.COMPLETED:
            self._end("transferred (warm)", ev.EndedBy.AGENT, ev.CallOutcome.TRANSFERRED)
        elif outcome is not Outcome.CALLER_HUNG_UP:
            self._send(ev.AddText(note(outcome), ev.Role.SYSTEM))
            self._send(ev.CreateResponse())  # the agent comes back and says so

    async def close(self) -> None:
        """The session is over. An attempt under way: the caller hung up, the human's leg ends too. Joined: the
        bridged call lasts until either side hangs up; then the other side is hung up."""
        task, human = self._task, self._human
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if human is not None:
                human.hangup()
                self._finish(Outcome.CALLER_HUNG_UP, 0, self._target)
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
