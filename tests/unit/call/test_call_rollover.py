"""The service's session cap (``session_expired``, then close 1001): before it, the call prepares the next session
in the background and moves to it at a turn boundary; if the cap comes first (mid-answer, or right after the
caller's turn), the ready session takes over at once and is asked for what the caller was waiting for."""

from __future__ import annotations

import pytest
from _call_harness import (
    DIALECTS,
    FRAME_S,
    GREETING_HZ,
    HOURS,
    NEW_SESSION_HZ,
    Call,
    Result,
    one_question,
    plan,
    run_call,
    tone_8k,
)

from bridge.realtime.dialects import Dialect


def assert_handed_over_without_recovery(result: Result, rollovers: int = 1) -> None:
    report = result.report
    assert report.rollovers == rollovers and report.reconnects == 0 and "RECOVERING" not in report.phases
    assert len(result.service.sessions) == rollovers + 1
    # the caller's audio went to one session at a time, every frame to exactly one of them
    for n in range(rollovers):
        old, new = result.service.append_times(n), result.service.append_times(n + 1)
        assert new[0] - old[-1] == pytest.approx(FRAME_S)


@DIALECTS
def test_the_next_session_is_prepared_before_the_cap_and_taken_at_a_turn_boundary(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        await call.turn(tone_8k(800))
        await call.until(lambda: call.now >= 6.6, what="the second turn's moment")
        await call.turn(tone_8k(800))  # under way when the next session is prepared
        await call.until(lambda: len(call.service.sessions) == 2 and bool(call.service.append_times(1)), what="swap")
        swapped = call.now
        await call.until(lambda: call.now >= swapped + 0.5, what="half a second on the new session")
        await call.turn(tone_8k(800))
        call.phone.hang_up()

    # a 10 s cap: the next session is opened 3 s before it (30 % of the cap), while the caller is speaking
    capped = {"speed": 4, "session_max_s": 10, "transcript_delay_ms": 0}
    result = run_call(scenario, dialect, settings=[capped], max_session_s=10, annotations=HOURS)
    report, phone = result.report, result.phone
    assert_handed_over_without_recovery(result)
    prepared_at = result.service.connected_at[1]
    assert prepared_at == pytest.approx(10 - 3, abs=FRAME_S)
    assert phone.said[1][0] < prepared_at < phone.said[1][1]
    # prepared with a summary of the call so far, and asked for nothing: nobody was waiting for an answer
    assert result.service.kinds(1) == ["session.update", "conversation.item.create"]
    (prepared,) = result.service.messages(1, "system")
    assert "What are your hours?" in prepared and "We open at nine." in prepared
    # the swap waited for the turn boundary: the caller had heard all of the second answer (from the first
    # session), was not speaking, and heard nothing more until the answer to their next turn
    swap = result.service.append_times(1)[0]
    second_answer, third_answer = phone.spans(since=phone.said[1][1])
    assert second_answer.end <= swap < phone.said[2][0] < third_answer.start
    assert not any(start - 0.2 <= swap <= end + 0.2 for start, end in phone.said)
    transcribed = [[t["text"] for t in s.record.transcripts] for s in result.service.sessions]
    assert transcribed == [["What are your hours?", "And on Sunday?"], ["Thanks, bye."]]
    assert report.caller_transcript == ["What are your hours?", "And on Sunday?", "Thanks, bye."]
    assert report.agent_transcript[-1] == "You're welcome." and result.service.errors(0) == []


@DIALECTS
def test_a_cap_during_an_answer_hands_it_to_the_ready_session(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.phone.hearing() == NEW_SESSION_HZ, what="the answer continued")
        await call.idle(0.2)
        call.phone.hang_up()

    # the greeting (6 s, streamed as it plays) outlasts the 4 s cap: no turn boundary comes before it
    long_greeting = {"greeting": {**HOURS["greeting"], "duration_ms": 6000}}
    capped = {"speed": 1, "session_max_s": 4}
    next_session = {"speed": 4, "tone_hz": NEW_SESSION_HZ, "max_reply_ms": 1000}
    result = run_call(scenario, dialect, settings=[capped, next_session], max_session_s=4, annotations=long_greeting)
    report = result.report
    assert_handed_over_without_recovery(result)
    first = result.service.sessions[0].record
    assert first.close_code == 1001 and result.service.errors(0) == ["session_expired"]
    # prepared with a summary; at the cap, a fresh summary and a request to continue the cut greeting
    kinds = result.service.kinds(1)
    assert kinds == ["session.update", "conversation.item.create", "conversation.item.create", "response.create"]
    (resume,) = result.service.instructions(1)
    assert "cut off" in resume and resume != plan().greeting
    # the caller heard the greeting up to the cap, then its continuation with no gap; the call did not stay
    # THINKING: the continuation was spoken, and the call was listening again when it ended
    greeting, continued = result.phone.spans()
    assert (greeting.hz, continued.hz) == (GREETING_HZ, NEW_SESSION_HZ)
    assert greeting.end == pytest.approx(4.0, abs=0.1) and continued.start - greeting.end <= FRAME_S
    assert report.phases[-3:] == ["SPEAKING", "LISTENING", "ENDED"]


@DIALECTS
def test_a_cap_right_after_the_callers_turn_asks_them_to_repeat_it(dialect: Dialect) -> None:
    # the turn is committed in the first session, which neither transcribes nor answers it before its cap
    slow = {"speed": 4, "session_max_s": 2.5, "response_latency_ms": 40_000, "transcript_delay_ms": 40_000}
    next_session = {"speed": 4, "tone_hz": NEW_SESSION_HZ}
    result = run_call(
        one_question,
        dialect,
        dialplan=plan(greeting=None),
        settings=[slow, next_session],
        max_session_s=2.5,
        annotations={"turns": HOURS["turns"]},
    )
    report = result.report
    # (the short cap rolls the second session over too, at the turn boundary after the ask)
    assert_handed_over_without_recovery(result, rollovers=2)
    assert result.service.kinds(2) == ["session.update", "conversation.item.create"]
    (ask,) = result.service.instructions(1)
    assert "repeat" in ask
    # before the cap, the soft hold of a slow answer (test_call_slow_answer.py); then only the ask
    *hold, asked = result.phone.spans()
    assert asked.hz == NEW_SESSION_HZ and asked.start - 2.5 < 0.1  # no dead air after the cap
    assert hold and all(s.hz != NEW_SESSION_HZ and s.end <= asked.start for s in hold)
    assert report.caller_transcript == []
