"""Responses of several message items (``gpt-realtime-2`` and later: a preamble, then the answer, in one response):
every item plays, in order, and a barge-in truncates the item that was playing, at what the caller heard of it.

The emulator answers a caller's turn that way for the models of its ``preamble_models`` setting; here every model,
with the preamble spoken as one tone and the answer as another, so the caller's ear tells the items apart."""

from __future__ import annotations

from typing import Any

import pytest
from _call_harness import DIALECTS, Call, Result, run_call, tone_8k

from bridge.realtime.dialects import Dialect

GREETING_HZ, PREAMBLE_HZ, ANSWER_HZ = 400, 500, 800
PREAMBLE = "Let me check that for you."  # 26 characters at 60 ms each: 1560 ms of preamble
ANNOTATIONS = {
    "greeting": {"text": "Welcome.", "tone_hz": GREETING_HZ, "duration_ms": 600},
    "turns": [{"hears": "What are your hours?", "reply": {"text": "We open at nine.", "tone_hz": ANSWER_HZ,
                                                          "duration_ms": 2000}}],
}  # fmt: skip
TWO_ITEMS = {"preamble": PREAMBLE, "preamble_models": "*", "tone_hz": PREAMBLE_HZ}


def answer_items(result: Result) -> list[dict[str, Any]]:
    """The outputs of the emulator's answer to the caller's turn (its second response)."""
    return list(result.service.sessions[0].record.responses[1]["outputs"])


@DIALECTS
@pytest.mark.parametrize("speed", [1, 0], ids=["streamed", "at-once"])
def test_every_item_of_a_response_plays_in_order(dialect: Dialect, speed: float) -> None:
    async def scenario(call: Call) -> None:
        await call.idle(what="the greeting")
        await call.turn(tone_8k(700))
        call.phone.hang_up()

    result = run_call(scenario, dialect, settings=[{**TWO_ITEMS, "speed": speed}], annotations=ANNOTATIONS)
    items = answer_items(result)
    assert [(o["type"], o["text"]) for o in items] == [("message", PREAMBLE), ("message", "We open at nine.")]
    heard = [s.hz for s in result.phone.spans() if s.hz in (PREAMBLE_HZ, ANSWER_HZ)]
    assert heard == [PREAMBLE_HZ, ANSWER_HZ]  # the preamble, then the answer: each once, in order
    assert result.phone.heard_ms(PREAMBLE_HZ) == pytest.approx(1560, abs=60)
    assert result.phone.heard_ms(ANSWER_HZ) == pytest.approx(2000, abs=60)
    assert result.report.agent_transcript == ["Welcome.", PREAMBLE, "We open at nine."]
    assert result.report.truncates == [] and result.report.barge_ins == 0


@DIALECTS
@pytest.mark.parametrize("speed", [1, 0], ids=["streamed", "at-once"])
def test_a_barge_in_in_the_second_item_truncates_the_second_where_the_caller_stopped_hearing(
    dialect: Dialect, speed: float
) -> None:
    async def scenario(call: Call) -> None:
        await call.idle(what="the greeting")
        call.phone.say(tone_8k(1500), silence_after_ms=100)  # the question
        await call.until(lambda: call.phone.heard_ms(ANSWER_HZ) >= 700, what="the answer under way")
        await call.turn(tone_8k(900))  # over the answer
        call.phone.hang_up()

    result = run_call(scenario, dialect, settings=[{**TWO_ITEMS, "speed": speed}], annotations=ANNOTATIONS)
    preamble, answer = answer_items(result)
    [truncate] = result.report.truncates
    assert truncate["item_id"] == answer["item_id"]  # not the preamble: it was heard whole
    assert result.phone.heard_ms(PREAMBLE_HZ, until=result.phone.said[-1][0]) == pytest.approx(1560, abs=60)
    heard_answer = result.phone.heard_ms(ANSWER_HZ)
    assert abs(truncate["audio_end_ms"] - heard_answer) <= 80, (truncate, heard_answer)  # within a beat and a frame
    assert 700 <= heard_answer < 2000
    service = result.service.sessions[0].record
    assert [(t["item_id"], t["audio_end_ms"]) for t in service.truncates] == [
        (answer["item_id"], truncate["audio_end_ms"])
    ]
    assert preamble["item_id"] not in [t["item_id"] for t in service.truncates]


@DIALECTS
def test_a_barge_in_in_the_first_item_truncates_it_and_the_second_is_never_heard(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle(what="the greeting")
        call.phone.say(tone_8k(1500), silence_after_ms=100)
        await call.until(lambda: call.phone.heard_ms(PREAMBLE_HZ) >= 500, what="the preamble under way")
        await call.turn(tone_8k(900))
        call.phone.hang_up()

    result = run_call(scenario, dialect, settings=[{**TWO_ITEMS, "speed": 0}], annotations=ANNOTATIONS)
    preamble, answer = answer_items(result)
    truncates = {t["item_id"]: t["audio_end_ms"] for t in result.report.truncates}
    before_next_answer = result.phone.said[-1][1]  # the next answer (preamble included) starts after this
    heard = result.phone.heard_ms(PREAMBLE_HZ, until=before_next_answer)
    assert abs(truncates[preamble["item_id"]] - heard) <= 80 and 500 <= heard < 1560, (truncates, heard)
    assert truncates.get(answer["item_id"], 0) == 0  # queued, never heard: truncated to nothing
    assert result.phone.heard_ms(ANSWER_HZ) == 0
