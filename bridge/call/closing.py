"""The call's end: its sessions, tools and orchestrator closed, the post-call questions asked, the usage and the
playout totalled, the checks reported and ``CallEnded`` emitted, in that order. It acts on a :class:`Closing` (what
it reads of the session), never on the session's class, so the session alone depends on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from bridge import events as ev
from bridge.audio import Playout
from bridge.audio.frames import FRAME_MS
from bridge.call.checks import report_checks
from bridge.call.consent import ConsentPrompt
from bridge.call.flow import CallFlow, Trigger
from bridge.call.options import CallOptions
from bridge.call.orchestration import Orchestration
from bridge.call.playback import Playback
from bridge.call.report import CallReport
from bridge.call.rollover import Rollover
from bridge.call.state import Phase
from bridge.call.toolcalls import ToolCalls
from bridge.call.turns import TurnBuilder
from bridge.call.usage import UsageMeter
from bridge.call.warm import WarmTransfer
from bridge.call.wrapup import Ledger, ask_after_call
from bridge.dialplan import Checks, Dialplan
from bridge.orchestrator.client import OrchestratorClient
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import Dialect
from bridge.runtime import tracecontext


class Closing(Protocol):
    """What the end of the call reads of the session (:class:`~bridge.call.session.CallSession`)."""

    plan: Dialplan
    dialect: Dialect
    options: CallOptions
    report: CallReport
    usage: UsageMeter
    phase: CallFlow
    playout: Playout
    playback: Playback
    tools: ToolCalls
    turns: TurnBuilder | None
    rollover: Rollover[RealtimeClient]
    warm: WarmTransfer | None
    orchestration: Orchestration | None
    own_orchestrator: OrchestratorClient | None  # made for this call (none was given): closed with it
    consent: ConsentPrompt | None  # a recorded call's consent prompt: its end reported before the call's
    redact: Callable[[str], str]  # the plan's privacy for the post-call summary and fields

    @property
    def client(self) -> RealtimeClient | None: ...
    @property
    def outcome(self) -> ev.CallOutcome: ...
    def emit(self, report: ev.Report) -> None: ...


async def close_call(call: Closing) -> None:
    """The call is over: close its sessions and orchestrator, total the usage and the playout, report the end."""
    if call.consent is not None:
        call.consent.close(call.report.ended_by)
    if call.orchestration is not None:
        await call.orchestration.close()
    if call.own_orchestrator is not None:
        await call.own_orchestrator.close()
    await call.tools.close()
    if call.turns is not None:
        call.turns.flush()
    await asyncio.gather(*call.rollover.stop(), return_exceptions=True)  # each closes its session
    report, caps = call.report, call.dialect.capabilities
    if call.plan.post_call is not None or call.plan.checks != Checks():  # its span in the call's trace (tracing on)
        tracecontext.post_call_began(asked=call.plan.post_call is not None)
    if call.plan.post_call is not None:  # the phone leg has ended: the model's summary, before its session closes
        await ask_after_call(
            call.client,
            call.plan.post_call,
            caps,
            Ledger(report, call.emit, call.usage),
            timeout_s=call.options.post_call_timeout_s,
            responding=call.playback.responding(),
            redact=call.redact,
        )
    for client in (call.client, call.rollover.next):
        if client is not None:
            await client.close()
    report.agent_audio_ms = call.playout.frames_played * FRAME_MS
    if call.phase.phase is not Phase.ENDED:
        call.phase.fire(Trigger.FINISHED, report.end_reason or "session finished")
    call.emit(ev.PlayoutTotals(call.playout.underruns, call.playout.dropped_frames))
    final = call.client.protocol.usage_seconds if call.client is not None else None  # came with the close
    report.usage = call.usage.ended(final, caps.usage == "audio_seconds", call.emit)
    if call.warm is not None:  # an attempt ends with the caller; a joined call lasts until a side hangs up
        await call.warm.close()
    report_checks(call.plan.checks, report, call.emit)
    call.emit(ev.CallEnded(report.end_reason, call.outcome, report.ended_by or ev.EndedBy.FAULT))
