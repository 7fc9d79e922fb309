"""The telephone side's frame: its constants and the protocols that move frames, defined once.

Framing follows RFC 3551 §4.5.14 (PCMU/PCMA: 8000 samples/s) and §4.5 (20 ms default packetization): one frame
is 160 samples, 320 bytes of 16-bit linear PCM or 160 bytes of G.711. Every part of the bridge (SIP media ports,
the native port, the call session, playout, replays, WAV files) speaks this frame.

The media beat: a worker's event loop serves its calls' 20 ms ticks ``BEAT_FRAMES`` at a time (the media port's
rings absorb the rest); ``MAX_BEAT_FRAMES`` bounds the setting.
"""

from __future__ import annotations

from collections.abc import Callable
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


class FrameSource(Protocol):
    """Anything the media clock thread can pull frames from."""

    def pop_frame(self) -> bytes:
        """Exactly one frame of 8 kHz PCM16 (320 bytes). Called on the media clock thread; never blocks."""
        ...


class StreamKernel(Protocol):
    """A converter whose stream C code can carry on (:meth:`bridge.audio.resample.Upsampler.c_kernel`)."""

    def c_kernel(self) -> tuple[int, int] | None: ...
