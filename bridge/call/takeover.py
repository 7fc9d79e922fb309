"""Take-over's leg: a :class:`TakeOverLeg` around the phone leg puts a supervisor's voice in place of the agent's.

::

    leg = TakeOverLeg(call)          # the worker wraps every call's leg, inside the listen tap
    leg.begin()                      # taken over: the caller hears the supervisor, never the agent
    leg.feed(pcm)                    # the supervisor's audio, PCM16 8 kHz mono, any length (on the loop)
    leg.end()                        # handed back: the agent's playout is heard again

While taken over, each frame the media port takes is the supervisor's next 20 ms frame (silence when none is
queued); the agent's frame popped with it is dropped, so its playout keeps its clock and nothing of it is heard.
The supervisor's audio waits in a bounded queue: past :data:`QUEUE_FRAMES` (a stall, then a burst) the oldest is
dropped, so the delay to the caller never grows. The model's side (it hears nothing of the caller while the call
is taken over, and its new audio is dropped) is the session's: ``bridge.call.supervision``.

The listen tap wraps this leg, so a supervisor listening in hears the caller and not their own voice back.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from bridge.audio.frames import FRAME_BYTES, FrameSink, FrameSource
from bridge.call.leg import LegProxy, PhoneLeg, SourceWrapper, inner_ring, pop_block

QUEUE_FRAMES: Final = 15  # at most 300 ms of the supervisor's voice waits for the caller; older frames are dropped
_SILENCE: Final = bytes(FRAME_BYTES)


class _Voice(SourceWrapper):
    """The outbound source as the media port sees it: the agent's, or the supervisor's while taken over. Every
    other attribute is the agent source's own (the native port's ``set_downstream``: a flush still reaches it)."""

    def __init__(self, source: FrameSource, leg: TakeOverLeg) -> None:
        super().__init__(source)
        self._leg = leg

    def pop_frame(self) -> bytes:
        frame = self._source.pop_frame()
        return self._leg.next_frame() if self._leg.active else frame

    def pop_frames(self, frames: int) -> bytes:
        """A beat's frames at once (the native port): the agent's block, or the supervisor's frames in its place."""
        block = pop_block(self._source, frames)
        if not self._leg.active:
            return block
        voice = self._leg.next_frame
        return b"".join([voice() for _ in range(frames)])

    def c_ring(self) -> tuple[int, int] | None:
        """The agent source's C ring for the native port to pull in C, unless taken over (``TeeSource``'s doc)."""
        return None if self._leg.active else inner_ring(self._source)


class TakeOverLeg(LegProxy):
    """A :class:`~bridge.call.leg.PhoneLeg` proxy whose outbound audio a supervisor can take over (module doc)."""

    def __init__(self, leg: PhoneLeg) -> None:
        super().__init__(leg)
        self.active = False
        self.who = ""
        self.frames_played = 0  # supervisor frames the caller was sent, this take-over
        self.frames_dropped = 0  # supervisor frames dropped as too late (the queue was full)
        self._voice: deque[bytes] = deque()
        self._partial = b""
        self._outbound: _Voice | None = None  # the outbound source as the port sees it

    def begin(self, who: str) -> None:
        self._voice.clear()
        self._partial, self.who, self.frames_played, self.frames_dropped = b"", who, 0, 0
        self.active = True
        if self._outbound is not None:  # the native port takes the frames through here from now on
            self._outbound.rerouted()

    def end(self) -> None:
        self.active = False
        self._voice.clear()
        self._partial = b""
        if self._outbound is not None:
            self._outbound.rerouted()

    def feed(self, pcm: bytes) -> None:
        """The supervisor's audio (PCM16 LE 8 kHz mono), cut into 20 ms frames; ignored unless taken over."""
        if not self.active:
            return
        data = self._partial + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        self._partial = data[whole:]
        for at in range(0, whole, FRAME_BYTES):
            if len(self._voice) >= QUEUE_FRAMES:
                self._voice.popleft()
                self.frames_dropped += 1
            self._voice.append(data[at : at + FRAME_BYTES])

    @property
    def queued(self) -> int:
        """The supervisor's frames waiting for the caller."""
        return len(self._voice)

    def next_frame(self) -> bytes:
        """The caller's next frame while taken over (media clock thread or loop: ``popleft`` is atomic)."""
        try:
            frame = self._voice.popleft()
        except IndexError:
            return _SILENCE
        self.frames_played += 1
        return frame

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        self._outbound = _Voice(outbound, self)
        self.leg.start_media(self._outbound, on_frame)
