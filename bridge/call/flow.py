"""The asyncio side of the call's core (:mod:`bridge.call.core`): :class:`CallFlow` hands it each trigger with the
time and carries out the effects it returns; and the table, drawn for ``docs/call.md``.

A :class:`Trigger` is what the call reacts to (the caller stopped speaking, the model's audio came, the reply played
out, the human's leg answered, the echo guard paused the agent, ...). The session's handlers and the parts that own
a mode turn bridge events and what they know into triggers; :data:`TABLE` decides, from where the call is on each
axis, which actions run and which state follows. :meth:`CallFlow.fire` is the one place any of it changes.

One move, in order: the actions run, then the state changes (for the phase: one logged
:class:`~bridge.call.state.PhaseMachine` setter, recorded as a :class:`~bridge.events.PhaseChanged` report), then the
move's ``then`` trigger fires in the new state. The session carries out the phase's actions (:class:`Action`); the
part that owns a mode carries out its family (:meth:`CallFlow.carry`: the warm transfer, the blind transfer's
REFER, the echo guard, the supervision) and may watch its axis change (:meth:`CallFlow.watch`).
:func:`document` draws the table for ``docs/call.md`` (``python -m bridge.call.flow --write docs/call.md`` rewrites
its generated section).
"""

from __future__ import annotations

import argparse
import enum
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from bridge import events as ev
from bridge.call.core import (
    AXES,
    LIVE,
    START,
    TABLE,
    TIMERS,
    Action,
    CallCore,
    Control,
    ControlAction,
    Do,
    Echo,
    EchoAction,
    Effect,
    Enter,
    HandoverAction,
    Hold,
    Move,
    State,
    Transfer,
    TransferAction,
    Trigger,
    check,
)
from bridge.call.state import Phase, PhaseMachine

__all__ = ["TABLE", "Action", "CallFlow", "Move", "Trigger", "check", "document", "rewrite"]

log = logging.getLogger("bridge.call")

PHASES: Mapping[Phase, str] = {
    Phase.IDLE: "ringing: the Realtime session is opened before the answer (the 200 OK)",
    Phase.LISTENING: "the caller has the floor; no agent audio is queued",
    Phase.THINKING: "an answer is owed (a committed turn, a tool's line, the greeting); none of its audio came yet",
    Phase.SPEAKING: "the agent's audio is queued or playing",
    Phase.CANCELLING: "a barge-in is carried out; it ends in the same move that enters it",
    Phase.RECOVERING: "the Realtime session was lost; recovery reconnects while the caller hears what was queued",
    Phase.ENDED: "the call is over and its sessions are closed",
}
Family = type[TransferAction] | type[HandoverAction] | type[EchoAction] | type[ControlAction]


class CallFlow:
    """Where one call is (its :class:`~bridge.call.core.CallCore`) and the only way that changes: :meth:`fire` a
    trigger. ``perform`` carries out each :class:`Action` of a move with the reason the trigger was fired with."""

    def __init__(self, machine: PhaseMachine, perform: Callable[[Action, str], None]) -> None:
        self.machine = machine
        self._perform = perform
        self.core = CallCore(name=machine.call_id)
        self._carriers: dict[Family, Callable[[Do], None]] = {}
        self._watchers: dict[type[State], Callable[[Enter], None]] = {}

    @property
    def phase(self) -> Phase:
        return self.machine.phase

    def now(self) -> float:
        return self.machine.clock()

    def carry(self, family: Family, carry_out: Callable[[Do], None]) -> None:
        """``carry_out`` carries out every action of ``family`` (the part that owns the mode)."""
        self._carriers[family] = carry_out

    def watch(
        self, axis: type[Transfer] | type[Echo] | type[Control] | type[Hold], on: Callable[[Enter], None]
    ) -> None:
        """``on`` hears each change of ``axis`` (after it is made, before a ``then`` trigger)."""
        self._watchers[axis] = on

    def fire(self, trigger: Trigger, why: str = "") -> None:
        for effect in self.core.handle(trigger, self.now(), why):
            self._carry_out(effect)

    def _carry_out(self, effect: Effect) -> None:
        if isinstance(effect, Do):
            action = effect.action
            if isinstance(action, Action):
                self._perform(action, effect.why)
            else:
                self._carriers[type(action)](effect)
        elif isinstance(effect.new, Phase):
            self.machine.set(effect.new, effect.why)
        else:
            log.info("call %s: %s -> %s (%s)", self.machine.call_id, effect.old, effect.new, effect.why)
            watcher = self._watchers.get(type(effect.new))
            if watcher is not None:
                watcher(effect)


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


def _rows(axis: type[State]) -> list[tuple[State, Trigger, Move]]:
    return [(state, trigger, move) for (state, trigger), move in TABLE.items() if isinstance(state, axis)]


def mermaid(axis: type[State] = Phase) -> str:
    """A Mermaid state diagram of every move that changes ``axis``, labelled with its triggers."""
    edges: dict[tuple[State, State], list[str]] = {}
    for src, trigger, move in _rows(axis):
        if move.to is not None and trigger is not Trigger.FINISHED:
            edges.setdefault((src, move.to), []).append(_label(trigger))
    start = next(s for s in START if isinstance(s, axis))
    lines = ["stateDiagram-v2", f"    [*] --> {start.name}"]
    lines += [f"    {src.name} --> {dst.name}: {', '.join(labels)}" for (src, dst), labels in edges.items()]
    if axis is Phase:
        lines += ["    note right of ENDED: finished, from every live phase", "    ENDED --> [*]"]
    return "\n".join(lines)


def _timed(state: State) -> str:
    timer = TIMERS.get(state)
    return f" (timed: {timer.name.lower()})" if timer is not None else ""


def markdown(axis: type[State] = Phase) -> str:
    """The rows of ``axis`` as Markdown."""
    name = axis.__name__.lower()
    lines = [f"| {name} | trigger | actions, in order | next {name} |", "|---|---|---|---|"]
    for state, trigger, move in _rows(axis):
        if trigger is Trigger.FINISHED:
            continue
        actions = ", ".join(a.name.lower() for a in move.actions) or "-"
        to = move.to.name if move.to is not None else "(stays)"
        why = f' ("{move.why}")' if move.why else ""
        then = f"; then `{_label(move.then)}`" if move.then else ""
        outcome = f"; outcome {move.outcome}" if move.outcome else ""
        lines.append(f"| {state.name} | `{_label(trigger)}` | {actions} | {to}{why}{then}{outcome} |")
    if axis is Phase:
        finished = [p for p in LIVE if (p, Trigger.FINISHED) in TABLE]
        lines.append(f"| {', '.join(finished)} | `{_label(Trigger.FINISHED)}` | - | ENDED |")
    return "\n".join(lines)


FAMILIES: Mapping[type[enum.Enum], str] = {
    Action: "the session (bridge.call.perform)",
    TransferAction: "the warm transfer (bridge.call.warm)",
    HandoverAction: "the tool calls' blind transfer (bridge.call.toolcalls)",
    EchoAction: "the echo guard (bridge.call.echo)",
    ControlAction: "the supervision (bridge.call.supervision)",
}


def _glossary() -> list[str]:
    lines = ["### Triggers", "", "| trigger | fires when |", "|---|---|"]
    lines += [f"| `{_label(t)}` | {t.value} |" for t in Trigger]
    lines += ["", "### Actions", "", "| action | carried out by | what it does |", "|---|---|---|"]
    lines += [f"| {a.name.lower()} | {who} | {a.value} |" for family, who in FAMILIES.items() for a in family]
    return lines


def _modes() -> list[str]:
    lines = ["### Modes", ""]
    lines += ["Beside the phase, each on an axis of its own, a call can be mid-transfer, paused for a suspected echo,"]
    lines += ["taken over by a supervisor, or on hold. Each starts where the diagram's `[*]` points.", ""]
    for axis in AXES[1:]:
        name = axis.__name__.lower()
        lines += [f"#### {name}", "", f"| {name} | meaning |", "|---|---|"]
        lines += [f"| {state.name} | {state.value}{_timed(state)} |" for state in axis]
        lines += ["", "```mermaid", mermaid(axis), "```", "", markdown(axis), ""]
    return lines


BEGIN, END = "<!-- BEGIN GENERATED by bridge.call.flow -->", "<!-- END GENERATED -->"


def document() -> str:
    """The generated section of ``docs/call.md``: phases, diagram, table, modes, triggers, actions, reports."""
    lines = [BEGIN, "", "### Phases", "", "| phase | meaning |", "|---|---|"]
    lines += [f"| {phase} | {meaning} |" for phase, meaning in PHASES.items()]
    lines += ["", "### Diagram", "", "```mermaid", mermaid(), "```", "", "### The table", "", markdown(), ""]
    lines += [*_modes(), *_glossary(), ""]
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


if __name__ == "__main__":
    sys.exit(main())
