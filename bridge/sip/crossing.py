"""The one module where audio crosses between the pjmedia clock thread and the asyncio event loop.

Threads in a SIP process (see docs/pjsip.md):

* the **loop thread** runs asyncio and polls ``Endpoint.libHandleEvents(0)`` (``threadCnt=0``,
  ``mainThreadOnly=True``), so every SIP callback (call state, DTMF, transfer) already runs on it;
* the **clock thread** (pjmedia's conference bridge, one per process) calls ``onFrameReceived`` and
  ``onFrameRequested`` of every media port of every call, every 20 ms, holding the GIL while in Python.

The clock callbacks only copy bytes and hand them over here:

* **inbound** (caller -> app): :meth:`FrameCrossing.put` is one ``deque.append`` on the clock thread, and the
  first frame of a clock tick also wakes the loop (``loop.call_soon_threadsafe``, one self-pipe write); the loop
  then drains every frame queued so far and calls each call's sink. A wake-up is asked for only while no drain
  is pending, so the frames of one tick share it unless the loop drains between them: ``deque.append`` costs
  0.1 µs and ``call_soon_threadsafe`` 4.5 µs on this machine (a syscall and a loop wake-up each). Waking on
  arrival instead of polling the deque every 5 ms means no 200 polls a second while calls are up, and a frame no
  longer waits for the next poll (inbound p50 in ``bench calls`` went from 2.9 to 0.6 ms).
* **outbound** (app -> caller): :class:`FrameQueue` is filled on the loop and popped on the clock thread.

That is the path of the Python media port (:class:`bridge.sip.media.BridgePort`). The native port
(:mod:`bridge.sip.cport`, the default where it builds) crosses in C instead: the clock thread only touches a ring
and an eventfd, and the loop's drain of those rings is registered here with :meth:`FrameCrossing.also_drain`,
so one :meth:`FrameCrossing.drain` serves both kinds.

No pjsua2 call may come from a thread that pjlib does not know: it aborts the process (``pj_thread_this``
assertion). A thread other than the loop that has to call pjsua2 registers once with :func:`register_thread`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass
from typing import Protocol

from bridge.audio.frames import FRAME_BYTES, FRAME_MS, SILENCE, FrameSink, FrameSource

_LOG = logging.getLogger("bridge.sip")


@dataclass(frozen=True, slots=True)
class PortCounters:
    """A media port's counts so far: frames from the call (``frames_in``) and to it (``frames_out``), size-0 frames
    from it (``empty_in``: no audio, e.g. for about a second after it ends), frames dropped because the loop did
    not drain for more than a ring (``errors``), ticks at which the playout ring was empty (``late_out``: the
    caller got 20 ms of silence) and requests more than 30 ms after the one before (``clock_gaps``: pjmedia's
    clock itself was late). The Python port measures neither of the last two."""

    frames_in: int = 0
    frames_out: int = 0
    empty_in: int = 0
    errors: int = 0
    late_out: int = 0
    clock_gaps: int = 0

    def since(self, before: PortCounters) -> PortCounters:
        """What was counted after ``before`` was read."""
        return PortCounters(*(now - then for now, then in zip(astuple(self), astuple(before), strict=True)))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class MediaPort(Protocol):
    """One call's media port, pooled by the endpoint: Python (``BridgePort``) or native (``NativePort``)."""

    def counters(self) -> PortCounters: ...

    def attach(self, source: FrameSource | None, sink: FrameSink | None) -> None: ...

    def detach(self) -> None: ...

    @property
    def attached(self) -> bool: ...

    def connect(self, audio_media: object) -> None: ...

    def route(self, audio_media: object, *, send: bool, receive: bool) -> None: ...


class _Registrar(Protocol):
    def libIsThreadRegistered(self) -> bool: ...

    def libRegisterThread(self, name: str) -> None: ...


class FrameCrossing:
    """Inbound hand-over: clock thread :meth:`put`, loop thread :meth:`drain`.

    One per process (the endpoint owns it). ``collections.deque`` append and popleft are atomic under the GIL,
    so no lock is taken on the clock thread. The backlog is bounded: if the loop stalls for longer than
    ``limit`` frames, new frames are dropped and counted in :attr:`dropped` instead of growing memory.
    """

    def __init__(self, limit: int = 4000) -> None:
        self.queue: deque[tuple[FrameSink, bytes, float]] = deque()  # read, never written, by the SIP poll
        self._limit = limit
        self._wake: Callable[[], object] | None = None
        self._wake_pending = False
        self._also: Callable[[], int] | None = None
        self.dropped = 0
        self.delivered = 0
        self.sink_errors = 0
        self.wakes = 0

    def wake_with(self, wake: Callable[[], object] | None) -> None:
        """Loop thread: ``wake()`` is called from the clock thread when a frame arrives and no drain is pending
        (typically ``lambda: loop.call_soon_threadsafe(crossing.drain)``). ``None``: frames wait for a poll."""
        self._wake = wake
        self._wake_pending = False

    def also_drain(self, drain: Callable[[], int] | None) -> None:
        """Loop thread: :meth:`drain` also calls ``drain()`` (the native ports' hub), adding its count."""
        self._also = drain

    def put(self, sink: FrameSink, pcm: bytes, t_capture: float) -> None:
        """Clock thread: queue one frame for ``sink`` and wake the loop if no drain is pending yet.
        Never raises, never blocks."""
        queue = self.queue
        if len(queue) >= self._limit:
            self.dropped += 1
            return
        queue.append((sink, pcm, t_capture))
        wake = self._wake
        if wake is not None and not self._wake_pending:
            # The flag is cleared by drain() *before* it pops: a frame appended after that either is popped by
            # the running drain or finds the flag clear and schedules the next one. No frame waits for a poll.
            self._wake_pending = True
            self.wakes += 1
            try:
                wake()
            except Exception:  # the loop is closing: the frame stays queued for a final drain
                self._wake_pending = False

    def __len__(self) -> int:
        return len(self.queue)

    def drain(self, also: bool = True) -> int:
        """Loop thread: deliver every queued frame in arrival order, then (if ``also``) run the registered extra
        drain; returns how many frames were delivered."""
        self._wake_pending = False
        queue = self.queue
        count = 0
        while queue:
            try:
                sink, pcm, t_capture = queue.popleft()
            except IndexError:  # pragma: no cover - only the loop pops, but stay safe
                break
            try:
                sink(pcm, t_capture)
            except Exception:
                self.sink_errors += 1
                if self.sink_errors <= 10 or self.sink_errors % 1000 == 0:
                    _LOG.exception("on_frame sink raised (%d so far)", self.sink_errors)
            count += 1
        self.delivered += count
        extra = self._also if also else None
        return count + extra() if extra is not None else count

    def clear(self) -> None:
        self.queue.clear()


class FrameQueue:
    """Outbound hand-over: the loop :meth:`push`-es PCM16 8 kHz audio, the clock thread :meth:`pop_frame`-s it.

    Audio is cut into 320-byte frames (a short tail is zero-padded when it is popped); an empty queue yields
    silence, so the caller hears no glitch when the app has nothing to say. :meth:`clear` drops what is queued
    (barge-in). ``queued_ms`` tells the app how far ahead of the wire it is.
    """

    def __init__(self, max_frames: int | None = None) -> None:
        self._frames: deque[bytes] = deque(maxlen=max_frames)
        self._tail = b""
        self.popped = 0
        self.underruns = 0

    def push(self, pcm: bytes) -> None:
        data = self._tail + pcm if self._tail else pcm
        whole = len(data) - len(data) % FRAME_BYTES
        frames = self._frames
        for offset in range(0, whole, FRAME_BYTES):
            frames.append(data[offset : offset + FRAME_BYTES])
        self._tail = data[whole:]

    def flush(self) -> None:
        """Queue the partial tail too (zero-padded), e.g. at the end of an utterance."""
        if self._tail:
            self._frames.append(self._tail.ljust(FRAME_BYTES, b"\0"))
            self._tail = b""

    def clear(self) -> None:
        self._frames.clear()
        self._tail = b""

    @property
    def queued_ms(self) -> int:
        return len(self._frames) * FRAME_MS

    def pop_frame(self) -> bytes:
        """Clock thread: the next frame, or silence."""
        try:
            frame = self._frames.popleft()
        except IndexError:
            self.underruns += 1
            return SILENCE
        self.popped += 1
        return frame


def register_thread(ep: _Registrar, name: str | None = None) -> None:
    """Register the calling thread with pjlib once; required before any pjsua2 call from a non-loop thread."""
    if not ep.libIsThreadRegistered():
        ep.libRegisterThread(name or threading.current_thread().name)
