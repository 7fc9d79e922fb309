"""When a call's model session changes: lost and recovered (:mod:`bridge.call.recovery` reconnects, the caller
hears the hold message after a second, the outage policy fails over when it lasts), capped and swapped
(:mod:`bridge.call.rollover`). No dead air: the answer or the greeting the caller waits for is asked for again.
:class:`SessionChanges` gets the call's parts (:class:`~bridge.call.parts.CallParts`), and of the session only its
acts."""

from __future__ import annotations

import contextlib

from bridge import events as ev
from bridge.call.acts import OrchestratedTurns
from bridge.call.flow import Trigger
from bridge.call.parts import CallParts
from bridge.call.recovery import summary


def fail_over(parts: CallParts, away_s: float, reason: str = "realtime unavailable") -> None:
    """The plan's outage failover: a transfer to its ``transfer_target`` (the hold message goes on until it
    completes; a failed one brings the apology), or the apology (``reason``) and a BYE."""
    plan = parts.plan
    target = plan.transfer_target if plan.outage.failover == "transfer" else None
    parts.call.emit(ev.FailedOver("transfer" if target else "goodbye", away_s))
    if target is None:
        parts.phase.fire(Trigger.GOODBYE, reason)
        return
    parts.call.emit(ev.TransferStarted(target))
    parts.leg.transfer(target)  # the final NOTIFY ends the call (ToolCalls.transfer_progress)


class SessionChanges:
    def __init__(self, parts: CallParts, orchestration: OrchestratedTurns | None = None) -> None:
        self._parts = parts
        self._call, self._leg, self._plan, self._phase = parts.call, parts.leg, parts.plan, parts.phase
        self._audio, self._talk, self._sessions = parts.audio, parts.talk, parts.sessions
        self._orchestration = orchestration

    async def on_closed(self, e: ev.Closed) -> None:
        if self._call.ending:
            return
        if self._sessions.rollover.ready:  # the cap came before a turn boundary: the next session is ready
            # cut: the old session took the rest of the answer along
            active, cut = self._audio.playback.drop_response()
            self.swap_session(f"session ended ({e.reason}); the next one was ready", old_alive=False)
            # no dead air: the answer (or the greeting) the caller waits for is asked for again
            capped = Trigger.CAPPED_MID_AUDIO if cut else Trigger.CAPPED_BEFORE_AUDIO if active else Trigger.CAPPED
            self._phase.fire(capped)
            return
        self._call.emit(ev.SessionLost(e.error_class, e.code, e.reason, e.retryable))
        self._call.report.errors.append({"class": str(e.error_class), "code": str(e.code or ""), "message": e.reason})
        self._phase.fire(Trigger.SESSION_LOST, f"realtime closed: {e.reason}")
        await self.recover(e.error_class, e.retryable)

    def greeting_owed(self) -> bool:
        answered = self._audio.latency.answered_at is not None
        return answered and self._call.report.first_audio_ms is None and bool(self._plan.greeting)

    def summary(self, rolled_over: bool = False) -> str:
        r = self._call.report
        keys = r.pressed if self._plan.privacy.dtmf_to_model else r.dtmf  # the model hears the keys if the plan says
        return summary(r.caller_transcript, r.agent_transcript, self._talk.tools.pending, keys, rolled_over)

    def swap_session(self, why: str, old_alive: bool = True) -> None:
        old = self._audio.link.swap(self._sessions.rollover.take())
        self._audio.link.detach(old)
        self._call.start_pump()
        self._audio.playback.drop_response()
        self._call.report.rollovers += 1
        self._call.emit(ev.RolledOver(why))
        if old is not None:
            # its turns' transcripts may still come (a closed one's are lost: see ANSWER_AGAIN)
            taken = self._talk.transcripts.hand_over() if old_alive else set()
            self._sessions.rollover.retire(old, taken, self._sessions.inbox.put)

    def fail_over(self) -> None:
        """The outage outlasted the plan's ``outage.hold_s``: a transfer to a human, or the apology and a BYE."""
        fail_over(self._parts, round(self._sessions.outage.away_s, 3))

    def on_transfer_progress(self, e: ev.TransferProgress) -> None:
        failed = e.final and not 200 <= e.status_code < 300
        if failed and self._orchestration is not None and not self._call.ending:
            self._talk.tools.transfer_progress(e, answer=False)  # the model holds its answers: the bridge speaks
            self._orchestration.transfer_failed(e)
            return
        self._talk.tools.transfer_progress(e)
        if failed and self._audio.link.client is None and not self._call.ending:
            self._phase.fire(Trigger.GOODBYE, "realtime unavailable")  # the failover's transfer failed: no bare BYE

    async def recover(self, cls: ev.ErrorClass | None, retryable: bool) -> None:
        """Open a fresh session with the instructions and a short summary; the caller keeps hearing queued audio."""
        link, outage, recovery, r = self._audio.link, self._sessions.outage, self._sessions.recovery, self._call.report
        t_lost = self._call.clock()
        old = link.swap(None)
        if old is not None:
            link.detach(old)
            with contextlib.suppress(Exception):
                await old.close()
        if self._talk.turns is not None:
            self._talk.turns.flush()  # the lost session's turns end with it (a new session's timeline starts again)
        active, interrupted = self._audio.playback.drop_response()  # interrupted: cut, not just asked for
        owed = recovery.take_owed(active)
        refused = old.credential_fingerprint if old is not None else None
        if outage.since is None:
            outage.lost()
        client = await recovery.reconnect(cls, retryable, refused)
        if client is None:
            if not self._leg.disconnected.is_set():  # (else the caller's hang-up, queued, ends the call)
                self._phase.fire(Trigger.GAVE_UP, f"no model for {outage.away_s:.1f} s")
            return
        r.reconnects = recovery.reconnects
        link.swap(client)
        self._call.start_pump()
        if r.caller_transcript or r.agent_transcript or self._talk.tools.pending or r.dtmf:
            link.send(ev.AddText(self.summary(), ev.Role.SYSTEM))
        self._audio.latency.sample("recovery_gap", (self._call.clock() - t_lost) * 1000)
        # No dead air: the greeting or the answer the caller was waiting for was cut off with the socket, or never
        # began; answered already, only their transcripts are missing.
        owed = owed or self.greeting_owed()
        after_hold = not owed and outage.on_hold  # the caller heard "one moment please"
        recovery.held(after_hold)
        owed = owed or after_hold
        recovered = Trigger.RECOVERED_CUT if interrupted else Trigger.RECOVERED_OWING if owed else Trigger.RECOVERED
        self._phase.fire(recovered)
