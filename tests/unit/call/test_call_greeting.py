"""The start of a call: the Realtime session opens before the answer, the greeting is asked for after it."""

from __future__ import annotations

import pytest
from _call_harness import DIALECTS, Call, caller_wav, plan, run_call

from bridge.realtime.dialects import Dialect

WELCOME = {"greeting": {"text": "Welcome to ACME.", "tone_hz": 400, "duration_ms": 1500}}


async def hang_up_after_the_greeting(call: Call) -> None:
    await call.idle()
    call.phone.hang_up()


@DIALECTS
def test_the_greeting_is_asked_for_once_the_call_is_answered(dialect: Dialect) -> None:
    result = run_call(hang_up_after_the_greeting, dialect, annotations=WELCOME)
    trace, report = result.trace, result.report
    # The session is configured before the 200 OK (greeting latency), the greeting asked for after it.
    order = [trace.index(*step) for step in [("leg", "ringing"), ("peer0", "session.update"), ("leg", "answer")]]
    order.append(trace.index("peer0", "response.create"))
    assert order == sorted(order), trace.tail()
    assert result.service.kinds(0) == ["session.update", "response.create"]
    (create,) = [e for e in result.service.received(0) if e["type"] == "response.create"]
    assert create["response"]["instructions"] == plan().greeting
    # The caller heard all of it, once, and the report says when it began.
    (greeting,) = result.phone.spans()
    assert greeting.hz == 400 and greeting.ms == pytest.approx(1500, abs=20)
    answered_at = trace.entries[trace.index("leg", "answer")].t
    assert report.greeting_ms == pytest.approx((greeting.start - answered_at) * 1000, abs=1)
    assert report.latency_ms["greeting"] == [report.greeting_ms] and report.first_reply_ms is None
    assert report.longest_wait_ms == report.greeting_ms  # the only wait: no caller turn
    assert report.answered and report.agent_transcript == ["Welcome to ACME."]
    assert report.phases == ["IDLE", "THINKING", "SPEAKING", "LISTENING", "ENDED"]
    assert report.end_reason.startswith("caller hung up") and result.service.errors(0) == []


@DIALECTS
def test_without_a_greeting_the_agent_listens_first(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.now > 1.0, what="a second of silence")
        await call.turn(caller_wav())  # the bundled recording of a caller's question
        call.phone.hang_up()

    answer = {"turns": [{"hears": "Are you open today?", "reply": {"text": "We are.", "tone_hz": 600}}]}
    result = run_call(scenario, dialect, dialplan=plan(greeting=None), annotations=answer)
    report = result.report
    # Nothing was asked of the model: the service's turn detection answered the caller's turn.
    assert result.service.kinds(0) == ["session.update"]
    (reply,) = result.phone.spans()
    (question,) = result.phone.said
    assert reply.hz == 600 and reply.start > question[1]
    # no greeting: the first reply is the caller's end of turn -> the agent's audio, never the caller's own time
    assert report.greeting_ms is None and "greeting" not in report.latency_ms
    assert report.first_reply_ms == report.latency_ms["turn"][0] == report.latency_ms["first_reply"][0]
    assert 0 < report.first_reply_ms <= (reply.start - question[1]) * 1000
    # the caller waited from the end of their speech (where the VAD placed it, before the recording's trailing quiet)
    assert report.longest_wait_ms == report.latency_ms["caller_turn"][0] >= report.first_reply_ms
    assert report.phases[:2] == ["IDLE", "LISTENING"]
    assert report.caller_transcript == ["Are you open today?"] and report.agent_transcript == ["We are."]
