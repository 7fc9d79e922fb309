"""Pure audio: the telephone frame, G.711 tables, 8 <-> 24 kHz and 8 <-> 16 kHz resampling, G.711 passthrough,
20 ms playout, WAV files, level and tone analysis, energy voice detection, base64 for the wire.

No asyncio, no pjsua2, no websockets here: everything is bytes in, bytes out, and testable alone.

::

    analysis.py     measure and make test audio: what the softphone reports and what the SIP tests assert on
    echo.py         the echo guard: tells the caller's voice from the agent's own audio coming back down the line
    echo_native.py  the echo guard in C (``bridge/native/echo.c``): :class:`~bridge.audio.echo.EchoGuard`'s
                    decisions at a fraction of its cost per frame
    frames.py       the telephone side's frame: its constants and the protocols that move frames, defined once
    g711.py         G.711 μ-law and A-law as numpy lookup tables (ITU-T G.711, 11/1988)
    level.py        levels in dBFS, the one formula: ``20·log10(amplitude / 32768)`` for an RMS (or a frame's peak
                    RMS) of PCM16 samples, so a full-scale sine reads −3.01 dBFS
    line.py         A telephone line that returns what its caller is played: the echo a hybrid or a speakerphone
                    makes
    native.py       loading one of the audio C kernels (``bridge/native``: the resampler, the echo guard): built for
                    this machine, its functions' signatures declared
    passthrough.py  one converter interface per direction, whatever the Realtime audio format
    playout.py      outbound playout buffer: the model's audio in 20 ms frames, from the event loop to pjmedia's
                    clock thread (and :class:`~bridge.audio.playout.Playout`, what both playout buffers offer)
    playout_native.py  the playout ring in C (``bridge/native/playout.c``): the same contract, every frame and its
                    accounting in C; :func:`~bridge.audio.playout_native.make_playout` picks a call's buffer
    resample.py     streaming polyphase FIR resamplers, 8 kHz <-> 24 kHz (factor 3) and 8 kHz <-> 16 kHz (factor 2,
                    Live's PCM rate), one instance per call and per direction
    vad.py          an energy voice-activity detector with the knobs of the service's ``server_vad`` turn detection
    wav.py          tiny WAV helpers for telephone audio: 8 kHz mono, PCM16 or G.711 (µ-law / A-law) in, PCM16 or
                    G.711 out
    wire.py         wire encoding of audio for the model's WebSocket: base64 inside JSON text
"""

from bridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from bridge.audio.passthrough import (
    AudioConverter,
    AudioFormat,
    PassthroughDownlink,
    PassthroughUplink,
    converters,
)
from bridge.audio.playout import FlushResult, Playout, PlayoutBuffer
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
    "Playout",
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
