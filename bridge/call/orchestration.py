"""An orchestrated call (a dialplan with ``orchestrator``): the model is the ears and the voice, the contact center's
own service decides what is said (``docs/orchestrator.md``).

The model answers nothing on its own (the dialect's ``hold_answers``). After each final caller transcript (or a
key) the call POSTs a :class:`~bridge.orchestrator.models.TurnRequest` and acts on the decision::

    caller turn ──► POST ──► decision within timeout_ms ──► say / respond / transfer / hangup / send_dtmf / nothing
                      │
                      ├─ past timeout_ms: the filler is said (verbatim), the call waits on
                      ├─ past give_up_ms, or no connection: the plan's outage failover (transfer, or apology + BYE)
                      └─ 5xx, 4xx, invalid JSON, not a decision: counted and logged once per cause; ``on_error``:
                         the model answers the turn itself (``respond``), or the failover

The request runs in a task of its own; what it yields (:class:`~bridge.events.Orchestrated`) goes through the
call's inbox, so every decision is carried out by the session's task, in order with the model's events. A newer
turn replaces a request still under way. A ``say`` is an out-of-band response (or Live commentary): a barge-in
cancels it only while it is active and never truncates it (it is in no conversation); the next request tells the
orchestrator what the caller heard of it (:class:`~bridge.orchestrator.models.Heard`, estimated by the share of
its audio played). It gets the call's parts (:class:`~bridge.call.parts.CallParts`), and of the session only its
acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bridge import events as ev
from bridge.call.builtin_tools import ToolAction, ToolResult
from bridge.call.changes import fail_over
from bridge.call.flow import Trigger
from bridge.call.parts import CallParts
from bridge.call.playback import Cut
from bridge.dialplan import Orchestrator
from bridge.orchestrator.client import Ask, Fault, origin
from bridge.orchestrator.models import Decision, Heard, Line, TurnRequest

log = logging.getLogger("bridge.call.orchestration")
FAILS_OVER = frozenset({"down", "timeout"})  # no answer will come: the failover, whatever on_error says
# said (verbatim) when a transfer the orchestrator decided fails: the caller keeps the floor, and the next request's
# transcript has this line, so the orchestrator sees what happened
TRANSFER_FAILED_LINE = "I'm sorry, I could not put you through right now. How else can I help?"
_logged: set[tuple[str, str]] = set()  # (origin, kind): each cause is logged once per process


ORCHESTRATOR_WAIT = "orchestrator"  # the key of a late answer's wait in bridge.call.waiting


class Orchestration:
    def __init__(self, parts: CallParts, config: Orchestrator, ask: Ask, variant: str) -> None:
        self._parts = parts
        self._call, self._leg, self._plan, self._phase = parts.call, parts.leg, parts.plan, parts.phase
        self._audio, self._tools, self._sessions = parts.audio, parts.talk.tools, parts.sessions
        self.config = config
        self._ask = ask
        self._variant = variant
        self._sequence = 0
        self._task: asyncio.Task[None] | None = None
        self._transcript: list[Line] = []
        self._last_turn = ""
        self._interrupted: Heard | None = None  # a say the caller spoke over, for the next request
        self.saying: str | None = None  # the say asked for or playing (its text)
        self._say_heard = False  # its audio has reached the playout
        self._cut: tuple[str, int, int] | None = None  # a cut say (text, played, dropped ms), until its transcript
        self._queued: list[ev.Command] = []  # asked for while a response was active (one at a time)
        self._failed_over = False  # the plan's failover has started: the orchestrator decides no more

    # -- what prompts a request -------------------------------------------------------------------------------
    def said(self, role: str, text: str) -> None:
        """A final transcript (``Transcripts.on_final``): the call so far; a caller's turn asks the orchestrator."""
        self._transcript.append(Line(role="caller" if role == "caller" else "agent", text=text))
        if role == "agent" and self._cut is not None:
            # the cut say's transcript: what the model had said of it when the caller barged in
            self._heard(text)
        if role == "caller":
            self._last_turn = text
            self._request("turn", text)

    def key(self) -> None:
        """The caller pressed a key (the report's ``pressed`` has it)."""
        self._request("dtmf", "")

    def _request(self, event: str, turn: str) -> None:
        call = self._call
        if call.ending:
            return
        if self._cut is not None:
            self._heard(self._cut[0])  # its transcript has not come (or came before the cut): estimate on its text
        self._sequence += 1
        leg, report = self._leg, call.report
        request = TurnRequest(
            call_id=leg.call_id,
            caller=leg.caller,
            called=leg.called,
            dialplan=self._plan.name,
            variant=self._variant,
            dialect=report.dialect,
            event="dtmf" if event == "dtmf" else "turn",
            turn=turn,
            transcript=list(self._transcript),
            dtmf="".join(report.pressed),
            interrupted=self._interrupted,
            sequence=self._sequence,
        )
        self._interrupted = None
        if self._task is not None:
            self._task.cancel()  # a newer turn replaces the request under way
        self._task = asyncio.create_task(self._run(request), name=f"orchestrator-{self._leg.call_id}")

    async def _run(self, request: TurnRequest) -> None:
        """The request, with the two time limits; its outcome goes to the call's inbox."""
        cfg, seq, put = self.config, request.sequence, self._sessions.inbox.put
        late, fault = ev.OrchestratedOutcome.LATE, ev.OrchestratedOutcome.FAULT
        t0 = self._call.clock()

        def ms() -> float:
            return (self._call.clock() - t0) * 1000.0

        answer = asyncio.ensure_future(self._ask(cfg.url, request, cfg.give_up_ms / 1000.0))
        try:
            done, _ = await asyncio.wait({answer}, timeout=cfg.timeout_ms / 1000.0)
            if not done:
                put(ev.Orchestrated(seq, late, ms()))
                done, _ = await asyncio.wait({answer}, timeout=(cfg.give_up_ms - cfg.timeout_ms) / 1000.0)
            if not done:
                message = f"{origin(cfg.url)}: no answer within {cfg.give_up_ms} ms"
                put(ev.Orchestrated(seq, fault, ms(), fault="timeout", message=message))
                return
            try:
                decision = answer.result()
            except Fault as exc:
                put(ev.Orchestrated(seq, fault, ms(), fault=exc.kind, message=str(exc)))
            except Exception as exc:  # a broken asker must not break the call: count it as unreachable
                message = f"{origin(cfg.url)}: {type(exc).__name__}"
                put(ev.Orchestrated(seq, fault, ms(), fault="down", message=message))
            else:
                put(ev.Orchestrated(seq, ev.OrchestratedOutcome.DECISION, ms(), decision=decision))
        finally:
            if not answer.done():
                answer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await answer

    # -- what comes back (in the session's task) --------------------------------------------------------------
    def handle(self, e: ev.Orchestrated) -> None:
        call = self._call
        if e.sequence != self._sequence or call.ending:
            return  # a request since replaced, or the call is over
        waiting = self._tools.waiting
        if e.outcome is ev.OrchestratedOutcome.LATE:
            call.emit(ev.OrchestratorLate(round(e.ms, 1), self.config.filler))
            self.say(self.config.filler)
            if waiting is not None:  # then the soft hold, until the answer
                waiting.after_line(ORCHESTRATOR_WAIT)
            return
        if waiting is not None:
            waiting.end(ORCHESTRATOR_WAIT)
        self._audio.latency.sample("orchestrator", e.ms)
        if e.outcome is ev.OrchestratedOutcome.FAULT:
            self._fault(e.fault, e.message, e.ms)
        else:
            assert isinstance(e.decision, Decision)
            self._act(e.decision, e.ms)

    def _fault(self, kind: str, message: str, ms: float) -> None:
        call = self._call
        then = "failover" if kind in FAILS_OVER or self.config.on_error == "failover" else "respond"
        cause = (origin(self.config.url), kind)
        if cause not in _logged:
            _logged.add(cause)
            log.warning("orchestrator of dialplan %s: %s (%s; logged once per cause)", self._plan.name, message, kind)
        self._call.report.decisions.append({"error": kind, "then": then, "ms": round(ms, 1)})
        call.emit(ev.OrchestratorFailed(kind, message, then))
        if then == "failover":
            self._fail_over()
        else:
            self._respond(None)  # never dead air: the model answers this turn itself

    def _act(self, d: Decision, ms: float) -> None:
        call = self._call
        detail = d.text or d.instructions or d.digits or d.target or ""
        self._call.report.decisions.append({**d.model_dump(exclude_none=True, exclude={"version"}), "ms": round(ms, 1)})
        call.emit(ev.OrchestratorDecided(d.action, detail, round(ms, 1)))
        match d.action:
            case "say":
                assert d.text is not None  # Decision's validator
                self.say(d.text)
            case "respond":
                self._respond(d.instructions)
            case "transfer":
                target = d.target or self._plan.transfer_target
                if target is None:
                    self._fault("invalid_answer", "transfer without a target, and the plan has no transfer_target", ms)
                    return
                self._then(ToolResult({}, action=ToolAction.TRANSFER, target=target), d.text)
            case "hangup":
                self._then(ToolResult({}, action=ToolAction.HANGUP), d.text)
            case "send_dtmf":
                assert d.digits is not None  # Decision's validator
                self._leg.send_dtmf(d.digits)
                self._phase.fire(Trigger.DECIDED_QUIET, f"orchestrator sent keys {d.digits}")
            case "nothing":
                self._phase.fire(Trigger.DECIDED_QUIET, "orchestrator: nothing to say")

    def say(self, text: str) -> None:
        """The line, verbatim (the dialect's ``Say``)."""
        self.saying, self._say_heard = text, False
        self._send(ev.Say(text))

    def _send(self, command: ev.Command) -> None:
        """Send now, or (a response is active: one at a time) once it is done."""
        if self._audio.playback.response_id is not None or self._queued:
            self._queued.append(command)
        else:
            self._audio.link.send(command)

    def _respond(self, instructions: str | None) -> None:
        """The model answers the caller's turn itself: a response where responses exist; where the model speaks on
        its own (a continuous stream), a note it acts on."""
        if self._audio.playback.continuous:
            note = instructions or f'Answer the caller, who said: "{self._last_turn}"'
            self._audio.link.send(ev.AddText(note, ev.Role.USER))
        else:
            self._send(ev.CreateResponse(instructions=instructions))

    def _then(self, action: ToolResult, text: str | None) -> None:
        """Transfer or hang up: after ``text`` has been heard, if there is one."""
        if text is not None:
            self.say(text)
        self._tools.after_line(action, spoken=text is not None)

    def _fail_over(self) -> None:
        """The plan's outage failover: a transfer to its ``transfer_target``, or the apology and a BYE."""
        self._failed_over = True
        fail_over(self._parts, 0.0, "orchestrator unavailable")

    def transfer_failed(self, e: ev.TransferProgress) -> None:
        """The transfer ended without a 2xx NOTIFY. The model holds its answers, so the bridge speaks: after the
        orchestrator's transfer, :data:`TRANSFER_FAILED_LINE` (the next caller turn goes to the orchestrator as
        usual); after a failover's (the orchestrator's or the model's: nobody is left to decide), the apology and a
        BYE."""
        if self._failed_over or self._audio.link.client is None:  # the failover's transfer, or the model's outage's
            self._phase.fire(Trigger.GOODBYE, "orchestrator unavailable; the transfer failed")
            return
        log.info("call %s: the transfer failed (%s %s): telling the caller", self._leg.call_id, e.status_code, e.reason)
        self.say(TRANSFER_FAILED_LINE)

    # -- the say under way ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A command queued or a say under way: the call's checks look at them on every beat."""
        return bool(self._queued) or self.saying is not None

    def beat(self, idle: bool) -> None:
        """Every beat: what waited for a response to end goes out; a say whose audio came and has played out is
        over."""
        if self._queued and self._audio.playback.response_id is None:
            self._audio.link.send(self._queued.pop(0))
        if self.saying is None:
            return
        if not idle:
            self._say_heard = True
        elif self._say_heard:
            self.saying = None

    def interrupted(self, cut: Cut | None) -> None:
        """A barge-in: the say under way (if any) was cut; the next request says what the caller heard of it."""
        text, self.saying = self.saying, None
        self._queued.clear()  # the caller has the floor: what waited is moot
        if text is None or cut is None or cut.item_id is None:
            return
        self._cut = (text, cut.played_ms, cut.dropped_ms)
        self._interrupted = Heard(text=text, heard="", played_ms=cut.played_ms)

    def _heard(self, said: str) -> None:
        """What the caller heard of the cut say: of what the model had said of it (``said``), the share of the
        audio received that was played."""
        assert self._cut is not None
        text, played, dropped = self._cut
        self._cut = None
        words = said.split()
        share = played / (played + dropped) if played + dropped > 0 else 0.0
        self._interrupted = Heard(text=text, heard=" ".join(words[: round(len(words) * share)]), played_ms=played)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
