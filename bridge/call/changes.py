"""When a call's model session changes: lost and recovered (:mod:`bridge.call.recovery` reconnects, the caller
hears the hold message after a second, the outage policy fails over when it lasts), capped and swapped
(:mod:`bridge.call.rollover`). No dead air: the answer or the greeting the caller waits for is asked for again.
:class:`SessionChanges` gets the collaborators it uses, and of the session only its acts
(:class:`~bridge.call.acts.CallActs`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from bridge import events as ev
from bridge.call.acts import CallActs, OrchestratedTurns
from bridge.call.flow import CallFlow, Trigger
from bridge.call.inbox import Inbox
from bridge.call.latency import LatencyMeter
from bridge.call.leg import PhoneLeg
from bridge.call.link import Link
from bridge.call.outage import OutageAudio
from bridge.call.playback import Playback
from bridge.call.recovery import Recovery, summary
from bridge.call.report import CallReport
from bridge.call.rollover import Rollover
from bridge.call.toolcalls import ToolCalls
from bridge.call.transcripts import Transcripts
from bridge.call.turns import TurnBuilder
from bridge.dialplan import Dialplan
from bridge.realtime.client import RealtimeClient


class SessionChanges:
    def __init__(
        self,
        call: CallActs,
        *,
        leg: PhoneLeg,
        plan: Dialplan,
        phase: CallFlow,
        link: Link,
        inbox: Inbox,
        playback: Playback,
        tools: ToolCalls,
        transcripts: Transcripts,
        turns: TurnBuilder | None,
        latency: LatencyMeter,
        outage: OutageAudio,
        recovery: Recovery[RealtimeClient],
        rollover: Rollover[RealtimeClient],
        report: CallReport,
        orchestration: OrchestratedTurns | None,
        clock: Callable[[], float],
    ) -> None:
        self._call = call
        self._leg = leg
        self._plan = plan
        self._phase = phase
        self._link = link
        self._inbox = inbox
        self._playback = playback
        self._tools = tools
        self._transcripts = transcripts
        self._turns = turns
        self._latency = latency
        self._outage = outage
        self._recovery = recovery
        self._rollover = rollover
        self._report = report
        self._orchestration = orchestration
        self._clock = clock

    async def on_closed(self, e: ev.Closed) -> None:
        if self._call.ending:
            return
        if self._rollover.ready:  # the cap came before a turn boundary: the next session is ready
            active, cut = self._playback.drop_response()  # cut: the old session took the rest of the answer along
            self.swap_session(f"session ended ({e.reason}); the next one was ready", old_alive=False)
            # no dead air: the answer (or the greeting) the caller waits for is asked for again
            capped = Trigger.CAPPED_MID_AUDIO if cut else Trigger.CAPPED_BEFORE_AUDIO if active else Trigger.CAPPED
            self._phase.fire(capped)
            return
        self._call.emit(ev.SessionLost(e.error_class, e.code, e.reason, e.retryable))
        self._report.errors.append({"class": str(e.error_class), "code": str(e.code or ""), "message": e.reason})
        self._phase.fire(Trigger.SESSION_LOST, f"realtime closed: {e.reason}")
        await self.recover(e.error_class, e.retryable)

    def greeting_owed(self) -> bool:
        answered = self._latency.answered_at is not None
        return answered and self._report.first_audio_ms is None and bool(self._plan.greeting)

    def summary(self, rolled_over: bool = False) -> str:
        r = self._report
        keys = r.pressed if self._plan.privacy.dtmf_to_model else r.dtmf  # the model hears the keys if the plan says
        return summary(r.caller_transcript, r.agent_transcript, self._tools.pending, keys, rolled_over)

    def swap_session(self, why: str, old_alive: bool = True) -> None:
        old = self._link.swap(self._rollover.take())
        self._link.detach(old)
        self._call.start_pump()
        self._playback.drop_response()
        self._report.rollovers += 1
        self._call.emit(ev.RolledOver(why))
        if old is not None:
            # its turns' transcripts may still come (a closed one's are lost: see ANSWER_AGAIN)
            taken = self._transcripts.hand_over() if old_alive else set()
            self._rollover.retire(old, taken, self._inbox.put)

    def fail_over(self) -> None:
        """The outage outlasted the plan's ``outage.hold_s``: a transfer to a human, or the apology and a BYE."""
        plan = self._plan
        target = plan.transfer_target if plan.outage.failover == "transfer" else None
        self._call.emit(ev.FailedOver("transfer" if target else "goodbye", round(self._outage.away_s, 3)))
        if target is None:
            self._outage.say_goodbye()
            return
        # the hold message goes on until the transfer completes (or fails: then the apology)
        self._call.emit(ev.TransferStarted(target))
        self._leg.transfer(target)  # the final NOTIFY ends the call (ToolCalls.transfer_progress)

    def on_transfer_progress(self, e: ev.TransferProgress) -> None:
        failed = e.final and not 200 <= e.status_code < 300
        if failed and self._orchestration is not None and not self._call.ending:
            self._tools.transfer_progress(e, answer=False)  # the model holds its answers: the bridge speaks
            self._orchestration.transfer_failed(e)
            return
        self._tools.transfer_progress(e)
        if failed and self._link.client is None and not self._call.ending:
            self._outage.say_goodbye()  # the failover's transfer failed: never a bare hang-up

    async def recover(self, cls: ev.ErrorClass | None, retryable: bool) -> None:
        """Open a fresh session with the instructions and a short summary; the caller keeps hearing queued audio."""
        t_lost = self._clock()
        old = self._link.swap(None)
        if old is not None:
            self._link.detach(old)
            with contextlib.suppress(Exception):
                await old.close()
        if self._turns is not None:
            self._turns.flush()  # the lost session's turns end with it (a new session's timeline starts again)
        active, interrupted = self._playback.drop_response()  # interrupted: cut, not just asked for
        owed = self._recovery.take_owed(active)
        refused = old.credential_fingerprint if old is not None else None
        if self._outage.since is None:
            self._outage.lost()
        client = await self._recovery.reconnect(cls, retryable, refused)
        if client is None:
            if not self._leg.disconnected.is_set():  # (else the caller's hang-up, queued, ends the call)
                self._phase.fire(Trigger.GAVE_UP, f"no model for {self._outage.away_s:.1f} s")
            return
        self._report.reconnects = self._recovery.reconnects
        self._link.swap(client)
        self._call.start_pump()
        r = self._report
        if r.caller_transcript or r.agent_transcript or self._tools.pending or r.dtmf:
            self._link.send(ev.AddText(self.summary(), ev.Role.SYSTEM))
        self._latency.sample("recovery_gap", (self._clock() - t_lost) * 1000)
        # No dead air: the greeting or the answer the caller was waiting for was cut off with the socket, or never
        # began; answered already, only their transcripts are missing.
        owed = owed or self.greeting_owed()
        after_hold = not owed and self._outage.on_hold  # the caller heard "one moment please"
        self._recovery.held(after_hold)
        owed = owed or after_hold
        recovered = Trigger.RECOVERED_CUT if interrupted else Trigger.RECOVERED_OWING if owed else Trigger.RECOVERED
        self._phase.fire(recovered)
