"""One call's orchestration: the phone leg, the audio path and one Realtime session, as one asyncio task.

Audio never waits for control and control never waits behind audio: caller frames go to the model at once
(:mod:`bridge.call.link`), model audio goes straight into the playout buffer that the media clock thread drains
(:mod:`bridge.call.playback`), and every other event goes through one :class:`Inbox` in which the caller's
interrupts (speech started, a digit, a hangup) outrank the model's stream, which keeps its own order.

The session acts on the dialect's capabilities, never on its name. Where the service marks no turns
(``turn_detection`` "none"), the caller's and the agent's turns are rebuilt from transcript deltas
(:mod:`bridge.call.turns`) and the bridge's own voice detection on the caller's audio finds barge-ins; where the
model's output is one continuous stream, speech is told from silence by level (:meth:`Playback.stream`), and the
service's responses are its delegated backend's, not speech; without cancel and truncate, a barge-in only flushes
the playout, and how long the model talked over the caller is reported.

The handlers turn events into triggers of the call's table (:mod:`bridge.call.flow`, drawn in ``docs/call.md``),
which alone changes the phase and names the actions to carry out. Collaborators: barge-in, recovery after a lost
session, rollover before the service's session cap, transcripts, tool calls and latency, each in its own module of
``bridge.call``. Everything the call does is reported to its listeners as a ``bridge.events.Report``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, assert_never

from bridge import events as ev
from bridge.audio import PlayoutBuffer, Upsampler, converters
from bridge.audio.frames import FRAME_MS, SAMPLE_RATE
from bridge.audio.vad import EnergyVad
from bridge.call import changes, reactions
from bridge.call.bargein import BargeIn
from bridge.call.flow import Action, CallFlow, Trigger
from bridge.call.inbox import Handlers, Inbox
from bridge.call.latency import LatencyMeter
from bridge.call.leg import PhoneLeg
from bridge.call.link import Link, open_session
from bridge.call.orchestration import Orchestration
from bridge.call.outage import GOODBYE_REASON, OUTAGE_RETRY, OutageAudio
from bridge.call.playback import Playback
from bridge.call.recovery import Recovery, answer_instructions
from bridge.call.report import CallReport
from bridge.call.rollover import Rollover
from bridge.call.state import Phase, PhaseMachine
from bridge.call.toolcalls import ToolCalls
from bridge.call.transcripts import Transcripts
from bridge.call.turns import TurnBuilder
from bridge.call.usage import UsageMeter
from bridge.dialplan import Dialplan
from bridge.errors import ConnectError
from bridge.orchestrator.client import Ask, OrchestratorClient
from bridge.realtime.client import RealtimeClient
from bridge.realtime.credentials import CredentialSource
from bridge.realtime.dialects import Dialect
from bridge.realtime.profile import AgentProfile
from bridge.realtime.retry import RetryPolicy
from bridge.runtime.metronome import Metronome

__all__ = ["CallReport", "CallSession", "Connector", "Inbox", "Listener"]

log = logging.getLogger("bridge.call")

Connector = Callable[[], Awaitable[RealtimeClient]]
Listener = Callable[[ev.Report], None]

TICK_S = 0.02
# The bridge's own voice detection on the caller's 8 kHz audio, where the service marks no turns: an onset over the
# agent is a barge-in. Louder than a line's noise floor; no padding (only the onset's time matters).
CALLER_VAD_THRESHOLD = 0.4
CALLER_VAD_SILENCE_MS = 500.0
# An orchestrated call on such a dialect: the agent never speaks first to close the caller's turn, so it ends after
# this long without a fragment of it (about what peers of GPT-Live use).
ORCHESTRATED_TURN_SILENCE_S = 0.8


class CallSession:
    def __init__(
        self,
        leg: PhoneLeg,
        plan: Dialplan,
        dialect: Dialect,
        connect: Connector,
        *,
        listeners: list[Listener] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_reconnects: int = 20,
        max_session_s: float | None = None,
        credentials: CredentialSource | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        metronome: Metronome | None = None,
        model_down: bool = False,
        reject_when_down: bool = False,
        on_connect: Callable[[ConnectError | None], None] | None = None,
        orchestrator: Ask | None = None,
        variant: str | None = None,
    ) -> None:
        self.leg = leg
        # The 20 ms tick: a worker passes its loop's shared metronome (one wake-up for all its calls, on the
        # media clock); alone (replay, tests) a session keeps its own, started at the answer.
        self._metronome = metronome
        self.plan = plan
        self.dialect = dialect
        self._model_down = model_down  # the worker's breaker is open: no attempt before the answer, hold at once
        self._reject_when_down = reject_when_down  # no model at the answer: 503 (a front tries another node)
        self._on_connect = on_connect or (lambda exc: None)  # each open's outcome (the worker's breaker)
        self._connect = connect
        self.clock = clock
        self._t0 = clock()
        self.listeners = list(listeners or [])
        self.report = CallReport(call_id=leg.call_id, dialect=dialect.name, dialplan=plan.name)
        self.phase = CallFlow(PhaseMachine(leg.call_id, on_change=self._phase_changed, clock=clock), self._perform)
        self.inbox = Inbox()
        self.usage = UsageMeter()
        self.uplink, downlink = converters(plan.profile.audio_format)
        self.playout = PlayoutBuffer(clock=clock)
        self.latency = LatencyMeter(self.report, self.emit, clock)
        # the current Realtime session and the caller's audio
        self.link = Link(self.uplink, self.latency, clock, continuous=dialect.capabilities.continuous_audio)
        caps = dialect.capabilities
        self.continuous = caps.continuous_output  # the model's audio is a stream; responses are the backend's
        self.playback = Playback(
            self.playout, downlink, self.latency, clock, continuous=self.continuous, on_talk_over=self._talked_over
        )
        self.barge_in = BargeIn(
            self.playback, self.link.send, self.emit, self.report, cancel=caps.cancel, truncate=caps.truncate
        )
        self.tools = ToolCalls(
            plan, leg, self.link.send, self.emit, self.report, end=self.end, clock=clock, grouped=self.continuous
        )
        transcribed = plan.profile.input_transcription is not None or caps.turn_detection == "none"
        self.transcripts = Transcripts(self.report, self.emit, transcribed)
        # no turn events: turns from transcript deltas, barge-in from our own voice detection
        self.turns: TurnBuilder | None = None
        self._caller_vad: EnergyVad | None = None
        if caps.turn_detection == "none":
            self.turns = TurnBuilder(
                self.transcripts.caller, self.transcripts.agent, clock,
                caller_silence_s=ORCHESTRATED_TURN_SILENCE_S if plan.orchestrator is not None else None,
            )  # fmt: skip
            self._caller_vad = EnergyVad(
                SAMPLE_RATE,
                threshold=CALLER_VAD_THRESHOLD,
                prefix_padding_ms=0,
                silence_duration_ms=CALLER_VAD_SILENCE_MS,
            )
        self.outage = OutageAudio(plan.outage, self.playout, self.emit, clock)
        # an orchestrated plan: the contact center's service decides what is said (bridge/call/orchestration.py)
        self._own_orchestrator: OrchestratorClient | None = None
        self.orchestration: Orchestration | None = None
        if plan.orchestrator is not None:
            if orchestrator is None:
                self._own_orchestrator = OrchestratorClient()
                orchestrator = self._own_orchestrator.ask
            self.orchestration = Orchestration(self, plan.orchestrator, orchestrator, variant or dialect.name)
            self.transcripts.on_final = self.orchestration.said
        self.recovery: Recovery[RealtimeClient] = Recovery(
            self._open_session, self.emit, retry=retry or OUTAGE_RETRY, rng=rng or random.Random(),
            credentials=credentials, max_reconnects=max_reconnects, hold_s=plan.outage.hold_s, clock=clock,
            gone=leg.disconnected.is_set,
        )  # fmt: skip
        self.rollover: Rollover[RealtimeClient] = Rollover(
            max_session_s, self._open_session, self.emit, summary=lambda: changes.call_summary(self, True), clock=clock,
            name=leg.call_id,
        )  # fmt: skip
        self.ending = False  # the call is over (report.end_reason says why); the run loop stops
        self._waiting = False  # the run loop is parked on an empty inbox
        self.caller_speaking = False  # the current session's VAD heard the caller start; the stop not handled yet
        self._service_cancelled = False  # the barge-in under way: the service cancelled its response itself
        self.outcome = "completed"  # completed | transferred | failed (metrics label)
        self._handlers = (
            Handlers()
            .on(ev.SessionReady, lambda e: self.emit(ev.SessionOpened(e.session_id)))  # session_id reaches Redis
            .on(ev.SessionConfigured, lambda e: self.emit(ev.SessionAccepted(e.session_id)))
            .on(ev.ConversationReady, lambda e: self.emit(ev.ConversationOpened(e.conversation_id)))
            .on(ev.OutputItemAdded, lambda e: self.emit(ev.OutputItem(e.item_type, e.item_id)))
            .on(ev.AudioChunk, self._on_audio)
            .on(ev.AudioDone, lambda e: self.playback.audio_done(e.response_id, e.item_id))
            .on(ev.SpeechStarted, partial(reactions.on_speech_started, self))
            .on(ev.SpeechStopped, partial(reactions.on_speech_stopped, self))
            .on(ev.InputCommitted, self.transcripts.committed)
            .on(ev.CallerTranscript, partial(reactions.on_caller_transcript, self))
            .on(ev.CallerTranscriptFailed, self.transcripts.caller_failed)
            .on(ev.AgentTranscript, partial(reactions.on_agent_transcript, self))
            .on(ev.AgentText, self.transcripts.agent)
            .on(ev.ResponseStarted, partial(reactions.on_response_started, self))
            .on(ev.ResponseDone, partial(reactions.on_response_done, self))
            .on(ev.UsageUpdated, self.usage.updated)
            .on(ev.FunctionCall, partial(reactions.on_function_call, self))
            .on(ev.TransferProgress, partial(changes.on_transfer_progress, self))
            .on(ev.Dtmf, partial(reactions.on_dtmf, self))
            .on(ev.CallerHungUp, partial(reactions.on_caller_hung_up, self))
            .on(ev.ItemTruncated, self.barge_in.confirmed)
            .on(ev.ErrorEvent, partial(reactions.on_error, self))
            .on(ev.IdleTimeout, lambda e: self.emit(ev.CallerSilent(e.audio_start_ms, e.audio_end_ms, e.item_id)))
            .on(ev.UnknownEvent, lambda e: self.emit(ev.UnknownServerEvent(e.type)))
            .on(ev.Closed, partial(changes.on_closed, self))
            .on(ev.Orchestrated, lambda e: self.orchestration.handle(e) if self.orchestration else None)
        )

    # ------------------------------------------------------------------------------------------------ plumbing
    def emit(self, report: ev.Report) -> None:
        """Record ``report`` in the timeline and hand it to every listener."""
        self.report.timeline.append((round((self.clock() - self._t0) * 1000.0, 1), report.kind, report.summary))
        for listener in self.listeners:
            try:
                listener(report)
            except Exception:  # a broken observer must not break the call
                log.exception("call listener failed")

    def _phase_changed(self, old: Phase, new: Phase, why: str) -> None:
        self.report.phases.append(str(new))
        self.emit(ev.PhaseChanged(str(old), str(new), why))

    @property
    def client(self) -> RealtimeClient | None:
        """The call's current Realtime session (None while recovering)."""
        return self.link.client

    @client.setter
    def client(self, client: RealtimeClient | None) -> None:
        self.link.client = client

    @property
    def response_id(self) -> str | None:
        """The response under way, if any."""
        return self.playback.response_id

    @property
    def audio_item(self) -> str | None:
        """The item whose audio is playing or queued."""
        return self.playback.audio_item

    # ------------------------------------------------------------------------------------------------ lifecycle
    async def _open_session(self, history: tuple[ev.AddText, ...] = ()) -> RealtimeClient:
        try:  # the session's events reported
            client = await open_session(self._connect, self._profile, self._handlers, history)
        except ConnectError as exc:
            self._on_connect(exc)
            raise
        self._on_connect(None)
        self.rollover.opened()
        return client

    def _profile(self) -> AgentProfile:
        """The plan's profile; an orchestrated plan's with the model answering nothing on its own."""
        profile = self.plan.profile
        return self.dialect.hold_answers(profile) if self.orchestration is not None else profile

    async def run(self) -> CallReport:
        self.report.phases.append(str(Phase.IDLE))
        self.leg.ringing()
        self.emit(ev.Ringing(self.leg.caller, self.leg.called, self.plan.name, self.dialect.name))
        t_connect = self.clock()
        try:
            if self._model_down:
                raise ConnectError(ev.ErrorClass.NETWORK, "the worker's circuit breaker is open", retryable=True)
            # Open the WebSocket before the 200 OK: greeting latency is the callers' top complaint.
            self.client = await asyncio.wait_for(self._open_session(), self.plan.answer_timeout_s)
            self.latency.sample("session_setup", (self.clock() - t_connect) * 1000)
        except (TimeoutError, ConnectError) as exc:
            cls = exc.error_class if isinstance(exc, ConnectError) else ev.ErrorClass.NETWORK
            self.emit(ev.RealtimeUnavailable(str(exc) or "timeout", str(cls)))
            self.report.errors.append({"class": "network", "code": "connect", "message": str(exc) or "timeout"})
            if self._reject_when_down:
                self.leg.reject(503, "Service Unavailable", retry_after=int(self.plan.outage.hold_s))
                self.end("realtime unavailable: rejected (503)", outcome="failed")
                self.phase.fire(Trigger.FINISHED, self.report.end_reason)
                self.emit(ev.CallEnded(self.report.end_reason, self.outcome))
                return self.report
        self.leg.answer()
        self.latency.answered_at = self.clock()
        self.report.answered = True
        self.emit(ev.Answered())
        self.leg.start_media(self.playout, self.link.on_frame if self._caller_vad is None else self._on_caller_frame)
        offload = self._caller_vad is None and not self.link.continuous  # else every frame passes the loop
        if offload and isinstance(self.uplink, Upsampler) and self.uplink.c_kernel() is not None:
            self.link.offload = self.leg.uplink_offload(self.uplink)
        leg_pump = asyncio.create_task(self._pump_leg(), name=f"leg-{self.leg.call_id}")
        metronome = self._metronome or Metronome(asyncio.get_running_loop(), TICK_S)
        stop_ticking = metronome.add(self._tick)
        try:
            if self.client is None:
                self.outage.lost(at_answer=True)  # the hold message from the first second
                self.phase.fire(Trigger.NO_SESSION)
                await changes.recover(self, ev.ErrorClass.NETWORK, True)
            else:
                self.start_pump()
                self.phase.fire(Trigger.GREET if self.plan.greeting else Trigger.READY)
            while not self.ending:
                self._waiting = True  # parked below only while the inbox is empty (see _start_pump)
                event = await self.inbox.get()
                self._waiting = False
                await self._handle(event)
        finally:
            stop_ticking()
            leg_pump.cancel()
            if self.orchestration is not None:
                await self.orchestration.close()
            if self._own_orchestrator is not None:
                await self._own_orchestrator.close()
            if self.turns is not None:
                self.turns.flush()
            await asyncio.gather(*self.rollover.stop(), return_exceptions=True)  # each closes its session
            for client in (self.client, self.rollover.next):
                if client is not None:
                    await client.close()
            if self.client is not None and self.client.protocol.usage_seconds is not None:
                # the final figure came with the close (Live's session.closed), after the inbox was read
                self.usage.updated(ev.UsageUpdated(self.client.protocol.usage_seconds, final=True))
            self.report.agent_audio_ms = self.playout.frames_played * FRAME_MS
            if self.phase.phase is not Phase.ENDED:
                self.phase.fire(Trigger.FINISHED, self.report.end_reason or "session finished")
            self.emit(ev.PlayoutTotals(self.playout.underruns, self.playout.dropped_frames))
            self.report.usage = totals = self.usage.totals()
            if self.dialect.capabilities.usage == "audio_seconds":  # priced by session time: report it as it ends
                self.emit(
                    ev.UsageTotals(totals["audio_seconds"], int(totals["input_tokens"]), int(totals["output_tokens"]))
                )
            self.emit(ev.CallEnded(self.report.end_reason, self.outcome))
        return self.report

    def _perform(self, action: Action, why: str) -> None:
        """Carry out one action of the table (:class:`~bridge.call.flow.Action` says what each does)."""
        match action:
            case Action.ASK_GREETING:
                self.link.send(ev.CreateResponse(instructions=self.plan.greeting))
            case Action.CUT_AGENT:
                self.barge_in.cut(why, service_cancelled=self._service_cancelled)
                self.tools.interrupted()
                if self.orchestration is not None:
                    self.orchestration.interrupted(self.barge_in.last_cut)
            case Action.OWE_ANSWER:
                self.recovery.answer_owed = True
            case Action.FORGET_LOST_TURNS:
                self.transcripts.forget_lost()
            case Action.SEND_SUMMARY:
                self.link.send(ev.AddText(changes.call_summary(self), ev.Role.SYSTEM))
            case Action.ANSWER_AGAIN | Action.RESUME_ANSWER:
                lost = self.transcripts.forget_lost()
                greeting = self.plan.greeting if changes.greeting_owed(self) else None
                cut = action is Action.RESUME_ANSWER
                held, self.recovery.after_hold = self.recovery.after_hold, False
                self.link.send(ev.CreateResponse(instructions=answer_instructions(greeting, cut, lost, held)))
            case Action.SWAP_SESSION:
                changes.swap_session(self, "rollover at a turn boundary")
            case Action.PLAY_HOLD:
                self.outage.play_hold()
            case Action.STOP_HOLD:
                self.outage.back()
            case Action.FAIL_OVER:
                changes.fail_over(self)
            case _:
                assert_never(action)

    def start_pump(self) -> None:
        """Route the current client's events into the inbox as they are decoded (no task in between)."""
        client = self.client
        self.usage.new_session()
        self.caller_speaking = False  # a new session: its VAD has heard nothing yet

        def deliver(event: ev.Event) -> None:
            if type(event) is ev.SpeechStarted and client is self.client:
                # as decoded, not as handled: a rollover on this same beat must not cut the caller's turn in two
                # (it ends when the stop is handled, and the call is THINKING then)
                self.caller_speaking = True
            if type(event) is ev.AudioChunk and self._waiting and self.inbox.empty() and not self.ending:
                # What the session task would do next, without its wake-up: it is parked on an empty inbox, so
                # nothing can be ahead of this chunk (a reply's deltas: the call's most frequent event).
                self._on_audio(event)
                return
            if isinstance(event, ev.Closed) and client is not self.client:
                return  # a session we already replaced
            self.inbox.put(event)

        self.link.attach(deliver)

    @property
    def uplink_counts(self) -> dict[str, int]:
        return self.link.uplink_counts

    @property
    def frames_appended(self) -> int:
        return self.link.frames_appended

    async def _pump_leg(self) -> None:
        while True:
            self.inbox.put(await self.leg.events.get())

    def _tick(self) -> None:
        """Every beat (20 ms, or a worker's media beat): notice that the agent's audio has finished playing, and
        run what waited for that; then let the socket be read (on this same wake-up)."""
        self.link.beat()
        if self.leg.disconnected.is_set() and not self.ending:
            # The leg queues its own CallerHungUp (with the SIP code and reason) as it disconnects: take what
            # it queued first, in order, so the report says why; the fallback only covers a silent leg.
            while not self.leg.events.empty():
                self.inbox.put(self.leg.events.get_nowait())
            self.inbox.put(ev.CallerHungUp(sip_code=0, reason="leg disconnected"))
        if self.turns is not None:
            self.turns.beat()
        self.latency.measure_playback(self.playout, self.playback.audio_item)
        idle = self.playback.idle
        if idle:
            self.phase.fire(Trigger.PLAYED_OUT)
        if self.phase.phase is Phase.RECOVERING and self.outage.hold_due:
            self.phase.fire(Trigger.HOLD_DUE, "model away")
        self.outage.beat()
        if self.outage.leaving and self.playout.idle and not self.ending:
            self.leg.hangup(GOODBYE_REASON)  # the apology played out: a clean BYE that says why
            self.end(self.outage.leaving_reason, outcome="failed")
        if self.client is not None and not self.ending:
            # after that: the moment a reply has played out is the surest turn boundary
            self.rollover.tick()
            # the caller's audio so far is in the old session's input buffer while they speak
            if self.rollover.ready and idle and self.tools.pending is None and not self.caller_speaking:
                self.phase.fire(Trigger.TURN_BOUNDARY)
        self.tools.beat(idle)
        if self.orchestration is not None:
            self.orchestration.beat(idle)

    def end(self, reason: str, outcome: str = "completed") -> None:
        self.ending = True
        self.report.end_reason = reason
        self.outcome = outcome

    # ------------------------------------------------------------------------------------------------ audio
    def _on_audio(self, chunk: ev.AudioChunk) -> None:
        if self.continuous:
            opened = self.playback.stream(chunk)
            if opened is None:  # silence, or the model still talking after a barge-in
                return
            if opened:
                self.tools.line_started()  # the model speaks on its own: a tool's line is the speech that follows
        elif not self.playback.push(chunk):  # in flight when we barged in
            return
        self.phase.fire(Trigger.MODEL_AUDIO)

    def _on_caller_frame(self, pcm: bytes, t_capture: float) -> None:
        """A caller frame where the service marks no turns: to the model, then through our voice detection."""
        self.link.on_frame(pcm, t_capture)
        assert self._caller_vad is not None
        for vad in self._caller_vad.feed(pcm):
            if self.ending:
                return
            if vad.kind == "start":
                self.caller_speaking = True
                self.emit(ev.CallerSpeechStarted(int(vad.ms)))
                self.interrupt("caller spoke over the agent", self.playback.busy)
            else:
                # the model decides whether to answer: no phase pretends it will (THINKING is for what it owes)
                self.caller_speaking = False
                self.emit(ev.CallerSpeechStopped(int(vad.ms)))

    def _talked_over(self, ms: float) -> None:
        self.report.talk_over_ms.append(round(ms, 1))
        self.emit(ev.TalkedOver(round(ms, 1)))
        if self.turns is not None:
            self.turns.close_agent()  # the model stopped itself: what it says next is a new turn

    def interrupt(self, why: str, agent_busy: bool, *, service_cancelled: bool = False) -> None:
        """The caller spoke or pressed a key. ``service_cancelled``: the service's own VAD heard it and has
        cancelled its active response itself (``interrupt_response``), so the barge-in sends no cancel of its own."""
        self._service_cancelled = service_cancelled
        self.phase.fire(Trigger.CALLER_INTERRUPTS if agent_busy else Trigger.CALLER_STARTS, why)

    @property
    def service_interrupts(self) -> bool:
        """The session's turn detection cancels an active response itself when it hears the caller start."""
        detection = self._profile().turn_detection
        return detection is not None and detection.interrupt_response

    # ------------------------------------------------------------------------------------------------ events
    async def _handle(self, event: ev.Event) -> None:
        result = self._handlers(event)
        if asyncio.iscoroutine(result):
            await result

    def progress(self) -> dict[str, Any]:
        """Fast-changing progress fields, polled off the media path (the Redis writer's probe)."""
        item = self.playback.audio_item
        played = self.playout.played_ms(item) if item else 0
        last_event = self.client.protocol.last_event_id if self.client is not None else None
        return {"last_user_audio_seq": self.frames_appended, "played_ms": played, "last_ack_event_id": last_event or ""}

    # model events: bridge/call/reactions.py; lost, recovered, capped, swapped sessions: bridge/call/changes.py
