"""The echo guard at work on one call: the agent's own audio coming back down the caller's line is not a barge-in.

The guard (:mod:`bridge.audio.echo`, in C where it builds: :mod:`bridge.audio.echo_native`) gets every frame the
caller is sent (a tee on the playout, or, on a native media port with the C guard, the port itself as each frame
goes out: :meth:`HeldSource.c_reference`) and every frame that comes back, before the model hears it: on the loop, or,
where a native port's uplink sends the caller's audio from the media clock thread, there, in C (:meth:`on_clock`;
while a paused agent's barge-in is judged, the frames come to the loop). Then:

* **tempering** (``echo_guard.temper``): what goes to the model while the agent speaks is the residual, with the
  frames the echo path explains attenuated: a service's VAD (GPT-Live's, or Realtime's with ``interrupt_response``)
  does not hear the echo in the first place.
* **judging** a speech start over the agent, where the bridge decides (Realtime with ``interrupt_response: false``,
  or the bridge's own voice detection): explained by the echo path, it is ``rejected`` and the agent goes on
  (the service's input buffer, which holds only that echo, is cleared: no turn is committed of it).
  Otherwise the agent's audio is **paused** (the caller hears it stop at once) and the barge-in is ``taken``
  (flush, and where the dialect can, cancel and truncate to what was heard) once the caller has spoken for
  ``confirm_ms`` of the window; if no words follow within ``resume_ms``, the agent is ``resumed`` where it was
  paused (a cough, a door).
* **the onset**: a voice detection hears the tempered frames, in which a caller's first syllables under a loud
  echo may be attenuated as possible echo, and a service's reports its speech start a few hundred ms after the
  onset. Two frames in a row that the guard passes whole and loud while the agent speaks get the window judged at
  once (:meth:`_onset`; on the media clock thread in C, the loop told at its next drain): not echo, the agent is
  paused there and then. The bridge's own voice detection's window confirms it as above; where the service's
  decides (with ``interrupt_response`` or without), its speech start confirms it (with it, the response is cut
  already: taken at once; without, once the caller spoke ``confirm_ms``), and none within ``resume_ms`` resumes
  the agent and spares the rest of that answer further onsets (:meth:`_watch_onsets`).
* **withholding**, where the model stops itself when it hears the caller (GPT-Live: no cancel, one continuous
  stream each way): while the agent is paused the model hears silence in place of the caller (:meth:`uplink`), so
  a sound that is no barge-in never reaches it and the model never stops for it; its stream goes on into the held
  playout, and the agent resumes where it was (had its audio ended meanwhile, the model, silent, hears what was
  kept: the caller may have begun their turn). Confirmed, the withheld frames go on to the model in order, one per
  frame the caller sends (the stream keeps its pace: never a burst), and the lag is taken back in the caller's
  quiet frames; the model hears every word and stops itself. The bridge's own voice detection hears each frame
  before it is sent (:class:`~bridge.call.turns.CallerVoice`), so the frame that starts a voice is withheld too.

The pause is the echo axis of the call's core (:class:`bridge.call.core.Echo`: ``JUDGING`` or ``PAUSED``, its rows
in ``bridge.call.core.TABLE``): the guard's verdicts fire its triggers, and :class:`EchoGuarding` carries out its
actions (hold the agent's audio, take the barge-in, resume).

Each decision is an :class:`~bridge.events.EchoJudged` report (metrics count them) and a count in the call
report's ``echo``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from bridge import events as ev
from bridge.audio.analysis import level_dbfs
from bridge.audio.echo import Guard, Verdict
from bridge.audio.echo_native import make_guard, native_echo
from bridge.audio.frames import FRAME_MS, SILENCE, FrameSink, FrameSource
from bridge.audio.playout import Downstream
from bridge.call.core import Do, Echo, EchoAction, Trigger
from bridge.call.flow import CallFlow
from bridge.call.leg import TeeSource, UplinkOffload, inner_ring, pop_block, split
from bridge.call.link import Link
from bridge.call.media import Guarded
from bridge.call.playback import Playback
from bridge.call.report import CallReport
from bridge.call.state import Phase
from bridge.dialplan import EchoGuardPlan

SPOKE = "caller spoke over the agent"
PASSED_FRAMES = 2  # frames the guard passed whole and loud in a row while the agent speaks: the window is judged
PASSED_DB = 1.0  # a tempered frame at most this much below the frame heard was passed whole
ONSET = (PASSED_FRAMES, PASSED_DB)  # _passed's rule, applied where the frames are (cbe_set_onset)


def guarded(plan: EchoGuardPlan) -> Guarded:
    """Where the guard ``plan`` asks for can hear the caller's frames (the media path follows it): the C guard
    (:func:`~bridge.audio.echo_native.make_guard` makes it where the library loads) anywhere, Python's on the loop."""
    if not plan.enabled:
        return Guarded.NO
    return Guarded.ANYWHERE if native_echo().lib is not None else Guarded.ON_LOOP


class _Told:
    """A media port's queue ahead of the wire (:class:`~bridge.audio.playout.Downstream`) that also tells the
    guard how many of the frames it took were dropped unsent (a barge-in's flush, silence taken back)."""

    def __init__(self, stage: Downstream, unsent: Callable[[int], None]) -> None:
        self._stage, self._unsent = stage, unsent

    def flush_out(self) -> int:
        dropped = self._stage.flush_out()
        self._unsent(dropped)
        return dropped

    def depth(self) -> int:
        return self._stage.depth()

    def drop_newest(self, frames: int) -> int:
        dropped = self._stage.drop_newest(frames)
        self._unsent(dropped)
        return dropped

    def top_up(self) -> None:
        self._stage.top_up()


class HeldSource(TeeSource):
    """The playout as the media port pulls it, each frame also handed to the guard; while ``held``, silence is
    sent and nothing is taken from the playout (the agent resumes exactly where it was held). A port that queues
    frames ahead of the wire (``set_downstream``) reports those it dropped unsent, and the guard forgets them: its
    reference is what was sent, frame for frame. A native port with the C guard feeds the reference itself, from
    the clock thread, with each frame as it is sent (:meth:`c_reference`): then nothing here touches the guard."""

    def __init__(self, source: FrameSource, guard: Guard) -> None:
        super().__init__(source, guard.played)
        self._guard = guard
        self._at_port = False  # the port hands the guard each frame it sends (c_reference)
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    @held.setter
    def held(self, on: bool) -> None:
        """Held: silence is sent (the native port takes it from here, not from the C ring)."""
        if on != self._held:
            self._held = on
            self.rerouted()

    def c_ring(self) -> tuple[int, int] | None:
        """The playout's C ring for the native port to pull in C while the port feeds the C guard's reference and
        nothing is held (``TeeSource``'s doc); else None: the frames come through here."""
        return inner_ring(self._source) if self._at_port and not self._held else None

    def pop_frame(self) -> bytes:
        frame = SILENCE if self.held else self._source.pop_frame()
        if not self._at_port:
            self._keep(frame)
        return frame

    def pop_frames(self, frames: int) -> bytes:
        """A beat's frames at once (the native port); the guard's reference, where the port does not feed it,
        gets them frame by frame."""
        block = SILENCE * frames if self.held else pop_block(self._source, frames)
        if not self._at_port:
            for frame in split(block):
                self._keep(frame)
        return block

    def c_reference(self, on: bool) -> tuple[int, int] | None:
        """A native media port about to send this source's frames (``on``) or done with them: the C guard's
        ``cbe_played`` and guard, for the port to hand each frame it sends (``bridge/native/cport.c``,
        "Reference"); None when the guard is not the C one (the frames are kept here, as they are taken)."""
        hook = self._guard.c_played() if on else None
        self._at_port = hook is not None
        return hook

    def skipped(self, frames: int) -> None:
        """The media port sent ``frames`` of silence of its own (its queue ran dry): the caller heard them, so the
        reference has them too, or every later frame would be compared with the wrong one."""
        for _ in range(0 if self._at_port else frames):
            self._keep(SILENCE)

    def set_downstream(self, downstream: Downstream | None) -> None:
        told = None if downstream is None else downstream if self._at_port else _Told(downstream, self._unsent)
        getattr(self._source, "set_downstream")(told)  # noqa: B009 (FrameSource declares none; the playout has it)

    def _unsent(self, frames: int) -> None:
        if not self._at_port:
            self._guard.unplayed(frames)


class EchoGuarding:
    def __init__(
        self,
        plan: EchoGuardPlan,
        playback: Playback,
        emit: Callable[[ev.Report], None],
        report: CallReport,
        service_interrupts: Callable[[], bool],
        *,
        flow: CallFlow,
        withhold: bool = False,
        link: Link | None = None,
    ) -> None:
        self.plan = plan
        self._flow = flow  # the pause is the call's echo axis (bridge.call.core.Echo); its actions are carried here
        flow.carry(EchoAction, self._carry_out)
        self._link = link  # rejected echo is cleared from the service's input buffer (input_audio_buffer.clear)
        self.guard = make_guard(
            max_delay_ms=plan.max_delay_ms,
            speech_dbfs=plan.speech_dbfs,
            erle_db=plan.erle_db,
            suppress_db=plan.suppress_db,
        )
        self._playback, self._emit, self._report = playback, emit, report
        self._service_interrupts = service_interrupts
        # the model stops itself when it hears the caller: while paused, what the caller says is kept from it
        self._withhold = withhold
        self._withholding = False
        self._kept: deque[bytes] = deque()  # withheld frames, and after a confirmed barge-in those still owed
        self._owed = 0  # of them, owed from an earlier barge-in when the agent was paused
        self._source: HeldSource | None = None
        self._take: Callable[[], None] | None = None  # while paused: how the barge-in is taken, once confirmed
        self._on_clock = False  # the caller's frames heard where the native uplink sends them (on_clock)
        self._frames = self._spoken = 0  # frames since the pause, and those the guard judged the caller's
        self._interrupt: Callable[[str, bool], None] | None = None  # the bridge's own voice detection's barge-in
        self._passes = 0  # frames passed whole and loud in a row (_passed)
        self._onset_spent: str | None = None  # the agent's item whose onset pause no voice detection confirmed
        self._took = False  # the barge-in was just taken (its resume follows in the same move)

    # -- the media ---------------------------------------------------------------------------------------------
    def media(self, outbound: FrameSource, on_frame: FrameSink) -> tuple[FrameSource, FrameSink]:
        """The leg's outbound source and caller sink, through the guard."""
        source = HeldSource(outbound, self.guard)
        temper = self.plan.temper

        def heard(pcm: bytes, t_capture: float) -> None:
            self.guard.heard(pcm)
            out = self.guard.temper(pcm) if temper else pcm
            if temper:
                self._passed(pcm, out)
            on_frame(out, t_capture)
            if self._flow.core.echo is Echo.PAUSED:
                self._window()

        self._source = source
        return source, heard

    def on_clock(self, offload: UplinkOffload) -> bool:
        """Let the leg's uplink offload send the caller's frames (from the media clock thread), the guard hearing
        and tempering each one there first (the C guard: ``NativeUplink.guard_with``), as the media path chose
        (:attr:`~bridge.call.media.MediaPath.guard_on_clock`). False: this offload cannot take the guard, and is
        refused like one the leg does not offer (the caller's frames stay on the loop)."""
        guard_with = getattr(offload, "guard_with", None)  # the native uplink's; UplinkOffload declares none
        self._on_clock = guard_with is not None and bool(guard_with(self.guard, self.plan.temper, ONSET, self._onset))
        return self._on_clock

    def _watch_onsets(self, on: bool) -> None:
        """Have the C guard tell of onsets (``on``), or not until the next answer: an answer whose onset pause no
        speech start confirmed is paused at no further one (:meth:`_onset`), and a caller talking over all of it
        must not wake the loop every 40 ms for nothing."""
        self._onset_spent = None if on else self._playback.audio_item
        self._playback.on_item = None if on else (lambda: self._watch_onsets(True))
        if self._on_clock:
            self.guard.c_uplink(self.plan.temper, ONSET if on else None)

    def uplink(self, send: FrameSink) -> FrameSink:
        """``send`` (the caller's frames to the model) as the guard lets them through: while a paused agent is
        judged on a dialect whose model stops itself, silence in their place (kept); once a barge-in is confirmed,
        the kept frames first, one per frame sent, a quiet one skipped while others wait (see the module doc)."""
        kept, speech_dbfs = self._kept, self.plan.speech_dbfs

        def through(pcm: bytes, t_capture: float) -> None:
            if self._withholding:
                kept.append(pcm)
                send(bytes(len(pcm)), t_capture)
                return
            if kept:
                kept.append(pcm)
                frame = kept.popleft()
                if kept and level_dbfs(frame) < speech_dbfs:
                    frame = kept.popleft()  # a quiet frame while others wait: the lag shrinks by one
                pcm = frame
            send(pcm, t_capture)

        return through

    # -- speech starts -----------------------------------------------------------------------------------------
    def speech_started(self, handler: Callable[[ev.SpeechStarted], None]) -> Callable[[ev.SpeechStarted], None]:
        """The service's speech start, judged first (``handler``: the call's own reaction)."""

        def judged(e: ev.SpeechStarted) -> None:
            if self._awaiting_service:  # paused at the caller's onset (_onset): this is the service's word
                self._take = lambda: handler(e)
                # it has cut the response already, or the caller has spoken long enough: taken now
                if self._service_interrupts() or self._spoken * FRAME_MS >= self.plan.confirm_ms:
                    self._confirm(self.guard.judge())
            elif self._service_interrupts() or not self._playback.busy:
                handler(e)  # the service has cut the response already, or there is nothing to cut
            elif self._judge(lambda: handler(e)):
                handler(e)
            elif self._flow.core.echo is Echo.JUDGING and self._link is not None:
                # rejected as echo: the service's buffer holds only that echo; cleared, it commits no turn of it
                self._link.send(ev.ClearAudio())
                self._link.heard_caller(False)

        return judged

    def voice(self, interrupt: Callable[[str, bool], None]) -> Callable[[str, bool], None]:
        """The bridge's own voice detection's barge-in, judged first."""

        def judged(why: str, busy: bool) -> None:
            if not busy or self._judge(lambda: interrupt(why, self._playback.busy)):
                interrupt(why, busy)

        self._interrupt = interrupt
        return judged

    def _passed(self, pcm: bytes, out: bytes) -> None:
        """A caller frame heard on the loop: after :data:`PASSED_FRAMES` in a row that the guard passed whole and
        loud while the agent speaks, the caller's onset (:meth:`_onset`). Where the media clock thread hears the
        frames (:meth:`on_clock`), the C guard applies this rule there and the loop is told (``cbe_set_onset``): the
        agent speaking as the guard's reference holds it rather than the playout, and a frame whole also where the
        held path leaves it whole (the guard knows its residual; this side sees only what went on)."""
        if not self._listening():
            self._passes = 0
            return
        level = level_dbfs(out)
        whole = level > self.plan.speech_dbfs and level >= level_dbfs(pcm) - PASSED_DB
        self._passes = self._passes + 1 if whole else 0
        if self._passes >= PASSED_FRAMES:
            self._passes = 0
            self._onset()

    def _listening(self) -> bool:
        """An onset would be a barge-in now: the model's own voice plays (not a prompt the bridge plays through
        the caller, a consent notice), nothing is judged yet, and no voice detection hears the caller already (a
        line's steady noise above its threshold: no onset to catch)."""
        heard = self._link is not None and self._link.caller_speaking
        core = self._flow.core
        return core.echo is Echo.JUDGING and core.phase is Phase.SPEAKING and self._playback.busy and not heard

    def _onset(self) -> None:
        """The caller's onset by the guard's own word: voice detections (the service's, or the bridge's over the
        tempered frames) hear a caller's first syllables under a loud echo late, as they are attenuated as possible
        echo. The window is judged at once, and the caller's voice pauses the agent (judged echo, nothing happens):
        the caller hears the agent stop before any detection has decided. With the bridge's own voice detection the
        window confirms the barge-in; where the service's decides, its speech start does (:meth:`speech_started`),
        and without one within ``resume_ms`` the agent resumes, and its answer (the item) is paused at no further
        onset: a voice the service does not take for the caller (a backchannel under its threshold, a line's
        noise) must not have the agent stop and go all answer long. Its speech starts are judged as before."""
        if not self._listening() or self._source is None or self._playback.audio_item == self._onset_spent:
            return
        verdict = self.guard.judge()
        if verdict.echo:
            return
        interrupt = self._interrupt
        self._take = None if interrupt is None else (lambda: interrupt(SPOKE, self._playback.busy))
        self._frames, self._spoken = 0, 0
        self._flow.fire(Trigger.ECHO_SUSPECTED, SPOKE)
        self._judged(ev.EchoOutcome.PAUSED, verdict)

    @property
    def _awaiting_service(self) -> bool:
        """Paused at the caller's onset where the service's voice detection decides, before its speech start."""
        return self._flow.core.echo is Echo.PAUSED and self._take is None

    def _judge(self, take: Callable[[], None]) -> bool:
        """True: take the barge-in now. False: rejected as echo, or paused (``take`` runs once confirmed)."""
        if self._flow.core.echo is Echo.PAUSED:
            return False  # paused already: the window decides
        verdict = self.guard.judge()
        if verdict.echo:
            self._judged(ev.EchoOutcome.REJECTED, verdict)
            return False
        if self._source is not None:
            self._take, self._frames, self._spoken = take, 0, 0
            self._flow.fire(Trigger.ECHO_SUSPECTED, SPOKE)
            self._judged(ev.EchoOutcome.PAUSED, verdict)
            return False
        self._judged(ev.EchoOutcome.TAKEN, verdict)
        return True

    def _window(self) -> None:
        """A caller frame while the agent is paused: enough of the caller's voice takes the barge-in; none
        within ``resume_ms`` resumes the agent."""
        self._frames += 1
        verdict = self.guard.judge()
        self._spoken += verdict.speaking
        if self._spoken * FRAME_MS >= self.plan.confirm_ms and self._take is not None:
            self._confirm(verdict)
        elif self._frames * FRAME_MS >= self.plan.resume_ms or not self._playback.busy:
            self._flow.fire(Trigger.ECHO_CLEARED, "no words over the agent")
            self._judged(ev.EchoOutcome.RESUMED, verdict)

    def _confirm(self, verdict: Verdict) -> None:
        self._judged(ev.EchoOutcome.TAKEN, verdict)
        self._flow.fire(Trigger.ECHO_CONFIRMED, SPOKE)

    def _carry_out(self, do: Do) -> None:
        match do.action:
            case EchoAction.PAUSE_AGENT:  # the caller hears silence; the playout waits where it was
                if self._source is not None:
                    self._source.held = True
                # only the model's own voice is stopped by the model: over the bridge's hold or filler it hears all
                self._withholding, self._owed = (
                    self._withhold and self._flow.core.phase is Phase.SPEAKING,
                    len(self._kept),
                )
                if self._on_clock and self._link is not None:
                    self._link.keep_on_loop(True)  # the window is judged frame by frame on the loop (_window)
            case EchoAction.TAKE_BARGE_IN:
                self._withholding = False  # the kept frames go on to the model (uplink)
                take, self._take, self._took = self._take, None, True
                if take is not None:
                    take()  # the cut flushes the playout: what the pause kept is dropped with it
            case EchoAction.RESUME_AGENT:
                if self._take is None and not self._took:  # an onset's pause no speech start confirmed
                    self._watch_onsets(False)
                self._take, self._took = None, False
                # no words while the agent speaks: the model never hears the sound. The agent's audio ended meanwhile:
                # the model no longer speaks, and hears what was kept (the caller may have begun their turn)
                drop = self._withholding and self._playback.busy
                while drop and len(self._kept) > self._owed:
                    self._kept.pop()
                self._withholding = False
                if self._source is not None:
                    self._source.held = False
                if self._on_clock and self._link is not None:
                    self._link.keep_on_loop(False)

    def _judged(self, outcome: ev.EchoOutcome, verdict: Verdict) -> None:
        self._report.echo[outcome] = self._report.echo.get(outcome, 0) + 1
        delay = verdict.path.delay_ms if verdict.path is not None else None
        self._emit(ev.EchoJudged(outcome, round(verdict.residual_dbfs, 1), delay))
