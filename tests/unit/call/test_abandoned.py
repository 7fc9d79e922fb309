"""A caller who hangs up while the call rings: the session's opening is cancelled, nothing is answered, and the call
ends as an ordinary call ended by the caller ("caller abandoned while ringing")."""

from __future__ import annotations

import asyncio

from fakes.leg import FakeLeg

from bridge import events as ev
from bridge.call.session import CallOptions, CallSession
from bridge.dialplan import Dialplan
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import GA
from bridge.rollout.health import CallStats, Outcome


class AnsweringLeg(FakeLeg):
    def __init__(self) -> None:
        super().__init__("c-abandoned")
        self.answers = 0

    def answer(self) -> None:
        self.answers += 1


async def test_a_hang_up_while_the_session_opens_cancels_it_and_ends_the_call_as_abandoned() -> None:
    leg = AnsweringLeg()
    opening = asyncio.Event()
    cancelled = asyncio.Event()

    async def connect() -> RealtimeClient:
        opening.set()
        try:
            await asyncio.Event().wait()  # a service slow to open the session
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    reports: list[ev.Report] = []
    stats = CallStats()
    session = CallSession(
        leg, Dialplan(name="unit", match=("100",)), GA, connect, CallOptions(listeners=[reports.append, stats])
    )
    run = asyncio.create_task(session.run())
    await asyncio.wait_for(opening.wait(), 5)
    leg.disconnected.set()  # the caller's CANCEL
    report = await asyncio.wait_for(run, 5)

    assert cancelled.is_set() and leg.answers == 0
    assert (report.answered, report.end_reason, report.ended_by) == (
        False, ev.ABANDONED_WHILE_RINGING, ev.EndedBy.CALLER,
    )  # fmt: skip
    ended = [r for r in reports if isinstance(r, ev.CallEnded)]
    assert [(e.outcome, e.ended_by) for e in ended] == [(ev.CallOutcome.ABANDONED, ev.EndedBy.CALLER)]
    assert not any(isinstance(r, ev.Answered) for r in reports)
    assert stats.outcome is Outcome.ABANDONED
