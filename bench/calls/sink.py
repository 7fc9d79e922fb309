"""The floors' sink (``--ceiling stream``, ``duplex`` and ``equal``): where their calls send the caller's audio and
whence the model's comes back, and what the duplex floors' callers must have heard."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import ssl
import struct
import time
from pathlib import Path

import numpy as np

from bench.calls.callers import AUDIO_DELTA, SETUP_S
from bench.calls.report import Step
from bridge.audio.analysis import audio_stats, tone
from bridge.audio.frames import FRAME_BYTES
from bridge.audio.wav import read_wav
from bridge.devkit.ports import listen_port

MODEL_RATE = 24000  # the GA dialect's PCM16 rate
TONE_HZ = 440.0  # what the duplex ceiling's sink says (44 whole cycles per delta)
DELTA_S = 0.1  # audio per delta, as the emulator sends it
SINK_LEAD_S = 0.2  # how far ahead of real time the duplex ceiling's sink sends
SILENT_RMS = 32768 * 10 ** (-50 / 20)  # a frame at or below -50 dBFS is silent (bridge.audio.analysis's floor)


async def equal_work(step: Step, loops: list[asyncio.subprocess.Process]) -> None:
    """The equal-work floor's echo guard counters into ``step``; an error if its guards tempered nothing, or its
    playouts dropped any of the model's audio (they hold all of it)."""
    step.echo_guard, dropped = await _guard_counts(loops)
    if not step.echo_guard[0]:
        step.errors.append("the equal-work floor's echo guards tempered no frame")
    if dropped:
        step.errors.append(f"the equal-work floor's playouts dropped {dropped} samples of the model's audio")


async def _guard_counts(loops: list[asyncio.subprocess.Process]) -> tuple[list[int], int]:
    """The equal-work floor's echo guard counters and the samples its playouts dropped, summed over its stopped
    loopback apps (each prints them last)."""
    total, dropped = [0, 0, 0], 0
    for proc in loops:
        out = await proc.stdout.read() if proc.stdout is not None else b""
        for line in out.decode(errors="replace").splitlines():
            if line.startswith('{"echo_guard"'):
                said = json.loads(line)
                total = [a + b for a, b in zip(total, said["echo_guard"], strict=True)]
                dropped += int(said["dropped"])
    return total, dropped


def audio_delta_frame(tone_hz: float, seconds: float = DELTA_S) -> bytes:
    """One GA audio delta of ``seconds`` of a tone at 24 kHz (PCM16, -12 dBFS), as a server's WebSocket text
    frame (unmasked, RFC 6455 §5.1). A whole number of the tone's cycles, so the same frame repeats seamlessly."""
    pcm = tone(tone_hz, seconds, rate=MODEL_RATE)
    event = {
        "type": AUDIO_DELTA,
        "event_id": "event_bench",
        "response_id": "resp_bench",
        "item_id": "item_bench",
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(pcm).decode(),
    }
    payload = json.dumps(event).encode()
    return struct.pack("!BBH", 0x81, 126, len(payload)) + payload


def heard_tone(directory: Path, calls: int, tone_hz: float) -> list[str]:
    """What is wrong with what the duplex ceiling's callers heard (``directory``/caller-K/call-N.wav): each call
    must have heard the sink's tone (its strongest frequency within 10 Hz of ``tone_hz``) for at least the step's
    set-up time, and at most 1 % silent 20 ms frames (at or below -50 dBFS) between its first and its last audible
    one (dead air; the silence before the first delta came and after the hang-up is not the downlink's, and a
    packet late at the caller is silence in its recording too: those fail the step's pass mark already)."""
    problems: list[str] = []
    found = sorted(directory.glob("caller-*/call-*.wav"))
    if len(found) != calls:
        problems.append(f"the duplex ceiling's callers recorded {len(found)} of {calls} calls")
    for wav in found:
        pcm = read_wav(wav)
        stats = audio_stats(pcm)
        frames = np.frombuffer(pcm[: len(pcm) - len(pcm) % FRAME_BYTES], dtype="<i2").reshape(-1, FRAME_BYTES // 2)
        audible = np.flatnonzero(np.sqrt(np.mean(np.square(frames.astype(np.float64)), axis=1)) > SILENT_RMS)
        gaps = int(audible[-1] - audible[0] + 1 - len(audible)) if len(audible) else 0
        peak = stats["peak_hz"]
        dead_air = gaps > 0.01 * len(audible)
        if peak is None or abs(peak - tone_hz) > 10 or dead_air or stats["active_ms"] < 1000 * SETUP_S:
            problems.append(
                f"the duplex ceiling's call {wav.parent.name}/{wav.name} heard {peak} Hz (the sink sends "
                f"{tone_hz:g} Hz) for {stats['active_ms']} ms, {gaps} silent frames between"
            )
    return problems


class Sink:
    """Where the ``stream`` and ``duplex`` ceilings' calls send their audio: a TCP server in this process (as the
    emulator is for the bridge) that reads everything and keeps nothing. With ``tone_hz`` (the duplex ceiling) it
    also sends each connection GA audio deltas of that tone, as a model streams its answer: one every
    ``DELTA_S`` at real-time pace, ``SINK_LEAD_S`` ahead of the time its audio is due."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.received = 0  # bytes, over the whole step
        self.sent = 0  # deltas, over the whole step
        host, port = server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"

    @classmethod
    async def start(
        cls,
        tone_hz: float | None = None,
        speed: float = 1.0,
        audio_s: float = math.inf,
        tls: ssl.SSLContext | None = None,
    ) -> Sink:
        """``speed``: the deltas' pace as a multiple of real time; ``audio_s``: the audio each connection gets in
        all (the equal-work floor's: the workers' greeting at the emulator's pace); ``tls``: it speaks TLS (the
        ``wss`` floor)."""
        sink: Sink | None = None
        frame = audio_delta_frame(tone_hz) if tone_hz is not None else b""

        async def speak(writer: asyncio.StreamWriter) -> None:
            start = time.monotonic()
            for k in itertools.takewhile(lambda k: k * DELTA_S < audio_s, itertools.count()):
                await asyncio.sleep(max(0.0, start + k * DELTA_S / speed - SINK_LEAD_S - time.monotonic()))
                writer.write(frame)
                if sink is not None:
                    sink.sent += 1

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            speaker = asyncio.create_task(speak(writer)) if frame else None
            with contextlib.suppress(OSError):
                while data := await reader.read(1 << 16):
                    if sink is not None:
                        sink.received += len(data)
            if speaker is not None:
                speaker.cancel()
            writer.close()

        sink = cls(await asyncio.start_server(serve, "127.0.0.1", listen_port(), ssl=tls))
        return sink

    async def close(self) -> None:
        self.server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), 2.0)
