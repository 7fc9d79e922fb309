"""Listen-in's tap: a :class:`ListenTap` around any phone leg copies both sides of the call while a supervisor listens.

::

    leg = ListenTap(call)                  # the worker wraps every call's leg; the session never knows
    session = CallSession(leg, plan, ...)
    leg.start()                            # someone listens: frames are copied from now on
    flags, pcm = leg.take()                # on the loop: both sides mixed, 8 kHz PCM16 mono, whole 20 ms frames
    leg.stop()                             # nobody listens: the copies stop and the queues are dropped

While nobody listens the tap costs one attribute test per frame and direction (per block where the frames come as
one: the native port's reads of the caller, :class:`~bridge.audio.frames.BlockSink`, and its beats of the agent): no
copy, no buffer, no task. While someone does, each caller frame (the event loop, :meth:`start_media`'s sink) and
each agent frame as the media port takes it from the playout buffer (the media clock thread with a Python port, the
loop with the native one) is put in a bounded queue (``deque.append``, atomic under the GIL); :meth:`take` mixes
the two queues frame by frame, by sum with clipping, on the loop. A side that has sent nothing for
:data:`SKEW_FRAMES` frames while the other has (the caller holds, say) is let through alone.

Where the native uplink sends the caller's audio to the model from the media clock thread (the leg's
:meth:`uplink_offload`), those frames never reach the loop. While someone listens the tap turns the offload's
mirror on (``NativeUplink.mirror``, ``cport.c``): the port also queues a copy of each frame it sent, with its
capture time negated, and the tap keeps the copy and passes nothing on (it was sent already). An offload without a
mirror leaves the caller's side unheard, and the flags say so (:data:`CALLER_OFFLOADED`).

The agent's frames are copied as the port takes them, which is up to the port's lead (a few frames) before the
caller hears them; frames a barge-in then takes back from the port's ring are in the copy, so a listener may hear
up to that lead of an answer the caller did not.

Nothing flows the other way: the tap only reads; it has no means to send audio to the call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

import numpy as np

from bridge.audio.frames import FRAME_BYTES, FrameSink, FrameSource, StreamKernel, block_form, exact_frame
from bridge.call.leg import LegProxy, PhoneLeg, TeeSource, UplinkOffload, split

SKEW_FRAMES: Final = 4  # frames one side may run ahead of the other before it is sent alone (80 ms)
QUEUE_FRAMES: Final = 100  # at most 2 s of either side waits for take(); older frames are dropped

# take()'s flags (the first byte of each published message, bridge.serve.listen)
CALLER: Final = 1  # the caller's audio is in this piece
AGENT: Final = 2  # the agent's audio is in this piece
CALLER_OFFLOADED: Final = 4  # the caller's audio goes to the model from the media clock thread, unmirrored: not heard
ENDED: Final = 128  # the call is over (no audio follows)


def mix(caller: bytes, agent: bytes) -> bytes:
    """Two equally long runs of PCM16 summed sample by sample, clipped to 16 bits."""
    a = np.frombuffer(caller, dtype="<i2").astype(np.int32)
    b = np.frombuffer(agent, dtype="<i2").astype(np.int32)
    return bytes(np.clip(a + b, -32768, 32767).astype("<i2").tobytes())


class _CallerCopy:
    """The caller's frames on their way to the session (a :class:`~bridge.audio.frames.BlockSink`): each one, or a
    read's block of them at once, passed on and copied while someone listens. A frame with its capture time negated
    is the uplink's mirror, a copy of a frame the media clock thread sent itself: kept, never passed on."""

    __slots__ = ("_on_frame", "_on_frames", "_tap")

    def __init__(self, tap: ListenTap, on_frame: FrameSink) -> None:
        self._tap = tap
        self._on_frame = on_frame
        self._on_frames = block_form(on_frame)

    def __call__(self, pcm: bytes, t_capture: float) -> None:
        if t_capture >= 0:
            self._on_frame(pcm, t_capture)
        if self._tap.active:
            self._tap.caller_frames.append(pcm)

    def on_frames(self, block: bytes, times: Sequence[float]) -> None:
        if not times:
            return
        if min(times) >= 0:
            self._on_frames(block, times)
        elif max(times) >= 0:  # the uplink's mirror began or ended within the read: only the loop's frames go on
            sent = [k for k, t in enumerate(times) if t >= 0]
            kept = b"".join(block[k * FRAME_BYTES : (k + 1) * FRAME_BYTES] for k in sent)
            self._on_frames(kept, [times[k] for k in sent])
        if self._tap.active:
            self._tap.caller_frames.extend(split(block))


class ListenTap(LegProxy):
    """A :class:`~bridge.call.leg.PhoneLeg` proxy that can copy the call's audio (see the module docstring)."""

    def __init__(self, leg: PhoneLeg) -> None:
        super().__init__(leg)
        self.active = False
        self.caller_offloaded = False  # the leg gave the session an uplink offload without a mirror
        self._offload: UplinkOffload | None = None
        self.caller_frames: deque[bytes] = deque(maxlen=QUEUE_FRAMES)
        self.agent: deque[bytes] = deque(maxlen=QUEUE_FRAMES)
        self._tee: TeeSource | None = None  # the outbound source as the port sees it

    # -- listening -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.active = True
        self._mirror(True)
        if self._tee is not None:  # the native port takes the agent's frames through the tap from now on
            self._tee.rerouted()

    def stop(self) -> None:
        self.active = False
        self.caller_frames.clear()
        self.agent.clear()
        if self._tee is not None:  # and may take them from the C ring in C again
            self._tee.rerouted()
        if not self.disconnected.is_set():  # after the hang-up the port may already carry another call
            self._mirror(False)

    def _mirror(self, on: bool) -> None:
        mirror = getattr(self._offload, "mirror", None)
        if mirror is not None:
            mirror(on)

    def take(self) -> tuple[int, bytes]:
        """What both sides said since the last take, mixed: (flags, PCM16 of whole frames, possibly empty)."""
        caller, agent = self.caller_frames, self.agent
        flags = CALLER_OFFLOADED if self.caller_offloaded else 0
        pairs = min(len(caller), len(agent))
        out: list[bytes] = []
        if pairs:
            mine = b"".join(exact_frame(caller.popleft()) for _ in range(pairs))
            theirs = b"".join(exact_frame(agent.popleft()) for _ in range(pairs))
            out.append(mix(mine, theirs))
            flags |= CALLER | AGENT
        if not caller and len(agent) > SKEW_FRAMES:
            out.extend(exact_frame(agent.popleft()) for _ in range(len(agent)))
            flags |= AGENT
        elif not agent and len(caller) > SKEW_FRAMES:
            out.extend(exact_frame(caller.popleft()) for _ in range(len(caller)))
            flags |= CALLER
        return flags, b"".join(out)

    # -- the leg -------------------------------------------------------------------------------------------------
    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        self._tee = TeeSource(outbound, self._agent_frame, self._agent_block, idle=lambda: not self.active)
        self.leg.start_media(self._tee, _CallerCopy(self, on_frame))

    def _agent_frame(self, frame: bytes) -> None:
        """A frame the media port took from the playout buffer (clock thread): copied while someone listens."""
        if self.active:
            self.agent.append(frame)

    def _agent_block(self, block: bytes) -> None:
        """A beat's frames the native port took from the playout buffer at once (the loop): copied while someone
        listens."""
        if self.active:
            self.agent.extend(split(block))

    def uplink_offload(self, upsampler: StreamKernel) -> UplinkOffload | None:
        """The wrapped leg's: the hot path stays as it is; while someone listens, its mirror brings the caller's
        frames here too (without one, the caller's side is not heard: see the flags)."""
        offload = self.leg.uplink_offload(upsampler)
        self._offload = offload
        self.caller_offloaded = offload is not None and not hasattr(offload, "mirror")
        if offload is not None and self.active:
            self._mirror(True)
        return offload
