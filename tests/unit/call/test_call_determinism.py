"""The harness itself: the same call twice is the same call, to the frame (virtual time, seeded ids and retry
jitter), so a failure here is never a flake of the machine's load."""

from __future__ import annotations

from typing import Any

from _call_harness import GREETING_HZ, HOURS, Call, Result, run_call, tone_8k

from bridge.realtime.dialects import GA

REPORT_FIELDS = (
    *("answered", "phases", "caller_transcript", "agent_transcript", "barge_ins", "truncates", "tool_calls"),
    *("dtmf", "reconnects", "rollovers", "end_reason", "first_audio_ms"),
)
SCRIPT = {**HOURS, "greeting": {**HOURS["greeting"], "duration_ms": 2000}}


async def converse(call: Call) -> None:
    await call.until(lambda: call.phone.heard_ms(GREETING_HZ) >= 1000, what="half the greeting")
    await call.turn(tone_8k(800))  # over the greeting: a cancel and a truncate, naming the emulator's ids
    call.phone.hang_up()


def observed(result: Result) -> dict[str, Any]:
    """Everything a test may look at."""
    report = {name: getattr(result.report, name) for name in REPORT_FIELDS}
    return {
        "report": report,
        "heard": result.phone.heard,
        "told": result.phone.told,
        "trace": [(e.t, e.who, e.what) for e in result.trace.entries],
        "received": [result.service.received(n, appends=True) for n in range(len(result.service.sessions))],
    }


def test_the_same_call_twice_is_the_same_call() -> None:
    # a barge-in, then a drop mid-answer and a reconnect
    settings = [{"speed": 4, "drop_mid_response": 2, "fault_after_deltas": 3}, {"speed": 4, "tone_hz": 800}]
    first, again = (observed(run_call(converse, GA, settings=settings, annotations=SCRIPT)) for _ in range(2))
    assert first["report"]["reconnects"] == 1 and first["report"]["truncates"]
    assert first == again
