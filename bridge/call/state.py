"""The phases of one call, as a transition table with one logged setter (like h11's ``_state.py``).

::

    IDLE ──► LISTENING ◄──────────────┐
     │  └──► THINKING ──► SPEAKING ───┤ (reply played out)
     │         ▲  │          │        │
     │         │  └──────────┼──► LISTENING (no audio: tool call, caller spoke again)
     │         │             ▼
     │         └─────── CANCELLING ──► LISTENING      (barge-in: flush, cancel, truncate)
     └──► RECOVERING ◄── any live phase (socket lost) ──► LISTENING / THINKING
    any phase ──► ENDED

These are the moves that are legal at all; an illegal one is a bug in the call session (:class:`IllegalTransition`
is raised). Which trigger makes which move, and what the session does on it, is the table of :mod:`bridge.call.core`
(beside the phase: the call's modes); :class:`bridge.call.flow.CallFlow` carries its moves out and is the only caller
of :meth:`PhaseMachine.set` (drawn in ``docs/call.md``).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("bridge.call")


class Phase(enum.StrEnum):
    IDLE = "IDLE"
    LISTENING = "LISTENING"
    THINKING = "THINKING"
    SPEAKING = "SPEAKING"
    CANCELLING = "CANCELLING"
    RECOVERING = "RECOVERING"
    ENDED = "ENDED"


P = Phase
TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    P.IDLE: frozenset({P.LISTENING, P.THINKING, P.RECOVERING, P.ENDED}),
    P.LISTENING: frozenset({P.THINKING, P.SPEAKING, P.RECOVERING, P.ENDED}),
    P.THINKING: frozenset({P.SPEAKING, P.LISTENING, P.CANCELLING, P.RECOVERING, P.ENDED}),
    P.SPEAKING: frozenset({P.LISTENING, P.THINKING, P.CANCELLING, P.RECOVERING, P.ENDED}),
    P.CANCELLING: frozenset({P.LISTENING, P.RECOVERING, P.ENDED}),
    P.RECOVERING: frozenset({P.LISTENING, P.THINKING, P.ENDED}),
    P.ENDED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class PhaseMachine:
    """Holds the phase; :meth:`set` is the only way to change it, and every change is logged and recorded."""

    def __init__(
        self,
        call_id: str,
        on_change: Callable[[Phase, Phase, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_id = call_id
        self.phase = Phase.IDLE
        self.history: list[tuple[float, Phase, str]] = [(clock(), Phase.IDLE, "start")]
        self._on_change = on_change
        self.clock = clock

    def set(self, new: Phase, why: str) -> None:
        old = self.phase
        if new == old:
            return
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"call {self.call_id}: {old} -> {new} ({why}) is not a legal transition")
        self.phase = new
        self.history.append((self.clock(), new, why))
        log.info("call %s: %s -> %s (%s)", self.call_id, old, new, why)
        if self._on_change is not None:
            self._on_change(old, new, why)

    def can(self, new: Phase) -> bool:
        return new == self.phase or new in TRANSITIONS[self.phase]

    @property
    def sequence(self) -> list[str]:
        return [str(p) for _, p, _ in self.history]


def mermaid() -> str:
    """The transition table as a Mermaid state diagram (for the README)."""
    lines = ["stateDiagram-v2", "    [*] --> IDLE"]
    for src, dsts in TRANSITIONS.items():
        lines += [f"    {src} --> {dst}" for dst in sorted(dsts)]
    lines.append("    ENDED --> [*]")
    return "\n".join(lines)
