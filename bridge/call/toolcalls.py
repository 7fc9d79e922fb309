"""The call session's side of tool calls (``bridge.call.builtin_tools`` says what each tool answers and does).

A tool's action waits for the agent's spoken line: ``transfer_to_human`` announces the transfer, ``end_call`` says
goodbye, and only once that line has started and played out (or after :data:`LINE_TIMEOUT_S`, if the model never
speaks it) does the session transfer (REFER, RFC 3515, or the plan's warm transfer) or hang up.

A transfer, once decided (:class:`~bridge.events.TransferDecided`: the model was told "transferring"), happens: it
is the call's transfer axis (:class:`bridge.call.core.Transfer`), ``ANNOUNCING`` while its line plays, then a blind
REFER (:class:`~bridge.call.core.HandoverAction`, carried out here) or a warm transfer's ``HOLDING``. A
barge-in over its announcement (:class:`~bridge.events.TransferLineInterrupted`) cuts the line and runs the transfer
at once: the caller hears the hold audio (a warm transfer holds the caller itself; a blind one is held until the
final NOTIFY), the model gets a note that the transfer goes ahead, and a transfer that fails brings the agent back
to say so. A barge-in over the goodbye of ``end_call`` drops the hangup: the caller has more to say.

With ``grouped`` (a dialect whose tools go to a delegated backend, and whose speech has no responses), the calls of
one backend response are answered together: each call's output is held until that response's ``ResponseDone``,
then every output goes out with ``respond=False`` except the last, which asks the backend to continue once.

A dialplan's business tools (``http_tools``, MCP servers: a :class:`Business`) run as tasks: the call goes on while
they do (the caller can barge in; ``bridge.call.filler`` keeps the line from going silent), each start and result is
a typed event (:class:`~bridge.events.ToolStarted`, :class:`~bridge.events.ToolFinished`), and the result, or its
typed error, answers the model. Grouped, a backend response's outputs wait for its slowest tool. A call the plan's
guards refuse (``verify_before``: the caller is not verified yet) never starts: the model gets the ``unverified``
result at once, and a :class:`~bridge.events.ToolGuarded` report counts it, as it does the pinned arguments the
model sent anyway (discarded by the tool; ``bridge.tools.guard``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bridge import events as ev
from bridge.call.acts import CallActs
from bridge.call.builtin_tools import ToolAction, ToolResult, run_tool
from bridge.call.core import Do, HandoverAction, Trigger
from bridge.call.flow import CallFlow
from bridge.call.leg import Holder, PhoneLeg, holder
from bridge.call.playback import Playback
from bridge.call.privacy import SENSITIVE, mask_json, mask_value
from bridge.call.waiting import DeadAir
from bridge.dialplan import Dialplan
from bridge.tools.context import CallContext
from bridge.tools.spec import ToolOutcome

log = logging.getLogger("bridge.call")
LINE_TIMEOUT_S = 10.0  # a tool's action runs this long after the call at the latest, spoken line or not
TRANSFER_GOES_AHEAD = (
    "The caller spoke over your transfer announcement. The transfer goes ahead as decided: the caller is on hold "
    "now and cannot hear you."
)


class Business(Protocol):
    """The business tools of one call (``bridge.tools``): never raises from :meth:`run`."""

    def handles(self, name: str) -> bool: ...

    def announcement(self, name: str) -> str | None: ...

    def sensitive(self, name: str) -> bool: ...

    def refused(self, name: str) -> ToolOutcome | None:
        """The result the model gets instead of a call the plan does not allow yet (None: it may run)."""
        ...

    async def run(self, name: str, arguments: str) -> ToolOutcome: ...

    async def close(self) -> None: ...


def call_context(leg: PhoneLeg, plan: Dialplan) -> CallContext:
    """The call's context as its business tools get it (``bridge.tools.context``): the caller as the SIP side took
    the call (the trunk's identity of the caller, never what the model was told), masked per the plan's privacy
    where a tool gets it masked."""
    visible = plan.privacy.caller_visible_digits
    return CallContext(leg.call_id, leg.caller, leg.called, plan.name, visible)


@dataclass(frozen=True, slots=True)
class Handover:
    """How a decided transfer goes: through the call's table (``flow``: its transfer axis), as the plan's warm
    transfer (:mod:`bridge.call.warm`, which holds the caller itself) or as a REFER, and what a blind transfer's
    caller hears once its announcement was interrupted."""

    flow: CallFlow
    warm: Callable[[str], None] | None = None
    hold_wav: str | None = None


class ToolCalls:
    def __init__(
        self,
        plan: Dialplan,
        leg: PhoneLeg,
        call: CallActs,
        playback: Playback,
        *,
        send: Callable[[ev.Command], None],
        business: Business | None = None,
        waiting: DeadAir | None = None,
        handover: Handover,
    ) -> None:
        self._plan, self._leg, self._send = plan, leg, send
        self._emit, self._end, self._report, self._clock = call.emit, call.end, call.report, call.clock
        self._grouped = playback.continuous
        self._responding = playback.responding  # a response is under way: an output that asks for one waits
        self._flow, self._warm = handover.flow, handover.warm
        handover.flow.carry(HandoverAction, self._carry_out)
        self._hold_wav = handover.hold_wav
        self._on_hold: tuple[Holder, float] | None = None  # a blind transfer holds the caller (since)
        self.business = business
        self.running: dict[str, tuple[str, float]] = {}  # call_id -> (tool name, started at): business tools
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, int] = {}  # grouped: a response's business tools still running
        self._done: set[str] = set()  # grouped: responses done while their tools still run
        self.waiting = waiting  # the filler and soft hold while business tools run
        self._ready: list[ev.FunctionOutput] = []
        self._held: dict[str, list[ev.FunctionOutput]] = {}  # grouped: a response's outputs, until it is done
        self._visible = plan.privacy.dtmf_visible_digits  # tool arguments and outputs are stored masked as keys are
        self.pending: ToolResult | None = None  # the action waiting for the agent's line
        self._referring = ""  # the blind transfer's target, while the table's move carries it out
        self._since = 0.0
        self._line_requested = False  # the line was asked for and has not started yet

    def call(self, e: ev.FunctionCall) -> None:
        """Run the tool, answer the model (the output asks for a response: the line), hold its action."""
        if self.business is not None and self.business.handles(e.name):
            refusal = self.business.refused(e.name)
            if refusal is None:
                self._start(e)
            else:
                self._refuse(e, refusal)
            return
        plan = self._plan
        result = run_tool(e.name, e.arguments, enabled=plan.tool_names, transfer_target=plan.transfer_target)
        shown = self._shown(e.name, e.arguments)
        output = mask_value(result.output, self._visible)
        self._report.tool_calls.append({"name": e.name, "arguments": shown, "output": output})
        self._emit(ev.ToolCalled(e.name, shown, mask_json(result.output_json, self._visible)))
        output = ev.FunctionOutput(call_id=e.call_id, output=result.output_json)
        if self._grouped:
            self._held.setdefault(e.response_id, []).append(output)
        else:
            self._send(output)
        if result.action is not None:
            self.pending, self._since = result, self._clock()
            self._line_requested = True  # until the line has started, "idle" is not "spoken"
            self._decided(result)

    def _shown(self, name: str, arguments: str) -> str:
        """The arguments as stored and shown: none of a ``sensitive`` tool's, the digits of others masked."""
        if self.business is not None and self.business.handles(name) and self.business.sensitive(name):
            return json.dumps(SENSITIVE)
        return mask_json(arguments, self._visible)

    def _start(self, e: ev.FunctionCall) -> None:
        assert self.business is not None
        self.running[e.call_id] = (e.name, self._clock())
        self._emit(ev.ToolStarted(e.name, e.call_id, self._shown(e.name, e.arguments)))
        if self._grouped:
            self._waiting[e.response_id] = self._waiting.get(e.response_id, 0) + 1
        if self.waiting is not None:
            self.waiting.begin(e.call_id, self.business.announcement(e.name))
        task = asyncio.create_task(self._finish(e, self.business), name=f"tool-{e.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse(self, e: ev.FunctionCall, refusal: ToolOutcome) -> None:
        """A call the plan's guards do not allow yet: never started, answered at once with ``refusal``."""
        detail = ", ".join(refusal.waits_for) or "a verification"
        self._emit(ev.ToolGuarded(e.name, e.call_id, ev.ToolGuard.UNVERIFIED, detail))
        self._answer(e, refusal, 0.0, 0.0)

    async def _finish(self, e: ev.FunctionCall, business: Business) -> None:
        outcome = await business.run(e.name, e.arguments)
        _, started = self.running.pop(e.call_id, (e.name, self._clock()))
        latency_ms = round((self._clock() - started) * 1000, 1)
        silence_ms = self.waiting.end(e.call_id) if self.waiting is not None else 0.0
        if outcome.discarded:
            self._emit(ev.ToolGuarded(e.name, e.call_id, ev.ToolGuard.PINNED_ARGUMENT, ", ".join(outcome.discarded)))
        self._answer(e, outcome, latency_ms, silence_ms)
        if not self._grouped:
            return
        self._waiting[e.response_id] -= 1
        if self._waiting[e.response_id] <= 0 and e.response_id in self._done:
            self._done.discard(e.response_id)
            self.response_done(e.response_id)

    def _answer(self, e: ev.FunctionCall, outcome: ToolOutcome, latency_ms: float, silence_ms: float) -> None:
        """A business tool's result: into the report and the timeline, and to the model (now, or grouped with its
        response's other outputs)."""
        shown, output_shown = self._shown(e.name, e.arguments), mask_json(outcome.output, self._visible)
        result = ev.ToolCallOutcome(outcome.error or ev.ToolCallOutcome.OK)
        self._report.tool_calls.append(
            {
                "name": e.name,
                "arguments": _parsed(shown),
                "output": _parsed(output_shown),
                "outcome": str(result),
                "latency_ms": latency_ms,
                "longest_silence_ms": silence_ms,
            }
        )
        self._emit(ev.ToolFinished(e.name, e.call_id, shown, output_shown, result, latency_ms, silence_ms))
        output = ev.FunctionOutput(call_id=e.call_id, output=outcome.output)
        if self._grouped:
            self._held.setdefault(e.response_id, []).append(output)
        else:
            self._ready.append(output)
            self._send_ready()

    def _send_ready(self) -> None:
        """The outputs of finished tools, once no response is under way (a filler line, or the model answering the
        caller meanwhile): one response for all of them."""
        if not self._ready or self._responding():
            return
        ready, self._ready = self._ready, []
        for i, output in enumerate(ready):
            self._send(output if i == len(ready) - 1 else dataclasses.replace(output, respond=False))

    async def close(self) -> None:
        """The call is over: stop its tools' calls."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.business is not None:
            await self.business.close()

    def after_line(self, action: ToolResult, spoken: bool) -> None:
        """An action decided elsewhere (an orchestrator): it runs once the line asked for (``spoken``) has started
        and played out, or, without a line, on the first beat with nothing playing."""
        self.pending, self._since, self._line_requested = action, self._clock(), spoken
        self._decided(action)

    def _decided(self, action: ToolResult) -> None:
        if action.action is ToolAction.TRANSFER and action.target:
            mode = ev.TransferMode.BLIND if self._warm is None else ev.TransferMode.WARM
            self._emit(ev.TransferDecided(action.target, mode))
            self._flow.fire(Trigger.TRANSFER_DECIDED, f"transfer to {action.target}")

    def response_done(self, response_id: str) -> None:
        """Grouped: the backend's response is complete; answer all its calls, asking for one continuation (once
        its business tools have answered)."""
        if self._waiting.get(response_id, 0) > 0:
            self._done.add(response_id)
            return
        self._waiting.pop(response_id, None)
        outputs = self._held.pop(response_id, [])
        for i, output in enumerate(outputs):
            self._send(output if i == len(outputs) - 1 else dataclasses.replace(output, respond=False))

    def line_started(self) -> None:
        """A response started (the line, if one was asked for)."""
        self._line_requested = False

    @property
    def busy(self) -> bool:
        """An action, an output or a wait pending: the call's checks look at them on every beat."""
        return self.pending is not None or bool(self._ready) or (self.waiting is not None and self.waiting.busy)

    def beat(self, idle: bool) -> None:
        """``idle``: no response under way and the playout is empty. Runs the action once it is due."""
        if self.waiting is not None:
            self.waiting.beat()
        self._send_ready()
        if self.pending is None:
            return
        if not ((idle and not self._line_requested) or self._clock() - self._since > LINE_TIMEOUT_S):
            return
        pending, self.pending = self.pending, None
        self._run(pending, interrupted=False)

    def _run(self, pending: ToolResult, *, interrupted: bool) -> None:
        if pending.action is ToolAction.TRANSFER and pending.target and self._warm is not None:
            self._warm(pending.target)  # the warm transfer puts the caller on hold itself
        elif pending.action is ToolAction.TRANSFER and pending.target:
            self._referring = pending.target
            self._flow.fire(Trigger.REFER_CUT if interrupted else Trigger.REFER, f"transfer to {pending.target}")
            self._referring = ""
        elif pending.action is ToolAction.HANGUP:
            self._emit(ev.AgentHungUp())
            self._leg.hangup()
            self._end("agent ended the call", ev.EndedBy.AGENT, ev.CallOutcome.COMPLETED)

    def _carry_out(self, do: Do) -> None:
        match do.action:
            case HandoverAction.HOLD_CALLER:
                self._hold()
            case HandoverAction.SEND_REFER:
                self._emit(ev.TransferStarted(self._referring))
                self._leg.transfer(self._referring)

    def interrupted(self) -> None:
        """A barge-in: a decided transfer goes ahead at once (the caller on hold); a goodbye's hangup is dropped."""
        if self.waiting is not None:
            self.waiting.interrupted()
        pending, self.pending = self.pending, None
        if pending is None or pending.action is not ToolAction.TRANSFER or not pending.target:
            return
        self._emit(ev.TransferLineInterrupted())
        goes_ahead = "%s: the caller spoke over the transfer line: the transfer to %s goes ahead"
        log.info(goes_ahead, self._leg.call_id, pending.target)
        self._send(ev.AddText(TRANSFER_GOES_AHEAD, ev.Role.SYSTEM))  # it was told "transferring": it still is
        self._run(pending, interrupted=True)
        if not self._grouped:  # what the caller said over the line is no turn for the model: they are on hold now
            self._send(ev.ClearAudio())

    def _hold(self) -> None:
        """A blind transfer whose line was cut: the caller hears the hold audio until the final NOTIFY, and the
        model (whose answer to the interruption nobody should hear) is out of the caller's call."""
        can = holder(self._leg)
        if can is None or self._hold_wav is None:
            log.warning("%s: the transfer goes ahead without hold audio: this leg cannot hold", self._leg.call_id)
            return
        try:
            can.hold(self._hold_wav)
        except Exception as exc:
            log.warning("%s: the transfer goes ahead without hold audio: %s", self._leg.call_id, exc)
            return
        self._on_hold = can, self._clock()
        self._emit(ev.HoldStarted())

    def _unhold(self, *, back: bool) -> None:
        """The blind transfer's hold ends; ``back``: the caller and the agent hear each other again."""
        held, self._on_hold = self._on_hold, None
        if held is None:
            return
        can, since = held
        if back:
            try:
                can.unhold()
            except Exception as exc:
                log.warning("%s: taking the caller off hold: %s", self._leg.call_id, exc)
        self._emit(ev.HoldEnded(round(self._clock() - since, 3)))

    def transfer_progress(self, e: ev.TransferProgress, *, answer: bool = True) -> None:
        """A NOTIFY about the transfer. A failed one is noted for the model; ``answer``: and it tells the caller
        (an orchestrated call passes False: the orchestration decides what the caller hears)."""
        self._emit(ev.TransferUpdate(e.status_code, e.reason, e.final))
        if not e.final:
            return
        ok = 200 <= e.status_code < 300
        self._unhold(back=not ok)
        if ok:
            self._leg.hangup()  # RFC 3515: the transferor leaves after the final NOTIFY 200
            self._end("transferred", ev.EndedBy.AGENT, ev.CallOutcome.TRANSFERRED)
        else:
            self._send(
                ev.AddText(f"The transfer failed ({e.status_code} {e.reason}). Tell the caller.", ev.Role.SYSTEM)
            )
            if answer and not self._grouped:  # else the model speaks on its own after the note
                self._send(ev.CreateResponse())


def _parsed(text: str) -> Any:
    try:
        return json.loads(text or "null")
    except ValueError:
        return text
