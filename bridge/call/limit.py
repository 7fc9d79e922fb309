"""A dialplan's bound on a call's length (``max_call_s``): the caller hears a goodbye, then the bridge hangs up.

::

    answer ── max_call_s - max_call_goodbye_s ──► the goodbye, as soon as the agent and the caller are quiet
                                                  (LISTENING, the caller not speaking): the model is asked for it;
                                                  with the model away (RECOVERING), the outage's canned apology
             ── the goodbye played out ─────────► BYE with a Reason header (RFC 3326); end reason
                                                  ``max call duration``
             ── max_call_s, no goodbye begun ───► BYE (the caller talked, or the agent answered, all through the lead)

A goodbye under way is never cut by ``max_call_s``: it plays out, for at most :data:`GOODBYE_MAX_S` from its start
(the hard cap: a model that talks on). The lead (``max_call_goodbye_s``, 15 s by default) is the time for an answer
under way to finish and for the goodbye itself. This module owns the clock of the bound and what was said; the
session's table (``bridge.call.flow``: ``limit_due``, ``limit_over``) says what runs when.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from bridge import events as ev
from bridge.call.state import Phase

# The BYE's Reason (RFC 3326; Q.850 cause 16: normal call clearing): the call ended as planned, not on a fault.
LIMIT_BYE_REASON = 'Q.850;cause=16;text="max call duration"'
GOODBYE_MAX_S = 20.0  # a goodbye under way is cut after this long (the shipped apology takes about 7 s)
GOODBYE_INSTRUCTIONS = (
    "The call has reached its time limit and must end now. In one or two short sentences, tell the caller so, "
    "thank them for calling, and say goodbye. Do not ask any question."
)


class Goodbye(enum.Enum):
    AGENT = "the model was asked for the goodbye"
    APOLOGY = "the model was away: the outage's apology was queued"


SUPERVISOR_BYE_REASON = 'Q.850;cause=16;text="ended by a supervisor"'
SUPERVISOR_ENDED = "ended by a supervisor"
SUPERVISOR_GOODBYE = (
    "The call must end now. In one short sentence, thank the caller for calling and say goodbye. "
    "Do not ask any question."
)
# The node's own ends (bridge.serve.worker): serve stops, or the worker is replaced, past drain_timeout_s
NODE_GOODBYE = (
    "The service must end this call now for maintenance. In one or two short sentences, apologise, ask the caller "
    "to call again in a few minutes, and say goodbye. Do not ask any question."
)
NODE_ENDED = {
    ev.EndedBy.SHUTDOWN: "ended by the bridge: shutting down",
    ev.EndedBy.DRAIN: "ended by the bridge: draining",
}


class CallLimit:
    """The bound of one call, from its answer; :meth:`end_now` brings it forward (a supervisor's hang-up)."""

    def __init__(self, max_call_s: float, goodbye_s: float, clock: Callable[[], float]) -> None:
        self._max_s = max_call_s
        self._lead_s = goodbye_s
        self._clock = clock
        self._answered: float | None = None  # None: the bound has not started (ringing)
        self.goodbye: Goodbye | None = None  # how the goodbye is said, once it is under way
        self._said_at = 0.0
        self.instructions = GOODBYE_INSTRUCTIONS  # what the model is asked to say as the goodbye
        self.bye_reason = LIMIT_BYE_REASON  # the BYE's Reason header
        self.end_reason = ev.MAX_CALL_DURATION  # the call's end reason (the report, the metrics)
        self.ended_by = ev.EndedBy.LIMIT

    def end_now(self, by: ev.EndedBy = ev.EndedBy.SUPERVISOR, who: str = "") -> bool:
        """A supervisor (``who``) hangs up, or the node ends the call (``by``: drain or shutdown): the goodbye is due
        at once (short), the hang-up at most the lead from now. False: the call was not answered yet, or a goodbye
        is already under way (the call ends anyway)."""
        start = self._answered
        if start is None or self.goodbye is not None:
            return False
        self._max_s = self._clock() - start + self._lead_s
        if by is ev.EndedBy.SUPERVISOR:
            self.instructions, self.bye_reason = SUPERVISOR_GOODBYE, SUPERVISOR_BYE_REASON
            self.end_reason = f"{SUPERVISOR_ENDED} ({who})" if who else SUPERVISOR_ENDED
        else:
            self.end_reason = NODE_ENDED.get(by, NODE_ENDED[ev.EndedBy.SHUTDOWN])
            self.instructions = NODE_GOODBYE
            self.bye_reason = f'Q.850;cause=16;text="{self.end_reason}"'
        self.ended_by = by
        return True

    def start(self) -> None:
        """The call was answered: the bound counts from now."""
        self._answered = self._clock()

    @property
    def check_at(self) -> float:
        """When a beat next has something to look at here: the goodbye's time, then every beat while a goodbye is
        under way (it ends when it has played out); never before the answer."""
        start = self._answered
        if start is None:
            return math.inf
        return start + self._max_s - self._lead_s if self.goodbye is None else 0.0

    @property
    def due(self) -> bool:
        """The goodbye's time has come and it is not yet under way."""
        start = self._answered
        return start is not None and self.goodbye is None and self._clock() >= start + self._max_s - self._lead_s

    @property
    def capped(self) -> bool:
        """``max_call_s`` is reached with no goodbye begun, or the goodbye has gone on for :data:`GOODBYE_MAX_S`."""
        start = self._answered
        if start is None:
            return False
        return self._clock() >= (start + self._max_s if self.goodbye is None else self._said_at + GOODBYE_MAX_S)

    def said(self, how: Goodbye) -> None:
        self.goodbye, self._said_at = how, self._clock()

    def over(self, phase: Phase, idle: bool) -> bool:
        """Time to hang up: the goodbye has played out (``idle``: no response under way, nothing queued; the
        model's goodbye is over once the call listens again), or the hard cap."""
        if self.capped:
            return True
        if self.goodbye is Goodbye.APOLOGY:
            return idle
        return self.goodbye is Goodbye.AGENT and idle and phase is Phase.LISTENING
