"""The playback segment: queued -> the first frame handed to RTP, never below zero."""

from __future__ import annotations

from bridge import events as ev
from bridge.audio import PlayoutBuffer
from bridge.call.latency import LatencyMeter
from bridge.call.report import CallReport


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def test_a_frame_the_port_took_while_the_delta_was_queued_played_at_once_not_before() -> None:
    clock = Clock()
    report = CallReport("c1", "ga", "line")
    samples: list[ev.Report] = []
    meter = LatencyMeter(report, samples.append, clock, greets=True)
    meter.answered_at = 9.0
    playout = PlayoutBuffer(clock=clock)
    playout.push("i1", b"\x01\x00" * 160)  # 20 ms of PCM16 at 8 kHz
    playout.pop_frame()  # the port took it at 10.000, as the delta was being queued
    clock.now = 10.002
    meter.first_audio_queued(received_at=10.0)  # stamped after the push returned
    meter.measure_playback(playout, "i1")
    assert report.latency_ms["playback"] == [0.0]
    assert report.greeting_ms == 1000.0 and report.latency_ms["greeting"] == [1000.0]
