"""What the call does on each action of its table (:class:`~bridge.call.flow.Action` names them) and on each beat of
its media clock: the one place the phase table's decisions and the beat's checks touch the call's parts. It acts on
a :class:`Shell` (the session that carries the actions out: its parts, its session changes and orchestration), never
on the session's class, so the session alone depends on it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, assert_never

from bridge import events as ev
from bridge.call.changes import SessionChanges
from bridge.call.consent import ConsentPrompt
from bridge.call.flow import Action, Trigger
from bridge.call.limit import Goodbye
from bridge.call.orchestration import Orchestration
from bridge.call.outage import GOODBYE_REASON
from bridge.call.parts import CallParts
from bridge.call.recovery import answer_instructions
from bridge.call.state import Phase
from bridge.runtime.metronome import Metronome

CHECKS_S = 0.5  # the call's checks at 2 Hz between the beats that need them at once (Beat)


class Shell(Protocol):
    """What the table's actions and the beat use of the session (:class:`~bridge.call.session.CallSession`)."""

    parts: CallParts
    changes: SessionChanges
    orchestration: Orchestration | None
    consent: ConsentPrompt | None  # a recorded call's consent prompt (bridge.call.consent)
    service_cancelled: bool  # the barge-in under way: the service cancelled its response itself


def perform(call: Shell, action: Action, why: str) -> None:
    """Carry out one action of the table (:class:`~bridge.call.flow.Action` says what each does)."""
    p = call.parts
    link, sessions, limit, plan = p.audio.link, p.sessions, p.limit, p.plan
    match action:
        case Action.ASK_GREETING:
            link.send(ev.CreateResponse(instructions=plan.greeting))
        case Action.CUT_AGENT:
            p.audio.barge_in.cut(why, service_cancelled=call.service_cancelled)
            p.talk.tools.interrupted()
            if call.orchestration is not None:
                call.orchestration.interrupted(p.audio.barge_in.last_cut)
        case Action.OWE_ANSWER:
            sessions.recovery.owe_answer()
        case Action.FORGET_LOST_TURNS:
            p.talk.transcripts.forget_lost()
        case Action.SEND_SUMMARY:
            link.send(ev.AddText(call.changes.summary(), ev.Role.SYSTEM))
        case Action.ANSWER_AGAIN | Action.RESUME_ANSWER:
            lost = p.talk.transcripts.forget_lost()
            greeting = plan.greeting if call.changes.greeting_owed() else None
            cut, held = action is Action.RESUME_ANSWER, sessions.recovery.take_after_hold()
            link.send(ev.CreateResponse(instructions=answer_instructions(greeting, cut, lost, held)))
        case Action.SWAP_SESSION:
            call.changes.swap_session("rollover at a turn boundary")
        case Action.PLAY_HOLD:
            sessions.outage.play_hold()
        case Action.STOP_HOLD:
            sessions.outage.back()
        case Action.FAIL_OVER:
            call.changes.fail_over()
        case Action.SAY_GOODBYE:
            sessions.outage.say_goodbye(why)
        case Action.ASK_GOODBYE:
            link.send(ev.CreateResponse(instructions=limit.instructions))
            limit.said(Goodbye.AGENT)
        case Action.APOLOGISE:
            sessions.outage.apologise()
            limit.said(Goodbye.APOLOGY)
        case Action.HANG_UP:
            p.leg.hangup(limit.bye_reason)
            p.call.end(limit.end_reason, limit.ended_by)
        case _:
            assert_never(action)


class Beat:
    """The call's beat, a chore of its metronome: every beat, the socket's read (:meth:`Link.beat`, unless the loop's
    reader of every socket read it before the calls' beats: :mod:`bridge.realtime.readset`), the consent prompt's and
    the rebuilt turns' look, and whether any audio has started or played out; the call's checks (:func:`checks`)
    only on the beat that sees that change, on the beat after an event was handled
    (:meth:`soon`: a barge-in, a ``clear``, a response's end), and every :data:`CHECKS_S` otherwise: they find
    nothing to do on nearly every beat (their deadlines and waits are hundreds of ms and more)."""

    def __init__(self, call: Shell, period_s: float) -> None:
        self._call = call
        audio = call.parts.audio
        self._link, self._playback, self._playout = audio.link, audio.playback, audio.playout
        self._turns = call.parts.talk.turns
        busy: tuple[Callable[[int, int], int], int] | None = getattr(self._playout, "c_busy", None)
        self._busy: Callable[[int, int], int] | None = None  # the C ring's first look at idle (NativePlayout.c_busy)
        self._ring = 0
        if busy is not None:
            self._busy, self._ring = busy
        self._period = period_s
        self._every = max(1, round(CHECKS_S / period_s))  # beats between two checks at most
        self._left = 0
        self._played = self._idle = True
        self._soon = True

    def soon(self) -> None:
        """Check on the next beat: an event was handled, and what it changed may be due at once."""
        self._soon = True

    def __call__(self) -> None:
        link = self._link
        if link.needs_beat:  # not when the loop's reader read the socket already (bridge.realtime.readset)
            link.beat()
        call = self._call
        consent = call.consent
        if consent is not None and consent.playing:
            consent.beat()
        if self._turns is not None:
            self._turns.beat()
        busy = self._busy  # frames queued or an item open, in one C call: not idle, no property to ask
        played = False if busy is not None and not busy(self._ring, 0) else self._playout.idle  # a hold message too
        idle = played and self._playback.response_id is None  # Playback.idle
        self._left -= 1
        if played is not self._played or idle is not self._idle or self._soon or self._left <= 0:
            wait = checks(call, idle)
            self._played, self._idle, self._soon = played, idle, False
            self._left = self._every if wait >= CHECKS_S else max(1, math.ceil(wait / self._period))


def start_beat(call: Shell, metronome: Metronome) -> tuple[Beat, Callable[[], None]]:
    """The call's :class:`Beat` on ``metronome``, and its once-a-second work (the offload's latency samples) on the
    same beat as every other call's (:meth:`Metronome.every`); returns it and what stops both."""
    beat = Beat(call, metronome.period_s)
    call.parts.audio.link.read_with(metronome)  # the reader of every call's socket runs first on it
    stops = (metronome.add(beat), metronome.every(1.0, call.parts.audio.link.sample))

    def stop() -> None:
        for each in stops:
            each()

    return beat, stop


def checks(call: Shell, idle: bool) -> float:
    """The call's checks (see :class:`Beat` for when): the hang-up the leg did not report, the playback's latency, a
    reply played out (``idle``: no response under way and nothing left to play), and what waited for it. The timed
    checks run only once their time has come (the limit's and the rollover's ``check_at``) or while what they
    watch is under way (an outage, a goodbye, a next session), and a trigger is fired only where some state of the
    call has a row for it. Returns how long until they must run again: 0 while something timed is under way (an
    outage, a wait, a pending action), else until the limit's or the rollover's time."""
    p = call.parts
    acts, leg, link, playback, outage, flow = p.call, p.leg, p.audio.link, p.audio.playback, p.sessions.outage, p.phase
    ending = acts.ending  # each look read once, again only after what may change it
    if leg.disconnected.is_set() and not ending:
        # The leg queues its own CallerHungUp (with the SIP code and reason) as it disconnects: take what
        # it queued first, in order, so the report says why; the fallback only covers a silent leg.
        while not leg.events.empty():
            p.sessions.inbox.put(leg.events.get_nowait())
        p.sessions.inbox.put(ev.CallerHungUp(sip_code=0, reason="leg disconnected"))
    p.audio.latency.measure_playback(p.audio.playout, playback.audio_item)
    if idle and flow.core.listens(Trigger.PLAYED_OUT):
        flow.fire(Trigger.PLAYED_OUT)
        ending = acts.ending
    away = outage.active  # an outage starts on an event (the beat after it checks): never inside these checks
    if away:
        _outage(p)
        ending = acts.ending
    now = flow.now()
    limit = p.limit
    limit_at = limit.check_at
    if not ending and not outage.leaving and now >= limit_at:  # the dialplan's max_call_s
        if limit.due and not link.caller_speaking:
            flow.fire(Trigger.LIMIT_DUE, ev.MAX_CALL_DURATION)
        if limit.over(flow.phase, playback.idle):
            flow.fire(Trigger.LIMIT_OVER, ev.MAX_CALL_DURATION)
        limit_at, ending = limit.check_at, acts.ending
    rollover, tools = p.sessions.rollover, p.talk.tools
    roll_at = rollover.check_at
    if link.client is not None and not ending and now >= roll_at:
        # after that: the moment a reply has played out is the surest turn boundary
        rollover.tick()
        # the caller's audio so far is in the old session's input buffer while they speak
        if rollover.ready and idle and tools.pending is None and not link.caller_speaking:
            flow.fire(Trigger.TURN_BOUNDARY)
        roll_at = rollover.check_at
    hold = p.talk.hold
    if hold is not None:
        hold.beat()
    tools.beat(idle)
    orchestration = call.orchestration
    if orchestration is not None:
        orchestration.beat(idle)
    held = hold is not None and hold.busy
    if (away and outage.active) or tools.busy or held or (orchestration is not None and orchestration.busy):
        return 0.0
    return min(limit_at, roll_at) - now


def _outage(p: CallParts) -> None:
    """The beat's look at an outage under way: the hold when it is due, the hold message again once it has played
    out, and the hang-up once the apology has."""
    acts, outage = p.call, p.sessions.outage
    if p.phase.phase is Phase.RECOVERING and outage.hold_due:
        p.phase.fire(Trigger.HOLD_DUE, "model away")
    outage.beat()
    if outage.leaving and p.audio.playout.idle and not acts.ending:
        p.leg.hangup(GOODBYE_REASON)  # the apology played out: a clean BYE that says why
        acts.end(outage.leaving_reason, ev.EndedBy.FAULT, ev.CallOutcome.FAILED)
