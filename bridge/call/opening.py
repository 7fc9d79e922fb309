"""The call as it is answered: the model's session opened while the phone still rings, given up the moment the caller
hangs up, and both directions of the caller's media started once the call is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from bridge.audio.frames import FrameSink, FrameSource
from bridge.call.echo import EchoGuarding
from bridge.call.leg import PhoneLeg
from bridge.call.link import Link
from bridge.call.media import MediaPath
from bridge.realtime import downlink

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
