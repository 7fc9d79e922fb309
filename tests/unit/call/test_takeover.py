"""Take-over's leg and link: taken over, the caller hears the supervisor's frames (silence between them, never the
agent's, whose frames are still taken so its playout keeps its clock), the supervisor's queue stays bounded, and
the model hears silence in place of the caller, its uplink offload unbound; handed back, all as before. Through
the listen tap around it, a listening supervisor hears the caller, not their own voice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from test_tap import Leg, Playout

from bridge import events as ev
from bridge.audio import Playout as PlayoutLike
from bridge.audio.analysis import peak_frequency, tone
from bridge.audio.frames import FRAME_BYTES
from bridge.call.latency import LatencyMeter
from bridge.call.leg import pop_block
from bridge.call.link import Link
from bridge.call.report import CallReport
from bridge.call.takeover import QUEUE_FRAMES, TakeOverLeg
from bridge.call.tap import CALLER, ListenTap

SILENCE = bytes(FRAME_BYTES)


def hz(pcm: bytes) -> float | None:
    return peak_frequency(np.frombuffer(pcm, dtype="<i2").astype(np.float64))


def test_taken_over_the_caller_hears_the_supervisor_and_never_the_agent() -> None:
    agent = tone(700.0, 2.0)
    leg, playout = Leg(), Playout(agent)
    takeover = TakeOverLeg(leg)  # type: ignore[arg-type]  # Leg has only what the proxy uses of a PhoneLeg
    tap = ListenTap(takeover)
    tap.start_media(playout, lambda pcm, t: None)
    assert leg.source is not None and leg.sink is not None
    assert hz(leg.source.pop_frame() + leg.source.pop_frame()) == pytest_approx(700.0)  # not taken over yet
    leg.source.set_downstream("port")  # the native port's lookup still reaches the playout
    assert playout.downstream == "port"

    takeover.feed(tone(1400.0, 0.1))  # not taken over: ignored
    takeover.begin("sam")
    left = len(playout.pcm)
    assert leg.source.pop_frame() == SILENCE  # nothing from the supervisor yet: silence, not the agent
    voice = tone(1400.0, 0.2)
    takeover.feed(voice[:100])  # a partial frame waits for the rest
    takeover.feed(voice[100:])
    heard = b"".join(leg.source.pop_frame() for _ in range(10))
    assert heard == voice and hz(heard) == pytest_approx(1400.0)
    assert len(playout.pcm) == left - 11 * FRAME_BYTES  # the agent's frames were taken and dropped
    assert leg.source.pop_frame() == SILENCE and takeover.frames_played == 10

    takeover.feed(tone(1400.0, 1.0))  # a burst: only the newest QUEUE_FRAMES wait
    assert takeover.frames_dropped == 50 - QUEUE_FRAMES

    # a listener hears the caller (the tap is outside), not the supervisor's voice back; the session has cut the
    # agent's reply (its playout flushed, its new audio dropped: bridge.call.supervision)
    playout.pcm = b""
    tap.start()
    leg.sink(tone(300.0, 0.02), 0.0)
    for _ in range(10):
        leg.source.pop_frame()
    flags, mixed = tap.take()
    assert flags & CALLER and hz(mixed) == pytest_approx(300.0, 60.0)

    takeover.end()
    playout.pcm = agent
    assert hz(leg.source.pop_frame() + leg.source.pop_frame()) == pytest_approx(700.0)  # the agent again


def pytest_approx(value: float, tolerance: float = 30.0) -> Any:
    import pytest

    return pytest.approx(value, abs=tolerance)


class Client:
    """The Realtime client as the link uses it: what it was sent, and whose writes it took."""

    def __init__(self) -> None:
        self.sent: list[ev.Command] = []
        self.offload: object = None
        self.closed = None
        self.last_send_latency_s = 0.0

    def send(self, command: ev.Command) -> None:
        self.sent.append(command)

    def offload_writes(self, offload: object) -> bool:
        self.offload = offload
        return True

    def deliver_to(self, deliver: object) -> None:
        pass

    def read_on_beat(self, on: bool, beats: object = None) -> bool:
        return False


class Offload:
    frames_sent = 0
    frames_dropped = 0


class Same:
    """An uplink converter that changes nothing (what the model is sent is what the caller said)."""

    def process(self, data: bytes) -> bytes:
        return data

    def drain(self) -> bytes:
        return b""

    def reset(self) -> None:
        pass


def test_muted_the_model_hears_silence_in_place_of_the_caller_and_the_offload_is_unbound() -> None:
    link = Link(Same(), LatencyMeter(CallReport("c1", "ga", "desk"), lambda r: None, lambda: 0.0),
                lambda: 0.0)  # fmt: skip
    client, offload = Client(), Offload()
    link.offload = offload
    link.swap(client)  # type: ignore[arg-type]  # a stand-in
    link.attach(lambda e: None)
    assert client.offload is offload
    caller = tone(300.0, 0.02)
    link.on_frame(caller, 0.0)
    link.mute(True)
    assert client.offload is None  # the caller's frames come back to the loop, to be silenced
    link.on_frame(caller, 0.0)
    link.attach(lambda e: None)  # a new session while taken over: still no offload
    assert client.offload is None
    link.mute(False)
    assert client.offload is offload
    link.on_frame(caller, 0.0)
    assert [c.audio for c in client.sent if isinstance(c, ev.AppendAudio)] == [caller, SILENCE, caller]


def test_a_beats_block_through_the_tap_and_the_take_over_is_what_frame_by_frame_gives(
    new_playout: Callable[..., PlayoutLike],
) -> None:
    """The native port takes a beat's frames in one block (``pop_frames``): the listener gets that block, and,
    taken over, the caller hears the supervisor's frames in its place while the agent's are taken and dropped."""
    agent = tone(700.0, 0.4)
    playout = new_playout()
    playout.push("a", agent)
    leg = Leg()
    takeover = TakeOverLeg(leg)  # type: ignore[arg-type]  # Leg has only what the proxy uses of a PhoneLeg
    tap = ListenTap(takeover)
    tap.start_media(playout, lambda pcm, t: None)
    tap.start()
    assert leg.source is not None
    assert pop_block(leg.source, 3) == agent[: 3 * FRAME_BYTES]
    assert b"".join(tap.agent) == agent[: 3 * FRAME_BYTES]  # the listener's copy, as one block
    takeover.begin("sam")
    voice = tone(1400.0, 0.04)
    takeover.feed(voice)
    assert pop_block(leg.source, 3) == voice + SILENCE  # the supervisor, then silence: never the agent
    assert playout.frames_played == 6  # the agent's playout kept its clock
    takeover.end()
    assert pop_block(leg.source, 2) == agent[6 * FRAME_BYTES : 8 * FRAME_BYTES]
