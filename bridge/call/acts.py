"""The call's own acts, as its helpers see them: :mod:`bridge.call.reactions`, :mod:`bridge.call.changes` and
:mod:`bridge.call.orchestration` get the collaborators they use by name, and of the session only this
:class:`CallActs` (its report, its end, a barge-in, a new session's events routed), so that they depend on the parts
below them and the session alone depends on them. :class:`~bridge.call.session.CallSession` is the one
implementation. They change no state of the session's: each collaborator owns its own behind its methods.
"""

from __future__ import annotations

from typing import Protocol

from bridge import events as ev


class CallActs(Protocol):
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
