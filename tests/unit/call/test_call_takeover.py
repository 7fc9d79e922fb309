"""Take-over in the call's session, in virtual time against the emulator: taken over during the greeting, the
greeting stops for the caller at once and is cut at the service (cancelled or truncated); while taken over the
service hears only silence, however long the caller speaks, and no answer reaches the caller; handed back, the
service gets the note and answers the caller's next words."""

from __future__ import annotations

from _call_harness import GA, Call, plan, run_call, tone_8k

from bridge import events as ev
from bridge.call.supervision import HANDBACK_NOTE

GREETING_HZ, ANSWER_HZ = 400, 800
SCRIPT = {
    "greeting": {"text": "Welcome to ACME, the home of everything.", "tone_hz": GREETING_HZ, "duration_ms": 4000},
    "turns": [{"hears": "Hello?", "reply": {"text": "Hello again.", "tone_hz": ANSWER_HZ, "duration_ms": 600}}],
}
marks: dict[str, float] = {}


async def scenario(call: Call) -> None:
    assert call.session is not None
    await call.until(lambda: call.phone.heard_ms(GREETING_HZ) >= 500, what="the greeting heard")
    marks["taken"] = call.clock()
    call.session.inbox.put(ev.SupervisorAction(ev.SupervisorKind.TAKEOVER, "sam"))
    await call.until(lambda: call.clock() >= marks["taken"] + 0.2)
    call.phone.say(tone_8k(1500, hz=300.0))  # the caller talks to the supervisor
    await call.until(lambda: call.clock() >= marks["taken"] + 4.0, within_s=6.0)
    marks["back"] = call.clock()
    call.session.inbox.put(ev.SupervisorAction(ev.SupervisorKind.HANDBACK, "sam"))
    await call.turn(tone_8k(700))
    call.phone.hang_up()


def test_taken_over_the_model_hears_silence_and_is_not_heard_handed_back_it_answers_again() -> None:
    marks.clear()
    result = run_call(scenario, GA, dialplan=plan(), settings=[{"speed": 1}], annotations=SCRIPT)
    taken, back = marks["taken"], marks["back"]
    phone, service = result.phone, result.service
    assert phone.heard_ms(GREETING_HZ, since=taken + 0.1) == 0  # the greeting stopped at once
    assert phone.heard_ms(ANSWER_HZ, since=taken, until=back) == 0
    assert phone.heard_ms(ANSWER_HZ, since=back) > 0  # the agent answers again after the hand-back
    cuts = [e["type"] for e in service.received(0) if e["type"] in ("response.cancel", "conversation.item.truncate")]
    assert cuts, service.kinds(0)
    starts = service.sent_at(0, "input_audio_buffer.speech_started")
    assert not [t for t in starts if taken < t < back], (taken, back, starts)  # the caller's 1.5 s went unheard
    assert [t for t in starts if t > back]
    assert HANDBACK_NOTE in service.messages(0, "system") and service.errors(0) == []


async def cut_short(call: Call) -> None:
    assert call.session is not None
    await call.until(lambda: call.phone.quiet_for(1.0), what="the greeting heard to its end")
    call.phone.say(tone_8k(1500, hz=300.0))
    start = call.clock()
    await call.until(lambda: call.clock() >= start + 0.6)
    marks["taken"] = call.clock()  # the caller is mid-sentence: the service hears their words stop here
    call.session.inbox.put(ev.SupervisorAction(ev.SupervisorKind.TAKEOVER, "sam"))
    await call.until(lambda: call.clock() >= marks["taken"] + 3.0, within_s=5.0)
    marks["back"] = call.clock()
    call.session.inbox.put(ev.SupervisorAction(ev.SupervisorKind.HANDBACK, "sam"))
    await call.turn(tone_8k(700))
    call.phone.hang_up()


def test_an_answer_begun_while_taken_over_is_cancelled_and_never_heard() -> None:
    marks.clear()
    script = {**SCRIPT, "greeting": {**SCRIPT["greeting"], "duration_ms": 500}}
    result = run_call(cut_short, GA, dialplan=plan(), settings=[{"speed": 1}], annotations=script)
    taken, back = marks["taken"], marks["back"]
    assert result.phone.heard_ms(ANSWER_HZ, since=taken, until=back) == 0
    record = result.service.sessions[0].record
    begun = result.service.sent_at(0, "response.created")
    assert [t for t in begun if taken < t < back], begun  # the service answered the words cut short...
    assert record.responses[1]["status"] == "cancelled"  # ...and the bridge cancelled that answer
    assert result.phone.spoken_to_since(back) and result.service.errors(0) == []
