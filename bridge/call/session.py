"""One call's orchestration: the phone leg, the audio path and one Realtime session, as one asyncio task.

Audio never waits for control and control never waits behind audio:

* caller frames arrive on the loop thread (``PhoneLeg.start_media``), go through the uplink converter and are sent
  at once as ``AppendAudio`` (the hot path has no queue of its own); where the leg offers an uplink offload (a
  native media port, plain ``ws://``, PCM 24 kHz), the media clock thread does exactly that itself, in C, with
  the same upsampler state, and the session only binds and unbinds it as Realtime sessions come and go;
* model audio (``AudioChunk``) goes through the downlink converter into the playout buffer, which the media clock
  thread drains every 20 ms;
* every other event (Realtime and telephone) goes through one :class:`Inbox` in which the caller's interrupts
  (speech started, a digit, a hangup) outrank the model's stream, which keeps its own order.

Barge-in follows docs/protocol.md: flush playout, cancel only an active response, truncate the playing item to what the
caller actually heard, back to LISTENING.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge import events as ev
from bridge.audio import PlayoutBuffer, Upsampler, converters
from bridge.audio.frames import FRAME_MS
from bridge.call.leg import PhoneLeg, UplinkOffload
from bridge.call.state import Phase, PhaseMachine
from bridge.call.tools import ToolResult, run_tool
from bridge.dialplan import Dialplan
from bridge.errors import ConnectError
from bridge.realtime.client import RealtimeClient
from bridge.realtime.credentials import CredentialSource
from bridge.realtime.dialects import Dialect
from bridge.realtime.retry import RetryPolicy, Step, delays, next_step
from bridge.runtime.metronome import Metronome

log = logging.getLogger("bridge.call")

Connector = Callable[[], Awaitable[RealtimeClient]]
Listener = Callable[[ev.Report], None]

TICK_S = 0.02
SUMMARY_TURNS = 6
RESUME_INSTRUCTIONS = "Your last answer was cut off by a connection problem. Briefly continue it."
TRANSFER_NOT_STARTED = (
    "The transfer to a human agent was NOT started: the caller spoke over your announcement. "
    "Ask whether they still want to be transferred."
)
ANSWER_AFTER_ROLLOVER = "Your session was renewed while the caller waited for your answer. Answer their last turn."
ASK_TO_REPEAT = (
    "The connection changed just as the caller finished speaking, and their last words were lost. "
    "Apologise briefly and ask them to repeat what they said."
)
RETIRE_DRAIN_S = 5.0  # a replaced session stays open this long at most for the transcripts of turns it took along
ROLLOVER_MARGIN_S = 120.0  # start the next session this long before the service's cap (capped at 30% of it)


class Inbox:
    """One queue for a call's events: urgent ones (the caller's interrupts) first, the rest in arrival order (a
    response's ``AudioDone`` and ``ResponseDone`` never overtake its audio, even when all arrive in one read)."""

    def __init__(self) -> None:
        self._q: asyncio.PriorityQueue[tuple[int, int, ev.Event]] = asyncio.PriorityQueue()
        self._seq = itertools.count()

    def put(self, event: ev.Event) -> None:
        self._q.put_nowait((0 if event.urgent else 1, next(self._seq), event))

    async def get(self) -> ev.Event:
        return (await self._q.get())[2]

    def empty(self) -> bool:
        return self._q.empty()


@dataclass
class CallReport:
    """What happened on one call: the demo prints it, replays compare it, Redis keeps a summary of it."""

    call_id: str
    dialect: str
    dialplan: str
    answered: bool = False
    phases: list[str] = field(default_factory=list)
    caller_transcript: list[str] = field(default_factory=list)
    agent_transcript: list[str] = field(default_factory=list)
    agent_audio_ms: int = 0
    first_audio_ms: float | None = None
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    barge_ins: int = 0
    truncates: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    rollovers: int = 0
    media: dict[str, Any] = field(default_factory=dict)  # SIP calls: the media port's kind and counters
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    end_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


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
    ) -> None:
        self.leg = leg
        # The 20 ms tick: a worker passes its loop's shared metronome (one wake-up for all its calls, on the
        # media clock); alone (replay, tests) a session keeps its own, started at the answer.
        self._metronome = metronome
        self.plan = plan
        self.dialect = dialect
        self._connect = connect
        self._clock = clock
        self._t0 = clock()
        self.listeners = list(listeners or [])
        self.report = CallReport(call_id=leg.call_id, dialect=dialect.name, dialplan=plan.name)
        self.phase = PhaseMachine(leg.call_id, on_change=self._phase_changed, clock=clock)
        self.inbox = Inbox()
        self.client: RealtimeClient | None = None
        self.uplink, self.downlink = converters(plan.profile.audio_format)
        self.playout = PlayoutBuffer(clock=clock)
        self._frames_sent_here = 0  # caller frames this loop sent; the uplink offload counts its own
        self.frames_dropped_offline = 0
        self._offload: UplinkOffload | None = None  # the caller's audio sent from the media clock, if the leg can
        self._sampled_at = 0.0  # when the offload's latency was last sampled (once a second)
        self.max_reconnects = max_reconnects  # sessions lost per call before we give up on the call
        self.max_session_s = max_session_s  # the service's session cap; roll over before it
        self.credentials = credentials  # invalidated when the service refuses the credential (fresh one next)
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._session_opened_at = clock()
        self._next_client: RealtimeClient | None = None  # the rollover session, ready and configured
        self._rollover_task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # replaced sessions closing (see _retire)
        # response bookkeeping
        self.response_id: str | None = None  # the active response, if any
        self.cancelled: set[str] = set()
        self.audio_item: str | None = None  # the item whose audio is playing / queued
        self.audio_response: str | None = None
        self._response_had_audio = False
        self._pending: ToolResult | None = None  # action to run once the agent's line has played
        self._line_requested = False  # a tool's spoken line was requested and has not started yet
        self._pending_since = 0.0
        self._speech_stopped_at: float | None = None
        self._answered_at: float | None = None
        self._ending = False
        self._waiting = False  # the run loop is parked on an empty inbox
        self._caller_speaking = False  # the current session's VAD heard the caller start; the stop not handled yet
        self._untranscribed: set[str] = set()  # committed caller turns whose transcript has not come yet
        self.outcome = "completed"  # completed | transferred | failed (metrics label)
        self._truncate_pending = False
        self._queued_at: float | None = None  # when the current response's first audio was queued
        self._turn_started_at: float | None = None  # speech_stopped of the turn being answered
        self._agent_parts: dict[str, list[str]] = {}

    # ------------------------------------------------------------------------------------------------ plumbing
    def _now_ms(self) -> float:
        return (self._clock() - self._t0) * 1000.0

    def emit(self, report: ev.Report) -> None:
        """Record ``report`` in the timeline and hand it to every listener."""
        self.report.timeline.append((round(self._now_ms(), 1), report.kind, report.summary))
        for listener in self.listeners:
            try:
                listener(report)
            except Exception:  # a broken observer must not break the call
                log.exception("call listener failed")

    def _latency(self, segment: str, ms: float) -> None:
        self.report.latency_ms.setdefault(segment, []).append(round(ms, 1))
        self.emit(ev.Latency(segment, ms))

    def _phase_changed(self, old: Phase, new: Phase, why: str) -> None:
        self.report.phases.append(str(new))
        self.emit(ev.PhaseChanged(str(old), str(new), why))

    def _send(self, command: ev.Command) -> None:
        if self.client is not None:
            self.client.send(command)

    # ------------------------------------------------------------------------------------------------ lifecycle
    async def _open_session(self) -> RealtimeClient:
        client = await self._connect()
        client.send(ev.UpdateSession(self.plan.profile))
        # Wait for session.updated (or an error) so the first caller audio is in the configured format.
        try:
            while True:
                event = await client.next_event()
                if isinstance(event, ev.SessionReady | ev.SessionConfigured | ev.ConversationReady):
                    await self._handle(event)  # noted: session_id / conversation_id reach Redis
                if isinstance(event, ev.SessionConfigured):
                    self._session_opened_at = self._clock()
                    return client
                if isinstance(event, ev.ErrorEvent):
                    # An expired or refused credential is retryable with a fresh one (AUTH); a bad config is not.
                    raise ConnectError(event.error_class, f"session refused: {event.code}", retryable=event.retryable)
                if isinstance(event, ev.Closed):
                    cls = event.error_class or ev.ErrorClass.NETWORK
                    raise ConnectError(cls, event.reason, retryable=event.retryable)
        except BaseException:  # refused, or timed out at the answer deadline: never leave the socket open
            await client.close()
            raise

    async def run(self) -> CallReport:
        self.report.phases.append(str(Phase.IDLE))
        self.leg.ringing()
        self.emit(ev.Ringing(self.leg.caller, self.leg.called, self.plan.name, self.dialect.name))
        t_connect = self._clock()
        try:
            # Open the WebSocket before the 200 OK: greeting latency is the callers' top complaint.
            self.client = await asyncio.wait_for(self._open_session(), self.plan.answer_timeout_s)
            self._latency("session_setup", (self._clock() - t_connect) * 1000)
        except (TimeoutError, ConnectError) as exc:
            cls = exc.error_class if isinstance(exc, ConnectError) else ev.ErrorClass.NETWORK
            self.emit(ev.RealtimeUnavailable(str(exc) or "timeout", str(cls)))
            self.report.errors.append({"class": "network", "code": "connect", "message": str(exc) or "timeout"})
        self.leg.answer()
        self._answered_at = self._clock()
        self.report.answered = True
        self.emit(ev.Answered())
        self.leg.start_media(self.playout, self._on_frame)
        if isinstance(self.uplink, Upsampler) and self.uplink.c_kernel() is not None:
            self._offload = self.leg.uplink_offload(self.uplink)
        leg_pump = asyncio.create_task(self._pump_leg(), name=f"leg-{self.leg.call_id}")
        metronome = self._metronome or Metronome(asyncio.get_running_loop(), TICK_S)
        stop_ticking = metronome.add(self._tick)
        try:
            if self.client is None:
                self.phase.set(Phase.RECOVERING, "realtime session not ready at answer")
                await self._recover(ev.ErrorClass.NETWORK, True)
            else:
                self._start_pump()
                self._begin()
            while not self._ending:
                self._waiting = True  # parked below only while the inbox is empty (see _start_pump)
                event = await self.inbox.get()
                self._waiting = False
                await self._handle(event)
        finally:
            stop_ticking()
            for task in (leg_pump, self._rollover_task, *self._retiring):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*self._retiring, return_exceptions=True)  # each closes its session as it stops
            for client in (self.client, self._next_client):
                if client is not None:
                    await client.close()
            self.report.agent_audio_ms = self.playout.frames_played * FRAME_MS
            if self.phase.phase is not Phase.ENDED:
                self.phase.set(Phase.ENDED, self.report.end_reason or "session finished")
            self.emit(ev.PlayoutTotals(self.playout.underruns, self.playout.dropped_frames))
            self.emit(ev.CallEnded(self.report.end_reason, self.outcome))
        return self.report

    def _begin(self) -> None:
        if self.plan.greeting:
            self._send(ev.CreateResponse(instructions=self.plan.greeting))
            self.phase.set(Phase.THINKING, "greeting")
        else:
            self.phase.set(Phase.LISTENING, "session ready")

    def _start_pump(self) -> None:
        """Route the current client's events into the inbox as they are decoded (no task in between)."""
        assert self.client is not None
        client = self.client

        self._caller_speaking = False  # a new session: its VAD has heard nothing yet

        def deliver(event: ev.Event) -> None:
            if type(event) is ev.SpeechStarted and client is self.client:
                # as decoded, not as handled: a rollover on this same beat must not cut the caller's turn in two
                # (it ends when the stop is handled, and the call is THINKING then)
                self._caller_speaking = True
            if type(event) is ev.AudioChunk and self._waiting and self.inbox.empty() and not self._ending:
                # What the session task would do next, without its wake-up: it is parked on an empty inbox, so
                # nothing can be ahead of this chunk (a reply's deltas: the call's most frequent event).
                self._on_audio(event)
                return
            if isinstance(event, ev.Closed) and client is not self.client:
                return  # a session we already replaced
            self.inbox.put(event)

        client.deliver_to(deliver)
        client.read_on_beat(True)  # read on the tick's wake-up (see bridge.realtime.client)
        if self._offload is not None:
            # the caller's frames go from the media clock thread to this socket; ours join them in order
            client.offload_writes(self._offload)

    def _stop_pump(self, client: RealtimeClient | None) -> None:
        if client is not None:
            client.deliver_to(None)  # what it still says stays in its own queue, unread
            client.read_on_beat(False)
            client.offload_writes(None)  # the caller's audio comes back to this loop (and is dropped offline)

    @property
    def uplink_counts(self) -> dict[str, int]:
        """Caller frames sent by the media clock thread (the offload) and by this loop, and those dropped while
        no session could take them."""
        off = self._offload
        return {
            "clock_thread": off.frames_sent if off is not None else 0,
            "loop": self._frames_sent_here,
            "dropped": self.frames_dropped_offline + (off.frames_dropped if off is not None else 0),
        }

    @property
    def frames_appended(self) -> int:
        """Caller frames sent to the model, by this loop and by the uplink offload."""
        offloaded = self._offload.frames_sent if self._offload is not None else 0
        return self._frames_sent_here + offloaded

    async def _pump_leg(self) -> None:
        while True:
            self.inbox.put(await self.leg.events.get())

    def _tick(self) -> None:
        """Every beat (20 ms, or a worker's media beat): notice that the agent's audio has finished playing, and
        run what waited for that; then let the socket be read (on this same wake-up)."""
        client = self.client
        if client is not None:
            client.beat()
            now = self._clock()
            if self._offload is not None and client.offloaded and now - self._sampled_at >= 1.0:
                # sample the capture and uplink segments once a second, as _on_frame does on the loop
                self._sampled_at = now
                capture_s, write_s = self._offload.last_latency_s()
                if capture_s or write_s:
                    self._latency("capture", capture_s * 1000)
                    self._latency("uplink", write_s * 1000)
        if self.leg.disconnected.is_set() and not self._ending:
            # The leg queues its own CallerHungUp (with the SIP code and reason) as it disconnects: take what
            # it queued first, in order, so the report says why; the fallback only covers a silent leg.
            while not self.leg.events.empty():
                self.inbox.put(self.leg.events.get_nowait())
            self.inbox.put(ev.CallerHungUp(sip_code=0, reason="leg disconnected"))
        self._measure_playback()
        idle = self.response_id is None and self.playout.idle
        if idle and self.phase.phase is Phase.SPEAKING:
            self.phase.set(Phase.LISTENING, "reply played out")
        self._maybe_rollover()  # after that: the moment a reply has played out is the surest turn boundary
        if self._pending is not None and (
            (idle and not self._line_requested)  # the line was asked for, spoken and played out
            or self._clock() - self._pending_since > 10.0  # the model never spoke it: don't keep them waiting
        ):
            self._run_pending()

    def _measure_playback(self) -> None:
        """Once the first frame of a reply has been handed to RTP: the playback, first-audio and turn segments."""
        if self._queued_at is None or self.audio_item is None:
            return
        played = self.playout.first_played_at(self.audio_item)  # stamped on the session's clock
        if played is None:
            return
        self._latency("playback", (played - self._queued_at) * 1000)
        if self.report.first_audio_ms is None and self._answered_at is not None:
            self.report.first_audio_ms = round((played - self._answered_at) * 1000, 1)
            self._latency("first_audio", self.report.first_audio_ms)
        if self._turn_started_at is not None:
            self._latency("turn", (played - self._turn_started_at) * 1000)
            self._turn_started_at = None
        self._queued_at = None

    def _end(self, reason: str, outcome: str = "completed") -> None:
        self._ending = True
        self.report.end_reason = reason
        self.outcome = outcome

    # ------------------------------------------------------------------------------------------------ audio
    def _on_frame(self, pcm: bytes, t_capture: float) -> None:
        """A caller frame on the loop thread: convert and send now (hot path)."""
        client = self.client
        if client is None or client.closed is not None:
            self.frames_dropped_offline += 1  # never replay audio history after a reconnect
            return
        client.send(ev.AppendAudio(self.uplink.process(pcm)))
        self._frames_sent_here += 1
        if self._frames_sent_here % 50 == 1:  # sample the capture and uplink segments once a second
            self._latency("capture", (time.monotonic() - t_capture) * 1000)
            if client.last_send_latency_s:
                self._latency("uplink", client.last_send_latency_s * 1000)

    def _on_audio(self, chunk: ev.AudioChunk) -> None:
        if chunk.response_id in self.cancelled:
            return  # in flight when we barged in
        if chunk.item_id != self.audio_item:
            self.audio_item, self.audio_response = chunk.item_id, chunk.response_id
            self.downlink.reset()  # documented reset policy: a new output item starts a new stream
        t0 = self._clock()
        self.playout.push(chunk.item_id, self.downlink.process(chunk.audio))
        if not self._response_had_audio:
            self._response_had_audio = True
            self._queued_at = self._clock()
            self._latency("downlink", (self._queued_at - t0) * 1000)
            if self._speech_stopped_at is not None:
                self._latency("inference", (t0 - self._speech_stopped_at) * 1000)
                self._turn_started_at, self._speech_stopped_at = self._speech_stopped_at, None
        if self.phase.phase in (Phase.LISTENING, Phase.THINKING):
            self.phase.set(Phase.SPEAKING, "model audio")

    def _barge_in(self, why: str) -> None:
        """Flush, cancel only an active response, truncate to what was played, back to listening."""
        if self.phase.phase in (Phase.SPEAKING, Phase.THINKING):
            self.phase.set(Phase.CANCELLING, why)
        flushed = self.playout.flush()
        if self.response_id is not None:
            self._send(ev.CancelResponse(self.response_id))
            self.cancelled.add(self.response_id)
            self.response_id = None
        cut = [(flushed.item_id, flushed.played_ms)] if flushed.item_id is not None else []
        cut += [(item_id, 0) for item_id in flushed.unplayed]  # queued items the caller never heard
        for item_id, played_ms in cut:
            self._send(ev.Truncate(item_id=item_id, audio_end_ms=played_ms))
            self._truncate_pending = True
            self.report.truncates.append({"item_id": item_id, "audio_end_ms": played_ms})
            self.emit(ev.TruncateSent(item_id, played_ms))
        started = self.playout.first_played_at(flushed.item_id) if flushed.item_id else None
        heard_ms = (self._clock() - started) * 1000 if started is not None else None
        self.report.barge_ins += 1
        self.emit(ev.BargeIn(why, abs(flushed.played_ms - heard_ms) if heard_ms is not None else None))
        self.audio_item = None
        if self._pending is not None and self._pending.action == "transfer":
            # The model was told "transferring": tell it the transfer did not happen, so it can ask again.
            self.emit(ev.TransferCancelled())
            self._send(ev.AddText(TRANSFER_NOT_STARTED, ev.Role.SYSTEM))
        self._pending = None  # the caller interrupted the goodbye / transfer line: keep talking
        self.downlink.reset()
        if self.phase.phase is not Phase.LISTENING:
            self.phase.set(Phase.LISTENING, "barge-in handled")

    # ------------------------------------------------------------------------------------------------ events
    async def _handle(self, event: ev.Event) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            result = handler(event)
            if asyncio.iscoroutine(result):
                await result

    def progress(self) -> dict[str, Any]:
        """Fast-changing progress fields, polled off the media path (the Redis writer's probe)."""
        played = self.playout.played_ms(self.audio_item) if self.audio_item else 0
        last_event = self.client.protocol.last_event_id if self.client is not None else None
        return {"last_user_audio_seq": self.frames_appended, "played_ms": played, "last_ack_event_id": last_event or ""}

    def _on_SessionReady(self, e: ev.SessionReady) -> None:
        self.emit(ev.SessionOpened(e.session_id))

    def _on_SessionConfigured(self, e: ev.SessionConfigured) -> None:
        self.emit(ev.SessionAccepted(e.session_id))

    def _on_ConversationReady(self, e: ev.ConversationReady) -> None:
        self.emit(ev.ConversationOpened(e.conversation_id))

    def _on_OutputItemAdded(self, e: ev.OutputItemAdded) -> None:
        self.emit(ev.OutputItem(e.item_type, e.item_id))

    def _on_AudioChunk(self, e: ev.AudioChunk) -> None:
        self._on_audio(e)

    def _on_AudioDone(self, e: ev.AudioDone) -> None:
        if e.item_id == self.audio_item and e.response_id not in self.cancelled:
            self.playout.push(e.item_id, self.downlink.drain())  # the last 2 ms still inside the filter
            self.playout.end_item(e.item_id)

    def _on_SpeechStarted(self, e: ev.SpeechStarted) -> None:
        self.emit(ev.CallerSpeechStarted(e.audio_start_ms))
        if self.phase.phase is Phase.SPEAKING or not self.playout.idle or self.response_id is not None:
            self._barge_in("caller spoke over the agent")

    def _on_SpeechStopped(self, e: ev.SpeechStopped) -> None:
        self._caller_speaking = False
        self._speech_stopped_at = self._clock()
        self.emit(ev.CallerSpeechStopped(e.audio_end_ms))
        if self.phase.phase is Phase.LISTENING:
            self.phase.set(Phase.THINKING, "caller stopped speaking")

    def _on_InputCommitted(self, e: ev.InputCommitted) -> None:
        if self.plan.profile.input_transcription is not None:  # a transcript will come for it
            self._untranscribed.add(e.item_id)

    def _on_CallerTranscript(self, e: ev.CallerTranscript) -> None:
        if e.final:
            self._untranscribed.discard(e.item_id)
        if e.final and e.text:
            self.report.caller_transcript.append(e.text)
            self.emit(ev.CallerSaid(e.text, e.item_id))

    def _on_CallerTranscriptFailed(self, e: ev.CallerTranscriptFailed) -> None:
        self._untranscribed.discard(e.item_id)
        self.emit(ev.CallerNotTranscribed(e.message, e.item_id))

    def _on_AgentTranscript(self, e: ev.AgentTranscript) -> None:
        if e.final and e.text:
            self.report.agent_transcript.append(e.text)
            self.emit(ev.AgentSaid(e.text, e.item_id))

    _on_AgentText = _on_AgentTranscript

    def _on_ResponseStarted(self, e: ev.ResponseStarted) -> None:
        self.response_id = e.response_id
        self._line_requested = False
        self._response_had_audio = False
        self.emit(ev.ResponseBegan(e.response_id))
        if self.phase.phase is Phase.LISTENING:
            self.phase.set(Phase.THINKING, "response started")

    def _on_ResponseDone(self, e: ev.ResponseDone) -> None:
        self.emit(ev.ResponseEnded(e.response_id, e.status))
        if e.response_id == self.response_id:
            self.response_id = None
        if self.audio_item is not None and e.response_id == self.audio_response:
            self.playout.end_item(self.audio_item)
        if self.phase.phase is Phase.THINKING and not self._response_had_audio and self._pending is None:
            self.phase.set(Phase.LISTENING, f"response {e.status} without audio")

    def _on_FunctionCall(self, e: ev.FunctionCall) -> None:
        result = run_tool(e.name, e.arguments, enabled=self.plan.tool_names, transfer_target=self.plan.transfer_target)
        self.report.tool_calls.append({"name": e.name, "arguments": e.arguments, "output": result.output})
        self.emit(ev.ToolCalled(e.name, e.arguments, result.output_json))
        self._send(ev.FunctionOutput(call_id=e.call_id, output=result.output_json))
        if result.action is not None:
            self._pending, self._pending_since = result, self._clock()
            # The function output asks for a response (the line); until it has started, "idle" is not "spoken".
            self._line_requested = True
        if self.phase.phase is Phase.LISTENING:
            self.phase.set(Phase.THINKING, f"tool {e.name}")

    def _run_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.action == "transfer" and pending.target:
            self.emit(ev.TransferStarted(pending.target))
            self.leg.transfer(pending.target)
        elif pending.action == "hangup":
            self.emit(ev.AgentHungUp())
            self.leg.hangup()
            self._end("agent ended the call")

    def _on_TransferProgress(self, e: ev.TransferProgress) -> None:
        self.emit(ev.TransferUpdate(e.status_code, e.reason, e.final))
        if not e.final:
            return
        if 200 <= e.status_code < 300:
            self.leg.hangup()  # RFC 3515: the transferor leaves after the final NOTIFY 200
            self._end("transferred", outcome="transferred")
        else:
            self._send(
                ev.AddText(f"The transfer failed ({e.status_code} {e.reason}). Tell the caller.", ev.Role.SYSTEM)
            )
            self._send(ev.CreateResponse())

    def _on_Dtmf(self, e: ev.Dtmf) -> None:
        self.report.dtmf.append(e.digit)
        self.emit(ev.KeyPressed(e.digit, e.source))
        if e.source == "realtime":
            return  # the service already put it in the conversation
        if self.phase.phase is Phase.SPEAKING or self.response_id is not None:
            self._barge_in("caller pressed a key")  # type-ahead interrupts a menu prompt
        self._send(ev.AddText(f"The caller pressed the key {e.digit} on the phone keypad."))
        self._send(ev.CreateResponse())

    def _on_CallerHungUp(self, e: ev.CallerHungUp) -> None:
        if self._ending:
            return  # our own hangup (end_call, transfer) comes back from the leg too: keep our reason
        self.playout.flush()
        self._end(f"caller hung up ({e.reason})" if e.reason else "caller hung up")

    def _on_ItemTruncated(self, e: ev.ItemTruncated) -> None:
        self._truncate_pending = False
        self.emit(ev.Truncated(e.item_id, e.audio_end_ms))

    def _on_ErrorEvent(self, e: ev.ErrorEvent) -> None:
        if self._truncate_pending and e.code in {"invalid_value", "unsupported_content_type", "item_not_found"}:
            self._truncate_pending = False
            self.emit(ev.TruncateRefused(e.message))
        # response_cancel_not_active is expected: the reply was often fully generated before the barge-in.
        if e.code != "response_cancel_not_active":
            self.report.errors.append({"class": str(e.error_class), "code": e.code, "message": e.message})
        self.emit(ev.ServiceError(e.code, str(e.error_class), e.message))

    def _on_IdleTimeout(self, e: ev.IdleTimeout) -> None:
        self.emit(ev.CallerSilent(e.audio_start_ms, e.audio_end_ms, e.item_id))

    def _on_UnknownEvent(self, e: ev.UnknownEvent) -> None:
        self.emit(ev.UnknownServerEvent(e.type))

    async def _on_Closed(self, e: ev.Closed) -> None:
        if self._ending:
            return
        if self._next_client is not None:  # the cap came before a turn boundary: the next session is ready
            cut = self.response_id is not None and self._response_had_audio  # the old session took the rest along
            # or the answer (or the greeting) had not begun: the turn it answers was committed there
            waiting = self.response_id is not None or self.phase.phase is Phase.THINKING
            self._swap_session(f"session ended ({e.reason}); the next one was ready", old_alive=False)
            if waiting:  # no dead air: a fresh summary (the one sent at preparation predates this turn), an answer
                self._send(ev.AddText(self._summary(), ev.Role.SYSTEM))
                self._answer_again(cut, "answer again in the next session")
            return
        self.emit(ev.SessionLost(e.error_class, e.code, e.reason, e.retryable))
        self.report.errors.append({"class": str(e.error_class), "code": str(e.code or ""), "message": e.reason})
        waiting = self.phase.phase is Phase.THINKING  # a turn committed there, its answer not started
        self.phase.set(Phase.RECOVERING, f"realtime closed: {e.reason}")
        await self._recover(e.error_class, e.retryable, waiting=waiting)

    # ------------------------------------------------------------------------------------------------ recovery
    def _greeting_owed(self) -> bool:
        return self._answered_at is not None and self.report.first_audio_ms is None and bool(self.plan.greeting)

    def _answer_again(self, cut: bool, why: str) -> None:
        """Ask a new session for what the caller is waiting for: the greeting if none of it was heard yet, the rest
        of a cut answer, or (``cut`` False) the answer to a turn the old session took along. If that turn's words
        went with the old session (committed there, never transcribed), the new one cannot answer it: it asks the
        caller to say it again."""
        lost = self._lost_turns()
        if self._greeting_owed():
            instructions = self.plan.greeting
        elif cut:
            instructions = RESUME_INSTRUCTIONS
        elif lost:
            instructions = ASK_TO_REPEAT
        else:
            instructions = ANSWER_AFTER_ROLLOVER
        self._send(ev.CreateResponse(instructions=instructions))
        if self.phase.phase is not Phase.THINKING:
            self.phase.set(Phase.THINKING, why)

    def _lost_turns(self) -> bool:
        """Forget the caller turns of a session that is gone (committed there, no transcript came); True if any."""
        if not self._untranscribed:
            return False
        self.emit(ev.CallerTurnLost(len(self._untranscribed), replaced=False))
        self._untranscribed.clear()
        return True

    def _summary(self, rolled_over: bool = False) -> str:
        """A short summary for a new session: recent turns and pending tool state. Never the audio history."""
        turns: list[str] = []
        for kind_, text in (("Caller", self.report.caller_transcript), ("Agent", self.report.agent_transcript)):
            turns += [f"{kind_}: {t}" for t in text[-SUMMARY_TURNS:]]
        head = "This call continues in a new session." if rolled_over else "The call was reconnected."
        lines = [f"{head} Continue naturally; do not greet the caller again."]
        if turns:
            lines += ["Recent turns:", *turns]
        if self._pending is not None:
            lines.append(f"Pending: {self._pending.action} ({self._pending.target or 'no target'}) is under way.")
        if self.report.dtmf:
            lines.append(f"Keys the caller pressed: {' '.join(self.report.dtmf)}.")
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------------ rollover
    def _maybe_rollover(self) -> None:
        """Before the service's session cap: prepare the next session in the background, swap at a turn boundary."""
        if self.max_session_s is None or self.client is None or self._ending:
            return
        age = self._clock() - self._session_opened_at
        margin = min(ROLLOVER_MARGIN_S, 0.3 * self.max_session_s)
        if self._rollover_task is None and self._next_client is None and age >= self.max_session_s - margin:
            self._rollover_task = asyncio.create_task(self._prepare_rollover(), name=f"rollover-{self.leg.call_id}")
        at_boundary = (
            self.phase.phase is Phase.LISTENING
            and self.response_id is None
            and self.playout.idle
            and self._pending is None
            and not self._caller_speaking  # the caller's audio so far is in the old session's input buffer
        )
        if self._next_client is not None and at_boundary:
            self._swap_session("rollover at a turn boundary")

    async def _prepare_rollover(self) -> None:
        try:
            client = await asyncio.wait_for(self._open_session(), 10.0)
        except (TimeoutError, ConnectError) as exc:
            self.emit(ev.RolloverFailed(str(exc) or "timeout"))
            self._session_opened_at = self._clock()  # try again one margin later; recovery covers the cap
            return
        finally:
            self._rollover_task = None
        client.send(ev.AddText(self._summary(rolled_over=True), ev.Role.SYSTEM))
        self._next_client = client
        self.emit(ev.RolloverReady())

    def _swap_session(self, why: str, old_alive: bool = True) -> None:
        old, self.client, self._next_client = self.client, self._next_client, None
        self._stop_pump(old)
        self._start_pump()
        self.response_id = None
        self.report.rollovers += 1
        self.emit(ev.RolledOver(why))
        if old is not None:
            taken: set[str] = set()
            if old_alive:  # its turns' transcripts may still come (a closed one's are lost: see _answer_again)
                taken, self._untranscribed = self._untranscribed, set()
            task = asyncio.create_task(self._retire(old, taken), name=f"retire-{self.leg.call_id}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: RealtimeClient, taken: set[str]) -> None:
        """Close a replaced session once the transcripts of the caller turns it took along have come (the service
        transcribes after the commit, often after the answer has played), or after :data:`RETIRE_DRAIN_S`. Those
        transcripts join the call's inbox; nothing else the old session says is used."""
        if taken:
            drained = asyncio.Event()

            def keep(event: ev.Event) -> None:
                if isinstance(event, ev.CallerTranscript | ev.CallerTranscriptFailed) and event.item_id in taken:
                    if not isinstance(event, ev.CallerTranscript) or event.final:
                        taken.discard(event.item_id)
                    self.inbox.put(event)
                elif isinstance(event, ev.Closed):
                    drained.set()
                if not taken:
                    drained.set()

            old.deliver_to(keep)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(drained.wait(), RETIRE_DRAIN_S)
            finally:  # also when the call ends first (cancelled): the socket is closed all the same
                old.deliver_to(None)
                with contextlib.suppress(Exception):
                    await old.close()
            if taken:
                self.emit(ev.CallerTurnLost(len(taken), replaced=True))
            return
        with contextlib.suppress(Exception):
            await old.close()

    async def _recover(self, cls: ev.ErrorClass | None, retryable: bool, waiting: bool = False) -> None:
        """Open a fresh session with the instructions and a short summary; the caller keeps hearing queued audio.
        ``waiting``: the caller's turn was committed in the lost session and its answer had not started."""
        t_lost = self._clock()
        old = self.client
        self.client = None
        if old is not None:
            self._stop_pump(old)
            with contextlib.suppress(Exception):
                await old.close()
        interrupted = self.response_id is not None and self._response_had_audio  # cut, not just asked for
        waiting = waiting or self.response_id is not None
        self.response_id = None
        if self.report.reconnects >= self.max_reconnects:
            self.emit(ev.RecoveryFailed(self.report.reconnects))
            self.leg.hangup()
            self._end("realtime unavailable", outcome="failed")
            return
        refused = old.credential_fingerprint if old is not None else None
        for attempt, delay in enumerate(delays(self.retry, self._rng)):
            # A transport blip reconnects with the same credential; an auth or session failure gets a fresh one.
            step = next_step(cls or ev.ErrorClass.NETWORK, retryable, attempt, self.retry)
            if step is Step.GIVE_UP:
                break
            if step is Step.REFRESH and self.credentials is not None:
                self.credentials.invalidate(refused)
            if attempt:
                await asyncio.sleep(delay)
            try:
                self.client = await asyncio.wait_for(self._open_session(), 10.0)
                break
            except ConnectError as exc:
                cls, retryable, refused = exc.error_class, exc.retryable, None
            except TimeoutError:
                cls, retryable, refused = ev.ErrorClass.NETWORK, True, None
            self.emit(ev.ReconnectFailed(attempt, str(cls), str(step)))
        if self.client is None:
            self.emit(ev.RecoveryFailed(None))
            self.leg.hangup()
            self._end("realtime unavailable", outcome="failed")
            return
        self.report.reconnects += 1
        self.emit(ev.Recovered(self.report.reconnects))
        self._start_pump()
        if self.report.caller_transcript or self.report.agent_transcript or self._pending or self.report.dtmf:
            self._send(ev.AddText(self._summary(), ev.Role.SYSTEM))
        self._latency("recovery_gap", (self._clock() - t_lost) * 1000)
        if interrupted or waiting or self._greeting_owed():
            # No dead air: the greeting or the answer the caller was waiting for was cut off with the socket, or
            # never began.
            self._answer_again(interrupted, "answer again after recovery")
        else:
            self._lost_turns()  # answered already: only their transcripts are missing
            self.phase.set(Phase.LISTENING, "session recovered")
