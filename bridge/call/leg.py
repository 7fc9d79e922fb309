"""The telephone leg as the call session sees it.

``bridge/sip`` implements it over pjsua2 (``IncomingCall``); replays implement it with no SIP at all. The session
never sees a pjsua2 type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from bridge import events as ev


class FrameSource(Protocol):
    def pop_frame(self) -> bytes:
        """Exactly one 20 ms frame of 8 kHz PCM16 (320 bytes). Called on the media clock thread; never blocks."""
        ...


FrameSink = Callable[[bytes, float], None]  # (320 bytes of 8 kHz PCM16, capture time.monotonic()) on the loop thread


class PhoneLeg(Protocol):
    call_id: str
    caller: str
    called: str
    events: asyncio.Queue[ev.Event]  # Dtmf, TransferProgress, CallerHungUp
    disconnected: asyncio.Event

    def ringing(self) -> None: ...
    def answer(self) -> None: ...
    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None: ...
    def hangup(self) -> None: ...
    def transfer(self, uri: str) -> None: ...
    def send_dtmf(self, digits: str) -> None: ...
    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None: ...
