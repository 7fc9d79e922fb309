"""Keys the caller presses (RFC 4733 events from the SIP leg): each reaches the model as a user message with a
request to answer it, and a key pressed over a prompt interrupts it as speech would."""

from __future__ import annotations

import pytest
from _call_harness import DIALECTS, Call, run_call

from bridge.realtime.dialects import Dialect

GREETING_HZ, REPLY_HZ = 400, 600  # the emulator answers a key in its default voice (600 Hz)
MENU = {
    "greeting": {"text": "For sales press one, for support press two.", "tone_hz": GREETING_HZ, "duration_ms": 3000}
}


@DIALECTS
def test_keys_pressed_after_the_prompt_reach_the_model_in_order(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        for digit in "2#":
            pressed = call.now + 1e-3  # after the frame heard at this instant
            call.phone.press(digit)
            await call.until(lambda: call.phone.spoken_to_since(pressed), what="the reply")  # noqa: B023 (awaited here)
            await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, dialect, settings=[{"speed": 4, "max_reply_ms": 1500}], annotations=MENU)
    assert result.service.kinds(0) == [
        "session.update",
        "response.create",
        *["conversation.item.create", "response.create"] * 2,
    ]
    # each key as a user message of its own, in the order pressed
    first, second = result.service.messages(0, "user")
    assert "key 2" in first and "key #" in second
    assert [s.hz for s in result.phone.spans()] == [GREETING_HZ, REPLY_HZ, REPLY_HZ]  # nothing cut: all heard
    report = result.report
    assert report.dtmf == ["2", "#"] and report.barge_ins == 0 and report.truncates == []
    assert result.service.errors(0) == []


@DIALECTS
def test_a_key_pressed_over_the_prompt_interrupts_it(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.phone.heard_ms(GREETING_HZ) >= 1000, what="a second of the menu")
        call.phone.press("1")
        await call.until(lambda: call.phone.hearing() == REPLY_HZ, what="the reply to the key")
        await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, dialect, settings=[{"speed": 1, "max_reply_ms": 1500}], annotations=MENU)
    greeting = result.service.sessions[0].record.responses[0]
    assert result.service.kinds(0) == [
        "session.update",
        "response.create",
        "response.cancel",
        "conversation.item.truncate",
        "conversation.item.create",
        "response.create",
    ]
    received = result.service.received(0)
    assert received[2]["response_id"] == greeting["id"]
    heard_ms = result.phone.heard_ms(GREETING_HZ)
    assert received[3]["item_id"] == greeting["outputs"][0]["item_id"]
    assert received[3]["audio_end_ms"] == pytest.approx(heard_ms, abs=20)
    (key,) = result.service.messages(0, "user")
    assert "key 1" in key
    # the menu stopped when the key came: not one more frame of it
    pressed = next(e.t for e in result.trace.entries if e.what == "dtmf")
    assert GREETING_HZ not in [hz for t, hz in result.phone.heard if t > pressed]
    assert greeting["status"] == "cancelled" and result.service.sessions[0].record.truncates[0]["ok"]
    report = result.report
    assert report.dtmf == ["1"] and report.barge_ins == 1 and result.service.errors(0) == []
    assert report.truncates == [{"item_id": received[3]["item_id"], "audio_end_ms": received[3]["audio_end_ms"]}]
