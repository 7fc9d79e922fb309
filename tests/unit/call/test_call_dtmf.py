"""Keys the caller presses (RFC 4733 events from the SIP leg): each reaches the model as a user message with a
request to answer it, and a key pressed over a prompt interrupts it as speech would."""

from __future__ import annotations

import pytest
from _call_harness import Call, run_call, texts

from bridge.realtime.dialects import BETA, GA, Dialect

DIALECTS = pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
GREETING_HZ, REPLY_HZ = 400, 600  # the emulator answers a key in its default voice (600 Hz)
MENU = {
    "greeting": {"text": "For sales press one, for support press two.", "tone_hz": GREETING_HZ, "duration_ms": 3000}
}


def key_messages(events: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(role, text) for role, text in events if "pressed" in text]


@DIALECTS
def test_keys_pressed_after_the_prompt_reach_the_model_in_order(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        for digit in "2#":
            pressed = call.now
            call.phone.press(digit)
            await call.until(lambda p=pressed: (call.phone.last_voiced or -1.0) > p, what="the reply")
            await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, dialect, settings=[{"speed": 4, "max_reply_ms": 1500}], annotations=MENU)
    received = result.service.received(0)
    assert result.service.kinds(0) == [
        "session.update",
        "response.create",
        *["conversation.item.create", "response.create"] * 2,
    ]
    messages = key_messages(texts(received))
    assert [role for role, _ in messages] == ["user", "user"]
    assert "key 2" in messages[0][1] and "key #" in messages[1][1]
    assert [s.hz for s in result.phone.spans()] == [GREETING_HZ, REPLY_HZ, REPLY_HZ]  # nothing cut: all heard
    report = result.report
    assert report.dtmf == ["2", "#"] and report.barge_ins == 0 and report.truncates == []
    assert report.errors == []


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
    assert "key 1" in key_messages(texts(received))[0][1]
    # the menu stopped when the key came: not one more frame of it
    pressed = next(e.t for e in result.trace.entries if e.what == "dtmf")
    assert GREETING_HZ not in [hz for t, hz in result.phone.heard if t > pressed]
    assert greeting["status"] == "cancelled" and result.service.sessions[0].record.truncates[0]["ok"]
    report = result.report
    assert report.dtmf == ["1"] and report.barge_ins == 1 and report.errors == []
    assert report.truncates == [{"item_id": received[3]["item_id"], "audio_end_ms": received[3]["audio_end_ms"]}]
