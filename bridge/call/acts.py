"""The call's own acts, as its parts see them: :mod:`bridge.call.reactions`, :mod:`bridge.call.changes`,
:mod:`bridge.call.orchestration` and :mod:`bridge.call.toolcalls` get the collaborators they use (the frozen
:class:`~bridge.call.parts.CallParts`), and of the session only this :class:`CallActs` (its report and clock, its
end, a barge-in, a new session's events routed), so that they depend on the parts below them and the session alone
depends on them. :class:`~bridge.call.session.CallSession` is the one implementation. They change no state of the
session's: each collaborator owns its own behind its methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bridge import events as ev
from bridge.call.report import CallReport


class CallActs(Protocol):
    @property
    def report(self) -> CallReport:
        """The call's record, which its parts fill in."""
        ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def ending(self) -> bool:
        """The call is over (its report's ``end_reason`` says why); the run loop stops."""
        ...

    @property
    def service_interrupts(self) -> bool:
        """The session's turn detection cancels an active response itself when it hears the caller start."""
        ...

    def emit(self, report: ev.Report) -> None: ...

    def end(self, reason: str, by: ev.EndedBy, outcome: ev.CallOutcome = ev.CallOutcome.COMPLETED) -> None: ...

    def interrupt(self, why: str, agent_busy: bool, *, service_cancelled: bool = False) -> None: ...

    def start_pump(self) -> None: ...


class OrchestratedTurns(Protocol):
    """What the call's reactions tell an orchestrated call (:class:`~bridge.call.orchestration.Orchestration`)."""

    def key(self) -> None: ...

    def transfer_failed(self, e: ev.TransferProgress) -> None: ...
