"""The call as it is answered: the model's session opened while the phone still rings, given up the moment the caller
hangs up (or the call refused with a 503 when no model answers and the worker says so), and both directions of the
caller's media started once the call is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bridge import events as ev
from bridge.audio.frames import FrameSink, FrameSource
from bridge.call.echo import EchoGuarding
from bridge.call.flow import Trigger
from bridge.call.leg import PhoneLeg
from bridge.call.link import Link
from bridge.call.media import MediaPath
from bridge.call.options import CallOptions
from bridge.call.parts import CallParts
from bridge.errors import ConnectError
from bridge.realtime import downlink
from bridge.realtime.client import RealtimeClient

T = TypeVar("T")


async def unless_gone(opening: Awaitable[T], gone: asyncio.Event) -> T | None:
    """What ``opening`` opens (or its TimeoutError / ConnectError); None if ``gone`` (the caller hung up) is set
    first: the opening is cancelled then, so no model session outlives an abandoned call."""
    task = asyncio.ensure_future(opening)
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def connect_before_answer(
    parts: CallParts, open_session: Callable[[], Awaitable[RealtimeClient]], options: CallOptions
) -> bool:
    """Open the WebSocket before the 200 OK: greeting latency is the callers' top complaint. False: no model and the
    worker rejects such calls (503: a front tries another node); the call is over."""
    call, leg, plan = parts.call, parts.leg, parts.plan
    t_connect = call.clock()
    try:
        if options.model_down:
            raise ConnectError(ev.ErrorClass.NETWORK, "the worker's circuit breaker is open", retryable=True)
        client = await unless_gone(asyncio.wait_for(open_session(), plan.answer_timeout_s), leg.disconnected)
        if client is None:
            return True  # the caller hung up first (the session's run ends the call as abandoned)
        parts.audio.link.swap(client)
        parts.audio.latency.sample("session_setup", (call.clock() - t_connect) * 1000)
    except (TimeoutError, ConnectError) as exc:
        cls = exc.error_class if isinstance(exc, ConnectError) else ev.ErrorClass.NETWORK
        call.emit(ev.RealtimeUnavailable(str(exc) or "timeout", cls))
        call.report.errors.append({"class": "network", "code": "connect", "message": str(exc) or "timeout"})
        if options.reject_when_down and not leg.disconnected.is_set():
            leg.reject(503, "Service Unavailable", retry_after=int(plan.outage.hold_s))
            call.end("realtime unavailable: rejected (503)", ev.EndedBy.FAULT, ev.CallOutcome.FAILED)
            parts.phase.fire(Trigger.FINISHED, call.report.end_reason)
            call.emit(ev.CallEnded(call.report.end_reason, ev.CallOutcome.FAILED, ev.EndedBy.FAULT))
            return False
    return True


def start_media(
    leg: PhoneLeg, path: MediaPath, outbound: FrameSource, on_frame: FrameSink, link: Link, echo: EchoGuarding | None
) -> None:
    """The answered call's media: ``outbound`` to the caller, their frames to ``on_frame`` (the echo guard hears
    them first), the model's audio decoded in C where the setting and the socket allow (``native_downlink``), and
    the caller's audio sent from the media clock where the leg offers it and the socket takes it
    (else the loop sends it). A path whose guard hears the frames there refuses an offload that cannot take it."""
    if echo is not None:
        outbound, on_frame = echo.media(outbound, on_frame)
    leg.start_media(outbound, on_frame)
    if downlink.enabled():  # the model's audio decoded in C from the socket's bytes (native_downlink)
        link.decode_audio(path.downlink)
    if path.offload is None:
        return
    offload = leg.uplink_offload(path.offload)
    guard = echo if path.guard_on_clock else None
    link.offload = offload if offload is None or guard is None or guard.on_clock(offload) else None
