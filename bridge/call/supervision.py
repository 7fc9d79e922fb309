"""A supervisor's actions on a live call (:class:`bridge.events.SupervisorAction`, from the console or the API through
``bridge.serve.actions``), carried out by the call's session.

* **hang up**: the call's bound is brought forward (:meth:`bridge.call.limit.CallLimit.end_now`): as soon as the
  agent and the caller are quiet the model says one short goodbye, and once it has played out the bridge sends BYE
  (``Reason: ... "ended by a supervisor"``); within the goodbye lead at the latest, goodbye or not.
* **whisper**: an instruction to the agent for the rest of the call. It goes into the session as a system item at
  once, and into the instructions of every later session of the call (rollover, recovery). It is never read out.
* **transfer**: the transfer path the call already has (REFER, after the agent's one-line announcement when the
  call is listening; at once after the current reply otherwise), to a target the API checked against the plan.
* **take over** (the control axis of the call's core, :class:`bridge.call.core.Control`): the model is muted: the
  reply under way is cut as by a barge-in (cancelled, truncated, its playout flushed), the model hears silence in
  place of the caller (:meth:`bridge.call.link.Link.mute`), any audio it still sends is dropped, and a response it
  begins meanwhile (an answer to words the take-over cut short) is cancelled. The caller hears the supervisor (the
  worker's ``bridge.call.takeover`` leg).
* **hand back**: the model hears the caller again, with a system note that a supervisor spoke with them; it answers
  when the caller next speaks.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge import events as ev
from bridge.call.builtin_tools import ToolAction, ToolResult
from bridge.call.core import ControlAction, Do, Trigger
from bridge.call.flow import CallFlow
from bridge.call.limit import CallLimit
from bridge.call.link import Link
from bridge.call.state import Phase
from bridge.call.toolcalls import ToolCalls
from bridge.realtime.profile import AgentProfile

WHISPER_NOTE = (
    "Instruction from your supervisor for the rest of this call. Follow it; never read it out or mention it: {text}"
)
TRANSFER_LINE = "In one short sentence, tell the caller you are transferring them to a colleague now."
HANDBACK_NOTE = (
    "A supervisor spoke with the caller directly for a while; you did not hear that part. Continue the call "
    "from here: answer the caller's next words."
)


class Supervision:
    """One call's supervisor actions and the whispers so far."""

    def __init__(
        self,
        link: Link,
        emit: Callable[[ev.Report], None],
        limit: CallLimit,
        tools: ToolCalls,
        flow: CallFlow,
        cut: Callable[[str], None],
    ) -> None:
        self._link, self._send, self._emit, self._limit = link, link.send, emit, limit
        self._tools, self._flow, self._cut = tools, flow, cut
        self.whispers: list[str] = []
        flow.carry(ControlAction, self._carry_out)  # taken over or not is the core's control axis

    def handle(self, e: ev.SupervisorAction) -> None:
        match e.action:
            case ev.SupervisorKind.HANGUP:
                self._limit.end_now(ev.EndedBy.SUPERVISOR, e.who)
                self._emit(ev.SupervisorActed(str(e.action), e.who))
            case ev.SupervisorKind.WHISPER:
                self.whispers.append(e.text)
                self._send(ev.AddText(WHISPER_NOTE.format(text=e.text), ev.Role.SYSTEM))
                self._emit(ev.SupervisorActed(str(e.action), e.who, e.text))
            case ev.SupervisorKind.TRANSFER:
                announce = self._flow.phase is Phase.LISTENING
                if announce:
                    self._send(ev.CreateResponse(instructions=TRANSFER_LINE))
                self._tools.after_line(ToolResult({}, ToolAction.TRANSFER, e.target), spoken=announce)
                self._emit(ev.SupervisorActed(str(e.action), e.who, e.target))
            case ev.SupervisorKind.TAKEOVER:
                self._flow.fire(Trigger.TAKE_OVER, f"taken over by {e.who}")  # once: again, no row
                self._emit(ev.SupervisorActed(str(e.action), e.who))
            case ev.SupervisorKind.HANDBACK:
                self._flow.fire(Trigger.HAND_BACK, f"handed back by {e.who}")
                self._emit(ev.SupervisorActed(str(e.action), e.who))

    def _carry_out(self, do: Do) -> None:
        match do.action:
            case ControlAction.MUTE_MODEL:
                self._link.mute(True)
                self._cut("taken over by a supervisor")
            case ControlAction.UNMUTE_MODEL:
                self._link.mute(False)
                self._send(ev.AddText(HANDBACK_NOTE, ev.Role.SYSTEM))

    def profile(self, base: AgentProfile) -> AgentProfile:
        """``base`` with the whispers so far in its instructions (a new session of the call keeps them)."""
        if not self.whispers:
            return base
        notes = "\n".join(WHISPER_NOTE.format(text=text) for text in self.whispers)
        return base.model_copy(update={"instructions": f"{base.instructions}\n\n{notes}"})
