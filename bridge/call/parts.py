"""What the functions of a call use of it: its collaborators and its few own acts.

:mod:`bridge.call.reactions`, :mod:`bridge.call.changes` and :mod:`bridge.call.orchestration` act on a call through
this :class:`CallParts`, never through the session that assembles it, so that they depend on the parts below them
and the session alone depends on them. :class:`~bridge.call.session.CallSession` is the one implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bridge import events as ev
from bridge.audio import PlayoutBuffer
from bridge.call.bargein import BargeIn
from bridge.call.flow import CallFlow
from bridge.call.inbox import Inbox
from bridge.call.latency import LatencyMeter
from bridge.call.leg import PhoneLeg
from bridge.call.link import Link
from bridge.call.outage import OutageAudio
from bridge.call.playback import Playback
from bridge.call.recovery import Recovery
from bridge.call.report import CallReport
from bridge.call.rollover import Rollover
from bridge.call.toolcalls import ToolCalls
from bridge.call.transcripts import Transcripts
from bridge.call.turns import TurnBuilder
from bridge.call.usage import UsageMeter
from bridge.dialplan import Dialplan
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import Dialect


class OrchestratedTurns(Protocol):
    """What the call's reactions tell an orchestrated call (:class:`~bridge.call.orchestration.Orchestration`)."""

    def key(self) -> None: ...

    def transfer_failed(self, e: ev.TransferProgress) -> None: ...


class CallParts(Protocol):
    """One call as its functions see it. Read-only but for the two that they change: the current model session
    (``client``: lost, recovered, swapped) and whether the caller is speaking."""

    client: RealtimeClient | None
    caller_speaking: bool  # the session's VAD heard the caller start; the stop not handled yet

    @property
    def leg(self) -> PhoneLeg: ...
    @property
    def plan(self) -> Dialplan: ...
    @property
    def dialect(self) -> Dialect: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def report(self) -> CallReport: ...
    @property
    def phase(self) -> CallFlow: ...
    @property
    def inbox(self) -> Inbox: ...
    @property
    def usage(self) -> UsageMeter: ...
    @property
    def playout(self) -> PlayoutBuffer: ...
    @property
    def latency(self) -> LatencyMeter: ...
    @property
    def link(self) -> Link: ...
    @property
    def continuous(self) -> bool: ...
    @property
    def playback(self) -> Playback: ...
    @property
    def barge_in(self) -> BargeIn: ...
    @property
    def tools(self) -> ToolCalls: ...
    @property
    def transcripts(self) -> Transcripts: ...
    @property
    def turns(self) -> TurnBuilder | None: ...
    @property
    def outage(self) -> OutageAudio: ...
    @property
    def orchestration(self) -> OrchestratedTurns | None: ...
    @property
    def recovery(self) -> Recovery[RealtimeClient]: ...
    @property
    def rollover(self) -> Rollover[RealtimeClient]: ...
    @property
    def ending(self) -> bool: ...
    @property
    def service_interrupts(self) -> bool: ...

    def emit(self, report: ev.Report) -> None: ...

    def start_pump(self) -> None: ...

    def end(self, reason: str, outcome: str = "completed") -> None: ...

    def interrupt(self, why: str, agent_busy: bool, *, service_cancelled: bool = False) -> None: ...
