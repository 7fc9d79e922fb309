"""Chunks the socket's C downlink decoded (``AudioChunk.decoded``: 8 kHz already, converted with the call's own
converter state in C) go to the playout as they are, and everything downstream of it is what it was: a barge-in
flushes at once and truncates to what was played, a cancelled response's late chunks are dropped, the item's tail is
drained from the same converter, and the converter is neither run nor reset by the loop for them."""

from __future__ import annotations

import base64
import math
import struct

import orjson
import pytest
from websockets.frames import Frame, Opcode

from bridge import events as ev
from bridge.audio import PlayoutBuffer
from bridge.audio.playout_native import CSink, NativePlayout, native_playout
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


class Held:
    """A downstream stage that holds the silence the ring popped while it was dry (the native port's queue)."""

    def __init__(self) -> None:
        self.held = 0
        self.taken_back = 0

    def flush_out(self) -> int:
        held, self.held = self.held, 0
        return held

    def depth(self) -> int:
        return self.held

    def drop_newest(self, frames: int) -> int:
        taken = min(frames, self.held)
        self.held -= taken
        self.taken_back += taken
        return taken

    def top_up(self) -> None:
        pass


class Socket:
    """What the call's socket does with each read: the real scanner's pieces; a run becomes a chunk for the call,
    which arms the sink for its item once it has queued it (the session on the decoding stack); the item's done
    event disarms it and ends the item, as the session's events do."""

    def __init__(self, agent: Agent, ring: NativePlayout) -> None:
        lib = load()
        assert lib is not None
        self.scan = DownlinkScanner(lib, audio_types(GA.server_events))
        self.scan.frames_only()
        assert self.scan.decode(agent.converter)
        self.agent, self.chunks, self.told = agent, 0, [0, ""]
        agent.playback = Playback(ring, agent.converter, agent.playback._latency, agent.clock, sink=self.sink)

    def sink(self, target: CSink | None) -> bool:
        if target is None:
            self.scan.unsink()
            return True
        return self.scan.sink(target, self.sunk)

    def sunk(self, deltas: int, event_id: str | None) -> None:
        self.told = [int(self.told[0]) + deltas, event_id or str(self.told[1])]

    def read(self, *frames: dict[str, object]) -> None:
        wire = b"".join(Frame(Opcode.TEXT, orjson.dumps(f)).serialize(mask=False) for f in frames)
        playback = self.agent.playback
        for piece in self.scan.feed(wire):
            if isinstance(piece, AudioRun):
                self.chunks += 1
                if playback.push(ev.AudioChunk(piece.response_id, piece.item_id, piece.pcm, decoded=True)):
                    playback.arm(piece.item_id)
            else:
                done = orjson.loads(piece[2:])
                playback.disarm()
                playback.audio_done(done["response_id"], done["item_id"])


def delta(item: str, response: str, audio: bytes, event: str) -> dict[str, object]:
    return {
        "type": "response.output_audio.delta",
        "event_id": event,
        "response_id": response,
        "item_id": item,
        "delta": base64.b64encode(audio).decode(),
    }


@pytest.mark.skipif(load() is None or native_playout() is None, reason="no C compiler")
def test_an_accepted_items_later_runs_go_into_the_ring_in_c_and_a_cut_or_a_new_item_comes_to_the_loop() -> None:
    agent = Agent()
    lib = native_playout()
    assert lib is not None
    ring = NativePlayout(lib, clock=agent.clock)
    down = Held()
    ring.set_downstream(down)
    agent.playout = ring  # type: ignore[assignment]  # Agent.play pops it: the same surface as the Python buffer
    sock = Socket(agent, ring)
    playback = agent.playback
    playback.started("r1")
    audio = [tone_24k(100, 2400 * i) for i in range(4)]
    sock.read(delta("i1", "r1", audio[0], "e1"))
    assert sock.chunks == 1 and playback.sinking == "i1"  # the first run: the loop's, every decision made there
    sock.read(delta("i1", "r1", audio[1], "e2"))
    sock.read(delta("i1", "r1", audio[2], "e3"), delta("i1", "r1", audio[3], "e4"))
    assert sock.chunks == 1  # no chunk for the later runs
    counters = sock.scan.counters()
    assert (counters["sunk_runs"], counters["sunk_deltas"], counters["sunk_bytes"]) == (2, 3, 3 * 1600)
    assert ring.depth_ms == 400 and agent.converter.calls == []
    assert sock.told == [0, ""]
    sock.scan.settle()
    assert sock.told == [3, "e4"]  # counted as the chunks' deltas are, the last event id kept
    reference = Downsampler()
    expected = b"".join(reference.process(a) for a in audio)
    assert b"".join(agent.play(20)) == expected  # what the caller hears: every run, in order
    agent.play(3)  # the ring ran dry: the port holds its silence
    down.held = 3
    sock.read(delta("i1", "r1", tone_24k(100, 9600), "e5"))
    assert sock.chunks == 1 and down.taken_back == 3  # into the empty ring: the silence held is taken back
    agent.play(2)
    cut = playback.cut()
    assert cut.truncates == [("i1", 440)] and playback.sinking is None and ring.depth_ms == 0
    sock.read(delta("i1", "r1", tone_24k(100, 12000), "e6"))  # in flight when the caller barged in
    assert sock.chunks == 2 and ring.depth_ms == 0 and ring.played_ms("i1") == 440  # the loop's, and refused
    playback.started("r2")
    sock.read(delta("i2", "r2", audio[0], "f1"))
    assert sock.chunks == 3 and playback.sinking == "i2"  # a new item: the loop's first
    sock.read(delta("i2", "r2", audio[1], "f2"))
    sock.read({"type": "response.output_audio.done", "response_id": "r2", "item_id": "i2", "event_id": "f3"})
    assert sock.chunks == 3 and playback.sinking is None
    second = Downsampler()
    expected = second.process(audio[0]) + second.process(audio[1]) + second.drain()
    heard = b"".join(agent.play(11))
    assert heard[: len(expected)] == expected  # the drained tail after every run the sink pushed
    sock.scan.close()
