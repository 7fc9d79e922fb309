"""``bridge.call.warm``: the outcomes of a warm transfer the real-UA test does not reach (accept: dtmf, the ring
timeout, the caller hanging up mid-attempt, a leg that cannot dial), with a human leg driven by hand. The SIP side
and the join are tested with real user agents in tests/integration/bridge/test_bridge_warm_transfer.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from fakes.leg import FakeLeg

from bridge import events as ev
from bridge.call.core import Transfer
from bridge.call.flow import CallFlow, Trigger
from bridge.call.report import CallReport
from bridge.call.state import PhaseMachine
from bridge.call.warm import BRIEF, WarmTransfer, outcome_of
from bridge.dialplan import TransferPlan

Outcome = ev.TransferOutcome
TARGET = "sip:agent@pbx"


class Human:
    """The human's leg as the session sees it (``bridge.call.leg.HumanLeg``)."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.hung_up = self.joined = self.hearing = False
        self.heard_agent: list[bool] = []

    def hear_agent(self, on: bool) -> None:
        self.hearing = on
        self.heard_agent.append(on)

    def hangup(self) -> None:
        self.hung_up = True
        self.ended.set()

    def join(self) -> None:
        self.joined = True


class DialingLeg(FakeLeg):
    def __init__(self) -> None:
        super().__init__("c-warm")
        self.human = Human()
        self.dialled: list[str] = []
        self.held: list[str] = []  # the hold audio the caller hears, while on hold

    def dial(self, uri: str) -> Human:
        self.dialled.append(uri)
        return self.human

    def hold(self, wav: str) -> None:
        self.held.append(wav)

    def unhold(self) -> None:
        self.held.clear()


class Bed:
    def __init__(self, leg: FakeLeg, **plan: Any) -> None:
        self.leg = leg
        self.sent: list[ev.Command] = []
        self.reports: list[ev.Report] = []
        self.ended: list[tuple[str, ev.CallOutcome]] = []
        self.report = CallReport("c-warm", "ga", "p")
        self.flow = CallFlow(PhaseMachine("c-warm", clock=time.monotonic), lambda action, why: None)
        self.flow.fire(Trigger.READY)
        self.warm = WarmTransfer(
            TransferPlan(mode="warm", target=TARGET, **plan),
            leg,
            "hold.wav",
            self.report,
            flow=self.flow,
            send=self.sent.append,
            emit=self.reports.append,
            end=lambda why, _, outcome: self.ended.append((why, outcome)),
        )

    def start(self) -> None:
        """The transfer decided (the tool's call), then its line played: the warm transfer starts."""
        self.flow.fire(Trigger.TRANSFER_DECIDED, f"transfer to {TARGET}")
        assert self.step() is Transfer.ANNOUNCING
        self.warm.start(TARGET)

    def step(self) -> Transfer:
        return self.flow.core.transfer

    @property
    def kinds(self) -> list[str]:
        return [r.kind for r in self.reports]

    def outcome(self) -> ev.WarmTransferEnded:
        (done,) = [r for r in self.reports if isinstance(r, ev.WarmTransferEnded)]
        return done

    async def settled(self) -> None:
        await self.until(lambda: any(isinstance(r, ev.WarmTransferEnded) for r in self.reports), "an outcome")

    async def until(self, check: Callable[[], bool], what: str) -> None:
        for _ in range(400):
            if check():
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"no {what}: {self.kinds}, sent {self.sent}")


@pytest.mark.parametrize(
    ("code", "answered", "outcome"),
    [(486, False, Outcome.BUSY), (600, False, Outcome.BUSY), (603, False, Outcome.DECLINED),
     (480, False, Outcome.NO_ANSWER), (408, False, Outcome.NO_ANSWER), (487, False, Outcome.NO_ANSWER),
     (404, False, Outcome.FAILED), (500, False, Outcome.FAILED), (200, True, Outcome.DECLINED)],
)  # fmt: skip
def test_a_final_status_is_a_typed_outcome(code: int, answered: bool, outcome: Outcome) -> None:
    assert outcome_of(code, answered) is outcome


async def test_the_human_hears_the_briefing_then_takes_the_call() -> None:
    leg = DialingLeg()
    bed = Bed(leg)
    bed.start()
    assert leg.dialled == [TARGET] and leg.held == ["hold.wav"]
    assert bed.kinds == ["transfer", "hold_started", "transfer_step"]
    leg.human.events.put_nowait(ev.HumanLegChanged(ev.LegState.ANSWERED, 200))
    await bed.until(lambda: len(bed.sent) == 2, "briefing asked for")
    note, respond = bed.sent
    assert isinstance(note, ev.AddText) and note.text == BRIEF and note.role is ev.Role.SYSTEM
    assert isinstance(respond, ev.CreateResponse) and leg.human.hearing and leg.held  # the caller still on hold
    # the model has not spoken yet: an idle beat does not end the briefing
    bed.flow.fire(Trigger.PLAYED_OUT)
    assert not leg.human.joined and bed.step() is Transfer.BRIEFING
    bed.flow.fire(Trigger.RESPONSE_STARTED)  # the briefing plays ...
    bed.flow.fire(Trigger.MODEL_AUDIO)
    assert not leg.human.joined and bed.step() is Transfer.BRIEF_PLAYING
    bed.flow.fire(Trigger.PLAYED_OUT)  # ... and has played out: the human takes the call
    await bed.settled()
    assert leg.human.heard_agent == [True, False] and leg.human.joined
    steps = [r.step for r in bed.reports if isinstance(r, ev.TransferStepped)]
    assert steps == [ev.TransferStep.RINGING, ev.TransferStep.BRIEFING]
    assert bed.outcome().outcome is Outcome.COMPLETED and len(bed.sent) == 2  # no note after a completed transfer


async def test_a_model_that_never_briefs_does_not_keep_the_human_waiting() -> None:
    leg = DialingLeg()
    bed = Bed(leg, brief_timeout_s=0.1)
    bed.start()
    leg.human.events.put_nowait(ev.HumanLegChanged(ev.LegState.ANSWERED, 200))
    await bed.settled()
    assert leg.human.joined and leg.human.heard_agent == [True, False]
    assert bed.outcome().outcome is Outcome.COMPLETED


async def test_a_human_hanging_up_during_the_briefing_brings_the_agent_back() -> None:
    leg = DialingLeg()
    bed = Bed(leg)
    bed.start()
    leg.human.events.put_nowait(ev.HumanLegChanged(ev.LegState.ANSWERED, 200))
    await bed.until(lambda: len(bed.sent) == 2, "briefing asked for")
    bed.flow.fire(Trigger.RESPONSE_STARTED)
    leg.human.events.put_nowait(ev.HumanLegChanged(ev.LegState.ENDED, 200))
    await bed.settled()
    assert bed.outcome().outcome is Outcome.DECLINED and not leg.human.joined and leg.held == []  # off hold
    assert "declined" in bed.sent[2].text  # type: ignore[union-attr]  # an AddText: the agent says so


async def test_accept_dtmf_joins_on_1_only() -> None:
    leg = DialingLeg()
    bed = Bed(leg, accept="dtmf", accept_window_s=2, brief=False)
    bed.start()
    assert leg.dialled == [TARGET] and bed.kinds[:2] == ["transfer", "hold_started"]
    assert leg.held == ["hold.wav"]  # the caller hears the hold audio
    leg.human.events.put_nowait(ev.HumanLegChanged(ev.LegState.ANSWERED, 200))
    leg.human.events.put_nowait(ev.Dtmf("2"))  # not the key: still waiting
    await asyncio.sleep(0.02)
    assert not leg.human.joined and bed.ended == []
    leg.human.events.put_nowait(ev.Dtmf("1"))
    await bed.settled()
    assert leg.human.joined and not leg.human.hung_up
    assert (bed.outcome().outcome, bed.outcome().sip_code) == (Outcome.COMPLETED, 200)
    assert bed.ended == [("transferred (warm)", ev.CallOutcome.TRANSFERRED)]
    assert bed.kinds.index("hold_ended") < bed.kinds.index("transfer_outcome") and bed.sent == []
    assert bed.report.transfer is not None and bed.report.transfer["outcome"] == "completed"
    # joined: the call lasts until a side hangs up; the caller's hang-up ends the human's leg
    closing = asyncio.create_task(bed.warm.close())
    await asyncio.sleep(0.02)
    assert not closing.done()
    leg.hangup()
    await asyncio.wait_for(closing, 1)
    assert leg.human.hung_up


async def test_no_1_within_the_window_is_declined_and_the_agent_comes_back() -> None:
    leg = DialingLeg()
    bed = Bed(leg, accept="dtmf", accept_window_s=0.05, brief=False)
    bed.start()
    leg.human.events.put_nowait(ev.HumanLegChanged(ev.LegState.ANSWERED, 200))
    await bed.settled()
    assert bed.outcome().outcome is Outcome.DECLINED and leg.human.hung_up and not leg.human.joined
    note, respond = bed.sent
    assert isinstance(note, ev.AddText) and note.role is ev.Role.SYSTEM and "declined" in note.text
    assert isinstance(respond, ev.CreateResponse) and bed.ended == []


async def test_the_ring_timeout_is_no_answer() -> None:
    leg = DialingLeg()
    bed = Bed(leg, ring_timeout_s=0.05)
    bed.start()
    leg.human.events.put_nowait(ev.HumanLegChanged(ev.LegState.RINGING, 180))
    await bed.settled()
    assert (bed.outcome().outcome, bed.outcome().sip_code) == (Outcome.NO_ANSWER, 0)
    assert leg.human.hung_up and "did not answer" in bed.sent[0].text  # type: ignore[union-attr]  # an AddText


async def test_a_caller_hanging_up_mid_attempt_ends_the_human_leg() -> None:
    leg = DialingLeg()
    bed = Bed(leg)
    bed.start()
    leg.human.events.put_nowait(ev.HumanLegChanged(ev.LegState.RINGING, 180))
    await asyncio.sleep(0.01)
    bed.flow.fire(Trigger.FINISHED, "caller hung up")
    await bed.warm.close()  # the session ends with the caller
    assert leg.human.hung_up and bed.outcome().outcome is Outcome.CALLER_HUNG_UP
    assert bed.sent == [] and bed.ended == []  # nobody to tell
    assert bed.flow.core.transfer is Transfer.BACK


async def test_a_leg_that_cannot_dial_fails_and_the_agent_says_so() -> None:
    bed = Bed(FakeLeg("c-plain"))
    bed.start()
    assert bed.outcome().outcome is Outcome.FAILED
    assert "could not be placed" in bed.sent[0].text  # type: ignore[union-attr]  # an AddText
    assert "hold_started" not in bed.kinds  # the caller never left the agent
