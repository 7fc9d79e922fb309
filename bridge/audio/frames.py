"""The telephone side's frame: its constants and the protocols that move frames, defined once.

Framing follows RFC 3551 §4.5.14 (PCMU/PCMA: 8000 samples/s) and §4.5 (20 ms default packetization): one frame
is 160 samples, 320 bytes of 16-bit linear PCM or 160 bytes of G.711. Every part of the bridge (SIP media ports,
the native port, the call session, playout, replays, WAV files) speaks this frame.

The media beat: a worker's event loop serves its calls' 20 ms ticks ``BEAT_FRAMES`` at a time (the media port's
rings absorb the rest); ``MAX_BEAT_FRAMES`` bounds the setting.

The caller's frames reach the loop a beat's worth at a time, and go down the leg's wrappers as a block where each
takes one (:class:`BlockSink`: the recording, the listen tap, the SIP call's own sink): one call per stage and
read, not per frame. A stage that only takes frames gets them one by one, in order, each with its own time
(:func:`block_form`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Protocol

SAMPLE_RATE: Final = 8000  # Hz, RFC 3551 §4.5.14 (PCMU/PCMA)
FRAME_MS: Final = 20  # RFC 3551 §4.5: default packetization interval
SAMPLES_PER_FRAME: Final = SAMPLE_RATE * FRAME_MS // 1000  # 160
BYTES_PER_FRAME_PCM16: Final = 2 * SAMPLES_PER_FRAME  # 320
BYTES_PER_FRAME_G711: Final = SAMPLES_PER_FRAME  # 160
FRAME_BYTES: Final = BYTES_PER_FRAME_PCM16  # the frame as it crosses between threads: PCM16 mono
SILENCE: Final = bytes(FRAME_BYTES)

PERIOD_S: Final = FRAME_MS / 1000  # one media tick
BEAT_FRAMES: Final = 3  # a worker's default beat with native ports, in ticks (docs/benchmarks.md)
MAX_BEAT_FRAMES: Final = 8
MAX_JITTER_FLOOR_MS: Final = 200  # a jitter buffer floor above this delays a caller's words more than it saves

FrameSink = Callable[[bytes, float], None]
"""``sink(pcm, t_capture)``: one frame of PCM16 and the ``time.monotonic()`` taken in the clock callback."""

OnFrames = Callable[[bytes, Sequence[float]], None]
"""``on_frames(block, times)``: ``len(times)`` whole frames back to back, oldest first, each with its capture time."""


class BlockSink(Protocol):
    """A :data:`FrameSink` that also takes a run of frames in one call."""

    def __call__(self, pcm: bytes, t_capture: float) -> None:
        """One frame, as any :data:`FrameSink`."""
        ...

    def on_frames(self, block: bytes, times: Sequence[float]) -> None:
        """``len(times)`` whole frames back to back in ``block``, oldest first, each with its capture time: exactly
        what as many calls of the sink, in order, would have been given."""
        ...


def exact_frame(frame: bytes) -> bytes:
    """``frame`` as exactly one frame: cut, or padded with silence."""
    return frame if len(frame) == FRAME_BYTES else frame[:FRAME_BYTES].ljust(FRAME_BYTES, b"\0")


def block_form(sink: FrameSink) -> OnFrames:
    """How to hand ``sink`` a block of frames: its own :meth:`BlockSink.on_frames` where it has one (one call a
    block), else a function that gives it the block's frames one by one, in order, each with its time. A wrapper
    looks it up once, when it is made."""
    on_frames: OnFrames | None = getattr(sink, "on_frames", None)
    if on_frames is not None:
        return on_frames

    def frame_by_frame(block: bytes, times: Sequence[float]) -> None:
        at = 0
        for t_capture in times:
            sink(block[at : at + FRAME_BYTES], t_capture)
            at += FRAME_BYTES

    return frame_by_frame


def deliver_block(sink: FrameSink, block: bytes, times: Sequence[float]) -> None:
    """Hand ``len(times)`` whole frames to ``sink`` (:func:`block_form`)."""
    block_form(sink)(block, times)


class FrameSource(Protocol):
    """Anything the media clock thread can pull frames from."""

    def pop_frame(self) -> bytes:
        """Exactly one frame of 8 kHz PCM16 (320 bytes). Called on the media clock thread; never blocks."""
        ...


class StreamKernel(Protocol):
    """A converter whose stream C code can carry on (:meth:`bridge.audio.resample.Upsampler.c_kernel`)."""

    def c_kernel(self) -> tuple[int, int] | None: ...
