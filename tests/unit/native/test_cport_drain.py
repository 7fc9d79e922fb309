"""The loop's drain asks each native port once (``cbp_poll``: frames waiting for the loop, frames the ring needs).
A sink that queues audio while its frames are delivered has the ring topped up at once, and the drain adds nothing
after it: the ring holds exactly the beat's fill (more would delay what the caller hears by as much)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from bridge.audio import FlushResult, Playout
from bridge.audio.frames import FRAME_BYTES, SILENCE
from bridge.sip import cport


def frames(count: int, first: int = 1) -> list[bytes]:
    """``count`` distinct frames: frame k holds the sample value ``first + k`` throughout."""
    return [np.full(FRAME_BYTES // 2, first + k, dtype=np.int16).tobytes() for k in range(count)]


def test_poll_gives_the_frames_waiting_and_the_frames_needed(native_lib: ctypes.CDLL) -> None:
    hub = cport.NativeHub(native_lib, lead=2, beat=3)  # fill: 4 frames
    port = hub.new_port("t-poll", conference=False)
    port.attach(None, lambda pcm, t: None)  # no source: nothing queued for the caller
    for pcm in frames(3):
        cport.put_frame(port.handle, pcm)
    assert native_lib.cbp_poll(port.handle, hub.fill) == 3 * 256 + 4
    # never more than the ring holds
    assert native_lib.cbp_poll(port.handle, 99) == 3 * 256 + native_lib.cbp_out_frames()
    assert hub.drain() == 3
    assert native_lib.cbp_poll(port.handle, hub.fill) == 4
    port.detach()


def test_a_sink_that_queues_audio_during_the_drain_leaves_the_ring_exactly_full(
    native_lib: ctypes.CDLL, new_playout: Callable[..., Playout]
) -> None:
    hub = cport.NativeHub(native_lib, lead=2, beat=3)
    port = hub.new_port("t-refill", conference=False)
    playout = new_playout()
    reply = frames(10, first=100)
    said: list[bytes] = []

    def sink(pcm: bytes, t_capture: float) -> None:
        said.append(pcm)
        if len(said) == 1:  # the caller's first frame: the agent's reply arrives on this same wake-up
            playout.push("reply", b"".join(reply))

    port.attach(playout, sink)  # 4 frames of silence queued (nothing to play yet)
    for _ in range(2):
        assert cport.get_frame(port.handle)[1] == SILENCE  # the ring is down to 2: it needs 2
    cport.put_frame(port.handle, frames(1)[0])
    hub.drain()  # the sink's push takes the queued silence back and tops the ring up with the reply itself
    assert said == frames(1)
    assert port.depth() == hub.fill
    assert playout.frames_played == hub.fill  # every frame taken from the playout is in the ring
    assert [cport.get_frame(port.handle)[1] for _ in range(hub.fill)] == reply[: hub.fill]
    hub.drain()
    assert cport.get_frame(port.handle)[1] == reply[hub.fill]
    assert playout.flush() == FlushResult("reply", played_ms=(hub.fill + 1) * 20, dropped_ms=(10 - hub.fill - 1) * 20)
    port.detach()
