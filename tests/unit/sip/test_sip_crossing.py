"""The thread crossing: frames put on another thread arrive on the loop in order; outbound frames are 20 ms."""

from __future__ import annotations

import threading

from bridge.sip.crossing import FRAME_BYTES, SILENCE, FrameCrossing, FrameQueue, register_thread


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
