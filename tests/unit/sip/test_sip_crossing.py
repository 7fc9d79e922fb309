"""The thread crossing: frames put on another thread arrive on the loop in order; outbound frames are 20 ms."""

from __future__ import annotations

import threading

from bridge.audio.frames import FRAME_BYTES, SILENCE
from bridge.sip.crossing import FrameCrossing, FrameQueue, register_thread


def test_frames_from_another_thread_are_drained_in_order() -> None:
    crossing = FrameCrossing()
    got: list[tuple[bytes, float]] = []

    def clock() -> None:
        for i in range(1000):
            crossing.put(lambda pcm, t: got.append((pcm, t)), i.to_bytes(2, "little") * 160, float(i))

    thread = threading.Thread(target=clock)
    thread.start()
    thread.join()
    assert crossing.drain() == 1000
    assert [t for _pcm, t in got] == [float(i) for i in range(1000)]
    assert crossing.delivered == 1000 and crossing.dropped == 0


def test_backlog_is_bounded_and_drops_are_counted() -> None:
    crossing = FrameCrossing(limit=3)
    for i in range(5):
        crossing.put(lambda pcm, t: None, b"x", float(i))
    assert len(crossing) == 3
    assert crossing.dropped == 2


def test_a_failing_sink_does_not_stop_the_others() -> None:
    crossing = FrameCrossing()
    got: list[bytes] = []

    def bad(pcm: bytes, t: float) -> None:
        raise ValueError("bug")

    crossing.put(bad, b"a", 0.0)
    crossing.put(lambda pcm, t: got.append(pcm), b"b", 0.0)
    assert crossing.drain() == 2
    assert got == [b"b"]
    assert crossing.sink_errors == 1


def test_frame_queue_cuts_pads_and_yields_silence_when_empty() -> None:
    queue = FrameQueue()
    queue.push(b"\x01" * 500)  # one whole frame + 180 bytes kept back
    assert queue.queued_ms == 20
    assert queue.pop_frame() == b"\x01" * FRAME_BYTES
    assert queue.pop_frame() == SILENCE
    assert queue.underruns == 1
    queue.push(b"\x02" * 140)  # completes the second frame
    assert queue.pop_frame() == b"\x01" * 180 + b"\x02" * 140
    queue.push(b"\x03" * 10)
    queue.flush()
    assert queue.pop_frame() == b"\x03" * 10 + b"\0" * 310


def test_frame_queue_clear_drops_everything_for_barge_in() -> None:
    queue = FrameQueue()
    queue.push(b"\x01" * 1000)
    queue.clear()
    assert queue.queued_ms == 0
    assert queue.pop_frame() == SILENCE


def test_register_thread_registers_once() -> None:
    calls: list[str] = []

    class FakeEndpoint:
        registered = False

        def libIsThreadRegistered(self) -> bool:
            return self.registered

        def libRegisterThread(self, name: str) -> None:
            calls.append(name)
            self.registered = True

    ep = FakeEndpoint()
    register_thread(ep, "worker")
    register_thread(ep, "worker")
    assert calls == ["worker"]


def test_frames_wake_the_loop_once_per_drain_and_none_waits_for_a_poll() -> None:
    """The clock thread wakes the loop when a frame arrives and no drain is pending: a burst of frames costs one
    wake-up, and a frame that arrives after a drain started schedules the next one (nothing is left queued)."""
    import asyncio

    async def scenario() -> tuple[list[float], int, int]:
        loop = asyncio.get_running_loop()
        crossing = FrameCrossing()
        got: list[float] = []
        crossing.wake_with(lambda: loop.call_soon_threadsafe(crossing.drain))

        def tick(first: int) -> None:  # one clock tick: four ports' frames back to back
            for i in range(first, first + 4):
                crossing.put(lambda pcm, t: got.append(t), b"\0" * FRAME_BYTES, float(i))

        for n in range(10):
            thread = threading.Thread(target=tick, args=(4 * n,))
            thread.start()
            thread.join()
            for _ in range(20):  # the loop runs the drain the clock thread scheduled; no poll
                if len(got) == 4 * (n + 1):
                    break
                await asyncio.sleep(0.001)
        return got, crossing.wakes, len(crossing)

    got, wakes, left = asyncio.run(scenario())
    assert got == [float(i) for i in range(40)]
    assert wakes == 10  # one per tick, not one per frame
    assert left == 0


def test_a_closed_loop_leaves_frames_queued_for_a_final_drain() -> None:
    crossing = FrameCrossing()

    def closed() -> None:
        raise RuntimeError("Event loop is closed")

    crossing.wake_with(closed)
    crossing.put(lambda pcm, t: None, b"a", 0.0)
    crossing.put(lambda pcm, t: None, b"b", 0.0)  # the failed wake was forgotten: this one tries again
    assert len(crossing) == 2 and crossing.wakes == 2
    assert crossing.drain() == 2


def test_the_registered_extra_drain_runs_unless_left_out() -> None:
    crossing = FrameCrossing()
    got: list[bytes] = []
    extra_calls: list[int] = []
    crossing.also_drain(lambda: extra_calls.append(1) or 3)
    crossing.put(lambda pcm, _t: got.append(pcm), b"\x01" * 320, 0.0)
    assert crossing.drain() == 1 + 3 and extra_calls == [1]
    crossing.put(lambda pcm, _t: got.append(pcm), b"\x02" * 320, 0.0)
    assert crossing.drain(also=False) == 1 and extra_calls == [1]  # the pump's safety net leaves native ports alone
    crossing.also_drain(None)
    assert crossing.drain() == 0 and got == [b"\x01" * 320, b"\x02" * 320]
