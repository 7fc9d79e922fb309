"""An outage longer than a reconnect: the caller hears the hold message (its 480 Hz chime: 500 Hz to the phone's
ear) while recovery keeps trying for the dialplan's ``outage.hold_s``; the model back, the hold stops at once and
the agent speaks again; the outage outlasting ``hold_s``, the failover (a transfer, or the apology and a BYE with a
Reason header). Connections that fail are the emulator's (``drop_after_s: 0``: dropped before configured)."""

from __future__ import annotations

import itertools

import pytest
from _call_harness import (
    DIALECTS,
    FRAME_S,
    GREETING_HZ,
    HOURS,
    NEW_SESSION_HZ,
    TRANSFER_TARGET,
    Call,
    plan,
    run_call,
)

from bridge.call.outage import APOLOGY_WAV, GOODBYE_REASON, HOLD_WAV, audio
from bridge.call.retry import Jitter, RetryPolicy
from bridge.dialplan import Dialplan, Outage
from bridge.realtime.dialects import Dialect

HOLD_HZ = 500  # the shipped hold message's chime (480 Hz, to the nearest 100 Hz)
EVERY_HALF_SECOND = RetryPolicy(max_attempts=1000, base_s=0.5, factor=1.0, cap_s=0.5, jitter=Jitter.NONE)
REFUSED = {"drop_after_s": 0}
GREETED_THEN_LOST = {"speed": 4, "drop_after_s": 1.5}  # the greeting (1 s) heard, then the socket dies
BACK = {"speed": 4, "tone_hz": NEW_SESSION_HZ}


def with_outage(**outage: object) -> Dialplan:
    return plan(transfer_target=TRANSFER_TARGET).model_copy(update={"outage": Outage.model_validate(outage)})


@DIALECTS
def test_a_3_s_outage_puts_the_caller_on_hold_and_the_agent_speaks_again_when_the_model_is_back(
    dialect: Dialect,
) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: len(call.service.sessions) >= 8, within_s=10, what="the model back")
        back = call.service.connected_at[-1]
        await call.until(lambda: call.phone.hearing() == NEW_SESSION_HZ, within_s=3, what="the agent again")
        assert call.now - back < 1.5
        await call.idle()
        call.phone.hang_up()

    # attempt 0 at once, then every 0.5 s: the 7th reconnect (3 s after the loss) finds the model back
    settings = [GREETED_THEN_LOST, *[REFUSED] * 6, BACK]
    result = run_call(scenario, dialect, settings=settings, annotations=HOURS, retry=EVERY_HALF_SECOND)
    lost = result.service.connected_at[0] + 1.5
    back = result.service.connected_at[-1]
    assert back - lost == pytest.approx(3.0, abs=FRAME_S)
    hold = [s for s in result.phone.spans(since=lost) if s.hz == HOLD_HZ]
    assert hold and hold[0].start - lost <= 1.5  # the chime of the hold message, about 1 s after the loss
    agent = [s for s in result.phone.spans(since=back) if s.hz == NEW_SESSION_HZ]
    assert agent and agent[0].start - back < 1.5
    # the hold audio stopped at once: nothing of it after the model's first words
    assert result.phone.heard_ms(HOLD_HZ, since=agent[0].start) == 0
    assert [k for _, k, _ in result.report.timeline if k in {"hold_started", "hold_ended", "outage_ended"}] == [
        "hold_started",
        "hold_ended",
        "outage_ended",
    ]
    assert result.report.end_reason.startswith("caller hung up") and result.report.reconnects == 1


@DIALECTS
def test_an_outage_longer_than_hold_s_transfers_the_caller_to_the_plans_human(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: any(t[0] == "transfer" for t in call.phone.told), within_s=10, what="the REFER")
        call.phone.notify(100, "Trying", final=False)
        call.phone.notify(200, "OK", final=True)
        await call.until(lambda: call.task.done(), what="the call handed over")

    result = run_call(
        scenario, dialect, settings=[GREETED_THEN_LOST, REFUSED], annotations=HOURS, retry=EVERY_HALF_SECOND,
        dialplan=with_outage(hold_s=3.0),
    )  # fmt: skip
    (refer,) = [e for e in result.trace.of("leg") if e.what == "transfer"]
    lost = result.service.connected_at[0] + 1.5
    assert refer.detail == (TRANSFER_TARGET,)
    assert 3.0 - 0.5 <= refer.t - lost <= 3.0 + FRAME_S  # no attempt starts after hold_s
    assert [s for s in result.phone.spans(since=lost, gap_s=1.0) if s.hz == HOLD_HZ]  # on hold until then
    assert result.report.end_reason == "transferred"
    (failed_over,) = [s for _, k, s in result.report.timeline if k == "failed_over"]
    assert failed_over.startswith("transfer after")


@DIALECTS
def test_the_goodbye_failover_plays_the_apology_then_sends_a_bye_with_a_reason(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.task.done(), within_s=20, what="the goodbye")

    result = run_call(
        scenario, dialect, settings=[GREETED_THEN_LOST, REFUSED], annotations=HOURS, retry=EVERY_HALF_SECOND,
        dialplan=with_outage(hold_s=2.0, failover="goodbye"),
    )  # fmt: skip
    lost = result.service.connected_at[0] + 1.5
    (hangup,) = [e for e in result.trace.of("leg") if e.what == "hangup"]
    assert hangup.detail == (GOODBYE_REASON,)
    assert not [e for e in result.trace.of("leg") if e.what == "transfer"]
    gave_up = lost + 2.0
    assert result.phone.heard_ms(HOLD_HZ, since=lost, until=gave_up) >= 300  # the chime of the hold message
    apology = result.phone.spans(since=gave_up + FRAME_S)
    apology_s = len(audio(str(APOLOGY_WAV))) / 16000
    assert apology and sum(s.ms for s in apology) / 1000 > 0.5 * apology_s
    assert apology[-1].end <= hangup.t <= gave_up + apology_s + 3 * FRAME_S
    assert result.report.end_reason == "realtime unavailable"


@DIALECTS
def test_a_model_unreachable_at_the_answer_puts_the_caller_on_hold_from_the_first_second(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.task.done(), within_s=20, what="the goodbye")

    result = run_call(
        scenario, dialect, settings=[REFUSED], annotations=HOURS, retry=EVERY_HALF_SECOND,
        dialplan=with_outage(hold_s=2.0, failover="goodbye"),
    )  # fmt: skip
    (answer,) = [e.t for e in result.trace.of("leg") if e.what == "answer"]
    hold = [s for s in result.phone.spans(since=answer) if s.hz == HOLD_HZ]
    assert hold and hold[0].start - answer <= 1.5
    (hangup,) = [e for e in result.trace.of("leg") if e.what == "hangup"]
    assert hangup.detail == (GOODBYE_REASON,)


@DIALECTS
def test_a_failed_failover_transfer_ends_with_the_apology_and_a_bye_with_a_reason(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: any(t[0] == "transfer" for t in call.phone.told), within_s=10, what="the REFER")
        call.phone.notify(603, "Decline", final=True)
        await call.until(lambda: call.task.done(), within_s=20, what="the goodbye")

    result = run_call(
        scenario, dialect, settings=[GREETED_THEN_LOST, REFUSED], annotations=HOURS, retry=EVERY_HALF_SECOND,
        dialplan=with_outage(hold_s=2.0),
    )  # fmt: skip
    (refer,) = [e.t for e in result.trace.of("leg") if e.what == "transfer"]
    (hangup,) = [e for e in result.trace.of("leg") if e.what == "hangup"]
    assert hangup.detail == (GOODBYE_REASON,)
    apology_s = len(audio(str(APOLOGY_WAV))) / 16000
    assert refer + 0.5 * apology_s < hangup.t <= refer + apology_s + 3 * FRAME_S
    assert result.report.end_reason == "realtime unavailable"


@DIALECTS
def test_with_the_workers_breaker_open_a_new_call_is_answered_on_hold_without_waiting(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.phone.hearing() == GREETING_HZ, within_s=10, what="the greeting")
        await call.idle()
        call.phone.hang_up()

    result = run_call(
        scenario, dialect, settings=[REFUSED, REFUSED, BACK], annotations=HOURS, retry=EVERY_HALF_SECOND,
        session_options={"model_down": True},
    )  # fmt: skip
    (answer,) = [e.t for e in result.trace.of("leg") if e.what == "answer"]
    assert answer == 0.0 and result.service.connected_at[0] >= answer  # no attempt before the answer
    hold = [s for s in result.phone.spans() if s.hz == HOLD_HZ]
    assert hold and hold[0].start - answer <= 0.1  # the hold message from the first second
    # the reconnects are the probes: the third finds the model, which greets the caller
    assert len(result.service.sessions) == 3
    assert result.service.instructions(2) == [plan().greeting]


@DIALECTS
def test_reject_when_model_down_answers_503_and_never_the_call(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.task.done(), within_s=10, what="the refusal")

    result = run_call(
        scenario, dialect, settings=[REFUSED], annotations=HOURS, session_options={"reject_when_down": True}
    )
    told = [t[:2] for t in result.phone.told]
    assert ("reject", "503") in told and ("answer",) not in told
    assert result.report.end_reason == "realtime unavailable: rejected (503)"


@DIALECTS
def test_a_long_outage_loops_the_hold_message_until_the_model_is_back(dialect: Dialect) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.phone.hearing() == NEW_SESSION_HZ, within_s=15, what="the agent again")
        await call.idle()
        call.phone.hang_up()

    # the 21st reconnect (10.5 s after the loss) finds the model back: more than two passes of the message
    settings = [GREETED_THEN_LOST, *[REFUSED] * 20, BACK]
    result = run_call(scenario, dialect, settings=settings, annotations=HOURS, retry=EVERY_HALF_SECOND)
    lost, back = result.service.connected_at[0] + 1.5, result.service.connected_at[-1]
    pass_s = len(audio(str(HOLD_WAV))) / 16000
    chimes = [s.start for s in result.phone.spans(since=lost) if s.hz == HOLD_HZ and s.start < back]
    starts = [t for i, t in enumerate(chimes) if i == 0 or t - chimes[i - 1] > pass_s / 2]
    assert len(starts) == 3 and all(b - a == pytest.approx(pass_s, abs=0.1) for a, b in itertools.pairwise(starts))
