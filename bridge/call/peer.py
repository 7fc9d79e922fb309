"""How the caller's side ended the call, when its BYE or CANCEL said more than a hang-up: the phone leg reads the
request's ``Reason`` header (RFC 3326; for SIP: ``bridge/sip/reason.py``) into ``CallerHungUp.peer``, and the call
ends as that says:

==========================  =========================  =====================  ===================================
what the Reason says        end reason                 ended by               outcome
==========================  =========================  =====================  ===================================
a network failure           ``network failure (Q.850   ``network``            ``network_failure``
                            cause 41)``, ``(SIP 408)``,
                            ``(RTP timeout)``
a CANCEL for a ring         ``call completed           ``network``            ``completed_elsewhere`` (no abandon)
completed elsewhere         elsewhere``
anything else, or nothing   the caller's hang-up or    ``caller``             ``completed`` / ``abandoned``
                            abandon, as without one
==========================  =========================  =====================  ===================================

Whatever it says, its values are the call's record: ``CallReport.peer_reasons`` (protocol, cause, text) and a
``peer_reason`` report on the call's timeline (:class:`~bridge.events.PeerReasonGiven`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from bridge import events as ev
from bridge.call.report import CallReport

Ending = tuple[str, ev.EndedBy, ev.CallOutcome]  # the end reason, who ended the call, its outcome
ABANDONED: Ending = (ev.ABANDONED_WHILE_RINGING, ev.EndedBy.CALLER, ev.CallOutcome.ABANDONED)


def peer_end(peer: ev.PeerEnding | None) -> Ending | None:
    """The end of a call the network ended (the table above); None: the caller's own hang-up."""
    if peer is None:
        return None
    if peer.elsewhere:
        return ev.COMPLETED_ELSEWHERE, ev.EndedBy.NETWORK, ev.CallOutcome.COMPLETED_ELSEWHERE
    if peer.network_failure:
        return ev.network_failure(peer.network_failure), ev.EndedBy.NETWORK, ev.CallOutcome.NETWORK_FAILURE
    return None


def note_peer(peer: ev.PeerEnding | None, report: CallReport, emit: Callable[[ev.Report], None]) -> None:
    """The ``Reason`` values of the request that ended the call, in its report and on its timeline (none: nothing)."""
    if peer is None or not peer.reasons:
        return
    report.peer_reasons = [dataclasses.asdict(value) for value in peer.reasons]
    emit(ev.PeerReasonGiven(peer.request, peer.header()))


def hung_up(events: asyncio.Queue[ev.Event]) -> ev.CallerHungUp | None:
    """The leg's last ``CallerHungUp`` among the events it has queued, every one of them taken (before the answer
    nothing else reads them)."""
    gone: ev.CallerHungUp | None = None
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, ev.CallerHungUp):
            gone = event
    return gone
