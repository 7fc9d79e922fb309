"""An answered call that the caller's side ends with a BYE that says why (its Reason header, RFC 3326, as the SIP leg
reads it: ``CallerHungUp.peer``; bridge/call/reactions.py, bridge/call/peer.py): a network failure is the network's
end, not the caller's hang-up, and what the BYE said is the call's record either way. In virtual time, against the
emulator."""

from __future__ import annotations

import pytest
from _call_harness import Call, plan, run_call

from bridge import events as ev
from bridge.realtime.dialects import GA

DOWN = ev.PeerEnding("BYE", (ev.PeerReason("Q.850", 41, "Temporary failure"),), "Q.850 cause 41")
CLEARED = ev.PeerEnding("BYE", (ev.PeerReason("Q.850", 16, "Normal call clearing"),))


@pytest.mark.parametrize(
    ("peer", "end_reason", "ended_by", "outcome"),
    [
        (DOWN, "network failure (Q.850 cause 41)", ev.EndedBy.NETWORK, ev.CallOutcome.NETWORK_FAILURE),
        (CLEARED, "caller hung up (Normal call clearing)", ev.EndedBy.CALLER, ev.CallOutcome.COMPLETED),
        (None, "caller hung up (Normal call clearing)", ev.EndedBy.CALLER, ev.CallOutcome.COMPLETED),
    ],
)
def test_a_bye_that_names_a_network_failure_is_the_networks_end(
    peer: ev.PeerEnding | None, end_reason: str, ended_by: ev.EndedBy, outcome: ev.CallOutcome
) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()  # the greeting, heard
        call.phone.events.put_nowait(ev.CallerHungUp(200, "Normal call clearing", peer=peer))  # as the SIP leg does
        call.phone.disconnected.set()

    result = run_call(scenario, GA, dialplan=plan())
    report = result.report
    assert (report.answered, report.end_reason, report.ended_by) == (True, end_reason, ended_by)
    noted = [r for _, r in report.reports if isinstance(r, ev.PeerReasonGiven | ev.CallEnded)]
    values = list(peer.reasons) if peer is not None else []
    assert noted == [
        *([ev.PeerReasonGiven("BYE", peer.header())] if values else []),
        ev.CallEnded(end_reason, outcome, ended_by),
    ]  # on the timeline, before the end
    assert report.peer_reasons == [{"protocol": v.protocol, "cause": v.cause, "text": v.text} for v in values]
