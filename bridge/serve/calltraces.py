"""A worker's calls as traces (``tracing: otlp``): the process's tracing, set up once by the worker's ``main`` like its
logs, and each call's trace (:class:`bridge.runtime.calltrace.CallTrace`) started as the call arrives.

With tracing off (the default) :func:`call_trace` gives :data:`NO_TRACE`, which listens to nothing and names no
trace, and nothing of OpenTelemetry is imported (:mod:`bridge.runtime.traces`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from bridge import events as ev
from bridge.call.options import Listener
from bridge.dialplan import Dialplan
from bridge.runtime import tracecontext, traces
from bridge.serve.variant import VariantCall

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from bridge.runtime.calltrace import CallTrace
    from bridge.runtime.tracing import Tracing
    from bridge.sip.gateway import IncomingCall


class NoTrace:
    """A call's trace with tracing off: nothing."""

    def ids(self) -> dict[str, str]:
        return {}

    def listen(self, report: ev.Report) -> None:
        return None


NO_TRACE = NoTrace()
_process: list[Tracing] = []  # this process's tracing, once configured on


def configure(mode: str, worker: str) -> None:
    """This process's tracing (``mode``: the ``tracing`` setting; ``worker``: its index)."""
    tracing = traces.start(mode, worker)
    if tracing is not None:
        _process.append(tracing)


def close() -> None:
    """Export what waits and stop (a failing collector is not waited for)."""
    while _process:
        _process.pop().close()


def hash_fields(trace: CallTrace | NoTrace) -> dict[str, str]:
    """What the call's hash keeps of its trace: its ``trace_id`` (the console shows it) and its root's span id
    (``trace_span``: a call whose worker died is ended on it), {} when untraced."""
    ids = trace.ids()
    return {"trace_id": ids["trace_id"], "trace_span": ids["span_id"]} if ids.get("trace_id") else {}


def stored_ids(state: Mapping[str, str]) -> dict[str, str]:
    """``trace_id`` and ``span_id`` (the root's) of a call as its hash keeps them (data: both checked as hex ids),
    {} if it keeps none."""
    found = tracecontext.parse(f"00-{state.get('trace_id', '')}-{state.get('trace_span', '')}-01")
    return {"trace_id": f"{found[0]:032x}", "span_id": f"{found[1]:016x}"} if found else {}


def use(tracing: Tracing | None) -> None:
    """This process's tracing, started elsewhere (``serve``'s, whose deliverer has it): what :func:`stand_in` ends
    its spans with (None: none)."""
    _process[:] = [tracing] if tracing is not None else []


def stand_in(state: Mapping[str, str], reason: str, start_s: float, end_s: float) -> None:
    """The root span of a traced call whose worker died (its hash ``state``), ended as a stand-in with ``reason``
    (nothing when tracing is off here or the call was not traced)."""
    ids = stored_ids(state)
    if not _process or not ids:
        return
    names = ("call_id", "sip_call_id", "dialplan", "variant", "dialect")
    attributes: dict[str, str] = {f"callbridge.{k}": state[k] for k in names if state.get(k)}
    attributes |= {"gen_ai.request.model": state.get("model", ""), "callbridge.end_reason": reason}
    attributes |= {"callbridge.ended_by": str(ev.EndedBy.FAULT), "callbridge.outcome": str(ev.CallOutcome.FAILED)}
    trace_ids = (int(ids["trace_id"], 16), int(ids["span_id"], 16))
    _process[0].stand_in(trace_ids, attributes, start_s, end_s, str(ev.CallOutcome.FAILED))


def call_trace(call: IncomingCall, plan: Dialplan, vc: VariantCall, listeners: list[Listener]) -> CallTrace | NoTrace:
    """The call's trace, its root span open from now (ended by the call's ``CallEnded``, or at :func:`close`), a
    listener of the call; and the context of the call's task, so that its tool requests carry its traceparent (the
    tasks it starts inherit it). A listed trunk's ``traceparent`` and ``tracestate`` (its source in
    ``sip_allowed_sources`` or ``sip_trunk_sources``; behind the front, the trunk's own address as the front reports
    it) make the call a part of the caller's trace; anyone else's is ignored (a fresh trace). Never a caller number
    in it."""
    if not _process:
        return NO_TRACE
    d = vc.decision
    identity = {
        "call_id": call.call_id,
        "sip_call_id": call.sip_call_id,
        "dialplan": plan.name,
        "variant": d.variant,
        "dialect": vc.dialect.name,
        "model": d.model,
    }
    told = call.headers.get(tracecontext.HEADER, "") if call.traced_trunk else ""  # a listed trunk's only
    state = call.headers.get(tracecontext.STATE_HEADER, "") if call.traced_trunk else ""
    trace = _process[0].call(identity, lambda: vc.decision.model, tracecontext.parse(told), state)
    listeners.append(trace.listen)
    tracecontext.CURRENT.set(trace)
    return trace
