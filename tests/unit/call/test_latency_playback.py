"""The playback segment: queued -> the first frame handed to RTP, never below zero; the caller's own hold counts in
no wait for the agent."""

from __future__ import annotations

from fakes.clock import Clock

from bridge import events as ev
from bridge.audio import PlayoutBuffer
from bridge.call.latency import LatencyMeter
from bridge.call.report import CallReport


def test_a_frame_the_port_took_while_the_delta_was_queued_played_at_once_not_before() -> None:
    clock = Clock(10.0)
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


def test_the_callers_own_hold_counts_in_no_wait_for_the_agent() -> None:
    """The caller stops, the agent's answer is queued, the caller holds for 10 s (nothing is sent, the answer
    waits), then takes the call off hold and hears it: the reply and the wait leave the hold out, the model's own
    time does not change, and the playback counts from the resume."""
    clock = Clock(10.0)
    report = CallReport("c1", "ga", "line")
    meter = LatencyMeter(report, lambda r: None, clock)
    meter.answered_at = 5.0
    clock.now = 20.0
    meter.caller_stopped()
    clock.now = 20.5
    meter.first_audio_queued(received_at=20.5)
    playout = PlayoutBuffer(clock=clock)
    playout.push("i1", b"\x01\x00" * 160)
    meter.caller_held(10.0, resumed_at=30.6)  # held 20.6 -> 30.6
    clock.now = 30.62
    playout.pop_frame()
    meter.measure_playback(playout, "i1")
    assert report.latency_ms["inference"] == [500.0]  # the model's share is its own
    assert report.first_reply_ms == 620.0 and report.latency_ms["turn"] == [620.0]
    assert report.turn_wait_ms == [620.0]
    assert report.latency_ms["playback"] == [20.0]  # from the resume, not from the queueing before the hold
    # the next turn starts afresh: a hold before the caller speaks again is no part of it
    meter.caller_held(3.0, resumed_at=33.0)
    clock.now = 40.0
    meter.caller_stopped()
    clock.now = 40.3
    meter.first_audio_queued(received_at=40.3)
    playout.push("i2", b"\x01\x00" * 160)
    clock.now = 40.4
    playout.pop_frame()
    meter.measure_playback(playout, "i2")
    assert report.latency_ms["turn"] == [620.0, 400.0] and report.turn_wait_ms == [620.0, 400.0]
