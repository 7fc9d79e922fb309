"""``--via direct``: the real call session, a virtual phone and the emulator in one process, in virtual time.

::

    script audio ──20 ms frames──► VirtualLeg.on_frame ──► CallSession ──AppendAudio──► InMemoryRealtime
    what the caller hears ◄── outbound.pop_frame() ◄── playout ◄── AudioChunk ◄── decode ◄── EmulatorSession

Nothing is mocked between the call session and the wire: every command goes through
``RealtimeProtocol(dialect).encode`` to wire JSON, the emulator (:class:`~bridge.emulator.session.EmulatorSession`,
sans I/O) validates and answers it in that dialect's shapes, and every server frame comes back through
``RealtimeProtocol(dialect).decode``. Only the sockets are gone, and time is virtual (``bridge.replay.virtual``):
a call of a minute replays in a fraction of a second, and the same script always gives the same report.

The virtual phone (:class:`VirtualLeg`) is the caller: it plays each turn's audio, waits for the agent as the
script says (judged by what it *hears*: the frames it pulls from the playout every 20 ms), barges in, presses
keys (``bridge.events.Dtmf``), hangs up (``CallerHungUp``), and answers the bridge's REFER with NOTIFY progress
(``TransferProgress``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from bridge import events as ev
from bridge.audio import level
from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS, FrameSink, FrameSource, StreamKernel
from bridge.audio.line import EchoingLine, LineEcho
from bridge.call.leg import PhoneLeg
from bridge.call.recorder import consent_greeting
from bridge.call.report import CallReport
from bridge.call.session import CallOptions, CallSession, Listener
from bridge.dialplan import Dialplan
from bridge.emulator.annotations import Annotations
from bridge.emulator.faults import Settings as EmulatorSettings
from bridge.emulator.live import LiveSession
from bridge.emulator.session import Abort, Action, Close, EmulatorSession, Send, SendRaw
from bridge.errors import ConnectError, classify_close, classify_http_status
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import DIALECTS, Dialect, LiveService
from bridge.realtime.protocol import RealtimeProtocol
from bridge.replay.compare import DialectRun, ScriptResult, check_expectations, judge, run_config, token
from bridge.replay.emulation import EmulatorSets
from bridge.replay.orchestrator import ScriptedOrchestrator
from bridge.replay.script import CallScript, Turn
from bridge.replay.virtual import VirtualTimeLoop

log = logging.getLogger("bridge.replay")

FRAME_S: Final = FRAME_MS / 1000.0
SILENCE: Final = bytes(BYTES_PER_FRAME_PCM16)
VOICED_DBFS: Final = -50.0  # a heard frame louder than this (RMS) is agent audio
UTTERANCE_GAP_MS: Final = 200  # shorter silences do not end an agent utterance
SPAN_GAP_MS: Final = 60  # agent audio spans closer than this are drawn as one
HANGUP_GRACE_S: Final = 30.0  # after max_duration_s the session must have ended by this much later
# The phone's 20 ms media clock runs this far behind the session's own 20 ms ticker (both start at the answer). As in
# a real call the two clocks are not in phase, and in virtual time this keeps their ticks from ever being due at the
# same instant, where float rounding would decide which runs first.
MEDIA_PHASE_S: Final = 0.005
MEMORY_URL: Final = "memory://emulator/v1"  # names the far end in logs; nothing connects to it
CAPTURE: Final = "capture"  # the latency segment measured on this process's own clock (bridge.metrics.SEGMENTS)


def frame_dbfs(frame: bytes) -> float:
    return -120.0 if frame == SILENCE else level.dbfs(level.rms(np.frombuffer(frame, dtype="<i2")), level.QUIET)


# --------------------------------------------------------------------------------------------------------------
# The Realtime connection, in memory


class InMemoryRealtime(RealtimeClient):
    """A :class:`~bridge.realtime.client.RealtimeClient` whose far end is a sans-I/O emulator session, not a socket.

    ``send`` encodes with the bridge's protocol core, the emulator answers at once (in virtual time), and every
    server event is decoded by the same core into ``bridge.events``. ``trace`` gets every decoded event. Everything
    else the call session reads of a client (``closed``, ``protocol``, ``last_send_latency_s``, ...) is inherited,
    so the session cannot tell the difference.
    """

    def __init__(
        self,
        dialect: Dialect,
        emulator: EmulatorSession | LiveSession,
        *,
        trace: Callable[[ev.Event], None] | None = None,
    ) -> None:
        model = emulator.state.model if isinstance(emulator, LiveSession) else emulator.view.model
        super().__init__(dialect, MEMORY_URL, "in-memory", model=model)
        self.emulator = emulator
        self._trace = trace
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def connect(self) -> None:
        self.credential_fingerprint = "in-memory"
        self._perform(self.emulator.open())
        self._arm()

    def send(self, command: ev.Command) -> None:
        if self.closed is not None:
            return
        now = self._loop().time()
        for text in self.protocol.encode(command):
            self._perform(self.emulator.receive(text, now))
            if self.closed is not None:
                break
        self._arm()

    def _put(self, events: Sequence[ev.Event]) -> None:
        for event in events:
            if self._trace is not None:
                self._trace(event)
            self._emit(event)

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if self.closed is not None:
                return
            if isinstance(action, Send):
                self._put(self.protocol.decode(orjson.dumps(action.event)))
            elif isinstance(action, SendRaw):
                self._put(self.protocol.decode(action.text))
            elif isinstance(action, Close):
                cls, retryable = classify_close(action.code)
                self._finish(ev.Closed(cls, action.code, action.reason or "closed", retryable))
            elif isinstance(action, Abort):
                # As the socket client sees an aborted TCP connection: no close frame, code 1006 / None.
                cls, retryable = classify_close(None)
                self._finish(ev.Closed(cls, None, "connection lost", retryable))

    def _finish(self, closed: ev.Closed) -> None:
        self.closed = closed
        self._put((closed,))
        self._disarm()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None

    def _arm(self) -> None:
        if self.closed is not None:
            return
        deadline = self.emulator.next_deadline()
        if deadline == self._timer_at:
            return
        self._disarm()
        if deadline is not None:
            self._timer_at = deadline
            self._timer = self._loop().call_at(deadline, self._due, deadline)

    def _due(self, deadline: float) -> None:
        self._timer, self._timer_at = None, None
        if self.closed is None:
            # max(): the loop may wake a hair before the deadline (float rounding of the virtual clock)
            self._perform(self.emulator.advance(max(self._loop().time(), deadline)))
            self._arm()

    async def close(self, drain_timeout_s: float = 1.0) -> None:
        closing = self.dialect.handshake.closing  # Live: session.close, answered by session.closed
        if closing is not None and self.closed is None:
            self._perform(
                self.emulator.receive(
                    orjson.dumps({"type": self.dialect.client_events[closing]}).decode(), self._loop().time()
                )
            )
        if self.closed is None:
            self.closed = ev.Closed(None, 1000, "closed by bridge", retryable=False)
            self._emit(self.closed)
        self._disarm()


# --------------------------------------------------------------------------------------------------------------
# The caller


@dataclass
class CallerLog:
    """What the virtual caller did and heard, in ms from ``t0``."""

    t0: float
    caller_spans: list[tuple[float, float, str]] = field(default_factory=list)
    agent_spans: list[tuple[float, float]] = field(default_factory=list)
    reply_gaps_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    turns_done: int = 0
    transfers: list[str] = field(default_factory=list)
    sent_dtmf: list[str] = field(default_factory=list)
    rejected: tuple[int, str] | None = None
    transferred: bool = False  # a final 2xx NOTIFY was delivered
    ended_by: str = ""  # caller | agent | transfer


class VirtualLeg:
    """A :class:`~bridge.call.leg.PhoneLeg` with a scripted caller on the other end (see the module docstring).

    The 20 ms media tick runs as a task on the loop: pull one frame from the bridge's outbound source (what the
    caller hears), advance the script, push one caller frame into the bridge (``on_frame``).
    """

    def __init__(
        self,
        script: CallScript,
        clock: Callable[[], float],
        *,
        call_id: str = "replay-call",
    ) -> None:
        self.call_id = call_id
        self.caller = script.model.caller
        self.called = script.called
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.script = script
        self.clock = clock
        self.log = CallerLog(t0=clock())
        self.answered_at: float | None = None
        self.local_hangup = False
        self._outbound: FrameSource | None = None
        self._on_frame: FrameSink | None = None
        self._media: asyncio.Task[None] | None = None
        self._audio = script.caller_audio
        line = script.model.line
        # the caller's line returns what the caller hears (the script's ``line``)
        self._line = None if line is None else EchoingLine(LineEcho(line.echo_db, line.echo_delay_ms, line.noise_dbfs))
        # caller state
        self._turn = 0
        self._stage = "wait"  # wait -> pause -> act -> (next turn)
        self._stage_since = 0.0
        self._speech: list[bytes] = []
        self._speech_pos = 0
        self._speech_started = 0.0
        self._dtmf_queue: list[tuple[float, str]] = []
        self._awaiting_reply_since: float | None = None  # end of the last caller speech, until the agent is heard
        # what the caller hears
        self._last_voiced: float | None = None
        self._utter_start = 0.0
        self._heard_since_wait = False
        self._span_start: float | None = None
        self._span_end = 0.0

    def _ms(self, t: float) -> float:
        return round((t - self.log.t0) * 1000.0, 1)

    # -- PhoneLeg --------------------------------------------------------------------------------------------
    def ringing(self) -> None:
        pass

    def answer(self) -> None:
        if self.answered_at is None:
            self.answered_at = self.clock()

    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None:
        self.log.rejected = (code, reason or "")
        self._disconnect(local=True)

    def hangup(self, reason: str | None = None) -> None:
        self._disconnect(local=True)

    def transfer(self, uri: str) -> None:
        """The caller's phone follows the REFER (RFC 3515): NOTIFY 100 Trying, then the final status."""
        self.log.transfers.append(uri)
        spec = self.script.model.transfer
        loop = asyncio.get_running_loop()
        final = ev.TransferProgress(spec.status, "OK" if spec.status < 300 else "Failed", final=True)
        loop.call_later(spec.delay_ms / 3000.0, self.events.put_nowait, ev.TransferProgress(100, "Trying", False))
        loop.call_later(spec.delay_ms / 1000.0, self._notify_final, final)

    def _notify_final(self, progress: ev.TransferProgress) -> None:
        self.log.transferred = 200 <= progress.status_code < 300
        self.events.put_nowait(progress)

    def send_dtmf(self, digits: str) -> None:
        self.log.sent_dtmf.append(digits)

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        self._outbound, self._on_frame = outbound, on_frame
        if self._media is None and not self.disconnected.is_set():
            self._stage_since = self.clock()
            self._media = asyncio.create_task(self._run_media(), name=f"media-{self.call_id}")

    def uplink_offload(self, upsampler: StreamKernel) -> None:
        return None  # the virtual phone hands frames over on the loop, in virtual time

    # -- the media tick ----------------------------------------------------------------------------------------
    def _disconnect(self, *, local: bool) -> None:
        if self.disconnected.is_set():
            return
        self.local_hangup = local
        self.log.ended_by = ("transfer" if self.log.transferred else "agent") if local else "caller"
        now = self.clock()
        self._close_span(now)
        if self._speech and self._speech_pos < len(self._speech):
            self.log.caller_spans.append((self._ms(self._speech_started), self._ms(now), self._speech_label()))
            self._speech = []
        # Like the SIP gateway: whoever hung up, the leg reports the end of the call once, last.
        self.events.put_nowait(ev.CallerHungUp(200, "" if not local else "local hangup", local=local))
        self.disconnected.set()

    async def _run_media(self) -> None:
        try:
            await self._media_ticks()
        except Exception as exc:  # a broken tick ends the call (as a dead phone line would), reported
            log.exception("replay %s: the virtual phone failed", self.call_id)
            self.log.failures.append(f"the virtual phone raised {type(exc).__name__}: {exc}")
            self._disconnect(local=False)

    async def _media_ticks(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(MEDIA_PHASE_S)
        start = loop.time()
        limit = self.script.model.max_duration_s
        n = 0
        while not self.disconnected.is_set():
            now = self.clock()
            heard = self._outbound.pop_frame() if self._outbound is not None else SILENCE
            self._hear(heard, now)
            if now - start >= limit:
                self.log.failures.append(f"call still up after max_duration_s={limit:g}: the caller hung up")
                self._caller_hangup(now)
                break
            frame = self._step(now)
            if self.disconnected.is_set():
                break
            if self._line is not None:
                frame = self._line.step(heard, frame)
            if self._on_frame is not None:
                self._on_frame(frame, time.monotonic())
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_S - loop.time()))

    def _hear(self, frame: bytes, now: float) -> None:
        if frame_dbfs(frame) <= VOICED_DBFS:
            return
        if self._last_voiced is None or (now - self._last_voiced) * 1000 > UTTERANCE_GAP_MS:
            self._utter_start = now
        self._last_voiced = now
        self._heard_since_wait = True
        if self._awaiting_reply_since is not None:
            self.log.reply_gaps_ms.append(round((now - self._awaiting_reply_since) * 1000.0, 1))
            self._awaiting_reply_since = None
        if self._span_start is None or (now - self._span_end) * 1000 > SPAN_GAP_MS:
            self._close_span(now)
            self._span_start = now
        self._span_end = now + FRAME_S

    def _close_span(self, now: float) -> None:
        if self._span_start is not None:
            self.log.agent_spans.append((self._ms(self._span_start), self._ms(self._span_end)))
            self._span_start = None

    def _agent_voiced(self, now: float) -> bool:
        return self._last_voiced is not None and now - self._last_voiced < FRAME_S / 2

    # -- the script --------------------------------------------------------------------------------------------
    @property
    def turn(self) -> Turn | None:
        turns = self.script.turns
        return turns[self._turn] if self._turn < len(turns) else None

    def _speech_label(self) -> str:
        turn = self.turn
        return f"turn {self._turn}: {turn.hears or turn.say}" if turn is not None else "speech"

    def _wait_met(self, turn: Turn, now: float) -> bool:
        if turn.wait == "none":
            return True
        if turn.wait == "agent_start":
            if not self._agent_voiced(now):
                return False
            return (
                turn.barge_in_after_ms is None or (now - self._utter_start) * 1000 + FRAME_MS >= turn.barge_in_after_ms
            )
        # agent_done: the agent was heard since the wait began, then settle_ms of silence
        quiet = self._last_voiced is None or (now - self._last_voiced) * 1000 >= self.script.model.settle_ms
        return self._heard_since_wait and quiet

    def _enter(self, stage: str, now: float) -> None:
        self._stage, self._stage_since = stage, now

    def _step(self, now: float) -> bytes:
        """Advance the script by one tick; return the caller's frame for this tick."""
        while True:
            turn = self.turn
            if turn is None:
                return SILENCE
            if self._stage == "wait":
                if self._wait_met(turn, now):
                    self._enter("pause", now)
                elif (now - self._stage_since) * 1000 >= turn.timeout_ms:
                    what = f"barge_in_after_ms={turn.barge_in_after_ms}" if turn.barge_in_after_ms else turn.wait
                    self.log.failures.append(f"turns[{self._turn}].wait {what}: not met within {turn.timeout_ms} ms")
                    self._enter("pause", now)
                else:
                    return SILENCE
            if self._stage == "pause":
                if (now - self._stage_since) * 1000 + 1e-6 < turn.pause_ms:
                    return SILENCE
                self._begin_act(turn, now)
            frame = self._act(turn, now)
            if frame is not None:
                return frame
            # the turn is finished: the next one starts waiting at once, in this very tick
            self._turn += 1
            self.log.turns_done = self._turn
            self._heard_since_wait = self._agent_voiced(now)
            self._enter("wait", now)
            if self.disconnected.is_set():
                return SILENCE

    def _begin_act(self, turn: Turn, now: float) -> None:
        self._enter("act", now)
        audio = self._audio.get(self._turn, b"")
        self._speech = [
            audio[i : i + BYTES_PER_FRAME_PCM16].ljust(BYTES_PER_FRAME_PCM16, b"\0")
            for i in range(0, len(audio), BYTES_PER_FRAME_PCM16)
        ]
        self._speech_pos = 0
        self._speech_started = now
        gap = turn.dtmf_gap_ms / 1000.0
        self._dtmf_queue = [(now + i * gap, d) for i, d in enumerate(turn.dtmf or "")]

    def _act(self, turn: Turn, now: float) -> bytes | None:
        """This tick's frame while the turn acts; None once it is done (then hang up if it says so)."""
        while self._dtmf_queue and self._dtmf_queue[0][0] <= now + 1e-9:
            _, digit = self._dtmf_queue.pop(0)
            self.events.put_nowait(ev.Dtmf(digit))
            self.log.caller_spans.append((self._ms(now), self._ms(now) + 100, f"DTMF {digit}"))
        if self._speech_pos < len(self._speech):
            frame = self._speech[self._speech_pos]
            self._speech_pos += 1
            if self._speech_pos == len(self._speech):
                end = now + FRAME_S
                self.log.caller_spans.append((self._ms(self._speech_started), self._ms(end), self._speech_label()))
                self._awaiting_reply_since = end
            return frame
        if self._dtmf_queue:
            return SILENCE
        if turn.hangup:
            self._caller_hangup(now)
        return None

    def _caller_hangup(self, now: float) -> None:
        self.log.caller_spans.append((self._ms(now), self._ms(now), "hangup"))
        self._awaiting_reply_since = None
        self._disconnect(local=False)

    async def stop(self) -> None:
        now = self.clock()
        self._close_span(now)
        if self._media is not None:
            self._media.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._media


# --------------------------------------------------------------------------------------------------------------
# Running one script in one dialect


LegWrapper = Callable[[PhoneLeg], PhoneLeg]
Tracer = Callable[[ev.Event], None]
# (bridge dialect, dialplan, tracer) -> the session's connector; None: the in-memory emulator
ConnectorFactory = Callable[[Dialect, Dialplan, Tracer], Callable[[], Awaitable[Any]]]


class TracingProtocol(RealtimeProtocol):
    """The protocol core, reporting every decoded event (used around a real socket client)."""

    def __init__(self, dialect: Dialect, trace: Tracer) -> None:
        super().__init__(dialect)
        self._trace = trace

    def decode(self, text: str | bytes | bytearray | memoryview) -> Sequence[ev.Event]:
        events = super().decode(text)
        for event in events:
            self._trace(event)
        return events


def openai_connector(base_url: str, credential: str) -> ConnectorFactory:
    """Connect the session to a real Realtime service (``--target openai``) with the socket client."""
    from bridge.realtime.client import RealtimeClient

    def factory(dialect: Dialect, plan: Dialplan, trace: Tracer) -> Callable[[], Awaitable[Any]]:
        async def connect() -> RealtimeClient:
            client = RealtimeClient(dialect, base_url, credential, model=plan.profile.model)
            client.protocol = TracingProtocol(dialect, trace)
            await client.connect()
            return client

        return connect

    return factory


@dataclass
class DirectOptions:
    """Knobs for tests and tools. ``bridge_dialects`` replaces the bridge side's dialect tables (the emulator
    always speaks the real ones): that is how a test breaks one event mapping on purpose."""

    bridge_dialects: Mapping[str, Dialect] = field(default_factory=lambda: dict(DIALECTS))
    wrap_leg: LegWrapper | None = None  # another PhoneLeg proxy around the virtual phone
    record_dir: Path | None = None  # record each call (bridge.call.recorder) into record_dir/<script>-<dialect>
    listeners: list[Listener] = field(default_factory=list)
    emulator_overrides: Mapping[str, Any] = field(default_factory=dict)
    emulator_sets: EmulatorSets = field(default_factory=EmulatorSets)  # --emulator-set, per model, variant, dialect
    connector: ConnectorFactory | None = None  # a real service instead of the in-memory emulator
    target: str = "emulator"

    def emulator_more(self, dialect: str, model: str, variant: str) -> dict[str, Any]:
        """What the options set over a script's emulator settings for a run in ``dialect`` on ``model``."""
        return {**self.emulator_sets.for_run(dialect, model, variant), **self.emulator_overrides}


async def replay_call(
    script: CallScript,
    dialect: str,
    options: DirectOptions | None = None,
    *,
    plan: Dialplan | None = None,
    variant: str = "",
) -> DialectRun:
    """One call on the running loop (virtual time if the loop is a :class:`VirtualTimeLoop`), on the script's plan
    for ``dialect`` or on ``plan`` (a rollout variant's, named ``variant``)."""
    opts = options or DirectOptions()
    loop = asyncio.get_running_loop()
    clock = loop.time
    wall0 = time.perf_counter()
    bridge_dialect = opts.bridge_dialects[dialect]
    plan = plan or script.plan(dialect)
    plan = plan.model_copy(update={"greeting": consent_greeting(plan)})  # a recorded line's prompt, as a worker's
    name = variant or dialect
    events: list[tuple[float, str]] = []
    leg = VirtualLeg(script, clock, call_id=f"replay-{script.name}-{name}")
    t0 = leg.log.t0

    def trace(event: ev.Event) -> None:
        events.append((round((clock() - t0) * 1000.0, 1), token(event)))

    if opts.connector is not None:
        connector = opts.connector(bridge_dialect, plan, trace)
    else:
        server = DIALECTS[dialect]
        connector = _EmulatorConnector(script, plan, (server, bridge_dialect), variant, opts, clock, trace).connect
    phone: PhoneLeg = opts.wrap_leg(leg) if opts.wrap_leg is not None else leg
    listeners = list(opts.listeners)
    if opts.record_dir is not None:
        phone = _recording(phone, listeners, plan, opts.record_dir / f"{script.name}-{name}", dialect, clock)
    # an orchestrated plan: the script's answers, served in order (bridge/replay/orchestrator.py)
    orchestrator = ScriptedOrchestrator(script.model.orchestrator.answers) if script.model.orchestrator else None
    ask = orchestrator.ask if orchestrator is not None else None
    call = CallOptions(listeners=listeners, clock=clock, orchestrator=ask, variant=variant or None)
    session = CallSession(phone, plan, bridge_dialect, connector, call)
    model = plan.profile.model or DIALECTS[dialect].default_model
    run = DialectRun(script.name, dialect, variant, model, via="direct", target=opts.target)
    emulator = script.emulator_settings(0, dialect, model, variant, opts.emulator_more(dialect, model, variant))
    run.config = run_config(plan, dialect, model, emulator)
    try:
        report = await asyncio.wait_for(session.run(), script.model.max_duration_s + HANGUP_GRACE_S)
    except Exception as exc:  # a crash of the session is a result to report, not a crash of the replay
        log.exception("replay %s (%s): the call session raised", script.name, name)
        report = session.report
        run.runner_failures.append(f"the call session raised {type(exc).__name__}: {exc}")
    finally:
        await leg.stop()
    if isinstance(loop, VirtualTimeLoop):
        _drop_capture_latency(report)
    run.report = report.to_json()
    run.events = events
    _take_the_phones_log(run, leg.log, orchestrator, len(script.turns))
    run.duration_ms = round((clock() - t0) * 1000.0, 1)
    run.wall_s = round(time.perf_counter() - wall0, 4)
    run.checks = check_expectations(script.expect(dialect), run)
    return run


class _EmulatorConnector:
    """Each (re)connection of a replayed call: a fresh in-memory emulator session in the server's dialect, with the
    script's settings for that connection, on one queue of annotations (the conversation goes on)."""

    def __init__(
        self,
        script: CallScript,
        plan: Dialplan,
        dialects: tuple[Dialect, Dialect],  # the server's, the bridge's
        variant: str,
        opts: DirectOptions,
        clock: Callable[[], float],
        trace: Callable[[ev.Event], None],
    ) -> None:
        self.script, self.plan, self.opts, self.clock, self.trace = script, plan, opts, clock, trace
        self.server_dialect, self.bridge_dialect = dialects
        self.variant = variant
        self.annotations: Annotations = script.annotations()
        self.connections = 0

    async def connect(self) -> InMemoryRealtime:
        script, server_dialect = self.script, self.server_dialect
        model = self.plan.profile.model or server_dialect.default_model
        more = self.opts.emulator_more(server_dialect.name, model, self.variant)
        # the script's, for this dialect, model and variant, and the options' over them
        own = script.emulator_settings(self.connections, server_dialect.name, model, self.variant, more)
        settings = EmulatorSettings().with_values(own)
        refused = settings.faults.refusal_status(model, random.Random(settings.seed).random())
        if refused is not None:  # the refuse_models fault: the upgrade fails, as the client would see it
            self.connections += 1
            cls, retryable = classify_http_status(refused)
            raise ConnectError(cls, f"handshake refused: HTTP {refused}", retryable=retryable, code=str(refused))
        if self.connections and script.reconnect_greeting() is not None:
            self.annotations.extend({"greeting": script.reconnect_greeting()})
        self.connections += 1
        session_type = LiveSession if isinstance(server_dialect.service, LiveService) else EmulatorSession
        emulator = session_type(
            server_dialect,
            settings,
            model=model,
            now=self.clock(),
            wall=1_700_000_000.0,  # a fixed wall clock: expires_at in session events is reproducible
            annotations=self.annotations,
        )
        client = InMemoryRealtime(self.bridge_dialect, emulator, trace=self.trace)
        await client.connect()
        return client


def _recording(
    phone: PhoneLeg, listeners: list[Listener], plan: Dialplan, path: Path, dialect: str, clock: Callable[[], float]
) -> PhoneLeg:
    """``phone`` wrapped in a recorder writing to ``path``; its listener joins ``listeners``."""
    from bridge.call.recorder import RecordingLeg, recorded_plan

    meta = {"dialplan": recorded_plan(plan.model_dump(mode="json", exclude={"source_file"})), "dialect": dialect}
    recording = RecordingLeg(phone, path, True, clock=clock, meta=meta, real_time=False)  # virtual time: no drops
    listeners.append(recording.listener)
    return recording


def _drop_capture_latency(report: CallReport) -> None:
    """Leave out the "capture" latency: it is measured with time.monotonic() around our own synchronous send (CPU
    time of this process, different on every run), meaningless in virtual time, and it would make the report vary."""
    report.latency_ms.pop(CAPTURE, None)
    report.reports = [(t, r) for t, r in report.reports if not (isinstance(r, ev.Latency) and r.segment == CAPTURE)]


def _take_the_phones_log(
    run: DialectRun, log: CallerLog, orchestrator: ScriptedOrchestrator | None, turns_total: int
) -> None:
    """What the virtual phone heard and did, and what the scripted orchestrator was left with, into ``run``."""
    run.caller_spans = log.caller_spans
    run.agent_spans = log.agent_spans
    run.reply_gaps_ms = log.reply_gaps_ms
    run.runner_failures = [*log.failures, *run.runner_failures]
    if orchestrator is not None:
        run.runner_failures += orchestrator.finish()
    run.turns_done, run.turns_total = log.turns_done, turns_total
    run.ended_by = log.ended_by


def run_direct(script: CallScript, dialect: str, options: DirectOptions | None = None) -> DialectRun:
    """One call in a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(replay_call(script, dialect, options))


Progress = Callable[[str, str, "DialectRun | None"], None]  # (script, dialect, run or None when starting)


def replay_direct(
    scripts: list[CallScript],
    dialects: list[str],
    *,
    options: DirectOptions | None = None,
    progress: Progress | None = None,
    virtual: bool = True,
    tolerance_ms: float | None = None,
) -> list[ScriptResult]:
    """Every script in every dialect, one call at a time, then each script's verdict (timing figures closer than
    ``tolerance_ms`` alike, where a script does not say).

    ``virtual=False`` runs in real time on a normal event loop (``--target openai``: a real service cannot be
    replayed faster than it answers).
    """
    results: list[ScriptResult] = []
    for script in scripts:
        runs: dict[str, DialectRun] = {}
        for dialect in dialects:
            if progress is not None:
                progress(script.name, dialect, None)
            runs[dialect] = in_fresh_loop(replay_call(script, dialect, options), virtual)
            if progress is not None:
                progress(script.name, dialect, runs[dialect])
        results.append(judge(script, runs, tolerance_ms=tolerance_ms))
    return results


def in_fresh_loop(call: Coroutine[Any, Any, DialectRun], virtual: bool) -> DialectRun:
    """Run one replayed call in a loop of its own: every call starts at virtual time 0, so its float arithmetic (and
    with it the order of timers due at the same instant) does not depend on the calls replayed before it."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop if virtual else None) as runner:
        return runner.run(call)
