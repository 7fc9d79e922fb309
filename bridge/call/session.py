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
from collections.abc import Awaitable, Callable
from typing import Any

from bridge import events as ev
from bridge.audio.frames import FrameSink
from bridge.audio.playout_native import make_playout
from bridge.call.bargein import BargeIn
from bridge.call.changes import SessionChanges
from bridge.call.closing import close_call
from bridge.call.consent import ConsentPrompt
from bridge.call.echo import EchoGuarding, guarded
from bridge.call.flow import CallFlow, Trigger
from bridge.call.inbox import Inbox
from bridge.call.latency import LatencyMeter, vad_silence_ms
from bridge.call.leg import PhoneLeg
from bridge.call.limit import CallLimit
from bridge.call.link import Link, open_session
from bridge.call.media import choose_media_path
from bridge.call.opening import connect_before_answer, start_media
from bridge.call.options import CallOptions, Listener
from bridge.call.orchestration import Orchestration
from bridge.call.outage import HOLD_WAV, OUTAGE_RETRY, OutageAudio
from bridge.call.parts import Audio, CallParts, Sessions, Talk
from bridge.call.peer import ABANDONED, hung_up, note_peer, peer_end
from bridge.call.perform import perform, start_beat
from bridge.call.playback import Playback
from bridge.call.privacy import KeyMask, mask_number, redact_spoken_digits
from bridge.call.reactions import Reactions
from bridge.call.recovery import Reconnects, Recovery
from bridge.call.report import CallReport, silence_watch
from bridge.call.rollover import Rollover
from bridge.call.state import Phase, PhaseMachine
from bridge.call.supervision import Supervision
from bridge.call.toolcalls import Handover, ToolCalls, call_context
from bridge.call.transcripts import Transcripts
from bridge.call.turns import CallerVoice, TurnBuilder
from bridge.call.usage import UsageMeter
from bridge.call.waiting import dead_air, turn_hold
from bridge.call.warm import WarmTransfer
from bridge.dialplan import Dialplan
from bridge.errors import ConnectError, ModelRefused
from bridge.orchestrator.client import OrchestratorClient
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import Dialect
from bridge.realtime.dialects.base import Capabilities
from bridge.realtime.profile import AgentProfile
from bridge.runtime.metronome import Metronome
from bridge.tools.runner import business_tools

__all__ = ["CallOptions", "CallReport", "CallSession", "Connector", "Inbox", "Listener"]

log = logging.getLogger("bridge.call")

Connector = Callable[[], Awaitable[RealtimeClient]]

TICK_S = 0.02
# An orchestrated call on such a dialect: the agent never speaks first to close the caller's turn, so it ends after
# this long without a fragment of it (about what peers of GPT-Live use).
ORCHESTRATED_TURN_SILENCE_S = 0.8


class CallSession:
    def __init__(
        self, leg: PhoneLeg, plan: Dialplan, dialect: Dialect, connect: Connector, options: CallOptions | None = None
    ) -> None:
        options = options or CallOptions()
        self.leg = leg
        self.plan = plan
        self.dialect = dialect
        self.options = options  # the worker's breaker, beat, orchestrator and reconnect policy (CallOptions)
        self._plan_profile = options.profile or (lambda: self.plan.profile)  # each new session's profile
        self._on_connect = options.on_connect or (lambda exc: None)  # each open's outcome (the worker's breaker)
        self._connect = connect
        self.clock = clock = options.clock
        self._t0 = clock()
        self.report = CallReport(call_id=leg.call_id, dialect=dialect.name, dialplan=plan.name)
        self.listeners = [*options.listeners, silence_watch(self.report, self.emit)]  # LongestSilence, as it grows
        self.phase = CallFlow(
            PhaseMachine(leg.call_id, on_change=self._phase_changed, clock=clock), lambda a, why: perform(self, a, why)
        )
        self.inbox = Inbox()
        self.usage = UsageMeter()
        self.media = choose_media_path(dialect.capabilities, plan.profile.audio_format, guarded(plan.echo_guard))
        self.playout = make_playout(clock)
        self.latency = LatencyMeter(
            self.report, self.emit, clock, vad_silence_ms(plan.profile), greets=bool(plan.greeting)
        )
        # the current Realtime session and the caller's audio
        self.link = Link(self.media.uplink, self.latency, clock, continuous=self.media.paced_uplink)
        prompt = plan.recording.consent_audio if options.consent_prompt and plan.recording.enabled else None
        barge_in = plan.recording.consent_barge_in
        self.consent = (
            ConsentPrompt(prompt, barge_in, self.playout, self.report, self.emit, self._consented) if prompt else None
        )
        self._build_collaborators(plan, dialect.capabilities)
        retry, rng = options.retry or OUTAGE_RETRY, options.rng or random.Random()
        reconnects = Reconnects(retry, rng, options.credentials, options.max_reconnects, plan.outage.hold_s)
        gone = leg.disconnected.is_set
        self.recovery: Recovery[RealtimeClient] = Recovery(
            self._open_session, self.emit, reconnects, clock=clock, gone=gone
        )
        self.rollover: Rollover[RealtimeClient] = Rollover(
            options.max_session_s,
            self._open_session,
            self.emit,
            summary=lambda: self.changes.summary(True),
            clock=clock,
            name=leg.call_id,
        )
        audio = Audio(self.link, self.playout, self.playback, self.barge_in, self.latency)
        talk = Talk(self.transcripts, self.turns, self.tools, self.usage, self._keys, self.turn_hold)
        sessions = Sessions(self.inbox, self.recovery, self.rollover, self.outage)
        self.parts = CallParts(self, leg, plan, self.phase, self.limit, audio, talk, sessions)
        self.own_orchestrator: OrchestratorClient | None = None
        self.orchestration: Orchestration | None = None
        if plan.orchestrator is not None:  # the contact center's service decides what is said
            ask = options.orchestrator
            if ask is None:
                self.own_orchestrator = OrchestratorClient()
                ask = self.own_orchestrator.ask
            self.orchestration = Orchestration(self.parts, plan.orchestrator, ask, options.variant or dialect.name)
            self.transcripts.on_final = self.orchestration.said
        self._wire()
        self._outcome: ev.CallOutcome | None = None  # set as the call ends (report.end_reason says why)
        self._waiting = False  # the run loop is parked on an empty inbox
        self.service_cancelled = False  # the barge-in under way: the service cancelled its response itself

    def _build_collaborators(self, plan: Dialplan, caps: Capabilities) -> None:
        """The audio's and the conversation's collaborators (each in its own module of ``bridge.call``)."""
        self.continuous = self.media.streamed_output  # the model's audio is a stream; responses are the backend's
        self.playback = Playback(
            self.playout,
            self.media.downlink,
            self.latency,
            self.clock,
            continuous=self.continuous,
            on_talk_over=lambda ms: self._reactions.talked_over(ms),
            sink=self.link.sink_audio,
        )
        self.barge_in = BargeIn(
            self.playback, self.link.send, self.emit, self.report, cancel=caps.cancel, truncate=caps.truncate
        )
        business = business_tools(plan, call_context(self.leg, plan))
        if business is not None:  # MCP tools: listed before the first session opens, offered with the profile
            self._connect, self._plan_profile = business.wrap(self._connect, self._plan_profile)
        warm = plan.transfer is not None and plan.transfer.mode is ev.TransferMode.WARM
        waiting = dead_air(plan, self.playout, self.link, self.emit, self.phase, self.playback.responding)
        handover = Handover(self.phase, self._warm_transfer if warm else None, plan.outage.hold_audio or str(HOLD_WAV))
        self.tools = ToolCalls(
            plan,
            self.leg,
            self,
            self.playback,
            send=self.link.send,
            business=business,
            waiting=waiting,
            handover=handover,
        )
        silence = self.report.turn_silence_ms.append
        self.turn_hold = turn_hold(
            plan, self.playout, self.emit, self.phase, self._may_hold, continuous=self.continuous, silence=silence
        )
        transcribed = plan.profile.input_transcription is not None or caps.turn_detection == "none"
        privacy = plan.privacy
        visible = privacy.transcript_visible_digits
        redact = str if visible is None else (lambda text: redact_spoken_digits(text, visible))
        self.redact = redact  # the plan's privacy: transcripts, and the post-call summary and fields
        self.transcripts = Transcripts(self.report, self.emit, transcribed, redact)
        self._keys = KeyMask(privacy.dtmf_visible_digits, clock=self.clock)  # what is stored and shown of each key
        # no turn events: turns from transcript deltas, barge-in from our own voice detection
        self.turns: TurnBuilder | None = None
        self._caller_voice: CallerVoice | None = None
        self.echo = EchoGuarding(
            plan.echo_guard, self.playback, self.emit, self.report, lambda: self.service_interrupts,
            flow=self.phase, withhold=not caps.cancel, link=self.link,
        ) if plan.echo_guard.enabled else None  # fmt: skip
        if self.media.own_vad:
            quiet_s = ORCHESTRATED_TURN_SILENCE_S if plan.orchestrator is not None else None
            self.turns = TurnBuilder(self.transcripts.caller, self.transcripts.agent, self.clock, quiet_s)
            interrupt = self.interrupt if self.echo is None else self.echo.voice(self.interrupt)
            self._caller_voice = CallerVoice(
                self.link.on_frame if self.echo is None else self.echo.uplink(self.link.on_frame),
                self.link.heard_caller,
                self.emit,
                interrupt,
                busy=lambda: self.playback.busy,
                ending=lambda: self.ending,
            )
        self.outage = OutageAudio(plan.outage, self.playout, self.emit, self.clock)
        self.warm = None if plan.transfer is None else WarmTransfer(
            plan.transfer, self.leg, plan.outage.hold_audio or str(HOLD_WAV), self.report, flow=self.phase,
            send=self.link.send, emit=self.emit, end=self.end,
        )  # fmt: skip
        self.limit = CallLimit(plan.max_call_s, plan.max_call_goodbye_s, self.clock)
        self.supervision = Supervision(self.link, self.emit, self.limit, self.tools, self.phase, cut=self._cut_if_busy)

    def _cut_if_busy(self, why: str) -> None:
        if self.playback.busy:
            self.barge_in.cut(why)

    def _wire(self) -> None:
        """What changes the call's model session, what reacts to events, and the table of both."""
        self.changes = SessionChanges(self.parts, self.orchestration)
        self._reactions = reactions = Reactions(self.parts, self.orchestration)
        orchestration = self.orchestration
        self._handlers = (
            reactions.handlers()
            .on(ev.TransferProgress, self.changes.on_transfer_progress)
            .on(ev.Closed, self.changes.on_closed)
            .on(ev.Orchestrated, lambda e: orchestration.handle(e) if orchestration else None)
            .on(ev.SupervisorAction, self.supervision.handle)
            .on(ev.EndRequested, lambda e: self.limit.end_now(e.by))  # unanswered yet: the goodbye follows the answer
        )
        if self.echo is not None:  # a speech start over the agent is judged first (bridge.call.echo)
            self._handlers.on(ev.SpeechStarted, self.echo.speech_started(reactions.on_speech_started))
        if self.consent is not None:  # a key over the consent prompt goes nowhere
            self._handlers.on(ev.Dtmf, self.consent.keys(reactions.on_dtmf))

    # ------------------------------------------------------------------------------------------------ plumbing
    def emit(self, report: ev.Report) -> None:
        """Record ``report`` in the timeline and hand it to every listener."""
        self.report.note(round((self.clock() - self._t0) * 1000.0, 1), report)
        for listener in self.listeners:
            try:
                listener(report)
            except Exception:  # a broken observer must not break the call
                log.exception("call listener failed")

    def _phase_changed(self, old: Phase, new: Phase, why: str) -> None:
        if old == Phase.SPEAKING and new == Phase.LISTENING:  # an answer played out in full
            self._keys.reply_heard()
        self.report.phases.append(str(new))
        self.emit(ev.PhaseChanged(str(old), str(new), why))

    def _may_hold(self) -> bool:
        """The call waits on the answer to the caller's turn and on nothing else (no tool, outage, or caller, who
        may also have the call on hold with their phone: a soft hold would wait for them, unheard)."""
        tool_wait = self.tools.waiting is not None and self.tools.waiting.waiting
        busy = self.link.caller_speaking or self.ending or tool_wait or self._reactions.caller_holds
        return self.phase.phase is Phase.THINKING and not busy

    @property
    def client(self) -> RealtimeClient | None:
        """The call's current Realtime session (None while recovering)."""
        return self.link.client

    @property
    def ending(self) -> bool:
        """The call is over (``report.end_reason`` says why); the run loop stops."""
        return self._outcome is not None

    @property
    def outcome(self) -> ev.CallOutcome:
        return self._outcome or ev.CallOutcome.COMPLETED

    # ------------------------------------------------------------------------------------------------ lifecycle
    async def _open_session(self, history: tuple[ev.AddText, ...] = ()) -> RealtimeClient:
        while True:
            try:  # the session's events reported
                client = await open_session(self._connect, self._profile, self._handlers, history)
            except ModelRefused as exc:  # no outage: the connector may move to a model the service takes, at once
                self._on_connect(exc)
                on_refused = self.options.on_refused  # True: the connector moved to another model
                if on_refused is not None and await on_refused(exc):
                    continue
                raise
            except ConnectError as exc:
                self._on_connect(exc)
                raise
            break
        self._on_connect(None)
        self.rollover.opened()
        return client

    def _profile(self) -> AgentProfile:
        """The call's profile; an orchestrated plan's with the model answering nothing on its own."""
        profile = self.supervision.profile(self._plan_profile())
        return self.dialect.hold_answers(profile) if self.orchestration is not None else profile

    async def run(self) -> CallReport:
        self.report.phases.append(str(Phase.IDLE))
        if not self.leg.disconnected.is_set():
            self.leg.ringing()
        caller = mask_number(self.leg.caller, self.plan.privacy.caller_visible_digits)
        self.emit(ev.Ringing(caller, self.leg.called, self.plan.name, self.dialect.name))
        if not await connect_before_answer(self.parts, self._open_session, self.options):
            return self.report
        if self.leg.disconnected.is_set():  # CANCEL (or BYE) while ringing: RFC 3261 §9.2, the INVITE got 487
            await self._abandoned()
            return self.report
        self.leg.answer()
        self.latency.answered_at = self.clock()
        self.limit.start()
        self.report.answered = True
        self.emit(ev.Answered())
        voice = self._caller_voice
        on_frame: FrameSink = self.link.on_frame if voice is None else voice.on_frame
        if self.consent is not None:  # the model hears nothing of the caller while the prompt plays
            on_frame = self.consent.gate(on_frame)
        start_media(self.leg, self.media, self.playout, on_frame, self.link, self.echo)
        leg_pump = asyncio.create_task(self._pump_leg(), name=f"leg-{self.leg.call_id}")
        metronome = self.options.metronome or Metronome(asyncio.get_running_loop(), TICK_S)
        self.beat, stop_ticking = start_beat(self, metronome)
        try:
            if self.client is not None:
                self.start_pump()
            if self.consent is not None:
                self.consent.start()  # the first audio of the call; the greeting follows its end (_consented)
            if self.client is None:
                self.outage.lost(at_answer=True)  # the hold message from the first second (after the prompt)
                self.phase.fire(Trigger.NO_SESSION)
                await self.changes.recover(ev.ErrorClass.NETWORK, True)
            elif self.consent is None:
                self._greet()
            while not self.ending:
                self._waiting = True  # parked below only while the inbox is empty (see start_pump)
                event = await self.inbox.get()
                self._waiting = False
                await self._handle(event)
                self.beat.soon()  # what the event changed is looked at on the next beat
        finally:
            stop_ticking()
            leg_pump.cancel()
            await close_call(self)
        return self.report

    def _greet(self) -> None:
        self.phase.fire(Trigger.GREET if self.plan.greeting else Trigger.READY)

    def _consented(self, result: ev.ConsentPrompt) -> None:
        """The consent prompt ended: the model's greeting now (its wait counted from here), unless the call is
        over or the model is away (a recovery greets)."""
        if not self.ending and self.client is not None and self.phase.phase is Phase.IDLE:
            self.latency.answered_at = self.clock()
            self._greet()

    async def _abandoned(self) -> None:
        """The caller's side hung up before the answer: an ordinary end, the caller's abandon unless its CANCEL (or
        BYE) said more (a ring completed elsewhere, a network failure: bridge/call/peer.py), with the session (if it
        opened) closed at once."""
        gone = hung_up(self.leg.events)
        peer = gone.peer if gone is not None else None
        note_peer(peer, self.report, self.emit)
        self.end(*(peer_end(peer) or ABANDONED))
        await close_call(self)

    def start_pump(self) -> None:
        """Route the current client's events into the inbox as they are decoded (no task in between)."""
        client = self.client
        self.usage.new_session()

        def deliver(event: ev.Event) -> None:
            if type(event) is ev.SpeechStarted and client is self.client:
                # as decoded, not as handled: a rollover on this same beat must not cut the caller's turn in two
                # (it ends when the stop is handled, and the call is THINKING then)
                self.link.heard_caller(True)
            if type(event) is ev.AudioChunk and self._waiting and self.inbox.empty() and not self.ending:
                # What the session task would do next, without its wake-up: it is parked on an empty inbox, so
                # nothing can be ahead of this chunk (a reply's deltas: the call's most frequent event).
                if self._reactions.on_audio(event) and event.decoded and client is self.client:
                    self.playback.arm(event.item_id)  # the item's later runs: from the socket into the ring in C
                return
            if type(event) is not ev.AgentTranscript or event.final:
                self.playback.disarm()  # any other event is the loop's to weigh before more audio is queued
            if isinstance(event, ev.Closed) and client is not self.client:
                return  # a session we already replaced
            self.inbox.put(event)

        self.link.attach(deliver)  # a new session: its VAD has heard nothing yet

    @property
    def frames_appended(self) -> int:
        return self.link.frames_appended

    async def _pump_leg(self) -> None:
        while True:
            self.inbox.put(await self.leg.events.get())

    def end(self, reason: str, by: ev.EndedBy, outcome: ev.CallOutcome = ev.CallOutcome.COMPLETED) -> None:
        self.report.end_reason, self.report.ended_by = reason, by
        self._outcome = outcome

    def _warm_transfer(self, target: str) -> None:
        if self.warm is not None:
            self.warm.start(target)

    def interrupt(self, why: str, agent_busy: bool, *, service_cancelled: bool = False) -> None:
        """The caller spoke or pressed a key. ``service_cancelled``: the service's own VAD heard it and has
        cancelled its active response itself (``interrupt_response``), so the barge-in sends no cancel of its own."""
        self.service_cancelled = service_cancelled
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
        if self.client is not None:
            self.client.settle_audio()  # the last event id of audio the C downlink pushed into the playout itself
        last_event = self.client.protocol.last_event_id if self.client is not None else None
        return {"last_user_audio_seq": self.frames_appended, "played_ms": played, "last_ack_event_id": last_event or ""}
