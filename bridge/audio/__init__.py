"""Pure audio: G.711 tables, 8 <-> 24 kHz resampling, G.711 passthrough, 20 ms playout, wire encoding.

No asyncio, no pjsua2, no websockets here: everything is bytes in, bytes out, and testable alone.
"""

from bridge.audio.g711 import (
    BYTES_PER_FRAME_G711,
    BYTES_PER_FRAME_PCM16,
    FRAME_MS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from bridge.audio.passthrough import (
    AudioConverter,
    AudioFormat,
    PassthroughDownlink,
    PassthroughUplink,
    converters,
)
from bridge.audio.playout import FlushResult, PlayoutBuffer
from bridge.audio.resample import BatchDownsampler, BatchUpsampler, Downsampler, Upsampler
from bridge.audio.wire import decode_b64, encode_append

__all__ = [
    "BYTES_PER_FRAME_G711",
    "BYTES_PER_FRAME_PCM16",
    "FRAME_MS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "AudioConverter",
    "AudioFormat",
    "BatchDownsampler",
    "BatchUpsampler",
    "Downsampler",
    "FlushResult",
    "PassthroughDownlink",
    "PassthroughUplink",
    "PlayoutBuffer",
    "Upsampler",
    "alaw_decode",
    "alaw_encode",
    "converters",
    "decode_b64",
    "encode_append",
    "ulaw_decode",
    "ulaw_encode",
]
