"""No dead air while the answer to the caller's turn is slow: from ``waiting.filler_after_s`` after the caller's
speech ended the caller hears the soft hold (bridge/call/waiting.py, ``TurnHold``), which the agent's first audio
flushes before it plays; a caller speaking over the hold stops it. In virtual time, against the emulator."""

from __future__ import annotations

import itertools

import pytest
from _call_harness import DIALECTS, FRAME_S, Call, Result, plan, run_call, tone_8k

from bridge.realtime.dialects import Dialect

ANSWER_HZ = 1000  # a pitch the hold message never has (its frames peak at 200-600 Hz)
FILLER_AFTER_S = 1.0  # the plan's waiting.filler_after_s (the default)
SLOW = {"speed": 1, "delay_first_delta_ms": 3000}  # every answer's first audio 3 s after its response started
REPLY = {"tone_hz": ANSWER_HZ, "duration_ms": 1000}
ANSWERS = {
    "turns": [
        {"hears": "Where is my order?", "reply": {"text": "It ships today.", **REPLY}},
        {"hears": "Hello?", "reply": {"text": "Yes, I'm here.", **REPLY}},
    ]
}


def holds(result: Result) -> list[tuple[float, str]]:
    """The soft hold's starts and stops in the call's timeline (seconds, summary)."""
    return [(ms / 1000, summary) for ms, kind, summary in result.report.timeline if kind == "wait_hold"]


def first_answer_frame(result: Result, since: float) -> float:
    return next(t for t, hz in result.phone.heard if hz == ANSWER_HZ and t >= since)


@DIALECTS
def test_a_slow_answer_gets_the_soft_hold_until_its_first_audio_and_never_over_it(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: call.phone.heard_ms(ANSWER_HZ) >= 900, within_s=10, what="the answer heard")
        await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, dialect, dialplan=plan(greeting=None), settings=[SLOW], annotations=ANSWERS)
    ((_, spoke_end),) = result.phone.said
    answer = first_answer_frame(result, spoke_end)
    assert answer - spoke_end > 3.0  # the answer was slow: the VAD's silence window, then 3 s
    heard = [(t, hz) for t, hz in result.phone.heard if spoke_end <= t < answer]
    voiced = [t for t, hz in heard if hz]
    # the hold from filler_after_s after the caller's speech ended, to the answer: no silence over 1.5 s
    assert voiced and voiced[0] - spoke_end == pytest.approx(FILLER_AFTER_S, abs=0.1)
    gaps = [b - a for a, b in itertools.pairwise([spoke_end, *voiced, answer])]
    assert max(gaps) < 1.5
    assert sum(FRAME_S for t in voiced) > 1.0  # the hold played, not a click
    # the agent's first audio flushed the hold: the answer plays whole, at once, and nothing of the hold after it
    (on, off) = holds(result)
    assert on[1] == "soft hold on" and off[1] == "soft hold off"
    assert on[0] < answer and off[0] <= answer
    after = [hz for t, hz in result.phone.heard if t >= answer and hz]
    assert set(after) == {ANSWER_HZ} and len(after) * FRAME_S == pytest.approx(1.0, abs=0.06)
    (delta,) = [t for t in result.service.sessions[0].record.timeline if t[1] == "out" and "audio.delta" in t[2]][:1]
    assert answer - delta[0] < 3 * FRAME_S  # queued behind nothing
    assert result.report.barge_ins == 0 and result.report.truncates == []
    # the turn's silence is up to the hold (the caller-felt turn, to the answer, stays a latency), and the call's
    # longest silence, reported as it grew (the console reads it from the call's hash), is that
    report = result.report
    assert report.latency_ms["caller_turn"][0] > 3000
    assert report.turn_silence_ms == [pytest.approx(FILLER_AFTER_S * 1000, abs=40)]
    assert report.longest_silence_ms == report.turn_silence_ms[0]
    grew = [summary for _, kind, summary in report.timeline if kind == "longest_silence"]
    assert grew == [f"longest silence so far {report.longest_silence_ms:.0f} ms"]
    # the caller's longest wait is the whole turn, the hold included: from the end of their speech to the answer
    assert report.longest_wait_ms == report.turn_wait_ms[0] == report.latency_ms["caller_turn"][0]
    assert report.longest_wait_ms == pytest.approx((answer - spoke_end) * 1000, abs=60)
    assert report.first_reply_ms == report.latency_ms["turn"][0] <= report.longest_wait_ms
    waited = [summary for _, kind, summary in report.timeline if kind == "longest_wait"]
    assert waited == [f"longest wait so far {report.longest_wait_ms:.0f} ms"]


@DIALECTS
def test_a_caller_speaking_over_the_hold_stops_it_at_once(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: bool(call.phone.said) and call.phone.hearing() != 0, within_s=10, what="the hold")
        call.phone.say(tone_8k(800, hz=300))
        await call.until(lambda: call.phone.heard_ms(ANSWER_HZ) >= 900, within_s=12, what="the answer heard")
        await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, dialect, dialplan=plan(greeting=None), settings=[SLOW], annotations=ANSWERS)
    started = result.service.sent_at(0, "input_audio_buffer.speech_started")
    assert len(started) == 2
    second_said = result.phone.said[1]
    # from the service's hearing the caller start again until they stopped: nothing of the hold
    assert {hz for t, hz in result.phone.heard if started[1] + 2 * FRAME_S <= t < second_said[1]} == {0}
    timeline = holds(result)
    assert [s for _, s in timeline][:2] == ["soft hold on", "soft hold off"]
    assert started[1] <= timeline[1][0] <= started[1] + 2 * FRAME_S
    # no truncate of the hold (it is in no conversation), and the answer to the second turn was heard
    assert "conversation.item.truncate" not in result.service.kinds(0)
    assert result.phone.heard_ms(ANSWER_HZ) >= 900
