"""When a call's model session changes: lost and recovered (:mod:`bridge.call.recovery` reconnects, the caller
hears the hold message after a second, the outage policy fails over when it lasts), capped and swapped
(:mod:`bridge.call.rollover`). No dead air: the answer or the greeting the caller waits for is asked for again.
It acts on the call through :class:`~bridge.call.parts.CallParts`."""

from __future__ import annotations

import contextlib

from bridge import events as ev
from bridge.call.flow import Trigger
from bridge.call.parts import CallParts
from bridge.call.recovery import summary


async def on_closed(call: CallParts, e: ev.Closed) -> None:
    if call.ending:
        return
    if call.rollover.ready:  # the cap came before a turn boundary: the next session is ready
        active, cut = call.playback.drop_response()  # cut: the old session took the rest of the answer along
        swap_session(call, f"session ended ({e.reason}); the next one was ready", old_alive=False)
        # no dead air: the answer (or the greeting) the caller waits for is asked for again
        capped = Trigger.CAPPED_MID_AUDIO if cut else Trigger.CAPPED_BEFORE_AUDIO if active else Trigger.CAPPED
        call.phase.fire(capped)
        return
    call.emit(ev.SessionLost(e.error_class, e.code, e.reason, e.retryable))
    call.report.errors.append({"class": str(e.error_class), "code": str(e.code or ""), "message": e.reason})
    call.phase.fire(Trigger.SESSION_LOST, f"realtime closed: {e.reason}")
    await recover(call, e.error_class, e.retryable)


def greeting_owed(call: CallParts) -> bool:
    return call.latency.answered_at is not None and call.report.first_audio_ms is None and bool(call.plan.greeting)


def call_summary(call: CallParts, rolled_over: bool = False) -> str:
    r = call.report
    return summary(r.caller_transcript, r.agent_transcript, call.tools.pending, r.dtmf, rolled_over)


def swap_session(call: CallParts, why: str, old_alive: bool = True) -> None:
    old, call.client = call.client, call.rollover.take()
    call.link.detach(old)
    call.start_pump()
    call.playback.drop_response()
    call.report.rollovers += 1
    call.emit(ev.RolledOver(why))
    if old is not None:
        # its turns' transcripts may still come (a closed one's are lost: see ANSWER_AGAIN)
        call.rollover.retire(old, call.transcripts.hand_over() if old_alive else set(), call.inbox.put)


def fail_over(call: CallParts) -> None:
    """The outage outlasted the plan's ``outage.hold_s``: a transfer to a human, or the apology and a BYE."""
    target = call.plan.transfer_target if call.plan.outage.failover == "transfer" else None
    call.emit(ev.FailedOver("transfer" if target else "goodbye", round(call.outage.away_s, 3)))
    if target is None:
        call.outage.say_goodbye()
        return
    # the hold message goes on until the transfer completes (or fails: then the apology)
    call.emit(ev.TransferStarted(target))
    call.leg.transfer(target)  # the final NOTIFY ends the call (ToolCalls.transfer_progress)


def on_transfer_progress(call: CallParts, e: ev.TransferProgress) -> None:
    failed = e.final and not 200 <= e.status_code < 300
    if failed and call.orchestration is not None and not call.ending:
        call.tools.transfer_progress(e, answer=False)  # the model holds its answers: the bridge speaks
        call.orchestration.transfer_failed(e)
        return
    call.tools.transfer_progress(e)
    if e.final and not 200 <= e.status_code < 300 and call.client is None and not call.ending:
        call.outage.say_goodbye()  # the failover's transfer failed: never a bare hang-up


async def recover(call: CallParts, cls: ev.ErrorClass | None, retryable: bool) -> None:
    """Open a fresh session with the instructions and a short summary; the caller keeps hearing queued audio."""
    t_lost = call.clock()
    old, call.client = call.client, None
    if old is not None:
        call.link.detach(old)
        with contextlib.suppress(Exception):
            await old.close()
    if call.turns is not None:
        call.turns.flush()  # the lost session's turns end with it (a new session's timeline starts again)
    active, interrupted = call.playback.drop_response()  # interrupted: cut, not just asked for
    owed, call.recovery.answer_owed = call.recovery.answer_owed or active, False
    refused = old.credential_fingerprint if old is not None else None
    if call.outage.since is None:
        call.outage.lost()
    client = await call.recovery.reconnect(cls, retryable, refused)
    if client is None:
        if not call.leg.disconnected.is_set():  # (else the caller's hang-up, queued, ends the call)
            call.phase.fire(Trigger.GAVE_UP, f"no model for {call.outage.away_s:.1f} s")
        return
    call.report.reconnects = call.recovery.reconnects
    call.client = client
    call.start_pump()
    if call.report.caller_transcript or call.report.agent_transcript or call.tools.pending or call.report.dtmf:
        call.link.send(ev.AddText(call_summary(call), ev.Role.SYSTEM))
    call.latency.sample("recovery_gap", (call.clock() - t_lost) * 1000)
    # No dead air: the greeting or the answer the caller was waiting for was cut off with the socket, or never
    # began; answered already, only their transcripts are missing.
    owed = owed or greeting_owed(call)
    call.recovery.after_hold = not owed and call.outage.on_hold  # the caller heard "one moment please"
    owed = owed or call.recovery.after_hold
    recovered = Trigger.RECOVERED_CUT if interrupted else Trigger.RECOVERED_OWING if owed else Trigger.RECOVERED
    call.phase.fire(recovered)
