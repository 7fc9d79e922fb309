"""A lost Realtime session: the call reconnects, gives the new session a short summary (never the audio history),
and asks it for whatever the caller was waiting for, so the caller hears no dead air; or, if the service does not
come back, hangs up rather than leave the caller in silence. The faults are the emulator's
(bridge/emulator/faults.py)."""

from __future__ import annotations

import itertools

import pytest
from _call_harness import (
    ANSWER_HZ,
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

from bridge.call.outage import APOLOGY_WAV, GOODBYE_REASON, audio
from bridge.call.retry import Jitter, RetryPolicy, envelope
from bridge.realtime.dialects import Dialect

# the second session speaks unscripted replies in its own voice
AFTER_THE_DROP = {"speed": 4, "tone_hz": NEW_SESSION_HZ}


def summary(result: Result, n: int) -> str:
    (text,) = result.service.messages(n, "system")
    return text


def dropped_at(result: Result, n: int) -> float:
    """When emulated session ``n`` dropped its connection (``drop_after_s`` after it opened; mid-response, right
    after the delta that triggered it)."""
    session = result.service.sessions[n]
    assert session.record.close_code == 1006, session.record.close_reason
    after = session.settings.faults.drop_after_s
    if after is not None:
        return session.t0 + after
    return max(t for t, direction, _ in session.record.timeline if direction == "out")


def phases_after(report_phases: list[str], phase: str) -> str:
    return report_phases[report_phases.index(phase) + 1]


@DIALECTS
def test_a_drop_mid_answer_reconnects_and_the_answer_goes_on_without_dead_air(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        await call.turn(tone_8k(800))
        call.phone.hang_up()

    drop = {"speed": 4, "transcript_delay_ms": 0, "drop_mid_response": 2, "fault_after_deltas": 3}
    result = run_call(scenario, dialect, settings=[drop, AFTER_THE_DROP], annotations=HOURS)
    report = result.report
    assert len(result.service.sessions) == 2 and report.reconnects == 1
    # the new session: configured, told what was said (not greeted again), asked to continue the cut answer
    assert result.service.kinds(1) == ["session.update", "conversation.item.create", "response.create"]
    told = summary(result, 1)
    assert "What are your hours?" in told and "Welcome to ACME." in told
    (resume,) = result.service.instructions(1)
    assert "cut off" in resume and resume != plan().greeting
    # what the caller heard: the greeting, all of the answer that had arrived (3 deltas of 100 ms), then the
    # continuation, right behind it
    greeting, cut, resumed = result.phone.spans()
    assert (greeting.hz, cut.hz, resumed.hz) == (GREETING_HZ, ANSWER_HZ, NEW_SESSION_HZ)
    assert cut.ms == pytest.approx(300, abs=20)
    assert cut.start < dropped_at(result, 0) < cut.end
    assert resumed.start - cut.end <= FRAME_S  # no dead air
    assert phases_after(report.phases, "RECOVERING") == "THINKING"
    assert report.caller_transcript == ["What are your hours?"] and report.barge_ins == 0


@DIALECTS
def test_a_drop_before_the_answer_began_asks_the_new_session_to_answer_the_turn(dialect: Dialect) -> None:
    # the service commits and transcribes the turn, then takes 10 s to answer; the socket drops at 2.5 s
    slow = {"speed": 4, "transcript_delay_ms": 0, "response_latency_ms": 40_000, "drop_after_s": 2.5}
    turns = {"turns": HOURS["turns"]}  # and no greeting
    result = run_call(
        one_question, dialect, dialplan=plan(greeting=None), settings=[slow, AFTER_THE_DROP], annotations=turns
    )
    report = result.report
    assert report.reconnects == 1
    assert result.service.kinds(1) == ["session.update", "conversation.item.create", "response.create"]
    assert "What are your hours?" in summary(result, 1)
    # before the drop, the soft hold of a slow answer (test_call_slow_answer.py); then only the new session's answer
    *hold, answer = result.phone.spans()
    assert answer.hz == NEW_SESSION_HZ and answer.start - dropped_at(result, 0) < 0.1
    assert hold and all(s.hz != NEW_SESSION_HZ and s.end <= dropped_at(result, 0) + 3 * FRAME_S for s in hold)
    assert phases_after(report.phases, "RECOVERING") == "THINKING"


@DIALECTS
def test_a_drop_while_the_caller_is_listening_asks_for_nothing_and_the_call_goes_on(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        await call.turn(tone_8k(800))
        await call.until(lambda: len(call.service.sessions) == 2, what="the reconnect")
        reconnected = call.now
        await call.until(lambda: call.now >= reconnected + 1.0, what="a second on the new session")
        await call.turn(tone_8k(800))
        call.phone.hang_up()

    drop = {"speed": 4, "transcript_delay_ms": 0, "drop_after_s": 6.0}
    result = run_call(scenario, dialect, settings=[drop, {"speed": 4}], annotations=HOURS)
    report = result.report
    dropped = dropped_at(result, 0)
    assert result.phone.spans()[1].end < dropped  # the first answer had been heard whole
    # only the summary: nothing was owed, so nothing was said until the caller spoke again
    assert result.service.kinds(1) == ["session.update", "conversation.item.create"]
    assert "What are your hours?" in summary(result, 1)
    (second_answer,) = result.phone.spans(since=dropped)
    assert second_answer.start > result.phone.said[-1][1]
    assert phases_after(report.phases, "RECOVERING") == "LISTENING"
    assert report.caller_transcript == ["What are your hours?", "And on Sunday?"]
    assert report.agent_transcript[-1] == "Closed on Sundays." and report.reconnects == 1


@DIALECTS
def test_a_greeting_lost_with_the_socket_is_asked_for_again(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        call.phone.hang_up()

    lost = {"speed": 4, "delay_first_delta_ms": 1000, "drop_after_s": 0.5}
    result = run_call(scenario, dialect, settings=[lost, AFTER_THE_DROP], annotations=HOURS)
    # nothing was said yet: no summary, the greeting's own instructions
    assert result.service.kinds(1) == ["session.update", "response.create"]
    assert result.service.instructions(1) == [plan().greeting]
    (greeting,) = result.phone.spans()
    assert greeting.hz == NEW_SESSION_HZ
    assert result.report.first_audio_ms == pytest.approx(greeting.start * 1000, abs=1)
    assert result.report.reconnects == 1


@DIALECTS
def test_a_service_that_does_not_come_back_gets_the_apology_and_a_bye_after_the_retries(
    dialect: Dialect,
) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        await call.until(lambda: call.task.done(), what="the call given up")

    policy = RetryPolicy(max_attempts=4, jitter=Jitter.NONE)
    refused = {"drop_after_s": 0}  # every later connection drops before its session is configured
    result = run_call(
        scenario, dialect, settings=[{"speed": 4, "drop_after_s": 2.0}, refused], retry=policy, annotations=HOURS
    )
    report = result.report
    # one attempt at once, then one after each backoff wait of the policy
    attempts = result.service.connected_at[1:]
    assert len(attempts) == policy.max_attempts
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps == pytest.approx([envelope(policy, n) for n in range(1, policy.max_attempts)])
    # then the failover of a plan with no transfer target: the apology, played out, then a BYE that says why
    (hangup,) = [e for e in result.trace.of("leg") if e.what == "hangup"]
    assert hangup.detail == (GOODBYE_REASON,)
    apology = result.phone.spans(since=attempts[-1])
    assert apology and apology[0].start - attempts[-1] <= 2 * FRAME_S
    apology_s = len(audio(str(APOLOGY_WAV))) / 16000
    assert sum(s.ms for s in apology) / 1000 > 0.5 * apology_s
    assert apology[-1].end <= hangup.t <= attempts[-1] + apology_s + 3 * FRAME_S
    assert report.end_reason == "realtime unavailable" and report.reconnects == 0
    assert report.phases[-2:] == ["RECOVERING", "ENDED"]


@DIALECTS
def test_an_error_mid_answer_ends_that_answer_and_the_call_goes_on_in_the_same_session(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        await call.turn(tone_8k(800))
        await call.turn(tone_8k(800))
        call.phone.hang_up()

    failing = {"speed": 4, "error_mid_response": 2, "fault_after_deltas": 3}
    result = run_call(scenario, dialect, settings=[failing], annotations=HOURS)
    report = result.report
    assert len(result.service.sessions) == 1 and report.reconnects == 0
    assert result.service.errors(0) == ["server_error"]
    _, failed, second = result.phone.spans()
    assert failed.hz == ANSWER_HZ and failed.ms == pytest.approx(300, abs=20)  # what had arrived was played
    assert second.hz == ANSWER_HZ and report.agent_transcript[-1] == "Closed on Sundays."
