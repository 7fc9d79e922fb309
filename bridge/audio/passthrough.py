"""One converter interface per direction, whatever the Realtime audio format.

The SIP side always gives and takes 20 ms of 8 kHz PCM16 (pjsua2's conference bridge runs at 8 kHz). Toward
the model the audio is either PCM16 at 24 kHz or 16 kHz (Live; resampled, see `resample`) or G.711 at 8 kHz
(``audio/pcmu`` / ``audio/pcma``, beta ``g711_ulaw`` / ``g711_alaw``): then the tables of ITU-T G.711 convert it
and nothing is resampled. The call session picks both converters once with `converters(fmt)` and never branches on the
format again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, Protocol, get_args

from bridge.audio.g711 import ALAW_DECODE, ULAW_DECODE, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from bridge.audio.resample import Downsampler, Downsampler16k, Upsampler, Upsampler16k

AudioFormat = Literal["pcm16", "pcm16_16k", "g711_ulaw", "g711_alaw"]  # the bridge's dialect-neutral format names
AUDIO_FORMATS: Final[tuple[str, ...]] = get_args(AudioFormat)


class AudioConverter(Protocol):
    """One direction of one call: bytes in, bytes out, streaming."""

    def process(self, data: bytes) -> bytes:
        """Convert a chunk of any size; state carries over to the next chunk."""
        ...

    def drain(self) -> bytes:
        """Whatever the converter still holds, as if silence followed; then reset."""
        ...

    def reset(self) -> None:
        """Forget the stream so far."""
        ...


class _Stateless:
    __slots__ = ("_convert",)

    def __init__(self, convert: Callable[[bytes], bytes]) -> None:
        self._convert = convert

    def process(self, data: bytes) -> bytes:
        return self._convert(data)

    def drain(self) -> bytes:
        return b""  # G.711 is sample by sample: nothing is ever held back

    def reset(self) -> None:
        pass


class PassthroughUplink(_Stateless):
    """Caller -> model: 8 kHz PCM16 -> G.711 (μ-law or A-law), no resampling."""

    __slots__ = ()

    def __init__(self, law: Literal["ulaw", "alaw"] = "ulaw") -> None:
        super().__init__(ulaw_encode if law == "ulaw" else alaw_encode)


class PassthroughDownlink(_Stateless):
    """Model -> caller: G.711 (μ-law or A-law) -> 8 kHz PCM16, any chunk size, no resampling."""

    __slots__ = ("_table",)

    def __init__(self, law: Literal["ulaw", "alaw"] = "ulaw") -> None:
        ulaw = law == "ulaw"
        super().__init__(ulaw_decode if ulaw else alaw_decode)
        self._table = ULAW_DECODE if ulaw else ALAW_DECODE

    def c_table(self) -> bytes:
        """The decoding table (256 codes -> PCM16, native byte order) for C code that converts the same way
        (``bridge/native/downlink.c``)."""
        return self._table.tobytes()


def converters(fmt: str) -> tuple[AudioConverter, AudioConverter]:
    """(uplink, downlink) for a Realtime audio format: 8 kHz PCM16 <-> `fmt`."""
    if fmt == "pcm16":
        return Upsampler(), Downsampler()
    if fmt == "pcm16_16k":
        return Upsampler16k(), Downsampler16k()
    if fmt == "g711_ulaw":
        return PassthroughUplink("ulaw"), PassthroughDownlink("ulaw")
    if fmt == "g711_alaw":
        return PassthroughUplink("alaw"), PassthroughDownlink("alaw")
    raise ValueError(f"unknown audio format {fmt!r}, expected one of {', '.join(AUDIO_FORMATS)}")
