"""The call session's side of tool calls (``bridge.call.tools`` says what each tool answers and does).

A tool's action waits for the agent's spoken line: ``transfer_to_human`` announces the transfer, ``end_call`` says
goodbye, and only once that line has started and played out (or after :data:`LINE_TIMEOUT_S`, if the model never
speaks it) does the session transfer (REFER, RFC 3515) or hang up. A barge-in drops the waiting action: the caller
interrupted the goodbye or the transfer line, and the model is told a transfer did not start.

With ``grouped`` (a dialect whose tools go to a delegated backend, and whose speech has no responses), the calls of
one backend response are answered together: each call's output is held until that response's ``ResponseDone``,
then every output goes out with ``respond=False`` except the last, which asks the backend to continue once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bridge import events as ev
from bridge.call.leg import PhoneLeg
from bridge.call.report import CallReport
from bridge.call.tools import ToolResult, run_tool
from bridge.dialplan import Dialplan

LINE_TIMEOUT_S = 10.0  # a tool's action runs this long after the call at the latest, spoken line or not
TRANSFER_NOT_STARTED = (
    "The transfer to a human agent was NOT started: the caller spoke over your announcement. "
    "Ask whether they still want to be transferred."
)


class ToolCalls:
    def __init__(
        self,
        plan: Dialplan,
        leg: PhoneLeg,
        send: Callable[[ev.Command], None],
        emit: Callable[[ev.Report], None],
        report: CallReport,
        *,
        end: Callable[[str, str], None],
        clock: Callable[[], float],
        grouped: bool = False,
    ) -> None:
        self._grouped = grouped
        self._held: dict[str, list[ev.FunctionOutput]] = {}  # grouped: a response's outputs, until it is done
        self._plan = plan
        self._leg = leg
        self._send = send
        self._emit = emit
        self._report = report
        self._end = end  # (reason, outcome): the call is over
        self._clock = clock
        self.pending: ToolResult | None = None  # the action waiting for the agent's line
        self._since = 0.0
        self._line_requested = False  # the line was asked for and has not started yet

    def call(self, e: ev.FunctionCall) -> None:
        """Run the tool, answer the model (the output asks for a response: the line), hold its action."""
        plan = self._plan
        result = run_tool(e.name, e.arguments, enabled=plan.tool_names, transfer_target=plan.transfer_target)
        self._report.tool_calls.append({"name": e.name, "arguments": e.arguments, "output": result.output})
        self._emit(ev.ToolCalled(e.name, e.arguments, result.output_json))
        output = ev.FunctionOutput(call_id=e.call_id, output=result.output_json)
        if self._grouped:
            self._held.setdefault(e.response_id, []).append(output)
        else:
            self._send(output)
        if result.action is not None:
            self.pending, self._since = result, self._clock()
            self._line_requested = True  # until the line has started, "idle" is not "spoken"

    def after_line(self, action: ToolResult, spoken: bool) -> None:
        """An action decided elsewhere (an orchestrator): it runs once the line asked for (``spoken``) has started
        and played out, or, without a line, on the first beat with nothing playing."""
        self.pending, self._since, self._line_requested = action, self._clock(), spoken

    def response_done(self, response_id: str) -> None:
        """Grouped: the backend's response is complete; answer all its calls, asking for one continuation."""
        outputs = self._held.pop(response_id, [])
        for i, output in enumerate(outputs):
            self._send(output if i == len(outputs) - 1 else dataclasses.replace(output, respond=False))

    def line_started(self) -> None:
        """A response started (the line, if one was asked for)."""
        self._line_requested = False

    def beat(self, idle: bool) -> None:
        """``idle``: no response under way and the playout is empty. Runs the action once it is due."""
        if self.pending is None:
            return
        if not ((idle and not self._line_requested) or self._clock() - self._since > LINE_TIMEOUT_S):
            return
        pending, self.pending = self.pending, None
        if pending.action == "transfer" and pending.target:
            self._emit(ev.TransferStarted(pending.target))
            self._leg.transfer(pending.target)
        elif pending.action == "hangup":
            self._emit(ev.AgentHungUp())
            self._leg.hangup()
            self._end("agent ended the call", "completed")

    def interrupted(self) -> None:
        """A barge-in: drop the waiting action."""
        pending, self.pending = self.pending, None
        if pending is not None and pending.action == "transfer":
            # The model was told "transferring": tell it the transfer did not happen, so it can ask again.
            self._emit(ev.TransferCancelled())
            self._send(ev.AddText(TRANSFER_NOT_STARTED, ev.Role.SYSTEM))

    def transfer_progress(self, e: ev.TransferProgress, *, answer: bool = True) -> None:
        """A NOTIFY about the transfer. A failed one is noted for the model; ``answer``: and it tells the caller
        (an orchestrated call passes False: the orchestration decides what the caller hears)."""
        self._emit(ev.TransferUpdate(e.status_code, e.reason, e.final))
        if not e.final:
            return
        if 200 <= e.status_code < 300:
            self._leg.hangup()  # RFC 3515: the transferor leaves after the final NOTIFY 200
            self._end("transferred", "transferred")
        else:
            self._send(
                ev.AddText(f"The transfer failed ({e.status_code} {e.reason}). Tell the caller.", ev.Role.SYSTEM)
            )
            if answer and not self._grouped:  # else the model speaks on its own after the note
                self._send(ev.CreateResponse())
