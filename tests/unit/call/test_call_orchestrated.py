"""An orchestrated call in virtual time (bridge/call/orchestration.py): the real session and the emulator, with the
orchestrator played by a coroutine that answers after a (virtual) delay. The model answers nothing on its own; each
decision is carried out; a slow, absent or broken orchestrator never leaves the caller in silence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from _call_harness import DIALECTS, TRANSFER_TARGET, Call, Result, plan, run_call, tone_8k

from bridge.call.orchestration import TRANSFER_FAILED_LINE
from bridge.dialplan import Dialplan, Orchestrator, Outage
from bridge.orchestrator.client import Fault
from bridge.orchestrator.models import Decision, TurnRequest
from bridge.realtime.dialects import BETA, GA, LIVE, Dialect

LINE = "Your order 4471 ships today."
LINE_HZ = 1000  # the emulator speaks every unscripted line as this tone
SETTINGS = [{"tone_hz": LINE_HZ, "speed": 1, "max_reply_ms": 1500}]
QUESTION = {"turns": [{"hears": "Where is my order?"}, {"hears": "Thanks."}]}


class Orchestrator_:
    """The contact center's service: answers each request after ``delay_s`` with the next of ``answers`` (a
    Decision body, a Fault, or None: never answers); records every request."""

    def __init__(self, answers: Sequence[dict[str, Any] | Fault | None], delay_s: float = 0.1) -> None:
        self.answers = list(answers)
        self.delay_s = delay_s
        self.requests: list[TurnRequest] = []

    async def __call__(self, url: str, request: TurnRequest, limit_s: float) -> Decision:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else {"action": "nothing"}
        if answer is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.delay_s)
        if isinstance(answer, Fault):
            raise answer
        assert answer is not None
        return Decision.model_validate(answer)


def orchestrated(*, failover: str = "transfer", on_error: str = "respond", timeout_ms: int = 400) -> Dialplan:
    base = plan(greeting=None, transfer_target=TRANSFER_TARGET)
    config = Orchestrator(url="http://orchestrator.test/turn", timeout_ms=timeout_ms, give_up_ms=1500,
                          filler="One moment, please.", on_error=on_error)  # fmt: skip
    return base.model_copy(update={"orchestrator": config, "outage": Outage(failover=failover)})  # type: ignore[arg-type]  # the Literal's value


def run(
    dialect: Dialect, orchestrator: Orchestrator_, scenario: Callable[[Call], Any], dialplan: Dialplan | None = None
) -> Result:
    return run_call(
        scenario, dialect, dialplan=dialplan or orchestrated(), settings=SETTINGS, annotations=QUESTION,
        session_options={"orchestrator": orchestrator, "variant": "v1"},
    )  # fmt: skip


async def ask_then_hang_up(call: Call) -> None:
    await call.turn(tone_8k(1200, hz=300))
    call.phone.hang_up()


def responses(result: Result) -> list[dict[str, Any]]:
    return [e.get("response") or {} for e in result.service.received(0) if e["type"] == "response.create"]


@DIALECTS
def test_a_say_is_spoken_out_of_band_and_is_the_agent_transcript(dialect: Dialect) -> None:
    orch = Orchestrator_([{"action": "say", "text": LINE}])
    result = run(dialect, orch, ask_then_hang_up)
    (request,) = orch.requests
    assert (request.turn, request.dialect, request.variant, request.sequence) == (
        "Where is my order?",
        dialect.name,
        "v1",
        1,
    )
    assert [(line.role, line.text) for line in request.transcript] == [("caller", "Where is my order?")]
    assert result.report.agent_transcript == [LINE]
    assert [s.hz for s in result.phone.spans()] == [LINE_HZ]  # the caller heard the line
    # the model answered nothing itself: every response.create was the say, out of band
    (say,) = responses(result)
    assert say["conversation"] == "none" and LINE in say["instructions"]
    session = result.service.received(0)[0]["session"]
    vad = session["audio"]["input"]["turn_detection"] if "audio" in session else session["turn_detection"]
    assert (vad["create_response"], vad["interrupt_response"]) == (False, False)
    assert result.report.decisions == [{"action": "say", "text": LINE, "ms": pytest.approx(100, abs=25)}]
    kinds = [kind for _, kind, _ in result.report.timeline]
    assert kinds.index("caller_transcript") < kinds.index("orchestrator_decision") < kinds.index("agent_transcript")
    assert "orchestrator" in result.report.latency_ms


def test_live_says_the_line_as_commentary_and_answers_nothing_itself() -> None:
    orch = Orchestrator_([{"action": "say", "text": LINE}])
    result = run(LIVE, orch, ask_then_hang_up)
    assert [r.turn for r in orch.requests] == ["Where is my order?"]
    kinds = result.service.kinds(0)
    assert kinds.count("session.commentary.append") == 1 and "session.thinking.append" not in kinds
    assert result.service.received(0)[0]["session"]["delegation"] == {"type": "client"}
    assert result.report.agent_transcript == [LINE]
    assert [r["outputs"][0]["text"] for r in result.service.sessions[0].record.responses] == [LINE]


@DIALECTS
def test_a_slow_orchestrator_gets_the_filler_then_its_answer(dialect: Dialect) -> None:
    orch = Orchestrator_([{"action": "say", "text": LINE}], delay_s=0.9)  # past timeout_ms 400, within 1500

    async def scenario(call: Call) -> None:
        await call.turn(tone_8k(1200, hz=300))
        await call.until(lambda: len(call.phone.spans()) >= 2, what="the filler, then the line")
        await call.idle()
        call.phone.hang_up()

    result = run(dialect, orch, scenario)
    assert result.report.agent_transcript == ["One moment, please.", LINE]
    kinds = [kind for _, kind, _ in result.report.timeline]
    assert kinds.index("orchestrator_filler") < kinds.index("orchestrator_decision")
    assert all(r["conversation"] == "none" for r in responses(result))


@DIALECTS
def test_an_orchestrator_that_never_answers_gets_the_filler_then_the_failover(dialect: Dialect) -> None:
    orch = Orchestrator_([None])

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: call.task.done(), within_s=15, what="the goodbye failover (a 6.8 s apology)")

    result = run(dialect, orch, scenario, orchestrated(failover="goodbye"))
    assert result.report.agent_transcript == ["One moment, please."]
    assert result.report.end_reason == "orchestrator unavailable"
    assert result.phone.told[-1][0] == "hangup"
    assert result.report.decisions == [{"error": "timeout", "then": "failover", "ms": pytest.approx(1500, abs=30)}]
    filler, *apology = result.phone.spans()  # the filler (a tone here), then the apology (recorded speech)
    assert filler.hz == LINE_HZ and sum(s.ms for s in apology if s.start >= filler.end) > 4000  # speech with pauses


@DIALECTS
def test_an_orchestrator_that_is_down_transfers_the_caller(dialect: Dialect) -> None:
    orch = Orchestrator_([Fault("down", "http://orchestrator.test: ClientConnectorError")])

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: ("transfer", TRANSFER_TARGET) in call.phone.told, what="the transfer")
        call.phone.notify(200, "OK", final=True)
        await call.until(lambda: call.task.done(), what="the end of the call")

    result = run(dialect, orch, scenario)
    assert result.report.end_reason == "transferred"
    assert [k for _, k, _ in result.report.timeline if k.startswith("orchestrator")] == ["orchestrator_error"]


@DIALECTS
def test_invalid_json_is_counted_and_the_model_answers_that_turn(dialect: Dialect) -> None:
    orch = Orchestrator_([Fault("invalid_json", "http://orchestrator.test: invalid JSON: Expecting value")])
    result = run(dialect, orch, ask_then_hang_up)
    (error,) = [s for _, k, s in result.report.timeline if k == "orchestrator_error"]
    assert error.startswith("invalid_json:") and error.endswith("(respond)")
    assert [r.get("conversation") for r in responses(result)] == [None]  # an in-band answer by the model
    assert result.report.agent_transcript == ["I heard you say: Where is my order?."]
    assert result.report.end_reason.startswith("caller hung up")


@DIALECTS
def test_nothing_and_keys_leave_the_caller_the_floor(dialect: Dialect) -> None:
    orch = Orchestrator_([{"action": "send_dtmf", "digits": "12#"}, {"action": "nothing"}])

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: len(orch.requests) == 1 and not call.phone.saying, what="the first request")
        await call.until(lambda: ("send_dtmf", "12#") in call.phone.told, what="the keys sent")
        call.phone.press("5")
        await call.until(lambda: len(orch.requests) == 2, what="the key's request")
        await asyncio.sleep(0.5)
        call.phone.hang_up()

    result = run(dialect, orch, scenario)
    assert responses(result) == []
    assert [(r.event, r.dtmf) for r in orch.requests] == [("turn", ""), ("dtmf", "5")]
    assert result.report.phases[-2:] == ["LISTENING", "ENDED"]
    assert ("THINKING", "LISTENING") in zip(result.report.phases, result.report.phases[1:], strict=False)


@DIALECTS
def test_a_transfer_with_a_line_waits_for_the_line(dialect: Dialect) -> None:
    orch = Orchestrator_([{"action": "transfer", "text": "Let me put you through."}])

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: ("transfer", TRANSFER_TARGET) in call.phone.told, what="the transfer")
        call.phone.notify(200, "OK", final=True)
        await call.until(lambda: call.task.done(), what="the end of the call")

    result = run(dialect, orch, scenario)
    (transfer,) = [e.t for e in result.trace.of("leg") if e.what == "transfer"]
    assert max(t for t, hz in result.phone.heard if hz) < transfer  # the line was heard first
    assert result.report.agent_transcript == ["Let me put you through."]


@DIALECTS
def test_a_barge_in_during_a_say_cancels_it_without_a_truncate_and_is_reported(dialect: Dialect) -> None:
    long_line = "Your order 4471 left our warehouse this morning and should reach you by Friday afternoon."
    orch = Orchestrator_([{"action": "say", "text": long_line}, {"action": "nothing"}])
    slow = [{"tone_hz": LINE_HZ, "speed": 1, "max_reply_ms": 4000, "ms_per_char": 60}]

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: call.phone.hearing() == LINE_HZ, what="the say playing")
        await asyncio.sleep(1.0)
        call.phone.say(tone_8k(800, hz=300))  # over the say
        await call.until(lambda: len(orch.requests) == 2, what="the next request")
        await call.idle(0.3, what="quiet")
        call.phone.hang_up()

    result = run_call(
        scenario, dialect, dialplan=orchestrated(), settings=slow, annotations=QUESTION,
        session_options={"orchestrator": orch},
    )  # fmt: skip
    assert result.service.errors(0) == []  # no response_cancel_not_active, no refused truncate
    assert "conversation.item.truncate" not in result.service.kinds(0)
    record = result.service.sessions[0].record
    assert [c["by"] for c in record.cancels] == ["client"] and all(c["ok"] for c in record.cancels)
    heard = orch.requests[1].interrupted
    assert heard is not None and heard.text == long_line
    assert 0 < len(heard.heard.split()) < len(long_line.split()) and long_line.startswith(heard.heard)
    assert result.report.barge_ins == 1 and result.report.truncates == []


@DIALECTS
def test_a_barge_in_after_the_say_was_all_sent_still_reports_what_was_heard(dialect: Dialect) -> None:
    """The model sent the whole say (and its transcript) before the caller spoke over its playout: nothing is
    cancelled, and the estimate of what was heard is made on the say's text."""
    long_line = "Your order 4471 left our warehouse this morning and should reach you by Friday afternoon."
    orch = Orchestrator_([{"action": "say", "text": long_line}, {"action": "nothing"}])
    fast = [{"tone_hz": LINE_HZ, "speed": 0, "max_reply_ms": 6000, "ms_per_char": 60}]

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: call.phone.hearing() == LINE_HZ, what="the say playing")
        await asyncio.sleep(1.0)
        call.phone.say(tone_8k(800, hz=300))  # over the say's playout
        await call.until(lambda: len(orch.requests) == 2, what="the next request")
        await call.idle(0.3, what="quiet")
        call.phone.hang_up()

    result = run_call(
        scenario, dialect, dialplan=orchestrated(), settings=fast, annotations=QUESTION,
        session_options={"orchestrator": orch},
    )  # fmt: skip
    assert result.service.errors(0) == []
    assert result.service.sessions[0].record.cancels == []  # nothing was active to cancel
    heard = orch.requests[1].interrupted
    assert heard is not None and heard.text == long_line and heard.played_ms > 500
    assert 0 < len(heard.heard.split()) < len(long_line.split()) and long_line.startswith(heard.heard)


def test_live_a_key_reaches_the_orchestrator_and_the_model_does_not_answer_it() -> None:
    orch = Orchestrator_([{"action": "nothing"}])

    async def scenario(call: Call) -> None:
        await asyncio.sleep(0.5)  # the session is up
        call.phone.press("7")
        await call.until(lambda: len(orch.requests) == 1, what="the key's request")
        await asyncio.sleep(1.5)  # time enough for a model that answers the note on its own
        call.phone.hang_up()

    result = run(LIVE, orch, scenario)
    assert [(r.event, r.dtmf) for r in orch.requests] == [("dtmf", "7")]
    kinds = result.service.kinds(0)
    assert "session.thinking.append" not in kinds and "session.instructions.append" in kinds  # context, no turn
    assert result.report.agent_transcript == [] and result.phone.spans() == []


@pytest.mark.parametrize("dialect", [BETA, GA, LIVE], ids=lambda d: d.name)
def test_a_failed_transfer_is_told_to_the_caller_and_the_orchestrator_decides_on(dialect: Dialect) -> None:
    orch = Orchestrator_([{"action": "transfer"}, {"action": "say", "text": LINE}])

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: ("transfer", TRANSFER_TARGET) in call.phone.told, what="the transfer")
        call.phone.notify(486, "Busy Here", final=True)
        await call.until(lambda: len(call.phone.spans()) == 1, what="the line about the failed transfer")
        await call.idle()
        await call.turn(tone_8k(1200, hz=300))
        call.phone.hang_up()

    result = run(dialect, orch, scenario)
    assert result.report.agent_transcript == [TRANSFER_FAILED_LINE, LINE]
    assert [s.hz for s in result.phone.spans()] == [LINE_HZ, LINE_HZ]
    assert [(line.role, line.text) for line in orch.requests[1].transcript][-2:] == [
        ("agent", TRANSFER_FAILED_LINE),
        ("caller", "Thanks."),
    ]
    assert result.report.end_reason.startswith("caller hung up")
    if dialect is not LIVE:  # the model answered nothing itself: only the bridge's lines, out of band
        assert all(r["conversation"] == "none" for r in responses(result))


@DIALECTS
def test_a_failed_failover_transfer_ends_with_the_apology(dialect: Dialect) -> None:
    orch = Orchestrator_([Fault("down", "http://orchestrator.test: ClientConnectorError")])

    async def scenario(call: Call) -> None:
        call.phone.say(tone_8k(1200, hz=300))
        await call.until(lambda: ("transfer", TRANSFER_TARGET) in call.phone.told, what="the failover's transfer")
        call.phone.notify(503, "Service Unavailable", final=True)
        await call.until(lambda: call.task.done(), within_s=15, what="the apology and the BYE")

    result = run(dialect, orch, scenario)
    assert result.report.end_reason == "orchestrator unavailable; the transfer failed"
    assert result.phone.told[-1][0] == "hangup"
    assert sum(s.ms for s in result.phone.spans()) > 4000  # the recorded apology
    assert responses(result) == []
