"""A caller who hangs up while the call rings: the session's opening is cancelled, nothing is answered, and the call
ends as an ordinary call ended by the caller ("caller abandoned while ringing"), unless its CANCEL says more: a ring
completed elsewhere, a network failure (bridge/call/peer.py)."""

from __future__ import annotations

import asyncio

import pytest
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


ELSEWHERE = (ev.PeerReason("SIP", 200, "Call completed elsewhere"),)
COMPLETED_ELSEWHERE = ev.PeerEnding("CANCEL", ELSEWHERE, elsewhere=True)
NETWORK_DOWN = ev.PeerEnding("CANCEL", (ev.PeerReason("Q.850", 41, "Temporary failure"),), "Q.850 cause 41")
UNSPECIFIED = ev.PeerEnding("CANCEL", (ev.PeerReason("Q.850", 31, ""),))


@pytest.mark.parametrize(
    ("peer", "end_reason", "ended_by", "outcome", "rollout"),
    [
        (
            COMPLETED_ELSEWHERE,
            "call completed elsewhere",
            ev.EndedBy.NETWORK,
            ev.CallOutcome.COMPLETED_ELSEWHERE,
            Outcome.OK,
        ),
        (
            NETWORK_DOWN,
            "network failure (Q.850 cause 41)",
            ev.EndedBy.NETWORK,
            ev.CallOutcome.NETWORK_FAILURE,
            Outcome.OK,
        ),
        (UNSPECIFIED, ev.ABANDONED_WHILE_RINGING, ev.EndedBy.CALLER, ev.CallOutcome.ABANDONED, Outcome.ABANDONED),
    ],
)
async def test_a_cancel_that_says_why_ends_the_ringing_call_as_it_says(
    peer: ev.PeerEnding, end_reason: str, ended_by: ev.EndedBy, outcome: ev.CallOutcome, rollout: Outcome
) -> None:
    leg = AnsweringLeg()
    opening = asyncio.Event()

    async def connect() -> RealtimeClient:
        opening.set()
        await asyncio.Event().wait()  # a service slow to open the session
        raise AssertionError("unreachable")

    reports: list[ev.Report] = []
    stats = CallStats()
    session = CallSession(
        leg, Dialplan(name="unit", match=("100",)), GA, connect, CallOptions(listeners=[reports.append, stats])
    )
    run = asyncio.create_task(session.run())
    await asyncio.wait_for(opening.wait(), 5)
    leg.events.put_nowait(ev.CallerHungUp(487, "Request Terminated", peer=peer))  # as the SIP leg reports a CANCEL
    leg.disconnected.set()
    report = await asyncio.wait_for(run, 5)

    assert (report.answered, report.end_reason, report.ended_by) == (False, end_reason, ended_by)
    assert report.peer_reasons == [{"protocol": v.protocol, "cause": v.cause, "text": v.text} for v in peer.reasons]
    assert [r.outcome for r in reports if isinstance(r, ev.CallEnded)] == [outcome]
    given = [r for r in reports if isinstance(r, ev.PeerReasonGiven)]
    assert given == [ev.PeerReasonGiven("CANCEL", peer.header())]
    assert stats.outcome is rollout  # a ring completed elsewhere is no abandon in the variant's window
    assert leg.events.empty()
