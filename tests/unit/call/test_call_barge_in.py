"""Barge-in: the caller speaks over the agent. The playout is flushed at once, only an active response is cancelled
(by the bridge only where the service's VAD does not cancel it itself), and the playing item is truncated to what
the caller actually heard (docs/protocol.md, "Barge-in")."""

from __future__ import annotations

from typing import Any

import pytest
from _call_harness import DIALECTS, Call, Result, Scenario, plan, run_call, tone_8k

from bridge.dialplan import Waiting
from bridge.realtime.dialects import Dialect

GREETING_HZ, ANSWER_HZ = 400, 800
LONG_WELCOME = {
    "greeting": {"text": "Welcome to ACME, the home of everything.", "tone_hz": GREETING_HZ, "duration_ms": 4000},
    "turns": [{"hears": "Sorry, I need help.", "reply": {"text": "Of course.", "tone_hz": ANSWER_HZ}}],
}
REAL_TIME = {"speed": 1}  # the service streams the greeting as fast as it plays: its response stays active
AT_ONCE = {"speed": 0}  # the whole greeting arrives at once: its response is done while most of it is still queued


def barge_in_after(heard_s: float) -> Scenario:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.phone.heard_ms(GREETING_HZ) >= heard_s * 1000, what="the greeting heard")
        await call.turn(tone_8k(700))
        call.phone.hang_up()

    return scenario


def greeting_ids(result: Result) -> tuple[str, str]:
    """The emulator's ids of the greeting's response and of its audio item."""
    first = result.service.sessions[0].record.responses[0]
    return first["id"], first["outputs"][0]["item_id"]


def command(result: Result, kind: str) -> dict[str, Any]:
    (found,) = [e for e in result.service.received(0) if e["type"] == kind]
    return found


def assert_flushed_at_once(result: Result) -> None:
    """From the moment the service heard the caller start, the caller hears nothing more of the greeting, and
    nothing at all until the answer to what they said."""
    (started,) = result.service.sent_at(0, "input_audio_buffer.speech_started")
    after = [hz for t, hz in result.phone.heard if t > started]
    assert GREETING_HZ not in after
    assert set(after[: after.index(ANSWER_HZ)]) == {0}


@DIALECTS
@pytest.mark.parametrize("heard_s", [0.4, 1.5])
def test_barge_in_stops_the_active_answer_and_truncates_it_where_the_caller_stopped_hearing(
    dialect: Dialect, heard_s: float
) -> None:
    result = run_call(barge_in_after(heard_s), dialect, settings=[REAL_TIME], annotations=LONG_WELCOME)
    report = result.report
    response_id, item_id = greeting_ids(result)
    heard_ms = result.phone.heard_ms(GREETING_HZ)
    # the service's VAD cancels the answer itself (interrupt_response): the bridge only truncates it at what was
    # heard; the answer to the caller's turn comes from the service's VAD
    assert result.service.kinds(0) == ["session.update", "response.create", "conversation.item.truncate"]
    record = result.service.sessions[0].record
    assert [(c["response_id"], c["by"], c["ok"]) for c in record.cancels] == [(response_id, "turn_detected", True)]
    assert record.responses[0]["status"] == "cancelled"
    truncate = command(result, "conversation.item.truncate")
    assert truncate["item_id"] == item_id and truncate["content_index"] == 0
    assert heard_s * 1000 <= heard_ms < heard_s * 1000 + 200  # (the service's VAD needs 60 ms of voice)
    assert truncate["audio_end_ms"] == pytest.approx(heard_ms, abs=20)
    assert_flushed_at_once(result)
    # the service accepted the truncate, and no error came back (a cancel of ours would have found nothing active)
    assert [t["ok"] for t in record.truncates] == [True]
    assert result.service.errors(0) == []
    assert report.barge_ins == 1
    assert report.truncates == [{"item_id": item_id, "audio_end_ms": truncate["audio_end_ms"]}]
    cancelling = report.phases.index("CANCELLING")
    assert report.phases[cancelling - 1 : cancelling + 2] == ["SPEAKING", "CANCELLING", "LISTENING"]
    assert report.agent_transcript[-1] == "Of course." and report.caller_transcript == ["Sorry, I need help."]


@DIALECTS
def test_the_bridges_cancel_is_what_stops_the_answer_when_the_service_does_not_interrupt(dialect: Dialect) -> None:
    quiet_vad = plan(interrupt_response=False)
    result = run_call(barge_in_after(1.0), dialect, dialplan=quiet_vad, settings=[REAL_TIME], annotations=LONG_WELCOME)
    response_id, _ = greeting_ids(result)
    record = result.service.sessions[0].record
    assert [(c["response_id"], c["by"], c["ok"]) for c in record.cancels] == [(response_id, "client", True)]
    assert record.responses[0]["status"] == "cancelled"
    assert_flushed_at_once(result)
    assert result.report.barge_ins == 1 and result.service.errors(0) == []


@DIALECTS
def test_a_finished_response_still_playing_is_truncated_not_cancelled(dialect: Dialect) -> None:
    result = run_call(barge_in_after(1.0), dialect, settings=[AT_ONCE], annotations=LONG_WELCOME)
    _, item_id = greeting_ids(result)
    assert result.service.kinds(0) == ["session.update", "response.create", "conversation.item.truncate"]
    truncate = command(result, "conversation.item.truncate")
    assert truncate["item_id"] == item_id
    assert truncate["audio_end_ms"] == pytest.approx(result.phone.heard_ms(GREETING_HZ), abs=20)
    assert truncate["audio_end_ms"] < 4000 - 2000  # most of the greeting was still queued, and was dropped
    assert_flushed_at_once(result)
    assert result.report.barge_ins == 1 and result.service.errors(0) == []
    assert len(result.report.truncates) == 1


@DIALECTS
def test_speaking_before_the_answers_audio_stops_it_and_truncates_nothing(dialect: Dialect) -> None:
    slow_start = {**REAL_TIME, "delay_first_delta_ms": 2000}

    async def scenario(call: Call) -> None:
        await call.until(lambda: call.now >= 0.3, what="the greeting asked for")
        await call.turn(tone_8k(700))
        call.phone.hang_up()

    # the answer is as slow as the greeting: its soft hold (test_call_slow_answer.py) comes after this test looks
    late_hold = plan().model_copy(update={"waiting": Waiting(filler_after_s=10)})
    result = run_call(scenario, dialect, dialplan=late_hold, settings=[slow_start], annotations=LONG_WELCOME)
    response_id, _ = greeting_ids(result)
    assert result.service.kinds(0) == ["session.update", "response.create"]  # the service's VAD cancelled it
    record = result.service.sessions[0].record
    assert [(c["response_id"], c["by"], c["ok"]) for c in record.cancels] == [(response_id, "turn_detected", True)]
    assert result.service.errors(0) == []
    assert result.phone.heard_ms(GREETING_HZ) == 0
    assert [s.hz for s in result.phone.spans()] == [ANSWER_HZ]
    assert result.report.truncates == [] and result.report.barge_ins == 1
    assert result.report.phases[:4] == ["IDLE", "THINKING", "CANCELLING", "LISTENING"]
