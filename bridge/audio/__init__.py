"""Pure audio: the telephone frame, G.711 tables, 8 <-> 24 kHz and 8 <-> 16 kHz resampling, G.711 passthrough,
20 ms playout, WAV files, level and tone analysis, energy voice detection, base64 for the wire.

No asyncio, no pjsua2, no websockets here: everything is bytes in, bytes out, and testable alone.
"""

from bridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from bridge.audio.passthrough import (
    AudioConverter,
    AudioFormat,
    PassthroughDownlink,
    PassthroughUplink,
    converters,
)
from bridge.audio.playout import FlushResult, PlayoutBuffer
from bridge.audio.resample import (
    BatchDownsampler,
    BatchUpsampler,
    Downsampler,
    Downsampler16k,
    Upsampler,
    Upsampler16k,
)
from bridge.audio.wire import AppendTemplate, decode_b64

__all__ = [
    "AppendTemplate",
    "AudioConverter",
    "AudioFormat",
    "BatchDownsampler",
    "BatchUpsampler",
    "Downsampler",
    "Downsampler16k",
    "FlushResult",
    "PassthroughDownlink",
    "PassthroughUplink",
    "PlayoutBuffer",
    "Upsampler",
    "Upsampler16k",
    "alaw_decode",
    "alaw_encode",
    "converters",
    "decode_b64",
    "ulaw_decode",
    "ulaw_encode",
]
