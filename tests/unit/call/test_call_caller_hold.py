"""The caller's own hold key (a re-INVITE with ``a=sendonly``, then ``a=sendrecv``; bridge/call/reactions.py): the
agent's answer waits for the caller and plays whole once they are back, nothing of the bridge's soft hold is queued
for a caller who cannot hear it, the timeline says when they held and for how long, and the time held counts in no
wait for the agent. In virtual time, against the emulator."""

from __future__ import annotations

import pytest
from _call_harness import DIALECTS, FRAME_S, Call, plan, run_call, tone_8k

from bridge.realtime.dialects import Dialect

ANSWER_HZ = 1000
SLOW = {"speed": 1, "delay_first_delta_ms": 3000}  # the answer's first audio 3 s after its response started
ANSWERS = {"turns": [{"hears": "Where is my order?", "reply": {"text": "It ships today.", "tone_hz": ANSWER_HZ,
                                                                 "duration_ms": 1000}}]}  # fmt: skip
HELD_S = 6.0


@DIALECTS
def test_an_answer_waits_for_a_caller_who_holds_and_the_hold_is_no_wait(dialect: Dialect) -> None:
    marks: dict[str, float] = {}

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        stopped = await call.until(
            lambda: bool(call.service.sessions) and bool(call.service.sent_at(0, "input_audio_buffer.speech_stopped")),
            within_s=10,
            what="the turn's end",
        )
        call.phone.hold_key(True)  # the answer is still 3 s away: it comes while the caller holds
        marks["held"] = stopped
        await call.until(lambda: call.now >= stopped + HELD_S, within_s=HELD_S + 1, what="the hold's end")
        marks["resumed"] = call.now
        call.phone.hold_key(False)
        await call.until(lambda: call.phone.heard_ms(ANSWER_HZ) >= 980, within_s=10, what="the answer heard")
        await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, dialect, dialplan=plan(greeting=None), settings=[SLOW], annotations=ANSWERS)
    report = result.report
    # the answer came during the hold, waited, and was heard whole after it, at once
    first = next(t for t, hz in result.phone.heard if hz == ANSWER_HZ)
    assert marks["resumed"] <= first < marks["resumed"] + 3 * FRAME_S
    assert result.phone.heard_ms(ANSWER_HZ) == pytest.approx(1000, abs=60)
    assert {hz for t, hz in result.phone.heard if marks["held"] <= t < marks["resumed"]} == {0}
    # no soft hold was queued for a caller who could not hear it (and none marks the call "on hold")
    kinds = [kind for _, kind, _ in report.timeline]
    assert "wait_hold" not in kinds, report.timeline
    # the timeline: held, then back, with the time held
    held = [(ms, summary) for ms, kind, summary in report.timeline if kind in ("caller_held", "caller_resumed")]
    assert [s for _, s in held] == [
        "the caller put the call on hold",
        f"the caller took the call off hold after {HELD_S:.1f} s",
    ], held
    # the caller waited only while they were not holding: the reply and the wait leave the 6 s out
    assert report.first_reply_ms is not None and report.first_reply_ms < 200, report.latency_ms
    assert report.longest_wait_ms is not None and report.longest_wait_ms < 1000, report.turn_wait_ms
    assert report.latency_ms["inference"][0] > 2900  # the model's own time is its own
