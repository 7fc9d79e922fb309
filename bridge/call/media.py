"""Which way a call's audio goes, both directions, chosen once per call (drawn in ``docs/media.md``).

:func:`choose_media_path` reads the dialect's capabilities, the profile's audio format and where the call's echo
guard can hear the caller (:class:`Guarded`), and returns a :class:`MediaPath`; the session, the link
(:mod:`bridge.call.link`), the playback (:mod:`bridge.call.playback`) and the echo guard (:mod:`bridge.call.echo`)
follow it. What it cannot know before the call is answered is asked at run time, and each refusal keeps the loop's
path: the leg offers the clock thread's uplink only on a native media port (``bridge/sip/gateway.py``,
``uplink_offload``), the uplink takes the guard's C hook only as a native one (``NativeUplink.guard_with``), and the
socket takes its writes only where it holds its own bytes: ``ws://``, or ``wss://`` on the native TLS engine
(``RealtimeClient.offload_writes``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bridge.audio import AudioConverter, Upsampler, converters
from bridge.realtime.dialects.base import Capabilities


class Guarded(enum.Enum):
    """Where the call's echo guard can hear the caller's frames before the model does (``bridge.call.echo``)."""

    NO = "the plan has no echo guard"
    ANYWHERE = "the C guard: on the loop, or on the media clock thread where the uplink offload sends the frames"
    ON_LOOP = "the Python guard: every caller frame must come to the loop"


@dataclass(frozen=True)
class MediaPath:
    uplink: AudioConverter  # caller -> model: 8 kHz PCM16 to the session's format (RFC 3551 G.711 passes through)
    downlink: AudioConverter  # model -> caller: the session's format to 8 kHz PCM16 frames for the playout buffer
    own_vad: bool  # the service marks no turns: each caller frame also goes through the bridge's voice detection
    paced_uplink: bool  # the service hears one gapless stream: a frame every 20 ms, stalls filled with silence
    offload: Upsampler | None  # the media clock thread may carry this upsampler's stream on and send it itself (C)
    streamed_output: bool  # the model's audio is one stream at real-time pace: speech told from silence by level
    guard_on_clock: bool = False  # the offload's frames go through the echo guard's C hook on the clock thread


def choose_media_path(caps: Capabilities, audio_format: str, guarded: Guarded = Guarded.NO) -> MediaPath:
    """The call's media path. The offload carries the upsampler's stream on in C, so it needs the C kernels; a
    frame that must also reach our own voice detection, be paced by the loop's clock, or be heard by an echo guard
    that runs only on the loop, stays on the loop. With the C guard, the offload hears each frame through it."""
    uplink, downlink = converters(audio_format)
    own_vad = caps.turn_detection == "none"
    on_loop = own_vad or caps.continuous_audio or guarded is Guarded.ON_LOOP
    offload = uplink if isinstance(uplink, Upsampler) and uplink.c_kernel() is not None and not on_loop else None
    guard_on_clock = offload is not None and guarded is Guarded.ANYWHERE
    return MediaPath(uplink, downlink, own_vad, caps.continuous_audio, offload, caps.continuous_output, guard_on_clock)
