"""The call's sans-I/O core: everything a call can be doing, and one table of how each changes.

A call is at one state on each of five axes at once. The phase is the conversation's; the other four are modes
beside it, each orthogonal to the phase and to each other::

    phase     IDLE  LISTENING  THINKING  SPEAKING  CANCELLING  RECOVERING  ENDED   (bridge.call.state)
    transfer  NONE  ANNOUNCING  HOLDING  RINGING  BRIEFING  BRIEF_PLAYING  BRIEFED  ACCEPTING  JOINED  BACK
    echo      JUDGING  PAUSED                      (the echo guard holds the agent's audio while it judges a voice)
    control   AGENT  SUPERVISOR                    (a supervisor has taken the call over)
    hold      NONE  OUTAGE  WAIT  TURN             (what the caller hears while the call waits)

:meth:`CallCore.handle` takes a :class:`Trigger` and the time, and returns the :class:`Effect` list the shell (the
call session and the parts it hands each family of actions to) carries out, in order: for each axis with a row for
``(its state, the trigger)`` in :data:`TABLE`, the row's actions (:class:`Do`), then the change (:class:`Enter`),
then the row's ``then`` trigger in the new state. A live call with no row for a trigger stays as it is; a phase's
trigger after the call ended is a bug (:class:`~bridge.call.state.IllegalTransition`), a mode's is not (a human leg's
late event, a transfer that ends with the caller).

Some states have a time limit (:data:`TIMERS`: a warm transfer's ring, briefing and accept windows). The core
keeps each axis's deadline (:attr:`CallCore.deadline`); the shell wakes up then and hands the core
``Trigger.TIMEOUT``, which moves only an axis whose deadline has passed. The core does no I/O and reads no clock:
the same triggers at the same times give the same effects (the unit tests drive every row in virtual time).
``bridge.call.flow`` is the asyncio side: it carries the effects out and draws the table for ``docs/call.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from bridge import events as ev
from bridge.call.state import TRANSITIONS, IllegalTransition, Phase


class Transfer(enum.Enum):
    """Where a transfer is: its announcement (``bridge.call.toolcalls``), then a blind REFER or a warm transfer
    (``bridge.call.warm``); the value says what the call does there."""

    NONE = "no transfer is decided, or a blind transfer's REFER is sent (its final NOTIFY ends the call or not)"
    ANNOUNCING = "a transfer is decided and its line plays; a barge-in over it does not cancel it (it goes ahead)"
    HOLDING = "the caller is put on hold (the hold audio) and the human's number is dialled on a second leg"
    RINGING = "the human's phone rings (transfer.ring_timeout_s); the caller hears the hold audio"
    BRIEFING = "the human answered and hears the session's voice; the model is asked for a briefing"
    BRIEF_PLAYING = "the briefing is under way (a response or its audio came); it ends once it has played out"
    BRIEFED = "the briefing has played (or transfer.brief_timeout_s passed): the human no longer hears the session"
    ACCEPTING = "waiting for the human to press 1 (accept: dtmf, transfer.accept_window_s)"
    JOINED = "caller and human are joined; the session is out of the call, which lasts until either side hangs up"
    BACK = "the attempt ended without a join: the human's leg is hung up, the hold stops, the agent tells the caller"


class Echo(enum.Enum):
    """The echo guard at work (``bridge.call.echo``)."""

    JUDGING = "the agent's audio flows; a speech start over it is judged (echo or the caller)"
    PAUSED = "the agent's audio is held (the caller hears silence) while the caller's frames are judged"


class Control(enum.Enum):
    """Who speaks to the caller for the bridge (``bridge.call.supervision``, ``bridge.call.takeover``)."""

    AGENT = "the model: it hears the caller and the caller hears it"
    SUPERVISOR = "taken over: the model hears silence, its audio is dropped, the caller hears the supervisor"


class Hold(enum.Enum):
    """The hold audio the caller hears in the agent's place (a warm transfer's is the leg's: ``Transfer``)."""

    NONE = "no hold audio"
    OUTAGE = "the outage's hold message, in a loop, while the model is away, to its return or the call's last words"
    WAIT = "the soft hold while a tool or the orchestrator works, after its line (bridge.call.waiting.DeadAir)"
    TURN = "the soft hold while the answer to the caller's turn is slow (bridge.call.waiting.TurnHold)"


State = Phase | Transfer | Echo | Control | Hold
_S = TypeVar("_S", Phase, Transfer, Echo, Control, Hold)
AXES: tuple[type[State], ...] = (Phase, Transfer, Echo, Control, Hold)
START: tuple[State, ...] = (Phase.IDLE, Transfer.NONE, Echo.JUDGING, Control.AGENT, Hold.NONE)


class Timer(enum.Enum):
    """A time limit on one or more states of an axis; its length is the plan's (the core's ``limits``)."""

    RING = "transfer.ring_timeout_s: the human's phone rings"
    BRIEF = "transfer.brief_timeout_s: the briefing, asked for and played"
    ACCEPT = "transfer.accept_window_s: waiting for the human's 1"


# Entering a state starts its timer, unless the state left had the same one (the briefing's spans two states).
TIMERS: Mapping[State, Timer] = {
    Transfer.RINGING: Timer.RING,
    Transfer.BRIEFING: Timer.BRIEF,
    Transfer.BRIEF_PLAYING: Timer.BRIEF,
    Transfer.ACCEPTING: Timer.ACCEPT,
}


class Trigger(enum.Enum):
    """What the call reacts to; the value says when it fires."""

    GREET = "the Realtime session is ready at the answer and the dialplan has a greeting"
    READY = "the Realtime session is ready at the answer and there is no greeting"
    NO_SESSION = "no Realtime session could be opened by the answer deadline"
    CALLER_STOPPED = "the service's VAD heard the caller stop speaking (the turn is committed)"
    RESPONSE_STARTED = "the model started a response"
    TOOL_CALL = "the model called a tool; its output was sent and asks for a response"
    MODEL_AUDIO = "the model's audio was queued for playout"
    RESPONSE_SILENT = "a response ended without audio and no tool action waits for its line"
    PLAYED_OUT = "no response is under way and the playout is empty (checked every beat)"
    CALLER_STARTS = "the caller started speaking or pressed a key while the agent was quiet"
    CALLER_INTERRUPTS = "the caller started speaking or pressed a key while the agent's audio or response went on"
    CUT = "the barge-in itself, right after CANCELLING is entered"
    SESSION_LOST = "the Realtime socket closed under the call (no next session was ready)"
    RECOVERED = "recovery opened a new session and nothing was owed to the caller"
    RECOVERED_OWING = "recovery opened a new session; a turn or the greeting awaits its answer"
    RECOVERED_CUT = "recovery opened a new session; the answer playing when the socket died was cut off"
    TURN_BOUNDARY = "the next session is ready, and the caller and the agent are both quiet (each beat while ready)"
    CAPPED = "the service ended the session at its cap, the next one was ready, no response was under way"
    CAPPED_BEFORE_AUDIO = "as CAPPED, with a response under way that had no audio yet"
    CAPPED_MID_AUDIO = "as CAPPED, with a response cut off in the middle of its audio"
    DECIDED_QUIET = "the orchestrator answered the caller's turn with nothing to say (nothing, send_dtmf)"
    HOLD_DUE = "the model has been away for the dialplan's outage.hold_after_s and the queued agent audio played out"
    GAVE_UP = "no new session within the dialplan's outage.hold_s (or a failure that no retry can mend)"
    GOODBYE = "the failover ends the call: no transfer target, the failover's transfer failed, or no orchestrator"
    LIMIT_DUE = "max_call_s - max_call_goodbye_s after the answer, no goodbye yet, the caller not speaking (each beat)"
    LIMIT_OVER = "the max_call_s goodbye has played out, or max_call_s is reached (each beat once the goodbye is due)"
    FINISHED = "the call is over (hangup, transfer, end_call, recovery gave up) and its session closed"
    # a transfer (bridge.call.toolcalls decides it; bridge.call.warm turns the human leg's events into these)
    TRANSFER_DECIDED = "a transfer is decided (transfer_to_human, or an orchestrator's): events transfer_decided"
    REFER = "a decided blind transfer's line has played out (or the model never spoke it within the line timeout)"
    REFER_CUT = "the caller spoke over a decided blind transfer's line (transfer_line_interrupted): it goes ahead"
    WARM_TRANSFER = "a decided warm transfer begins: its line has played out, or the caller cut it short"
    DIAL = "right after HOLDING is entered"
    HUMAN_DIALLED = "the second leg was placed; the caller is on hold"
    HUMAN_ANSWERED = "the human answered and the plan briefs them (transfer.brief)"
    BRIEF = "right after BRIEFING is entered"
    HUMAN_READY = "the human answered unbriefed, or the briefing ended, and the plan's accept is answer"
    HUMAN_TO_ACCEPT = "the human answered unbriefed, or the briefing ended, and the plan's accept is dtmf"
    HUMAN_PRESSED_1 = "the human pressed 1 (accept: dtmf)"
    JOIN = "right after JOINED is entered"
    HUMAN_BUSY = "the human's leg ended unanswered with 486 or 600"
    HUMAN_NO_ANSWER = "the human's leg ended unanswered with 408, 480 or 487 (our CANCEL)"
    HUMAN_DECLINED = "the human's leg ended with 603, or after it was answered (hung up before the join)"
    HUMAN_FAILED = "the second leg could not be placed, briefed or joined, or it ended with another status"
    CALLER_LEFT = "the call ended during the attempt (the caller hung up)"
    TIMEOUT = "a state's time limit passed (TIMERS: ring, briefing, accept window)"
    # the echo guard (bridge.call.echo)
    ECHO_SUSPECTED = "a speech start over the agent that the echo path does not explain"
    ECHO_CONFIRMED = "while paused, the caller spoke for echo_guard.confirm_ms"
    ECHO_CLEARED = "while paused, no words within echo_guard.resume_ms, or the agent's audio ended"
    # a supervisor (bridge.call.supervision)
    TAKE_OVER = "a supervisor takes the call over"
    HAND_BACK = "the supervisor hands the call back to the agent"
    # the soft holds (bridge.call.waiting)
    WAIT_HOLD = "a tool's (or the orchestrator's) line has played, the wait goes on: the soft hold starts"
    WAIT_OVER = "the last wait ended, or a barge-in flushed the soft hold"
    TURN_HOLD = "the answer to the caller's turn is waiting.filler_after_s late with nothing playing"
    TURN_OVER = "the agent's audio came, the caller spoke, or the call no longer waits on that answer"


class Action(enum.Enum):
    """What the session carries out on a move (``bridge.call.perform``); the value says what it does."""

    ASK_GREETING = "ask the model for the greeting"
    CUT_AGENT = "barge-in: flush the playout, cancel an active response, truncate each item to what was heard"
    OWE_ANSWER = "remember that the caller's turn awaits its answer, for the recovery that follows"
    FORGET_LOST_TURNS = "forget (and report) caller turns the lost session never transcribed"
    SEND_SUMMARY = "give the new session a summary of the call"
    ANSWER_AGAIN = "ask the new session for what the caller waits for: the greeting, or the answer to their turn"
    RESUME_ANSWER = "ask the new session to finish the answer that was cut off (the greeting, if still owed)"
    SWAP_SESSION = "make the ready next session the call's session and retire the old one"
    PLAY_HOLD = "play the hold message in a loop (bridge.call.outage)"
    STOP_HOLD = "stop the hold audio at once; the outage is over"
    FAIL_OVER = "the outage's failover: transfer to the plan's transfer_target, or the apology then a BYE with a Reason"
    SAY_GOODBYE = "the hold audio stops and the outage's apology plays; a BYE with a Reason follows once it played"
    ASK_GOODBYE = "ask the model for a short goodbye: the call reached its time limit (bridge.call.limit)"
    APOLOGISE = "the model is away at the time limit: stop the hold audio and play the outage's apology instead"
    HANG_UP = "BYE with a Reason header; the call ends (max call duration)"


class TransferAction(enum.Enum):
    """What the warm transfer carries out (``bridge.call.warm``)."""

    HOLD_AND_DIAL = "the caller hears the hold audio; the transfer target is called on a second leg"
    BRIEF_HUMAN = "the human hears the session's voice; the model is asked for the briefing"
    END_BRIEFING = "the human no longer hears the session"
    JOIN_HUMAN = "caller and human are joined (the hold ends); the call ends for the session, outcome completed"
    RELEASE_HUMAN = "the human's leg is hung up, the hold stops, the model gets a note and tells the caller"


class HandoverAction(enum.Enum):
    """What a decided blind transfer carries out (``bridge.call.toolcalls``)."""

    HOLD_CALLER = "the caller hears the hold audio until the final NOTIFY; the model is out of the caller's call"
    SEND_REFER = "REFER to the target (RFC 3515); the final NOTIFY ends the call, or the agent tells the caller"


class EchoAction(enum.Enum):
    """What the echo guard carries out (``bridge.call.echo``)."""

    PAUSE_AGENT = "the agent's audio is held: the caller hears silence, nothing is taken from the playout"
    TAKE_BARGE_IN = "the held speech start is taken as a barge-in (the cut flushes what the pause kept)"
    RESUME_AGENT = "the agent's audio flows again from where it was held"


class ControlAction(enum.Enum):
    """What a take-over carries out (``bridge.call.supervision``)."""

    MUTE_MODEL = "the model hears silence in place of the caller; the reply under way is cut"
    UNMUTE_MODEL = "the model hears the caller again, with a note that a supervisor spoke with them"


AnyAction = Action | TransferAction | HandoverAction | EchoAction | ControlAction
TO = ev.TransferOutcome


@dataclass(frozen=True, slots=True)
class Move:
    to: State | None = None  # None: the state stays
    actions: tuple[AnyAction, ...] = ()
    why: str | None = None  # the change's reason in the timeline; None: the reason the trigger was fired with
    then: Trigger | None = None  # fired next, in the new state
    outcome: ev.TransferOutcome | None = None  # a warm transfer's, on its way BACK


@dataclass(frozen=True, slots=True)
class Do:
    """Carry out ``action`` (``why``: the reason the trigger was fired with; ``outcome``: a transfer's)."""

    action: AnyAction
    why: str
    outcome: ev.TransferOutcome | None = None


@dataclass(frozen=True, slots=True)
class Enter:
    """An axis moved from ``old`` to ``new`` (``why``: the reason for the timeline)."""

    old: State
    new: State
    why: str


Effect = Do | Enter

P, T, A, X = Phase, Trigger, Action, Transfer
TA, HA, EA, CA = TransferAction, HandoverAction, EchoAction, ControlAction
LIVE = (P.IDLE, P.LISTENING, P.THINKING, P.SPEAKING, P.RECOVERING)  # CANCELLING is left in the move entering it
_ANSWER_AGAIN = "answer again in the next session"
ATTEMPT = (X.RINGING, X.BRIEFING, X.BRIEF_PLAYING, X.ACCEPTING)  # the human's leg is up and not yet joined
BRIEFING = (X.BRIEFING, X.BRIEF_PLAYING)
ANSWERED = (X.BRIEFING, X.BRIEF_PLAYING, X.ACCEPTING)
_ENDED = {
    T.HUMAN_BUSY: TO.BUSY,
    T.HUMAN_NO_ANSWER: TO.NO_ANSWER,
    T.HUMAN_DECLINED: TO.DECLINED,
    T.HUMAN_FAILED: TO.FAILED,
}


def _back(outcome: ev.TransferOutcome, *first: TransferAction) -> Move:
    return Move(X.BACK, (*first, TA.RELEASE_HUMAN), outcome=outcome)


TABLE: Mapping[tuple[State, Trigger], Move] = {
    # the answer
    (P.IDLE, T.GREET): Move(P.THINKING, (A.ASK_GREETING,), "greeting"),
    (P.IDLE, T.READY): Move(P.LISTENING, why="session ready"),
    (P.IDLE, T.NO_SESSION): Move(P.RECOVERING, why="realtime session not ready at answer"),
    # a turn
    (P.LISTENING, T.CALLER_STOPPED): Move(P.THINKING, why="caller stopped speaking"),
    (P.LISTENING, T.RESPONSE_STARTED): Move(P.THINKING, why="response started"),
    (P.LISTENING, T.TOOL_CALL): Move(P.THINKING),
    (P.LISTENING, T.MODEL_AUDIO): Move(P.SPEAKING, why="model audio"),
    (P.THINKING, T.MODEL_AUDIO): Move(P.SPEAKING, why="model audio"),
    (P.THINKING, T.RESPONSE_SILENT): Move(P.LISTENING),
    (P.THINKING, T.DECIDED_QUIET): Move(P.LISTENING),  # an orchestrated call (bridge.call.orchestration)
    (P.SPEAKING, T.PLAYED_OUT): Move(P.LISTENING, why="reply played out"),
    # barge-in
    (P.SPEAKING, T.CALLER_STARTS): Move(P.CANCELLING, then=T.CUT),
    (P.SPEAKING, T.CALLER_INTERRUPTS): Move(P.CANCELLING, then=T.CUT),
    (P.THINKING, T.CALLER_INTERRUPTS): Move(P.CANCELLING, then=T.CUT),
    (P.LISTENING, T.CALLER_INTERRUPTS): Move(actions=(A.CUT_AGENT,)),
    (P.CANCELLING, T.CUT): Move(P.LISTENING, (A.CUT_AGENT,), "barge-in handled"),
    # the socket
    (P.LISTENING, T.SESSION_LOST): Move(P.RECOVERING),
    (P.THINKING, T.SESSION_LOST): Move(P.RECOVERING, (A.OWE_ANSWER,)),
    (P.SPEAKING, T.SESSION_LOST): Move(P.RECOVERING),
    (P.RECOVERING, T.RECOVERED): Move(P.LISTENING, (A.STOP_HOLD, A.FORGET_LOST_TURNS), "session recovered"),
    (P.RECOVERING, T.RECOVERED_OWING): Move(P.THINKING, (A.STOP_HOLD, A.ANSWER_AGAIN), "answer again after recovery"),
    (P.RECOVERING, T.RECOVERED_CUT): Move(P.THINKING, (A.STOP_HOLD, A.RESUME_ANSWER), "answer again after recovery"),
    # an outage (bridge.call.outage)
    (P.RECOVERING, T.HOLD_DUE): Move(actions=(A.PLAY_HOLD,)),
    (P.RECOVERING, T.GAVE_UP): Move(actions=(A.FAIL_OVER,)),
    # the service's session cap
    (P.LISTENING, T.TURN_BOUNDARY): Move(actions=(A.SWAP_SESSION,)),
    (P.THINKING, T.CAPPED): Move(actions=(A.SEND_SUMMARY, A.ANSWER_AGAIN)),
    (P.THINKING, T.CAPPED_BEFORE_AUDIO): Move(actions=(A.SEND_SUMMARY, A.ANSWER_AGAIN)),
    (P.THINKING, T.CAPPED_MID_AUDIO): Move(actions=(A.SEND_SUMMARY, A.RESUME_ANSWER)),
    (P.LISTENING, T.CAPPED_BEFORE_AUDIO): Move(P.THINKING, (A.SEND_SUMMARY, A.ANSWER_AGAIN), _ANSWER_AGAIN),
    (P.SPEAKING, T.CAPPED_BEFORE_AUDIO): Move(P.THINKING, (A.SEND_SUMMARY, A.ANSWER_AGAIN), _ANSWER_AGAIN),
    (P.LISTENING, T.CAPPED_MID_AUDIO): Move(P.THINKING, (A.SEND_SUMMARY, A.RESUME_ANSWER), _ANSWER_AGAIN),
    (P.SPEAKING, T.CAPPED_MID_AUDIO): Move(P.THINKING, (A.SEND_SUMMARY, A.RESUME_ANSWER), _ANSWER_AGAIN),
    # the dialplan's max_call_s (bridge.call.limit): an answer or a turn under way finishes first
    (P.LISTENING, T.LIMIT_DUE): Move(P.THINKING, (A.ASK_GOODBYE,), "max call duration: goodbye"),
    (P.RECOVERING, T.LIMIT_DUE): Move(actions=(A.APOLOGISE,)),
    **{(phase, T.LIMIT_OVER): Move(actions=(A.HANG_UP,)) for phase in LIVE if phase is not P.IDLE},
    # the end
    **{(phase, T.FINISHED): Move(P.ENDED) for phase in LIVE},
    # a transfer decided (bridge.call.toolcalls): its line plays, then it goes ahead (a barge-in cuts the line only)
    (X.NONE, T.TRANSFER_DECIDED): Move(X.ANNOUNCING, why="transfer decided"),
    (X.BACK, T.TRANSFER_DECIDED): Move(X.ANNOUNCING, why="transfer decided"),
    (X.ANNOUNCING, T.REFER): Move(X.NONE, (HA.SEND_REFER,), "blind transfer"),
    (X.ANNOUNCING, T.REFER_CUT): Move(X.NONE, (HA.HOLD_CALLER, HA.SEND_REFER), "blind transfer, its line cut"),
    # a warm transfer (bridge.call.warm): the caller on hold, the human called, briefed, accepting, joined
    (X.ANNOUNCING, T.WARM_TRANSFER): Move(X.HOLDING, why="warm transfer", then=T.DIAL),
    (X.HOLDING, T.DIAL): Move(actions=(TA.HOLD_AND_DIAL,)),
    (X.HOLDING, T.HUMAN_DIALLED): Move(X.RINGING, why="the human's phone rings"),
    (X.HOLDING, T.HUMAN_FAILED): _back(TO.FAILED),
    (X.RINGING, T.HUMAN_ANSWERED): Move(X.BRIEFING, why="the human answered", then=T.BRIEF),
    (X.BRIEFING, T.BRIEF): Move(actions=(TA.BRIEF_HUMAN,)),
    (X.BRIEFING, T.RESPONSE_STARTED): Move(X.BRIEF_PLAYING, why="the briefing began"),
    (X.BRIEFING, T.MODEL_AUDIO): Move(X.BRIEF_PLAYING, why="the briefing began"),
    (X.BRIEFING, T.HUMAN_FAILED): _back(TO.FAILED),  # the human cannot hear the session
    (X.BRIEF_PLAYING, T.PLAYED_OUT): Move(X.BRIEFED, (TA.END_BRIEFING,), "the briefing played out"),
    **{(s, T.TIMEOUT): Move(X.BRIEFED, (TA.END_BRIEFING,), "no briefing in time") for s in BRIEFING},
    **{(s, T.HUMAN_PRESSED_1): Move(X.JOINED, (TA.END_BRIEFING,), "the human pressed 1", T.JOIN) for s in BRIEFING},
    **{(s, T.HUMAN_DECLINED): _back(TO.DECLINED, TA.END_BRIEFING) for s in BRIEFING},
    **{(s, T.CALLER_LEFT): _back(TO.CALLER_HUNG_UP, TA.END_BRIEFING) for s in BRIEFING},
    **{(s, T.HUMAN_READY): Move(X.JOINED, why="the human takes the call", then=T.JOIN) for s in (X.RINGING, X.BRIEFED)},
    **{(s, T.HUMAN_TO_ACCEPT): Move(X.ACCEPTING, why="waiting for 1") for s in (X.RINGING, X.BRIEFED)},
    (X.ACCEPTING, T.HUMAN_PRESSED_1): Move(X.JOINED, why="the human pressed 1", then=T.JOIN),
    (X.ACCEPTING, T.TIMEOUT): _back(TO.DECLINED),
    (X.ACCEPTING, T.HUMAN_DECLINED): _back(TO.DECLINED),
    (X.ACCEPTING, T.CALLER_LEFT): _back(TO.CALLER_HUNG_UP),
    (X.RINGING, T.TIMEOUT): _back(TO.NO_ANSWER),
    **{(X.RINGING, trigger): _back(outcome) for trigger, outcome in _ENDED.items()},
    (X.RINGING, T.CALLER_LEFT): _back(TO.CALLER_HUNG_UP),
    (X.JOINED, T.JOIN): Move(actions=(TA.JOIN_HUMAN,)),
    (X.JOINED, T.HUMAN_FAILED): _back(TO.FAILED),  # the join itself failed
    # the echo guard (bridge.call.echo)
    (Echo.JUDGING, T.ECHO_SUSPECTED): Move(Echo.PAUSED, (EA.PAUSE_AGENT,), "a voice over the agent"),
    (Echo.PAUSED, T.ECHO_CONFIRMED): Move(Echo.JUDGING, (EA.TAKE_BARGE_IN, EA.RESUME_AGENT), "the caller's voice"),
    (Echo.PAUSED, T.ECHO_CLEARED): Move(Echo.JUDGING, (EA.RESUME_AGENT,), "no words followed"),
    # a supervisor (bridge.call.supervision)
    (Control.AGENT, T.TAKE_OVER): Move(Control.SUPERVISOR, (CA.MUTE_MODEL,), "taken over by a supervisor"),
    (Control.SUPERVISOR, T.HAND_BACK): Move(Control.AGENT, (CA.UNMUTE_MODEL,), "handed back"),
    # the hold audio: the outage's (its actions are the phase's, above), the soft holds' (bridge.call.waiting)
    (Hold.NONE, T.HOLD_DUE): Move(Hold.OUTAGE, why="model away"),
    **{(Hold.OUTAGE, t): Move(Hold.NONE) for t in (T.RECOVERED, T.RECOVERED_OWING, T.RECOVERED_CUT, T.LIMIT_DUE)},
    # the failover's goodbye (bridge.call.changes): the hold audio, if any, gives way to the apology
    (Hold.OUTAGE, T.GOODBYE): Move(Hold.NONE, (A.SAY_GOODBYE,), "the failover's goodbye"),
    **{(hold, T.GOODBYE): Move(actions=(A.SAY_GOODBYE,)) for hold in (Hold.NONE, Hold.WAIT, Hold.TURN)},
    (Hold.NONE, T.WAIT_HOLD): Move(Hold.WAIT, why="waiting"),
    (Hold.OUTAGE, T.WAIT_HOLD): Move(Hold.WAIT, why="waiting"),  # a tool's wait that outlasts the model
    (Hold.WAIT, T.WAIT_OVER): Move(Hold.NONE),
    (Hold.NONE, T.TURN_HOLD): Move(Hold.TURN, why="slow answer"),
    (Hold.TURN, T.TURN_OVER): Move(Hold.NONE),
}


PHASE_TRIGGERS = frozenset(trigger for state, trigger in TABLE if isinstance(state, Phase))


_ROWS: dict[State, frozenset[Trigger]] = {
    state: frozenset(t for s, t in TABLE if s is state) for state in {s for s, _ in TABLE}
}  # each state's triggers, made once: a state change then costs a lookup per axis, not a walk of the table


def _listening(states: Iterable[State]) -> frozenset[Trigger]:
    """The triggers some of ``states`` has a row for (a trigger none of them has moves nothing)."""
    return frozenset().union(*(_ROWS.get(state, ()) for state in states))


class CallCore:
    """The state of one call on every axis, and the only way it changes: :meth:`handle` a trigger.

    ``limits``: each :class:`Timer`'s length in seconds (a timer without one never expires); ``name``: the call's
    id, in errors."""

    def __init__(self, limits: Mapping[Timer, float] | None = None, name: str = "") -> None:
        self.name = name
        self.limits: dict[Timer, float] = dict(limits or {})
        self._at: dict[type[State], State] = {type(s): s for s in START}
        self._deadlines: dict[type[State], float] = {}
        self._listening = _listening(self._at.values())

    # -- where the call is -------------------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self._get(Phase)

    @property
    def transfer(self) -> Transfer:
        return self._get(Transfer)

    @property
    def echo(self) -> Echo:
        return self._get(Echo)

    @property
    def control(self) -> Control:
        return self._get(Control)

    @property
    def hold(self) -> Hold:
        return self._get(Hold)

    def _get(self, axis: type[_S]) -> _S:
        state = self._at[axis]
        assert isinstance(state, axis)
        return state

    def states(self) -> Iterator[State]:
        return iter(self._at.values())

    def listens(self, trigger: Trigger) -> bool:
        """Whether the call's states have a row for ``trigger`` now: a beat need not check what moves nothing."""
        return trigger in self._listening

    @property
    def deadline(self) -> float | None:
        """When the next time limit passes (hand the core ``Trigger.TIMEOUT`` then); None: no state is timed."""
        return min(self._deadlines.values(), default=None)

    # -- the one way it changes --------------------------------------------------------------------------------
    def handle(self, trigger: Trigger, now: float, why: str = "") -> list[Effect]:
        """The effects of ``trigger`` at ``now``, in the order the shell carries them out."""
        effects: list[Effect] = []
        self._handle(trigger, now, why, effects)
        return effects

    def _handle(self, trigger: Trigger, now: float, why: str, effects: list[Effect]) -> None:
        moved = False
        for axis in AXES:
            state = self._at[axis]
            move = TABLE.get((state, trigger))
            if move is None or (trigger is T.TIMEOUT and not self._expired(axis, now)):
                continue
            moved = True
            effects += [Do(action, why, move.outcome) for action in move.actions]
            if move.to is not None and move.to is not state:
                self._enter(axis, move.to, now)
                effects.append(Enter(state, move.to, move.why or why))
            if move.then is not None:
                self._handle(move.then, now, why, effects)
        if not moved and self.phase is Phase.ENDED and trigger in PHASE_TRIGGERS:
            raise IllegalTransition(f"call {self.name}: {trigger.name} after the call ended")

    def _expired(self, axis: type[State], now: float) -> bool:
        deadline = self._deadlines.get(axis)
        return deadline is not None and now >= deadline

    def _enter(self, axis: type[State], new: State, now: float) -> None:
        old_timer, timer = TIMERS.get(self._at[axis]), TIMERS.get(new)
        self._at[axis] = new
        self._listening = _listening(self._at.values())
        if timer is None or timer not in self.limits:
            self._deadlines.pop(axis, None)
        elif timer is not old_timer:
            self._deadlines[axis] = now + self.limits[timer]


def check() -> None:
    """Every move of the table stays on its axis, and every phase move is legal (``bridge.call.state``)."""
    for (src, trigger), move in TABLE.items():
        if move.to is not None and type(move.to) is not type(src):
            raise IllegalTransition(f"{src} -> {move.to} on {trigger.name} leaves its axis")
        legal = not isinstance(src, Phase) or move.to is None or move.to is src or move.to in TRANSITIONS[src]
        if not legal:
            raise IllegalTransition(f"{src} -> {move.to} on {trigger.name} is not a legal transition")


check()
