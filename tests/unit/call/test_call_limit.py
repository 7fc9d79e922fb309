"""A dialplan's ``max_call_s``: ``max_call_goodbye_s`` before it the agent says a short goodbye (the model asked
for one, or the outage's apology while the model is away); once it has played out, a BYE with a Reason header, the
end reason ``max call duration``, and the call counted in ``callbridge_sip_bounded_calls_total``."""

from __future__ import annotations

from _call_harness import DIALECTS, FRAME_S, GREETING_HZ, HOURS, Call, plan, run_call, tone_8k
from prometheus_client import REGISTRY

from bridge import events as ev
from bridge import metrics
from bridge.call.limit import GOODBYE_INSTRUCTIONS, GOODBYE_MAX_S, LIMIT_BYE_REASON
from bridge.call.outage import APOLOGY_WAV, audio
from bridge.call.retry import Jitter, RetryPolicy
from bridge.dialplan import Dialplan, Outage
from bridge.realtime.dialects import Dialect

GOODBYE_HZ = 700  # the unscripted reply's voice: the goodbye
HOLD_HZ = 500  # the shipped hold message's chime
EVERY_HALF_SECOND = RetryPolicy(max_attempts=1000, base_s=0.5, factor=1.0, cap_s=0.5, jitter=Jitter.NONE)


def bounded(max_call_s: float, goodbye_s: float, **update: object) -> Dialplan:
    return plan().model_copy(update={"max_call_s": max_call_s, "max_call_goodbye_s": goodbye_s, **update})


def counted() -> float:
    return REGISTRY.get_sample_value("callbridge_sip_bounded_calls_total", {"reason": ev.MAX_CALL_DURATION}) or 0.0


async def until_over(call: Call) -> None:
    await call.until(lambda: call.task.done(), within_s=30, what="the call ended by its bound")


@DIALECTS
def test_the_agent_says_goodbye_before_max_call_s_then_the_bridge_hangs_up(dialect: Dialect) -> None:
    before = counted()
    result = run_call(
        until_over, dialect, dialplan=bounded(6.0, 3.0), annotations={"greeting": HOURS["greeting"]},
        settings=[{"speed": 4, "tone_hz": GOODBYE_HZ}],
        session_options={"listeners": [metrics.call_listener(dialect.name, "unit")]},
    )  # fmt: skip
    (answer,) = [e.t for e in result.trace.of("leg") if e.what == "answer"]
    (hangup,) = [e for e in result.trace.of("leg") if e.what == "hangup"]
    assert result.service.instructions(0)[-1] == GOODBYE_INSTRUCTIONS
    asked = [e.t for e in result.trace.of("peer0") if e.what == "response.create"][-1]
    assert 3.0 - FRAME_S <= asked - answer <= 3.0 + 3 * FRAME_S  # max_call_s - max_call_goodbye_s
    # the greeting, then the goodbye heard to its end, then the BYE
    assert result.phone.heard_ms(GREETING_HZ, until=asked) >= 500
    goodbye = [s for s in result.phone.spans(since=asked) if s.hz == GOODBYE_HZ]
    assert goodbye and sum(s.ms for s in goodbye) >= 400
    assert goodbye[-1].end - FRAME_S <= hangup.t <= goodbye[-1].end + 0.2  # its last frame already taken
    assert hangup.t - answer < 6.0  # before the hard cap
    assert hangup.detail == (LIMIT_BYE_REASON,)
    assert result.report.end_reason == ev.MAX_CALL_DURATION
    assert result.report.phases[-1] == "ENDED"
    assert counted() == before + 1


@DIALECTS
def test_a_caller_mid_question_gets_the_answer_before_the_goodbye(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.idle()  # the greeting
        call.phone.say(tone_8k(2000))  # a question across the goodbye's time
        await until_over(call)

    result = run_call(
        scenario, dialect, dialplan=bounded(8.0, 6.0), annotations={"greeting": HOURS["greeting"]},
        settings=[{"speed": 4, "tone_hz": GOODBYE_HZ}],
    )  # fmt: skip
    (hangup,) = [e for e in result.trace.of("leg") if e.what == "hangup"]
    creates = [e.t for e in result.trace.of("peer0") if e.what == "response.create"]
    (answer,) = [e.t for e in result.trace.of("leg") if e.what == "answer"]
    started, said = result.phone.said[-1]
    assert started < answer + 2.0 < said  # the caller was speaking when the goodbye came due
    # the goodbye waited for the caller's turn and its answer; it was asked after both
    assert result.service.instructions(0)[-1] == GOODBYE_INSTRUCTIONS and creates[-1] > said
    assert result.phone.spoken_to_since(said)
    assert hangup.detail == (LIMIT_BYE_REASON,) and result.report.end_reason == ev.MAX_CALL_DURATION


@DIALECTS
def test_with_the_model_away_at_the_limit_the_caller_hears_the_apology_then_the_bye(dialect: Dialect) -> None:
    away = plan().model_copy(update={"outage": Outage(hold_s=60.0)})
    result = run_call(
        until_over, dialect, dialplan=bounded(5.0, 3.0, outage=away.outage), settings=[{"drop_after_s": 0}],
        retry=EVERY_HALF_SECOND,
    )  # fmt: skip
    (answer,) = [e.t for e in result.trace.of("leg") if e.what == "answer"]
    (hangup,) = [e for e in result.trace.of("leg") if e.what == "hangup"]
    due = answer + 2.0
    assert result.phone.heard_ms(HOLD_HZ, since=answer, until=due) >= 300  # on hold until the limit's goodbye
    apology = result.phone.spans(since=due + FRAME_S)
    apology_s = len(audio(str(APOLOGY_WAV))) / 16000
    assert apology and sum(s.ms for s in apology) / 1000 > 0.5 * apology_s
    holds = [(t, k) for t, k, _ in result.report.timeline if k in {"hold_started", "hold_ended"}]
    assert [k for _, k in holds] == ["hold_started", "hold_ended"]  # the hold stopped for the apology, for good
    assert abs(holds[1][0] / 1000 - due) <= 2 * FRAME_S
    # max_call_s (5 s) came while the apology played: it was not cut
    assert apology[-1].end <= hangup.t and due + apology_s - FRAME_S <= hangup.t <= due + apology_s + 3 * FRAME_S
    assert hangup.t - due < GOODBYE_MAX_S
    assert hangup.detail == (LIMIT_BYE_REASON,) and result.report.end_reason == ev.MAX_CALL_DURATION


def test_a_supervisor_hang_up_brings_the_goodbye_forward() -> None:
    from bridge.call.limit import SUPERVISOR_BYE_REASON, SUPERVISOR_ENDED, SUPERVISOR_GOODBYE, CallLimit, Goodbye

    now = [0.0]
    limit = CallLimit(3600.0, 15.0, lambda: now[0])
    assert not limit.end_now()  # not answered yet: nothing to bring forward
    limit.start()
    now[0] = 40.0
    assert not limit.due
    assert limit.end_now()
    assert limit.due and not limit.capped
    assert (limit.instructions, limit.bye_reason, limit.end_reason) == (
        SUPERVISOR_GOODBYE, SUPERVISOR_BYE_REASON, SUPERVISOR_ENDED,
    )  # fmt: skip
    now[0] = 55.0
    assert limit.capped  # no goodbye within the lead: the BYE goes anyway
    limit.said(Goodbye.AGENT)
    assert not limit.end_now()  # a goodbye under way is not restarted
