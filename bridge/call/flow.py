"""The call session as a table: (phase, trigger) -> (actions, next phase).

A :class:`Trigger` is what the call session reacts to (the caller stopped speaking, the model's audio came, the
reply played out, the socket closed, ...). The session's handlers turn bridge events and what they know (is a
response under way, is audio queued) into triggers; :data:`TABLE` decides, from the phase, which :class:`Action`
the session carries out and which phase follows. :meth:`CallFlow.fire` is the one place where a phase changes.

One move, in order: the actions run, then the phase changes (one logged :class:`~bridge.call.state.PhaseMachine`
setter, recorded as a :class:`~bridge.events.PhaseChanged` report), then the move's ``then`` trigger fires in the
new phase. A live phase with no row for a trigger stays as it is and does nothing. :func:`document` draws the
table for ``docs/call.md`` (``python -m bridge.call.flow --write docs/call.md`` rewrites its generated section).
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bridge import events as ev
from bridge.call.state import TRANSITIONS, IllegalTransition, Phase, PhaseMachine

PHASES: Mapping[Phase, str] = {
    Phase.IDLE: "ringing: the Realtime session is opened before the answer (the 200 OK)",
    Phase.LISTENING: "the caller has the floor; no agent audio is queued",
    Phase.THINKING: "an answer is owed (a committed turn, a tool's line, the greeting); none of its audio came yet",
    Phase.SPEAKING: "the agent's audio is queued or playing",
    Phase.CANCELLING: "a barge-in is carried out; it ends in the same move that enters it",
    Phase.RECOVERING: "the Realtime session was lost; recovery reconnects while the caller hears what was queued",
    Phase.ENDED: "the call is over and its sessions are closed",
}


class Trigger(enum.Enum):
    """What the session reacts to; the value says when it fires."""

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
    TURN_BOUNDARY = "the next session is ready, and the caller and the agent are both quiet (checked every beat)"
    CAPPED = "the service ended the session at its cap, the next one was ready, no response was under way"
    CAPPED_BEFORE_AUDIO = "as CAPPED, with a response under way that had no audio yet"
    CAPPED_MID_AUDIO = "as CAPPED, with a response cut off in the middle of its audio"
    DECIDED_QUIET = "the orchestrator answered the caller's turn with nothing to say (nothing, send_dtmf)"
    HOLD_DUE = "the model has been away for the dialplan's outage.hold_after_s and the queued agent audio played out"
    GAVE_UP = "no new session within the dialplan's outage.hold_s (or a failure that no retry can mend)"
    LIMIT_DUE = "max_call_s - max_call_goodbye_s after the answer, no goodbye yet, the caller not speaking (every beat)"
    LIMIT_OVER = "the max_call_s goodbye has played out, or max_call_s is reached (checked every beat)"
    FINISHED = "the call is over (hangup, transfer, end_call, recovery gave up) and its session closed"


class Action(enum.Enum):
    """What the session carries out on a move (``CallSession._perform``); the value says what it does."""

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
    ASK_GOODBYE = "ask the model for a short goodbye: the call reached its time limit (bridge.call.limit)"
    APOLOGISE = "the model is away at the time limit: stop the hold audio and play the outage's apology instead"
    HANG_UP = "BYE with a Reason header; the call ends (max call duration)"


@dataclass(frozen=True, slots=True)
class Move:
    to: Phase | None = None  # None: the phase stays
    actions: tuple[Action, ...] = ()
    why: str | None = None  # the change's reason in the timeline; None: the reason the trigger was fired with
    then: Trigger | None = None  # fired next, in the new phase


P, T, A = Phase, Trigger, Action
LIVE = (P.IDLE, P.LISTENING, P.THINKING, P.SPEAKING, P.CANCELLING, P.RECOVERING)
_ANSWER_AGAIN = "answer again in the next session"

TABLE: Mapping[tuple[Phase, Trigger], Move] = {
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
}
STAY = Move()


class CallFlow:
    """The phase of one call and the only way it changes: :meth:`fire` a trigger. ``perform`` carries out each
    action of a move with the reason the trigger was fired with."""

    def __init__(self, machine: PhaseMachine, perform: Callable[[Action, str], None]) -> None:
        self._machine = machine
        self._perform = perform

    @property
    def phase(self) -> Phase:
        return self._machine.phase

    @property
    def sequence(self) -> list[str]:
        return self._machine.sequence

    def fire(self, trigger: Trigger, why: str = "") -> None:
        phase = self._machine.phase
        move = TABLE.get((phase, trigger))
        if move is None:
            if phase is Phase.ENDED:
                raise IllegalTransition(f"call {self._machine.call_id}: {trigger.name} after the call ended")
            return
        for action in move.actions:
            self._perform(action, why)
        if move.to is not None:
            self._machine.set(move.to, move.why or why)
        if move.then is not None:
            self.fire(move.then, why)


# --------------------------------------------------------------------------------------------------------------
# The table, drawn (docs/call.md; a unit test keeps that file current)


def _label(trigger: Trigger) -> str:
    return trigger.name.lower()


def _reports() -> list[type[ev.Report]]:
    found, todo = [], list(ev.Report.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo += cls.__subclasses__()
    # (a slots dataclass replaces its class; the one it replaced may still be listed until it is collected)
    return [c for c in dict.fromkeys(found) if getattr(ev, c.__name__, None) is c]


def mermaid() -> str:
    """A Mermaid state diagram of every move that changes the phase, labelled with its triggers."""
    edges: dict[tuple[Phase, Phase], list[str]] = {}
    for (src, trigger), move in TABLE.items():
        if move.to is not None and trigger is not Trigger.FINISHED:
            edges.setdefault((src, move.to), []).append(_label(trigger))
    lines = ["stateDiagram-v2", "    [*] --> IDLE"]
    lines += [f"    {src} --> {dst}: {', '.join(labels)}" for (src, dst), labels in edges.items()]
    lines += ["    note right of ENDED: finished, from every live phase", "    ENDED --> [*]"]
    return "\n".join(lines)


def markdown() -> str:
    """The table as Markdown: every row, then what each trigger and action means."""
    lines = ["| phase | trigger | actions, in order | next phase |", "|---|---|---|---|"]
    finished = [p for p in LIVE if (p, Trigger.FINISHED) in TABLE]
    for (phase, trigger), move in TABLE.items():
        if trigger is Trigger.FINISHED:
            continue
        actions = ", ".join(a.name.lower() for a in move.actions) or "-"
        to = move.to or "(stays)"
        why = f' ("{move.why}")' if move.why else ""
        then = f"; then `{_label(move.then)}`" if move.then else ""
        lines.append(f"| {phase} | `{_label(trigger)}` | {actions} | {to}{why}{then} |")
    lines.append(f"| {', '.join(finished)} | `{_label(Trigger.FINISHED)}` | - | ENDED |")
    lines += ["", "| trigger | fires when |", "|---|---|"]
    lines += [f"| `{_label(t)}` | {t.value} |" for t in Trigger]
    lines += ["", "| action | what the session does |", "|---|---|"]
    lines += [f"| {a.name.lower()} | {a.value} |" for a in Action]
    return "\n".join(lines)


BEGIN, END = "<!-- BEGIN GENERATED by bridge.call.flow -->", "<!-- END GENERATED -->"


def document() -> str:
    """The generated section of ``docs/call.md``: phases, diagram, table, triggers, actions, reports."""
    lines = [BEGIN, "", "### Phases", "", "| phase | meaning |", "|---|---|"]
    lines += [f"| {phase} | {meaning} |" for phase, meaning in PHASES.items()]
    lines += ["", "### Diagram", "", "```mermaid", mermaid(), "```", "", "### The table", "", markdown(), ""]
    lines += ["### Reports", "", "| kind | report | stored beside the summary |", "|---|---|---|"]
    for cls in _reports():
        lines.append(f"| `{cls.kind}` | `{cls.__name__}` | {', '.join(cls.stored) or '-'} |")
    return "\n".join([*lines, "", END])


def rewrite(text: str) -> str:
    """``text`` (docs/call.md) with its generated section replaced by :func:`document`."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + document() + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m bridge.call.flow", description="Draw the call's table.")
    parser.add_argument("--write", type=Path, help="rewrite the generated section of this file (docs/call.md)")
    args = parser.parse_args(argv)
    if args.write is None:
        print(document())
    else:
        args.write.write_text(rewrite(args.write.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


def check() -> None:
    """Every move of the table is a legal transition (``bridge.call.state.TRANSITIONS``)."""
    for (src, trigger), move in TABLE.items():
        if move.to is not None and move.to is not src and move.to not in TRANSITIONS[src]:
            raise IllegalTransition(f"{src} -> {move.to} on {trigger.name} is not a legal transition")


if __name__ == "__main__":
    sys.exit(main())
