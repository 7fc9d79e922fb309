"""Chunks the socket's C downlink decoded (``AudioChunk.decoded``: 8 kHz already, converted with the call's own
converter state in C) go to the playout as they are, and everything downstream of it is what it was: a barge-in
flushes at once and truncates to what was played, a cancelled response's late chunks are dropped, the item's tail is
drained from the same converter, and the converter is neither run nor reset by the loop for them."""

from __future__ import annotations

import base64
import math
import struct

import orjson
from websockets.frames import Frame, Opcode

from bridge import events as ev
from bridge.audio import PlayoutBuffer
from bridge.audio.resample import Downsampler
from bridge.call.bargein import BargeIn
from bridge.call.latency import LatencyMeter
from bridge.call.playback import Playback
from bridge.call.report import CallReport
from bridge.realtime.dialects import GA
from bridge.realtime.downlink import AudioRun, DownlinkScanner, audio_types, load


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting(Downsampler):
    """The call's downsampler, counting what the loop asks of it."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def process(self, pcm16: bytes) -> bytes:
        self.calls.append("process")
        return super().process(pcm16)

    def reset(self) -> None:
        self.calls.append("reset")
        super().reset()


def tone_24k(ms: int, start: int = 0) -> bytes:
    return b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * (start + i) / 24000))) for i in range(24 * ms)
    )


def decoded(converter: Downsampler, item: str, response: str, *audio: bytes) -> list[ev.AudioChunk]:
    """What the client hands on: the C downlink's runs of GA deltas, with ``converter``'s own state."""
    lib = load()
    assert lib is not None
    scan = DownlinkScanner(lib, audio_types(GA.server_events))
    scan.frames_only()
    assert scan.decode(converter)
    wire = b"".join(
        Frame(
            Opcode.TEXT,
            orjson.dumps(
                {
                    "type": "response.output_audio.delta",
                    "response_id": response,
                    "item_id": item,
                    "delta": base64.b64encode(a).decode(),
                }
            ),
        ).serialize(mask=False)
        for a in audio
    )
    runs = [p for p in scan.feed(wire) if isinstance(p, AudioRun)]
    scan.close()
    return [ev.AudioChunk(r.response_id, r.item_id, r.pcm, decoded=True) for r in runs]


class Agent:
    def __init__(self) -> None:
        self.clock = Clock()
        self.report = CallReport("c1", "ga", "support")
        self.reports: list[ev.Report] = []
        self.sent: list[ev.Command] = []
        self.playout = PlayoutBuffer(clock=self.clock)
        self.converter = Counting()
        latency = LatencyMeter(self.report, self.reports.append, self.clock)
        self.playback = Playback(self.playout, self.converter, latency, self.clock)
        self.barge_in = BargeIn(self.playback, self.sent.append, self.reports.append, self.report)

    def play(self, frames: int) -> list[bytes]:
        out = []
        for _ in range(frames):
            out.append(self.playout.pop_frame())
            self.clock.now += 0.02
        return out


def test_decoded_chunks_play_as_they_are_and_the_converter_is_not_run_for_them() -> None:
    agent = Agent()
    agent.playback.started("r1")
    audio = [tone_24k(100, 2400 * i) for i in range(3)]
    (chunk,) = decoded(agent.converter, "i1", "r1", *audio)
    assert agent.playback.push(chunk)
    assert agent.converter.calls == []  # neither run nor reset by the loop
    reference = Downsampler()
    expected = b"".join(reference.process(a) for a in audio)
    assert b"".join(agent.play(15)) == expected  # 300 ms: the frames the caller gets are the C kernel's output
    tail = reference.drain()
    agent.playback.audio_done("r1", "i1")  # the tail: drained from the same converter state the C side carried on
    assert agent.converter.calls[:1] == ["process"]
    assert agent.play(1)[0][: len(tail)] == tail


def test_a_barge_in_flushes_at_once_truncates_to_what_was_played_and_drops_late_decoded_audio() -> None:
    agent = Agent()
    agent.playback.started("r1")
    (chunk,) = decoded(agent.converter, "i1", "r1", tone_24k(200))
    agent.playback.push(chunk)  # 10 frames
    agent.play(4)
    cut = agent.playback.cut()
    assert cut.cancel == "r1" and cut.truncates == [("i1", 80)] and cut.dropped_ms == 120
    assert agent.playout.depth_ms == 0  # emptied at once
    (late,) = decoded(agent.converter, "i1", "r1", tone_24k(100))
    assert not agent.playback.push(late)  # in flight when the caller barged in
    assert agent.playout.depth_ms == 0 and agent.playout.played_ms("i1") == 80


def test_played_accounting_and_underruns_are_the_playouts() -> None:
    agent = Agent()
    agent.playback.started("r1")
    (chunk,) = decoded(agent.converter, "i1", "r1", tone_24k(60))
    agent.playback.push(chunk)  # 3 frames, the item still open
    agent.play(5)
    assert agent.playout.played_ms("i1") == 60
    assert agent.playout.underruns == 2  # dead air inside the open item, counted as before
