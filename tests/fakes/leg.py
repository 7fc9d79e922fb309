"""Fakes shared by tests: a phone leg with no SIP that plays the media clock, and a speech-like signal.

A fake is a first-class peer: it drives the real ``CallSession`` through the same ``PhoneLeg`` interface
that ``bridge/sip`` implements.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from bridge import events as ev
from bridge.audio.frames import FrameSink, FrameSource

FRAME_BYTES = 320  # 20 ms of 8 kHz PCM16
TICK_S = 0.005  # the fake media clock runs 4x real time: the call takes a quarter of its length


def speech_8k(seconds: float, level: float = 0.2) -> bytes:
    """Voiced-speech-like signal: 150 Hz with harmonics, amplitude-modulated at 4 Hz (enough for the emulator VAD)."""
    t = np.arange(int(8000 * seconds)) / 8000
    x = sum(np.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * math.pi * 4 * t))
    return (x / np.max(np.abs(x)) * level * 32767).astype("<i2").tobytes()


class FakeLeg:
    """A PhoneLeg with no SIP: a task plays the media clock, draining the playout and feeding caller audio."""

    def __init__(self, call_id: str, caller: str = "+15550100", called: str = "100", tick_s: float = TICK_S) -> None:
        self.tick_s = tick_s
        self.heard = bytearray()  # everything the caller heard (8 kHz PCM16)
        self.call_id, self.caller, self.called = call_id, caller, called
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self._pending = b""
        self._task: asyncio.Task[None] | None = None

    def ringing(self) -> None:
        pass

    def answer(self) -> None:
        pass

    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None:
        self.disconnected.set()

    def hangup(self, reason: str | None = None) -> None:
        self.disconnected.set()

    def transfer(self, uri: str) -> None:
        pass

    def send_dtmf(self, digits: str) -> None:
        pass

    def say(self, seconds: float = 1.5) -> None:
        self._pending += speech_8k(seconds) + bytes(16000)  # then 1 s of silence ends the turn

    def uplink_offload(self, upsampler: object) -> None:
        return None  # no media clock thread: frames come through on_frame

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        async def clock() -> None:
            while not self.disconnected.is_set():
                self.heard += outbound.pop_frame()
                frame, self._pending = self._pending[:FRAME_BYTES], self._pending[FRAME_BYTES:]
                on_frame(frame.ljust(FRAME_BYTES, b"\0"), time.monotonic())
                await asyncio.sleep(self.tick_s)

        self._task = asyncio.create_task(clock())

    def stop(self) -> None:
        self.disconnected.set()
        if self._task is not None:
            self._task.cancel()


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


class SilentLeg:
    """A phone leg that only remembers what it was asked to do: no clock, no audio (the recorder's tests)."""

    def __init__(self) -> None:
        self.call_id, self.caller, self.called = "c1", "+1555", "1000"
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.media: tuple[Any, Any] | None = None
        self.hung_up = False

    def ringing(self) -> None: ...
    def answer(self) -> None: ...
    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None: ...
    def transfer(self, uri: str) -> None: ...
    def send_dtmf(self, digits: str) -> None: ...

    def hangup(self, reason: str | None = None) -> None:
        self.hung_up = True

    def start_media(self, outbound: Any, on_frame: Any) -> None:
        self.media = (outbound, on_frame)

    def uplink_offload(self, upsampler: Any) -> Any:
        self.offload_asked = upsampler
        return "offload"
