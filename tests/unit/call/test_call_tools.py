"""Tool calls the session carries out itself (bridge/call/builtin_tools.py): the model gets the function's output and a
request to speak; an action (hang up, transfer) waits until that spoken line has been heard. A transfer is a REFER
(RFC 3515): the bridge leaves only after the final NOTIFY 200; a failed one is told to the model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _call_harness import DIALECTS, HOLD_HZ, TRANSFER_TARGET, Call, Result, Scenario, plan, run_call, tone_8k

from bridge.dialplan import EchoGuardPlan
from bridge.realtime.dialects import Dialect

GREETING_HZ, REPLY_HZ, LINE_HZ = 400, 600, 1000
# unscripted replies (the line after a function output) in their own voice, at most 1.5 s long
SETTINGS = [{"speed": 4, "tone_hz": LINE_HZ, "max_reply_ms": 1500}]
GREETING = {"text": "Welcome to ACME.", "tone_hz": GREETING_HZ, "duration_ms": 1000}
TRANSFER_PLAN = plan(tools=["transfer_to_human"], transfer_target=TRANSFER_TARGET)


def script(reply: dict[str, Any]) -> dict[str, Any]:
    return {"greeting": GREETING, "turns": [{"hears": "Can you help me?", "reply": reply}]}


def function_call(result: Result) -> dict[str, Any]:
    """The function call the emulator made (in its second response: the answer to the caller's turn)."""
    (call,) = [
        o for r in result.service.sessions[0].record.responses for o in r["outputs"] if o["type"] == "function_call"
    ]
    return dict(call)


def function_output(result: Result) -> dict[str, Any]:
    (item,) = [
        e["item"]
        for e in result.service.received(0)
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    ]
    return dict(item)


def last_frame_taken(result: Result) -> float:
    """When the phone took the last frame of agent audio from the bridge."""
    return max(t for t, hz in result.phone.heard if hz)


def line_ms(result: Result) -> float:
    """How long the line the last response spoke is (all of its audio the emulator sent)."""
    return float(result.service.sessions[0].record.responses[-1]["outputs"][0]["audio_ms"])


async def speak_then_wait_for_the_end(call: Call) -> None:
    await call.idle()
    call.phone.say(tone_8k(600))
    await call.until(lambda: call.task.done(), what="the agent ending the call")


@DIALECTS
def test_end_call_hangs_up_after_the_goodbye_has_been_heard(dialect: Dialect) -> None:
    goodbye = script({"text": "Goodbye!", "tone_hz": REPLY_HZ, "duration_ms": 1000, "tool_call": {"name": "end_call"}})
    result = run_call(
        speak_then_wait_for_the_end, dialect, dialplan=plan(tools=["end_call"]), settings=SETTINGS, annotations=goodbye
    )
    call = function_call(result)
    output = function_output(result)
    assert output["call_id"] == call["call_id"] and json.loads(output["output"])["ok"] is True
    kinds = result.service.kinds(0)
    assert kinds == ["session.update", "response.create", "conversation.item.create", "response.create"]
    # the goodbye and the line the output asked for were heard whole; then, and only then, the hangup
    spans = [(s.hz, s.ms) for s in result.phone.spans()]
    assert [hz for hz, _ in spans] == [GREETING_HZ, REPLY_HZ, LINE_HZ]
    assert spans[1][1] == pytest.approx(1000, abs=20) and spans[2][1] == pytest.approx(line_ms(result), abs=20)
    (hangup,) = [e.t for e in result.trace.of("leg") if e.what == "hangup"]
    assert last_frame_taken(result) < hangup
    assert "bye" not in [e.what for e in result.trace.of("phone")]  # the caller did not hang up
    report = result.report
    assert report.tool_calls == [
        {"name": "end_call", "arguments": call["arguments"], "output": json.loads(output["output"])}
    ]
    assert report.end_reason == "agent ended the call" and result.service.errors(0) == []


@DIALECTS
def test_an_unknown_tool_gets_an_error_output_and_the_call_goes_on(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        await call.turn(tone_8k(600))
        await call.until(lambda: call.phone.quiet_for(1.0), what="the line after the output, then quiet")
        call.phone.hang_up()

    lookup = script({"tool_call": {"name": "lookup_order", "arguments": {"order": 7}}})
    result = run_call(scenario, dialect, dialplan=plan(tools=["end_call"]), settings=SETTINGS, annotations=lookup)
    output = function_output(result)
    assert output["call_id"] == function_call(result)["call_id"]
    assert json.loads(output["output"]) == {"ok": False, "error": "unknown tool 'lookup_order'"}
    assert [s.hz for s in result.phone.spans()] == [GREETING_HZ, LINE_HZ]  # the model was asked to speak again
    assert ("hangup",) not in result.phone.told
    report = result.report
    assert [t["name"] for t in report.tool_calls] == ["lookup_order"]
    assert report.end_reason.startswith("caller hung up")


def transfer_scenario(final_status: int, final_reason: str) -> Scenario:
    async def scenario(call: Call) -> None:
        await call.idle()
        call.phone.say(tone_8k(600))
        await call.until(lambda: any(t[0] == "transfer" for t in call.phone.told), what="the REFER")
        call.phone.notify(100, "Trying", final=False)
        start = call.now
        await call.until(lambda: call.now >= start + 0.5, what="half a second after NOTIFY 100")
        assert ("hangup",) not in call.phone.told  # a provisional NOTIFY is not the end of the transfer
        call.phone.notify(final_status, final_reason, final=True)
        if final_status < 300:
            await call.until(lambda: call.task.done(), what="the bridge leaving the call")
        else:
            notified = call.now
            await call.until(lambda: call.phone.spoken_to_since(notified + 1e-3), what="the agent again")
            await call.idle()
            call.phone.hang_up()

    return scenario


@DIALECTS
def test_a_transfer_refers_the_caller_and_hangs_up_after_the_final_notify_200(dialect: Dialect) -> None:
    human = script({"tool_call": {"name": "transfer_to_human", "arguments": {"reason": "asked for a person"}}})
    result = run_call(
        transfer_scenario(200, "OK"), dialect, dialplan=TRANSFER_PLAN, settings=SETTINGS, annotations=human
    )
    assert json.loads(function_output(result)["output"])["status"] == "transferring"
    assert result.phone.told == [
        ("ringing",),
        ("answer",),
        ("start_media",),
        ("transfer", TRANSFER_TARGET),
        ("hangup",),
    ]
    trace = result.trace
    order = [trace.index("leg", "transfer"), trace.index("phone", "notify"), trace.index("leg", "hangup")]
    assert order == sorted(order)
    notifies = [e for e in trace.of("phone") if e.what == "notify"]
    assert [e.detail for e in notifies] == [100, 200]
    (hangup,) = [e for e in trace.of("leg") if e.what == "hangup"]
    assert hangup.t >= notifies[-1].t
    # the line announcing the transfer was heard whole before the REFER
    (refer,) = [e.t for e in trace.of("leg") if e.what == "transfer"]
    assert [s.hz for s in result.phone.spans()] == [GREETING_HZ, LINE_HZ]
    assert result.phone.heard_ms(LINE_HZ) == pytest.approx(line_ms(result), abs=20)
    assert last_frame_taken(result) < refer
    report = result.report
    assert [t["name"] for t in report.tool_calls] == ["transfer_to_human"]
    assert report.end_reason == "transferred" and result.service.errors(0) == []


@DIALECTS
def test_a_failed_transfer_is_told_to_the_model_and_the_call_goes_on(dialect: Dialect) -> None:
    human = script({"tool_call": {"name": "transfer_to_human", "arguments": {"reason": "asked for a person"}}})
    result = run_call(
        transfer_scenario(486, "Busy Here"), dialect, dialplan=TRANSFER_PLAN, settings=SETTINGS, annotations=human
    )
    # after the function output: a system message naming the failure, and a request to tell the caller
    assert result.service.kinds(0)[-2:] == ["conversation.item.create", "response.create"]
    (notice,) = result.service.messages(0, "system")
    assert "486" in notice and "failed" in notice
    notified = next(e.t for e in result.trace.of("phone") if e.what == "notify" and e.detail == 486)
    assert [s.hz for s in result.phone.spans(since=notified)] == [LINE_HZ]  # the agent told the caller
    assert ("hangup",) not in result.phone.told
    assert result.report.end_reason.startswith("caller hung up")


# the caller's tone over the line is a barge-in by construction (the echo guard's judgement has tests of its own)
SPOKEN_OVER_PLAN = TRANSFER_PLAN.model_copy(update={"echo_guard": EchoGuardPlan(enabled=False)})
SPOKEN_OVER = {
    "greeting": GREETING,
    "turns": [
        {"hears": "A person please.", "reply": {"tool_call": {"name": "transfer_to_human", "arguments": {}}}},
        {"hears": "Oh, thanks!", "reply": {"text": "You're welcome.", "tone_hz": REPLY_HZ}},
    ],
}


def spoken_over(final_status: int, final_reason: str) -> Scenario:
    """The caller asks for a person, then speaks over the agent's transfer line; the transferee's NOTIFYs follow
    the REFER."""

    async def scenario(call: Call) -> None:
        await call.idle()
        call.phone.say(tone_8k(600))
        await call.until(lambda: call.phone.heard_ms(LINE_HZ) >= 300, what="the transfer line")
        call.phone.say(tone_8k(700))
        await call.until(lambda: any(t[0] == "transfer" for t in call.phone.told), what="the REFER")
        call.phone.notify(100, "Trying", final=False)
        await call.until(lambda: not call.phone.saying, what="the caller done speaking")
        await call.until(lambda: call.phone.heard_ms(HOLD_HZ) >= 1000, what="a second of the hold")
        call.phone.notify(final_status, final_reason, final=True)
        if final_status < 300:
            await call.until(lambda: call.task.done(), what="the bridge leaving the call")
            return
        notified = call.now
        await call.until(lambda: call.phone.spoken_to_since(notified + 1e-3), what="the agent again")
        await call.idle()
        call.phone.hang_up()

    return scenario


def kinds(result: Result) -> list[str]:
    return [k for _, k, _ in result.report.timeline]


@DIALECTS
def test_a_transfer_spoken_over_goes_ahead_with_the_caller_on_hold(dialect: Dialect) -> None:
    result = run_call(
        spoken_over(200, "OK"), dialect, dialplan=SPOKEN_OVER_PLAN, settings=[{**SETTINGS[0], "speed": 1}],
        annotations=SPOKEN_OVER,
    )  # fmt: skip
    told = [t[0] for t in result.phone.told]
    assert told[-3:] == ["hold", "transfer", "hangup"], told  # on hold before the REFER; never off it again
    steps = [k for k in kinds(result) if k.startswith(("transfer", "hold_", "barge_in"))]
    assert steps == [
        "transfer_decided", "barge_in", "transfer_line_interrupted", "hold_started", "transfer", "transfer_progress",
        "transfer_progress", "hold_ended",
    ], steps  # fmt: skip
    # the line was cut where the caller spoke, and from the hold on the caller heard nothing of the agent
    (held,) = [e.t for e in result.trace.of("leg") if e.what == "hold"]
    assert result.phone.heard_ms(LINE_HZ) < line_ms(result) or line_ms(result) == 0
    assert not [s for s in result.phone.spans(since=held + 1e-3) if s.hz != HOLD_HZ]
    assert result.phone.heard_ms(HOLD_HZ) >= 1000
    (system,) = result.service.messages(0, "system")
    assert "goes ahead" in system  # the model knows the transfer still happens
    assert result.report.barge_ins == 1 and result.report.end_reason == "transferred"


@DIALECTS
def test_a_transfer_spoken_over_that_fails_takes_the_caller_off_hold_and_the_agent_says_so(dialect: Dialect) -> None:
    result = run_call(
        spoken_over(486, "Busy Here"), dialect, dialplan=SPOKEN_OVER_PLAN, settings=[{**SETTINGS[0], "speed": 1}],
        annotations=SPOKEN_OVER,
    )  # fmt: skip
    told = [t[0] for t in result.phone.told]
    assert told[told.index("hold") :] == ["hold", "transfer", "unhold"], told
    steps = [k for k in kinds(result) if k.startswith(("transfer", "hold_"))]
    assert steps[-3:] == ["transfer_progress", "transfer_progress", "hold_ended"], steps
    system = result.service.messages(0, "system")
    assert "goes ahead" in system[0] and "486" in system[-1] and "failed" in system[-1]
    notified = next(e.t for e in result.trace.of("phone") if e.what == "notify" and e.detail == 486)
    back = [s.hz for s in result.phone.spans(since=notified)]
    assert back and back[-1] == LINE_HZ, back  # the agent told the caller
    assert ("hangup",) not in result.phone.told and result.report.end_reason.startswith("caller hung up")
