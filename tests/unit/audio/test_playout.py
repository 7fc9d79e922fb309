"""The playout buffer, in Python (PlayoutBuffer) and in C (NativePlayout), held to one contract: exact played
milliseconds, counters, padding, the downstream stage, and producer/consumer thread tests."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from bridge.audio import FlushResult, Playout, PlayoutBuffer
from bridge.audio.playout_native import NativePlayout, native_playout

FRAME = 320  # 20 ms of 8 kHz PCM16
SILENCE = bytes(FRAME)
Make = Callable[..., Playout]  # the new_playout fixture (tests/conftest.py): each test runs against both


def audio(ms: int, start: int = 1) -> bytes:
    """`ms` of PCM16 whose samples count up from `start` (never 0, so a frame is never all silence)."""
    n = ms * 8
    return ((np.arange(start, start + n) % 30000) + 1).astype(np.int16).tobytes()


def test_scripted_pushes_pops_and_flush_report_exact_milliseconds(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    pb.push("a", audio(1000))
    assert pb.depth_ms == 1000 and not pb.idle
    played = [pb.pop_frame() for _ in range(13)]
    assert b"".join(played) == audio(1000)[: 13 * FRAME]
    assert pb.played_ms("a") == 260 and pb.depth_ms == 740
    assert pb.flush() == FlushResult("a", played_ms=260, dropped_ms=740)
    assert pb.idle and pb.depth_ms == 0
    assert pb.pop_frame() == SILENCE
    pb.push("a", audio(40))  # deltas of the cut item still in flight: discarded
    assert pb.late_frames == 2 and pb.depth_ms == 0
    assert (pb.frames_played, pb.underruns, pb.dropped_frames) == (13, 0, 0)


def test_tail_is_padded_when_the_next_item_starts(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    a = audio(25)  # one frame and 80 bytes
    pb.push("a", a[:300])
    pb.push("a", a[300:])
    assert pb.depth_ms == 20  # the 80-byte tail waits for more
    pb.push("b", audio(20, start=500))
    assert pb.depth_ms == 60
    assert pb.pop_frame() == a[:FRAME]
    assert pb.pop_frame() == a[FRAME:] + bytes(2 * FRAME - len(a))
    assert pb.pop_frame() == audio(20, start=500)
    assert pb.played_ms("a") == 25  # capped at the real audio: the padding is not the item's
    assert pb.played_ms("b") == 20
    assert not pb.idle  # "b" is still open
    pb.end_item("b")
    assert pb.idle


def test_end_item_pads_the_tail_so_it_plays(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    pb.push("a", audio(30))
    pb.end_item("a")
    frames = [pb.pop_frame(), pb.pop_frame()]
    assert b"".join(frames) == audio(30) + bytes(160)
    assert pb.idle and pb.played_ms("a") == 30


def test_underruns_count_only_dead_air_inside_a_playing_item(new_playout: Make) -> None:
    make = new_playout
    now = [10.0]
    pb = make(clock=lambda: now[0])
    assert pb.pop_frame() == SILENCE and pb.underruns == 0  # idle: nothing expected
    pb.push("a", audio(40))
    pb.pop_frame(), pb.pop_frame()
    now[0] = 10.06
    assert pb.pop_frame() == SILENCE and pb.underruns == 1  # "a" is open: the model is late
    now[0] = 10.08
    pb.pop_frame()
    assert pb.underruns == 2
    assert list(pb.underrun_times) == [10.06, 10.08]  # when: benchmarks count those inside their window
    pb.end_item("a")
    pb.pop_frame()
    assert pb.underruns == 2  # ended: idle silence
    pb.push("b", audio(5))  # less than a frame, not started yet: waiting for the first frame is latency
    pb.pop_frame()
    assert pb.underruns == 2


def test_full_buffer_drops_the_newest_and_the_rest_of_that_item(new_playout: Make) -> None:
    make = new_playout
    pb = make(max_ms=100)
    pb.push("a", audio(160))
    assert pb.depth_ms == 100 and pb.dropped_frames == 3
    assert [pb.pop_frame() for _ in range(5)] == [audio(160)[i * FRAME : (i + 1) * FRAME] for i in range(5)]
    pb.push("a", audio(40))  # room again, but "a" already lost its middle: keep it a prefix
    assert pb.depth_ms == 0 and pb.dropped_frames == 5
    pb.push("b", audio(40))
    assert pb.depth_ms == 40
    pb.pop_frame()
    assert pb.flush() == FlushResult("b", played_ms=20, dropped_ms=20)
    assert pb.played_ms("a") == 100


def test_flush_reports_queued_items_that_never_played(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    pb.push("a", audio(60))
    pb.end_item("a")
    pb.push("b", audio(40))
    pb.pop_frame()
    pb.push("c", audio(5))  # only a partial frame so far
    assert pb.flush() == FlushResult("a", played_ms=20, dropped_ms=40, unplayed=("b", "c"))
    assert pb.flush() == FlushResult(None, 0, 0)


def test_flush_with_only_a_partial_frame_left(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    pb.push("a", audio(25))
    pb.pop_frame()
    assert pb.flush() == FlushResult("a", played_ms=20, dropped_ms=5)


def test_first_played_at_is_stamped_at_the_first_pop(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    pb.push("a", audio(40))
    assert pb.first_played_at("a") is None
    before = time.monotonic()
    pb.pop_frame()
    after = time.monotonic()
    stamp = pb.first_played_at("a")
    assert stamp is not None and before <= stamp <= after
    pb.pop_frame()
    assert pb.first_played_at("a") == stamp


def test_frames_always_have_frame_bytes_and_custom_silence(new_playout: Make) -> None:
    make = new_playout
    pb = make(frame_bytes=160, silence=b"\xff" * 160)  # 20 ms of μ-law
    assert pb.pop_frame() == b"\xff" * 160
    pb.push("a", b"\x01" * 100)
    pb.end_item("a")
    assert pb.pop_frame() == b"\x01" * 100 + b"\xff" * 60
    with pytest.raises(ValueError, match=r"^silence must be one frame of 320 bytes, got 3$"):
        make(silence=b"abc")


def test_threads_lose_and_reorder_nothing(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    rng = random.Random(5)
    items = [(f"item{i}", audio(rng.randrange(20, 400), start=i * 1000)) for i in range(40)]
    done = threading.Event()
    got: list[bytes] = []

    def producer() -> None:
        for item_id, data in items:
            pos = 0
            while pos < len(data):
                size = rng.randrange(1, 3000)
                pb.push(item_id, data[pos : pos + size])
                pos += size
                if rng.random() < 0.3:
                    time.sleep(0.0005)
            pb.end_item(item_id)
        done.set()

    def consumer() -> None:
        while not (done.is_set() and pb.idle):
            frame = pb.pop_frame()
            assert len(frame) == FRAME
            if frame != SILENCE:
                got.append(frame)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    expected = [d[i : i + FRAME].ljust(FRAME, b"\0") for _, d in items for i in range(0, len(d), FRAME)]
    assert got == expected
    assert pb.frames_played == len(expected) and pb.dropped_frames == 0
    assert all(pb.played_ms(item_id) == len(d) // 16 for item_id, d in items)


def test_flush_is_exact_while_the_consumer_pops_concurrently(new_playout: Make) -> None:
    make = new_playout
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads every few bytecodes: races get their chance
    try:
        _flush_races(make)
    finally:
        sys.setswitchinterval(switch)


def _consume(pb: Playout, got: list[bytes], started: threading.Event, stop: threading.Event) -> None:
    started.set()
    while not stop.is_set():
        frame = pb.pop_frame()
        if frame != SILENCE:
            got.append(frame)


def _flush_races(make: Make) -> None:
    # Ten minutes queued: a busy machine can run the consumer alone for a whole time slice, which pops a minute
    # of frames, never ten.
    long_ms = 600_000
    whole = audio(long_ms)
    cut_in_the_middle = 0
    for seed in range(20):
        pb = make(max_ms=long_ms)
        pb.push("a", whole)
        got: list[bytes] = []
        started, stop = threading.Event(), threading.Event()
        t = threading.Thread(target=_consume, args=(pb, got, started, stop))
        t.start()
        started.wait()
        # flush once the consumer has popped a few frames (a number of its own per round), never after a sleep:
        # a busy machine can stretch a sleep until the consumer has popped nothing or everything
        target, deadline = 1 + 13 * seed, time.monotonic() + 5.0
        while len(got) < target and time.monotonic() < deadline:
            pass
        result = pb.flush()
        stop.set()
        t.join(timeout=5)
        assert result.item_id == "a"
        assert result.played_ms == len(got) * 20  # exactly what the consumer was handed
        assert result.played_ms + result.dropped_ms == long_ms
        assert b"".join(got) == whole[: len(got) * FRAME]  # a prefix, in order
        cut_in_the_middle += 0 < result.played_ms < long_ms
    assert cut_in_the_middle >= 10


class _Ring:
    """A downstream stage like the native port's ring: what was popped and not yet sent, oldest first; a top-up
    fills it to ``fill`` frames."""

    def __init__(self, pb: Playout, fill: int) -> None:
        self.pb, self.fill = pb, fill
        self.held: list[bytes] = []
        pb.set_downstream(self)

    def flush_out(self) -> int:
        n, self.held = len(self.held), []
        return n

    def depth(self) -> int:
        return len(self.held)

    def drop_newest(self, frames: int) -> int:
        k = min(frames, len(self.held))
        del self.held[len(self.held) - k :]
        return k

    def top_up(self) -> None:
        while len(self.held) < self.fill:
            self.held.append(self.pb.pop_frame())

    def tick(self) -> bytes:
        """The clock sends the oldest frame."""
        return self.held.pop(0)


def test_silence_queued_ahead_of_a_reply_is_taken_back_so_the_reply_plays_next(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    ring = _Ring(pb, fill=4)
    pb.push("a", audio(40))  # not empty before: nothing to take back
    ring.top_up()  # a beat's fill: the end of "a", then silence
    assert ring.held[:2] == [audio(40)[:FRAME], audio(40)[FRAME:]] and ring.held[2:] == [SILENCE, SILENCE]
    assert ring.tick() == audio(40)[:FRAME]
    pb.push("b", audio(60, start=7))  # the reply: the two silent frames are taken back, "b" queued behind "a"
    assert b"".join(ring.held) == audio(40)[FRAME:] + audio(60, start=7)
    assert ring.tick() == audio(40)[FRAME:]  # no gap between the two
    assert ring.tick() == audio(60, start=7)[:FRAME]
    # the accounting still lines up: a barge-in un-counts exactly the frames in the ring
    assert pb.flush() == FlushResult("b", played_ms=20, dropped_ms=40)
    assert ring.held == []


def test_silence_already_sent_is_not_taken_back_and_a_slow_delta_takes_back_the_gap_behind_it(
    new_playout: Make,
) -> None:
    make = new_playout
    pb = make()
    ring = _Ring(pb, fill=3)
    ring.top_up()  # idle: silence
    ring.tick()
    ring.tick()  # two of them went out
    pb.push("a", audio(20))
    assert ring.held == [audio(20), SILENCE, SILENCE]  # the one left was taken back, the ring topped up at once
    assert pb.underruns == 2  # "a" is still open: silence behind it is dead air, if the caller hears it ...
    pb.push("a", audio(100, start=161))  # ... but the model's next delta came before the clock got there
    assert b"".join(ring.held) == audio(20) + audio(100, start=161)[: 2 * FRAME]
    assert pb.underruns == 0 and len(pb.underrun_times) == 0
    pb.push("a", audio(20, start=999))  # the buffer was not empty: nothing is taken back
    assert b"".join(ring.held) == audio(20) + audio(100, start=161)[: 2 * FRAME]
    assert pb.depth_ms == 80


def test_an_item_is_sent_only_once_its_frames_have_left_the_downstream_stage(new_playout: Make) -> None:
    """A prompt whose last frame sits in the port's queue is played (handed out) but not yet heard (sent)."""
    pb = new_playout()
    ring = _Ring(pb, fill=4)
    pb.push("prompt", audio(60))
    pb.end_item("prompt")
    pb.push("next", audio(40, start=3))
    ring.top_up()  # the prompt's three frames and the next item's first, all still held
    assert (pb.played_ms("prompt"), pb.sent_ms("prompt"), pb.sent_ms("next")) == (60, 0, 0)
    ring.tick()
    ring.tick()
    assert pb.sent_ms("prompt") == 40
    ring.tick()
    assert pb.sent_ms("prompt") == 60 and pb.sent_ms("next") == 0
    assert new_playout().sent_ms("unknown") == 0


def test_without_a_downstream_a_push_into_an_empty_buffer_pops_nothing(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    pb.push("a", audio(40))
    assert pb.depth_ms == 40 and pb.frames_played == 0


def test_ran_dry_only_once_the_silence_in_the_items_place_has_gone_out(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    ring = _Ring(pb, fill=3)
    pb.push("a", audio(40))
    assert not pb.ran_dry("a")  # audio queued: a tail pushed now follows it
    ring.top_up()  # a, a, dead air
    assert not pb.ran_dry("a")  # the dead air is still in the ring: a push takes it back
    ring.tick()
    ring.tick()
    ring.tick()  # the dead air went out
    ring.top_up()
    assert pb.ran_dry("a") and not pb.ran_dry("b")  # four frames of dead air, three held: a gap was sent
    pb.end_item("a")
    assert not pb.ran_dry("a")  # ended: nothing more comes for it
    bare = make()  # no downstream stage: one silent pop is already a gap
    bare.push("x", audio(20))
    bare.pop_frame()
    assert not bare.ran_dry("x")
    bare.pop_frame()
    assert bare.ran_dry("x")


def test_a_tail_shorter_than_a_frame_ended_into_an_empty_buffer_takes_the_silence_back_too(new_playout: Make) -> None:
    make = new_playout
    pb = make()
    ring = _Ring(pb, fill=4)
    pb.push("a", audio(40))
    ring.top_up()  # a, a, dead air, dead air
    ring.tick()
    pb.push("a", audio(2, start=321))  # the filter's last 2 ms: not a whole frame, nothing to play yet
    assert ring.held[1:] == [SILENCE, SILENCE]
    pb.end_item("a")  # the padded tail is queued: it plays right after the audio, not after the dead air
    assert ring.held[:2] == [audio(40)[FRAME:], audio(2, start=321) + bytes(FRAME - 32)]
    assert pb.underruns == 0


def test_the_c_ring_and_the_python_buffer_agree_step_for_step_on_random_work() -> None:
    """Random pushes (odd lengths, new items, items already cut), ends, pops in blocks, flushes and a downstream
    stage that takes silence back: after every step both buffers give the same frames, results and counters."""
    lib = native_playout()
    if lib is None:
        pytest.skip("no C compiler: the playout ring in C is not built")
    for seed in range(30):
        rng = random.Random(seed)
        now = [0.0]

        def clock(now: list[float] = now) -> float:
            return now[0]

        pair = [PlayoutBuffer(max_ms=300, clock=clock), NativePlayout(lib, max_ms=300, clock=clock)]
        fill = rng.randrange(1, 5)
        rings = [_Ring(pb, fill=fill) if seed % 3 else None for pb in pair]
        items = [f"i{k}" for k in range(20)]
        for step in range(300):
            now[0] += 0.02
            op, item = rng.random(), items[step // 16 + rng.randrange(2)]  # items roll on, a few at a time
            if op < 0.35:
                data = audio(rng.randrange(1, 300), start=step * 7 + 1)[: rng.randrange(1, 4800)]
                for pb in pair:
                    pb.push(item, data)
            elif op < 0.45:
                for pb in pair:
                    pb.end_item(item)
            elif op < 0.8:
                n = rng.randrange(1, 6)
                got = [pb.pop_frames(n) if rings[0] is None else b"" for pb in pair]
                for ring in rings:
                    if ring is not None:
                        ring.top_up()
                        for _ in range(min(n, len(ring.held))):
                            ring.tick()
                assert got[0] == got[1], (seed, step)
            elif op < 0.87:
                assert pair[0].flush() == pair[1].flush(), (seed, step)
            a, b = pair
            if rings[0] is not None and rings[1] is not None:
                assert rings[0].held == rings[1].held, (seed, step)
            assert (a.frames_played, a.underruns, a.dropped_frames, a.late_frames, a.depth_ms, a.idle) == (
                b.frames_played,
                b.underruns,
                b.dropped_frames,
                b.late_frames,
                b.depth_ms,
                b.idle,
            ), (seed, step)
            assert list(a.underrun_times) == list(b.underrun_times), (seed, step)
            assert all(a.played_ms(i) == b.played_ms(i) for i in items), (seed, step)
            assert all(a.first_played_at(i) == b.first_played_at(i) for i in items), (seed, step)
            assert all(a.ran_dry(i) == b.ran_dry(i) for i in items), (seed, step)
