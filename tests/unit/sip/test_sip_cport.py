"""The native media port (bridge/native/cport.c), driven through the wheel's own pjmedia entry points.

No endpoint is needed: ``pjmedia_port_put_frame`` / ``pjmedia_port_get_frame`` are what pjmedia's conference
bridge calls on a port each tick, and they only follow the port's function pointers. So these tests exercise the
exact C callbacks the clock thread runs, with real frames, against the loop side (:class:`NativeHub`).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import math
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pjsua2 as pj
import pytest

from bridge.audio import FlushResult, Playout
from bridge.audio.echo_native import NativeEchoGuard, native_echo
from bridge.audio.frames import FRAME_BYTES, SILENCE
from bridge.call.echo import HeldSource
from bridge.native import build
from bridge.runtime.metronome import Metronome
from bridge.sip import cport
from bridge.sip.crossing import FrameQueue

RATE = 8000


def tone(hz: float, frames: int, dbfs: float = -10.0) -> bytes:
    n = frames * FRAME_BYTES // 2
    amp = 32767 * 10 ** (dbfs / 20) * math.sqrt(2)
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / RATE)).astype(np.int16).tobytes()


def peak_hz(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * RATE / len(x))


@pytest.fixture
def hub(native_lib: ctypes.CDLL) -> cport.NativeHub:
    return cport.NativeHub(native_lib, lead=2)


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_layout_check_passed_and_the_library_is_found_again(native_lib: ctypes.CDLL) -> None:
    assert cport.native_ports().why == ""
    first = build.library(cport.SOURCE)
    assert first.exists() and build.library(cport.SOURCE) == first  # the package's, or one build per source version


def test_caller_frames_reach_the_sink_in_order_with_capture_times(hub: cport.NativeHub) -> None:
    port = hub.new_port("t-in", conference=False)
    got: list[tuple[bytes, float]] = []
    port.attach(None, lambda pcm, t: got.append((pcm, t)))
    sent = tone(1020.0, 5)
    before = time.monotonic()
    for k in range(5):
        cport.put_frame(port.handle, sent[k * FRAME_BYTES : (k + 1) * FRAME_BYTES])
    after = time.monotonic()
    assert readable(hub.fd)  # the clock side woke the loop, with no Python on that path
    hub.on_readable()
    assert not readable(hub.fd)
    assert b"".join(pcm for pcm, _t in got) == sent
    assert abs(peak_hz(b"".join(pcm for pcm, _t in got)) - 1020.0) <= RATE / len(sent) * 2
    times = [t for _pcm, t in got]
    assert times == sorted(times) and before <= times[0] and times[-1] <= after  # stamped on time.monotonic()
    assert (port.counters().frames_in, port.counters().empty_in, port.counters().errors) == (5, 0, 0)
    cport.put_frame(port.handle, b"", frame_type=pj.PJMEDIA_FRAME_TYPE_NONE)  # no audio from the call
    assert port.counters().empty_in == 1
    port.detach()
    cport.put_frame(port.handle, sent[:FRAME_BYTES])
    hub.drain()
    assert len(got) == 5 and port.counters().frames_in == 5  # a detached port ignores the clock


def test_the_caller_hears_the_source_frame_by_frame_and_silence_when_the_loop_is_late(hub: cport.NativeHub) -> None:
    port = hub.new_port("t-out", conference=False)
    queue = FrameQueue()
    reply = tone(600.0, 6, dbfs=-12.0)
    queue.push(reply)
    port.attach(queue, None)  # attach queues the first `lead` frames at once
    assert port.depth() == 2
    heard = []
    for _ in range(6):
        kind, data = cport.get_frame(port.handle)
        assert kind == pj.PJMEDIA_FRAME_TYPE_AUDIO
        heard.append(data)
        hub.drain()  # the loop tops the ring up after each tick
    assert b"".join(heard) == reply
    assert abs(peak_hz(b"".join(heard)) - 600.0) <= RATE / len(reply) * 2
    assert port.counters().late_out == 0
    # The loop does not run between two ticks: the ring runs dry, the caller gets silence, it is counted.
    for _ in range(3):
        cport.get_frame(port.handle)
    kind, data = cport.get_frame(port.handle)
    assert (kind, data) == (pj.PJMEDIA_FRAME_TYPE_AUDIO, SILENCE)
    assert port.counters().late_out == 2 and port.counters().frames_out == 10
    port.detach()
    kind, data = cport.get_frame(port.handle)
    assert kind == pj.PJMEDIA_FRAME_TYPE_NONE and data == b""


def test_a_source_that_keeps_account_is_told_of_the_silence_the_port_sent_on_its_own(hub: cport.NativeHub) -> None:
    """The echo guard's reference (``skipped``): told, in stream order, before the next frames are taken."""
    taken: list[str] = []

    class Counting(FrameQueue):
        def pop_frame(self) -> bytes:
            taken.append("frame")
            return super().pop_frame()

        def skipped(self, frames: int) -> None:
            taken.extend(["silence"] * frames)

    port = hub.new_port("t-skip", conference=False)
    port.attach(Counting(), None)
    assert taken == ["frame", "frame"]  # the lead, queued at once
    for _ in range(5):  # the loop does not run: two frames sent, then three ticks of the port's own silence
        cport.get_frame(port.handle)
    assert port.counters().late_out == 3
    hub.drain()
    assert taken == ["frame", "frame", "silence", "silence", "silence", "frame", "frame"]
    hub.drain()  # told once
    assert taken.count("silence") == 3
    port.detach()


def test_the_c_echo_guards_reference_is_each_frame_the_port_sends(
    hub: cport.NativeHub, new_playout: Callable[..., Playout]
) -> None:
    """With the C echo guard, get_frame hands the guard each frame it sends (the loop's, the silence of a late
    loop), and nothing the loop queued and then flushed: its reference is a twin's fed exactly the frames sent."""
    if native_echo().lib is None:
        pytest.skip(f"the C echo guard is unavailable: {native_echo().why}")
    guard, twin = NativeEchoGuard(), NativeEchoGuard()
    rng = np.random.default_rng(7)
    speech = (rng.standard_normal(60 * FRAME_BYTES // 2) * 3000).astype("<i2").tobytes()
    playout = new_playout()
    playout.push("item1", speech)
    port = hub.new_port("t-ref", conference=False)
    port.attach(HeldSource(playout, guard), None)
    assert port.skipped is None  # the port feeds the guard: the loop has nothing to tell it
    sent = []
    for tick in range(40):
        sent.append(cport.get_frame(port.handle)[1])
        if tick == 20:
            playout.flush()  # a barge-in: the frames waiting in the ring are never sent
            playout.push("item2", speech)
        if not 28 <= tick < 33:  # the loop late for five ticks: the ring runs dry, the caller gets silence
            hub.drain()
    port.detach()
    assert SILENCE in sent and port.counters().late_out > 0
    for frame in sent:
        twin.played(frame)
    for i in range(len(sent)):  # a line returning the agent 12 dB down, 5 frames late
        back = sent[i - 5] if i >= 5 else SILENCE
        heard = (np.frombuffer(back, "<i2") // 4).astype("<i2").tobytes()
        guard.heard(heard)
        twin.heard(heard)
    found, expected = guard.estimate(), twin.estimate()
    assert found is not None and found == expected and found.lag == 5 * FRAME_BYTES // 2


def test_a_late_clock_tick_is_counted(hub: cport.NativeHub) -> None:
    port = hub.new_port("t-gap", conference=False)
    port.attach(FrameQueue(), None)
    cport.get_frame(port.handle)
    time.sleep(0.05)
    cport.get_frame(port.handle)
    cport.get_frame(port.handle)
    assert port.counters().clock_gaps == 1 and port.max_gap_us >= 45_000
    port.detach()


def test_barge_in_counts_only_what_was_sent(hub: cport.NativeHub, new_playout: Callable[..., Playout]) -> None:
    """The ring holds frames taken from the playout buffer but not yet sent: a flush drops them and the
    truncate position stays what the caller got."""
    port = hub.new_port("t-flush", conference=False)
    playout = new_playout()
    speech = tone(440.0, 10)
    playout.push("item1", speech)
    port.attach(playout, None)  # 2 frames move into the ring
    for _ in range(3):
        cport.get_frame(port.handle)  # 3 frames sent
        hub.drain()  # ring topped up: frames 4 and 5 wait in it
    assert playout.frames_played == 5 and port.depth() == 2
    assert playout.flush() == FlushResult("item1", played_ms=60, dropped_ms=140)
    assert playout.frames_played == 3 and port.depth() == 0
    _kind, data = cport.get_frame(port.handle)
    assert data == SILENCE  # nothing of the cut reply after the flush
    port.detach()


def test_idle_waits_until_the_last_real_frame_has_left_the_ring(
    hub: cport.NativeHub, new_playout: Callable[..., Playout]
) -> None:
    port = hub.new_port("t-idle", conference=False)
    playout = new_playout()
    playout.push("bye", tone(500.0, 2))
    playout.end_item("bye")
    port.attach(playout, None)
    assert port.depth() == 2 and not playout.idle  # the goodbye is in the ring, not yet sent
    cport.get_frame(port.handle)
    hub.drain()  # tops up with silence behind the last real frame
    assert not playout.idle
    cport.get_frame(port.handle)
    hub.drain()
    assert playout.idle  # both goodbye frames have gone out; the ring holds silence only
    port.detach()


def test_a_beat_of_three_ticks_wakes_the_loop_every_third_tick_and_a_reply_starts_at_once(
    native_lib: ctypes.CDLL,
    new_playout: Callable[..., Playout],
) -> None:
    """Filled for a whole beat, the ring holds silence while the call is quiet; a reply read on the beat (and
    pushed by the call's own task, as a session does) takes that silence back and plays on the very next tick,
    not a beat later."""

    async def main() -> None:
        hub = cport.NativeHub(native_lib, lead=2, beat=3)
        beats: list[int] = []
        hub.after_drain = lambda: beats.append(1)
        port = hub.new_port("t-beat", conference=False)
        playout = new_playout()
        port.attach(playout, None)
        assert port.depth() == 4  # lead + beat - 1 frames of silence
        hub.on_readable()  # (the wake-up of the attach itself)
        woken = []
        for _ in range(6):
            cport.get_frame(port.handle)
            woken.append(readable(hub.fd))
            if woken[-1]:
                hub.on_readable()
        assert woken == [False, False, True] * 2 and len(beats) == 3
        assert port.depth() == 4 and port.counters().late_out == 0
        cport.get_frame(port.handle)  # one tick into the next beat: three silent frames are still queued
        reply = tone(700.0, 8, dbfs=-6.0)
        inbox: asyncio.Queue[bytes] = asyncio.Queue()

        async def session() -> None:  # the call's task: handles what the beat read
            playout.push("item1", await inbox.get())

        task = asyncio.create_task(session())
        await asyncio.sleep(0)  # the task waits on its inbox
        hub.after_drain = lambda: inbox.put_nowait(reply)  # the beat reads the model's first delta
        hub.on_readable()  # a wake-up (here: forced) runs the beat
        await task  # the session's push takes the silence back and tops the ring up, in the same wake-up
        heard = [cport.get_frame(port.handle)[1] for _ in range(3)]
        assert heard == [reply[k * FRAME_BYTES : (k + 1) * FRAME_BYTES] for k in range(3)]
        assert abs(peak_hz(b"".join(heard)) - 700.0) <= RATE / (3 * FRAME_BYTES // 2) * 2
        # the accounting holds: the flush un-counts what the ring still holds
        assert playout.flush() == FlushResult("item1", played_ms=60, dropped_ms=100)
        assert port.depth() == 0 and port.counters().late_out == 0
        port.detach()

    asyncio.run(main())


KEEPER = """
import json, select, time
from bridge.sip import cport
hub = cport.NativeHub(cport.native_ports().lib, lead=2)
hold_s = 0.1
assert hub.keep(hold_s)
port = hub.new_port("t-keep", conference=False)
port.attach(None, None)  # attached, and no tick ever reads it
waits = []
for _ in range(3):
    hub.on_readable()  # the loop's wake-up: the keeper counts its hold from here
    since = time.monotonic()
    woke = bool(select.select([hub.fd], [], [], 5.0)[0])
    waits.append(time.monotonic() - since if woke else None)
port.detach()
hub.on_readable()
idle = not select.select([hub.fd], [], [], 3 * hold_s)[0]
restarted = []
for pause in (0.0, 2 * hold_s):  # started again at once (the keeper still running), and after it ended
    hub.keep(0)
    time.sleep(pause)
    assert hub.keep(hold_s)
    port.attach(None, None)
    hub.on_readable()
    restarted.append(bool(select.select([hub.fd], [], [], 5.0)[0]))
    port.detach()
    hub.on_readable()
hub.keep(0)
print(json.dumps({"waits": waits, "idle": idle, "restarted": restarted}))
"""


def test_the_keeper_wakes_the_loop_for_a_port_nobody_reads_and_only_while_one_is_attached(
    native_lib: ctypes.CDLL,
) -> None:
    """A port out of the conference is never read, so the clock never wakes the loop for it; the keeper thread
    does, once a hold after the loop's last wake-up, so the loop's beat (its SIP poll) goes on without a timer. The
    keeper counts every port of its process: it runs in a process of its own here, with no other port attached."""
    done = subprocess.run([sys.executable, "-c", KEEPER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert None not in found["waits"], "the keeper did not wake the loop"
    assert min(found["waits"]) >= 0.09  # a hold (100 ms) after the last wake-up, not sooner
    assert found["idle"]  # no port attached: the keeper keeps still
    assert found["restarted"] == [True, True]  # stopped and started again, there is one keeper


def test_a_wake_up_read_after_the_last_port_detached_is_no_beat_and_the_metronome_goes_on(
    native_lib: ctypes.CDLL,
) -> None:
    """The clock (or the keeper) wakes the loop for a port, and the call ends before the loop reads the wake-up: the
    metronome already heard that nothing drives it, and a beat from that read must not make it wait for a driver
    (kept: no watchdog) that will never beat again. Its own timer goes on beating (the SIP poll rides on it)."""
    hub = cport.NativeHub(native_lib, lead=2)

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        metronome = Metronome(loop, 0.06)
        metronome.kept()
        hub.after_drain, hub.after_last = metronome.beat, metronome.undriven
        beats: list[float] = []
        metronome.add(lambda: beats.append(loop.time()))
        port = hub.new_port("t-stale-wake", conference=False)
        await asyncio.sleep(0.15)
        port.attach(None, None)
        hub.on_readable()  # driven
        await asyncio.sleep(0.03)
        port.detach()  # the last port: the metronome is told
        hub.on_readable()  # a wake-up written before the detach, read after it
        before = len(beats)
        await asyncio.sleep(0.6)
        return before, len(beats)

    before, after = asyncio.run(main())
    assert after - before >= 5  # the fallback's beats, every 60 ms from a hold after the last driven one


def test_inbound_ring_overflow_drops_and_counts_instead_of_growing(hub: cport.NativeHub) -> None:
    port = hub.new_port("t-overflow", conference=False)
    got: list[bytes] = []
    port.attach(None, lambda pcm, _t: got.append(pcm))
    frame = tone(1000.0, 1)
    for _ in range(70):  # the loop stalls for 1.4 s: the ring holds 1.28 s
        cport.put_frame(port.handle, frame)
    hub.drain()
    assert len(got) == 64 and port.counters().errors == 6 and port.counters().frames_in == 64
    port.detach()


def test_a_sink_that_raises_is_counted_and_the_rest_still_flows(hub: cport.NativeHub) -> None:
    port = hub.new_port("t-raise", conference=False)
    calls: list[int] = []

    def sink(pcm: bytes, _t: float) -> None:
        calls.append(len(pcm))
        raise RuntimeError("app bug")

    before = hub.sink_errors
    port.attach(None, sink)
    for _ in range(3):
        cport.put_frame(port.handle, tone(800.0, 1))
    hub.drain()
    assert calls == [FRAME_BYTES] * 3 and hub.sink_errors == before + 3
    port.detach()


class Blocks:
    """A sink that takes blocks (``on_frames``): each call's frames and times; raises once if told to."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[bytes, list[float]]] = []
        self.fail = fail

    def __call__(self, pcm: bytes, t_capture: float) -> None:
        raise AssertionError("a sink with a block form is given blocks")

    def on_frames(self, block: bytes, times: Sequence[float]) -> None:
        self.calls.append((block, list(times)))
        if self.fail:
            self.fail = False
            raise RuntimeError("app bug")


def test_a_sink_that_takes_blocks_gets_each_read_in_one_call(hub: cport.NativeHub) -> None:
    port = hub.new_port("t-blocks", conference=False)
    sink = Blocks(fail=True)
    port.attach(None, sink)
    sent = tone(1020.0, 5)
    before = time.monotonic()
    for k in range(5):
        cport.put_frame(port.handle, sent[k * FRAME_BYTES : (k + 1) * FRAME_BYTES])
    after = time.monotonic()
    errors = hub.sink_errors
    assert hub.drain() == 5
    [(block, times)] = sink.calls  # the whole read in one call, though it raised: counted once
    assert block == sent and len(times) == 5 and hub.sink_errors == errors + 1
    assert times == sorted(times) and before <= times[0] and times[-1] <= after  # each frame's own stamp
    for _ in range(64):  # a full ring: one read
        cport.put_frame(port.handle, sent[:FRAME_BYTES])
    hub.drain()
    assert [len(times) for _block, times in sink.calls[1:]] == [64] and hub.sink_errors == errors + 1
    assert sink.calls[1][0] == sent[:FRAME_BYTES] * 64
    port.detach()


def test_without_a_compiler_the_build_fails_with_a_clear_error(tmp_path: Path) -> None:
    code = "from bridge.native import build\nbuild.library = build.build\n"  # as an sdist: the package has none
    code += "from bridge.sip import cport\na = cport.native_ports()\nprint(a.lib is None, a.why)\n"
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"), CALLBRIDGE_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    unavailable, _, why = done.stdout.strip().partition(" ")
    assert unavailable == "True"
    assert "no-such-cc" in why


def test_media_port_setting_is_validated() -> None:
    from bridge.sip.sipconfig import SipConfig

    assert SipConfig(media_port="python").media_port == "python"
    with pytest.raises(ValueError, match=r"SipConfig\.media_port"):
        SipConfig(media_port="fast")
    with pytest.raises(ValueError, match=r"SipConfig\.playout_lead_frames"):
        SipConfig(playout_lead_frames=0)
    assert SipConfig(media_beat_frames=1).media_beat_frames == 1
    for lead, beat in ((2, 0), (2, 9), (12, 6)):  # the last: 17 frames, more than the ring holds
        with pytest.raises(ValueError, match=r"SipConfig\.media_beat_frames"):
            SipConfig(playout_lead_frames=lead, media_beat_frames=beat)
