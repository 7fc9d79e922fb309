"""The native port pulls the call's C playout ring in C (``cport.c``, "Pull") while nothing on the way needs the
frames, and through Python (``pop_frames``) while something does: listen-in, take-over, the echo guard's hold, a
recording. Either way the ring's accounting is the same: what was sent is what a barge-in reports as heard."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from bridge.audio import FlushResult
from bridge.audio.echo_native import NativeEchoGuard, native_echo
from bridge.audio.frames import FRAME_BYTES, SILENCE, FrameSink, FrameSource
from bridge.audio.playout_native import NativePlayout, native_playout
from bridge.call.echo import HeldSource
from bridge.call.leg import PhoneLeg
from bridge.call.recorder import RecordingLeg
from bridge.call.takeover import TakeOverLeg
from bridge.call.tap import ListenTap
from bridge.sip import cport


def frames(count: int, first: int = 1) -> list[bytes]:
    """``count`` distinct frames: frame k holds the sample value ``first + k`` throughout."""
    return [np.full(FRAME_BYTES // 2, first + k, dtype=np.int16).tobytes() for k in range(count)]


class Counted(NativePlayout):
    """The C ring, counting the blocks Python takes from it."""

    pops = 0

    def pop_frames(self, frames: int) -> bytes:
        self.pops += 1
        return super().pop_frames(frames)


class PortLeg:
    """A phone leg whose media is a native port, as the SIP leg's is (no SIP here)."""

    call_id, caller, called = "pull-1", "caller", "called"

    def __init__(self, port: cport.NativePort) -> None:
        self.port = port
        self.events: asyncio.Queue[object] = asyncio.Queue()
        self.disconnected = asyncio.Event()

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        self.port.attach(outbound, on_frame)


@pytest.fixture
def ring() -> Counted:
    lib = native_playout()
    if lib is None:
        pytest.skip("no C compiler: the playout ring in C is not built")
    return Counted(lib)


@pytest.fixture
def port(native_lib: ctypes.CDLL) -> Iterator[cport.NativePort]:
    hub = cport.NativeHub(native_lib, lead=2, beat=3)  # fill: 4 frames
    port = hub.new_port("t-pull", conference=False)
    yield port
    port.detach()


def send(port: cport.NativePort, ticks: int) -> list[bytes]:
    """``ticks`` clock ticks, the loop's beat after each (as the clock's wake-ups would have it)."""
    sent = []
    for _ in range(ticks):
        sent.append(cport.get_frame(port.handle)[1])
        port._hub.drain()
    return sent


def test_the_ring_reaches_the_wire_without_python_per_frame_and_the_cut_is_what_was_sent(
    port: cport.NativePort, ring: Counted
) -> None:
    reply = frames(12, first=100)
    ring.push("item1", b"".join(reply))
    port.attach(ring, None)
    assert port.pulling
    sent = send(port, 5)
    assert sent == reply[:5]
    assert ring.pops == 0 and port.pulled == 5 + port._hub.fill  # every frame moved in C
    assert ring.frames_played == 5 + port.depth()
    assert ring.flush() == FlushResult("item1", played_ms=100, dropped_ms=140)  # the ring's 4 frames never heard
    assert ring.frames_played == 5 and port.depth() == 0
    assert send(port, 1) == [SILENCE]
    # a reply into the quiet ring takes the silence queued back and plays on the next tick, all in C
    ring.push("item2", b"".join(reply[:3]))
    assert send(port, 3) == reply[:3] and ring.pops == 0
    assert ring.played_ms("item2") == 60


def test_one_drain_looks_at_every_port_in_one_c_call_and_acts_only_on_those_that_need_the_loop(
    port: cport.NativePort, ring: Counted
) -> None:
    hub = port._hub
    heard: list[bytes] = []
    talking = hub.new_port("t-pull-caller", conference=False)  # a caller's frames wait for the loop
    talking.attach(None, lambda frame, at: heard.append(frame))
    python = hub.new_port("t-pull-python", conference=False)  # a ring taken through Python (a virtual clock's)
    virtual = Counted(ring._lib, clock=lambda: 0.0)
    python.attach(virtual, None)
    reply = frames(12, first=100)
    ring.push("item1", b"".join(reply))
    port.attach(ring, None)
    acted: list[str] = []
    act = hub._act
    hub._act = lambda p, polled: acted.append(p.name) or act(p, polled)  # type: ignore[method-assign]  # a spy
    try:
        for each in (port, python):
            cport.get_frame(each.handle)
        cport.put_frame(talking.handle, reply[0])
        pops = virtual.pops
        assert hub.drain() == 1
        # the pulled ring was topped up in C, unlisted; the caller's frame and the Python ring's top-up were acted on
        assert sorted(acted) == ["t-pull-caller", "t-pull-python"] and heard == [reply[0]]
        assert port.depth() == hub.fill and port.pulled == 1 + hub.fill and virtual.pops == pops + 1
        acted.clear()
        talking.detach()
        assert hub.drain() == 0 and acted == ["t-pull-python"]  # a detached port leaves the look
    finally:
        del hub._act
        python.detach()


def test_a_virtual_clock_or_a_detached_port_pulls_nothing_in_c(port: cport.NativePort, ring: Counted) -> None:
    virtual = Counted(ring._lib, clock=lambda: 0.0)  # its times are not CLOCK_MONOTONIC's: popped through Python
    port.attach(virtual, None)
    assert not port.pulling and virtual.pops == 1
    port.detach()
    port.attach(ring, None)
    assert port.pulling
    port.detach()
    assert not port.pulling and port._lib.cbp_fill(port.handle, 4) == -1


def test_listen_in_takes_the_frames_through_python_only_while_someone_listens(
    port: cport.NativePort, ring: Counted
) -> None:
    reply = frames(20, first=200)
    ring.push("item1", b"".join(reply))
    tap = ListenTap(cast(PhoneLeg, PortLeg(port)))
    tap.start_media(ring, lambda pcm, t: None)
    assert port.pulling and ring.pops == 0
    send(port, 3)
    tap.start()
    assert not port.pulling
    send(port, 6)
    assert ring.pops > 0 and list(tap.agent) == reply[7:13]  # the port's fill was taken before the tap began
    tap.stop()
    pops = ring.pops
    assert port.pulling
    assert send(port, 3) == reply[9:12] and ring.pops == pops and not tap.agent


def test_take_over_sends_the_supervisor_through_python_and_hands_back_to_c(
    port: cport.NativePort, ring: Counted
) -> None:
    ring.push("item1", b"".join(frames(30, first=300)))
    leg = TakeOverLeg(cast(PhoneLeg, PortLeg(port)))
    leg.start_media(ring, lambda pcm, t: None)
    assert port.pulling
    leg.begin("sup")
    voice = frames(8, first=900)
    leg.feed(b"".join(voice))
    assert not port.pulling
    sent = send(port, 8)
    assert sent[4:] == voice[:4] and ring.pops > 0  # after the agent's frames the port held
    leg.end()
    assert port.pulling


def test_the_echo_guards_hold_and_a_recording_take_the_frames_through_python(
    port: cport.NativePort, ring: Counted, tmp_path: Path
) -> None:
    if native_echo().lib is None:
        pytest.skip(f"the C echo guard is unavailable: {native_echo().why}")
    ring.push("item1", b"".join(frames(30, first=400)))
    held = HeldSource(ring, NativeEchoGuard())
    port.attach(held, None)
    assert port.pulling  # the port feeds the C guard's reference itself
    held.held = True
    assert not port.pulling
    assert send(port, 6)[4:] == [SILENCE, SILENCE]  # held: silence, and nothing taken from the ring
    held.held = False
    assert port.pulling
    port.detach()
    recording = RecordingLeg(cast(PhoneLeg, PortLeg(port)), tmp_path / "rec", consent=True, real_time=False)
    recording.start_media(ring, lambda pcm, t: None)
    assert not port.pulling  # every frame is kept by the recording
    port.detach()
    recording.close()
