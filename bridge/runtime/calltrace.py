"""One call's trace, made from its reports (:mod:`bridge.events`): a listener of the call, like the store's.

The root span ``call`` is open from the call's arrival to its ``CallEnded``; under it, as the reports say:

* ``realtime <model>``: one model session (GenAI conventions: ``gen_ai.system``, ``gen_ai.request.model``, the
  tokens of its responses); a rollover or a reconnect is a new one;
* ``caller turn``: the caller's speech, from its start to its end;
* ``agent answer``: from the end of the caller's speech (or the response's start, for the greeting) to the end of
  the response, with the latency the caller felt (``callbridge.latency.<segment>_ms``);
* ``tool <name>``: a business tool's call, from its start to its result; the tool's request adds the HTTP client's
  (or the MCP call's) attributes and carries this span's ``traceparent`` (:mod:`bridge.runtime.tracecontext`);
* ``opening``: from the call's arrival to its answer (the 200 OK): the model's session set up meanwhile;
* ``outage hold``: the caller on hold while the model is away or a transfer holds them;
* ``transfer warm``: the human's leg of a warm transfer, from its dial to its outcome (a blind transfer is an event).
* ``post call``: the work after the phone leg has ended (the call's end says when it begins): the model's summary,
  disposition and fields (its status), then the plan's checks (how many, how many failed), until ``CallEnded``.

A sampled call's latency measures and tools' latencies are also the exemplars of the histograms that count them
(:func:`bridge.metrics.exemplar_latency`, :func:`bridge.metrics.exemplar_tool`): the trace and the span each was
taken in, so that a slow bucket on /metrics opens the call.

Nothing private goes in: no caller number, no transcript, no tool arguments or results (the names of the reports'
fields that hold them are never read here). A failure in here never reaches the call: the listener logs it once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from bridge import events as ev
from bridge import metrics
from bridge.runtime import tracecontext

log = logging.getLogger("bridge.tracing")

GEN_AI_SYSTEM = "openai"  # every dialect speaks to an OpenAI Realtime service (or the emulator of one)
_FAILED = frozenset({ev.CallOutcome.FAILED, ev.CallOutcome.NETWORK_FAILURE})
Value = str | int | float | bool


class CallTrace:
    """See the module doc. ``identity``: the call's ``call_id``, ``sip_call_id``, ``dialplan``, ``variant``,
    ``dialect``, ``model``; ``model``: the model the call is on now (a fallback changes it); ``parent``: the
    caller's span (a trusted trunk's ``traceparent``), else the call is a trace of its own."""

    def __init__(
        self, tracer: trace.Tracer, identity: Mapping[str, str], model: Callable[[], str], parent: Context | None = None
    ) -> None:
        self.tracer, self.model, self.identity = tracer, model, identity
        attributes = {f"callbridge.{k}": v for k, v in identity.items() if k != "model" and v}
        attributes["gen_ai.request.model"] = identity.get("model", "")
        self.root = tracer.start_span("call", context=parent, kind=SpanKind.SERVER, attributes=attributes)
        self._parent = trace.set_span_in_context(self.root)
        self.opening: trace.Span | None = self._child("opening")  # the arrival -> the 200 OK
        self.transfer: trace.Span | None = None  # a warm transfer: the human's leg, from its dial to its outcome
        self.session: trace.Span | None = None
        self.tokens = [0, 0]  # the session's input and output tokens
        self.turn: trace.Span | None = None
        self.answer: trace.Span | None = None
        self.hold: trace.Span | None = None
        self.post: trace.Span | None = None  # the post-call work: from its start to the call's end
        self.turns = 0
        self.tools: dict[str, trace.Span] = {}  # the model's call id -> its tool's open span
        self.names: dict[str, list[str]] = {}  # a tool's name -> its open calls' ids, the latest last
        self.ended = False
        self._warned = False
        self._table = self._reports()

    def _reports(self) -> ev.ReportTable:
        t = ev.ReportTable()
        t.on(ev.Answered, self._answered)
        t.on(ev.TransferStepped, self._transfer_stepped)
        t.on(ev.SessionOpened, self._session_opened)
        t.on(ev.SessionLost, self._session_lost)
        t.on(ev.RolledOver, lambda r: self._end_session("rollover"))
        t.on(ev.CallerSpeechStarted, self._speech_started)
        t.on(ev.CallerSpeechStopped, self._speech_stopped)
        t.on(ev.ResponseBegan, self._response_began)
        t.on(ev.ResponseEnded, self._response_ended)
        t.on(ev.Latency, self._latency)
        t.on(ev.BargeIn, self._barge_in)
        t.on(ev.ToolStarted, self._tool_started)
        t.on(ev.ToolFinished, self._tool_finished)
        t.on(ev.HoldStarted, lambda r: self._hold(True))
        t.on(ev.HoldEnded, lambda r: self._hold(False))
        t.on(ev.TransferStarted, lambda r: self.root.add_event("transfer", {"callbridge.transfer.mode": "blind"}))
        t.on(ev.WarmTransferEnded, self._warm_ended)
        t.on(ev.PostCallDone, self._post_call_done)
        t.on(ev.ChecksDone, self._checks_done)
        t.on(ev.CallEnded, self._call_ended)
        return t

    def listen(self, report: ev.Report) -> None:
        """The call's listener: never raises into the call."""
        if self.ended:
            return
        try:
            self._table(report)
        except Exception:  # a bug here must cost the call nothing: said once per call
            if not self._warned:
                self._warned = True
                log.exception("traces: the call's trace missed a report (%s)", report.kind)

    # -- what the call's requests and webhooks carry

    def ids(self) -> dict[str, str]:
        """``trace_id`` and ``span_id`` (the root's) in hex, as a webhook's body carries them; {} if the trace is not
        sampled."""
        return exemplar(self.root)

    def traceparent(self, tool: str = "", attributes: tracecontext.Attributes | None = None) -> str:
        span = self.root
        open_ids = self.names.get(tool) if tool else None
        if open_ids:
            span = self.tools[open_ids[-1]]
            if attributes:
                span.set_attributes(dict(attributes))
        ctx = span.get_span_context()
        return tracecontext.traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled) if ctx.is_valid else ""

    # -- the model's sessions

    def _child(self, name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: Value) -> trace.Span:
        """A span under the call's root, open from now."""
        return self.tracer.start_span(name, context=self._parent, kind=kind, attributes=attributes)

    def _session_opened(self, r: ev.SessionOpened) -> None:
        self._end_session("replaced")
        model = self.model()
        self.session = self._child(
            f"realtime {model}",
            SpanKind.CLIENT,
            **{
                "gen_ai.system": GEN_AI_SYSTEM,
                "gen_ai.provider.name": GEN_AI_SYSTEM,
                "gen_ai.operation.name": "realtime",
                "gen_ai.request.model": model,
                "callbridge.session_id": r.session_id,
            },
        )
        self.tokens = [0, 0]

    def _session_lost(self, r: ev.SessionLost) -> None:
        if self.session is not None:
            self.session.set_status(Status(StatusCode.ERROR, r.error_label))
            self.session.set_attribute("error.type", r.error_label)
        self._end_session("lost")

    def _end_session(self, why: str) -> None:
        if self.session is None:
            return
        self.session.set_attributes(
            {
                "gen_ai.usage.input_tokens": self.tokens[0],
                "gen_ai.usage.output_tokens": self.tokens[1],
                "callbridge.session.end": why,
            }
        )
        self.session.end()
        self.session = None

    # -- turns and answers

    def _turn_span(self, name: str) -> trace.Span:
        span = self._child(name)
        span.set_attribute("callbridge.turn", self.turns)
        return span

    def _speech_started(self, r: ev.CallerSpeechStarted) -> None:
        self._end(self.turn)
        self.turns += 1
        self.turn = self._turn_span("caller turn")

    def _speech_stopped(self, r: ev.CallerSpeechStopped) -> None:
        self._end(self.turn)
        self.turn = None
        self._end(self.answer)
        self.answer = self._turn_span("agent answer")

    def _response_began(self, r: ev.ResponseBegan) -> None:
        if self.answer is None:  # the greeting, or an answer no caller turn asked for (after a tool's result)
            self.answer = self._turn_span("agent answer")
        self.answer.set_attribute("gen_ai.response.id", r.response_id)

    def _response_ended(self, r: ev.ResponseEnded) -> None:
        usage = r.usage or ev.Usage()
        self.tokens[0] += usage.input_tokens
        self.tokens[1] += usage.output_tokens
        if self.answer is None:
            return
        self.answer.set_attributes(
            {
                "callbridge.response.status": str(r.status),
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
            }
        )
        self.answer.end()
        self.answer = None

    def _latency(self, r: ev.Latency) -> None:
        span = self.answer or self.root
        span.set_attribute(f"callbridge.latency.{r.segment}_ms", round(r.ms, 1))
        metrics.exemplar_latency(r.segment, self.identity.get("dialect", ""), r.ms, exemplar(span))

    def _barge_in(self, r: ev.BargeIn) -> None:
        target = self.answer or self.root
        target.add_event("barge_in", {"callbridge.barge_in.why": r.why})
        target.set_attribute("callbridge.barge_in", True)

    # -- tools, holds, transfers, the end

    def _tool_started(self, r: ev.ToolStarted) -> None:
        span = self._child(
            f"tool {r.name}",
            SpanKind.CLIENT,
            **{
                "callbridge.tool.name": r.name,
                "callbridge.tool.call_id": r.call_id,
            },
        )
        self.tools[r.call_id] = span
        self.names.setdefault(r.name, []).append(r.call_id)

    def _tool_finished(self, r: ev.ToolFinished) -> None:
        span = self.tools.pop(r.call_id, None)
        if span is None:
            return
        ids = self.names.get(r.name, [])
        if r.call_id in ids:
            ids.remove(r.call_id)
        span.set_attributes({"callbridge.tool.outcome": str(r.outcome), "callbridge.tool.latency_ms": r.latency_ms})
        if r.outcome != ev.ToolCallOutcome.OK:
            span.set_status(Status(StatusCode.ERROR, str(r.outcome)))
            span.set_attribute("error.type", str(r.outcome))
        span.end()
        where = (self.identity.get("dialplan", ""), self.identity.get("variant", ""), r.name)
        metrics.exemplar_tool(*where, r.latency_ms, exemplar(span))

    def _hold(self, on: bool) -> None:
        if on and self.hold is None:
            self.hold = self._child("outage hold")
        elif not on:
            self._end(self.hold)
            self.hold = None

    def _answered(self, r: ev.Answered) -> None:
        self.root.add_event("answered")
        self._end(self.opening)
        self.opening = None

    def _transfer_stepped(self, r: ev.TransferStepped) -> None:
        if self.transfer is None:
            self.transfer = self._child("transfer warm", SpanKind.CLIENT, **{"callbridge.transfer.mode": "warm"})
        self.transfer.add_event(str(r.step))

    def _warm_ended(self, r: ev.WarmTransferEnded) -> None:
        span = self.transfer or self._child("transfer warm", SpanKind.CLIENT, **{"callbridge.transfer.mode": "warm"})
        span.set_attributes(
            {
                "callbridge.transfer.outcome": str(r.outcome),
                "callbridge.transfer.sip_code": r.sip_code,
                "callbridge.transfer.seconds": r.seconds,
            }
        )
        if r.outcome != ev.TransferOutcome.COMPLETED:
            span.set_attribute("error.type", str(r.outcome))
        span.end()
        self.transfer = None

    # -- after the call

    def post_call(self, asked: bool) -> None:
        """The post-call work begins (:func:`bridge.runtime.tracecontext.post_call_began`): its span, until the end."""
        if self.post is None and not self.ended:
            self.post = self._child("post call", SpanKind.INTERNAL, **{"callbridge.post_call.asked": asked})

    def _post_call_done(self, r: ev.PostCallDone) -> None:
        self.root.add_event("post_call", {"callbridge.post_call.status": r.status})
        if self.post is not None:
            self.post.set_attribute("callbridge.post_call.status", r.status)
            if r.status != ev.POST_CALL_OK:
                self.post.set_attribute("error.type", r.status)
                self.post.set_status(Status(StatusCode.ERROR, r.status))

    def _checks_done(self, r: ev.ChecksDone) -> None:
        if self.post is not None:
            failed = len([name for name in r.failed.split(",") if name])
            self.post.set_attributes({"callbridge.checks.total": r.total, "callbridge.checks.failed": failed})

    def _call_ended(self, r: ev.CallEnded) -> None:
        self.root.set_attributes(
            {
                "callbridge.end_reason": r.reason,
                "callbridge.outcome": str(r.outcome),
                "callbridge.ended_by": str(r.ended_by),
            }
        )
        if r.outcome in _FAILED:
            self.root.set_status(Status(StatusCode.ERROR, str(r.outcome)))
        self.end()

    def end(self) -> None:
        """End every span still open and the root (again: nothing)."""
        if self.ended:
            return
        self.ended = True
        spans = (self.opening, self.transfer, self.turn, self.answer, self.hold, self.post, *self.tools.values())
        for span in spans:
            self._end(span)
        self._end_session("call ended")
        self.root.end()
        metrics.flush_exemplars()  # the call's exemplars on /metrics by now

    @staticmethod
    def _end(span: trace.Span | None) -> None:
        if span is not None and span.is_recording():
            span.end()


def exemplar(span: trace.Span) -> dict[str, str]:
    """The exemplar labels of a measure taken in ``span`` (``trace_id``, ``span_id``, in hex); {} if its trace is not
    sampled (then no exemplar: a trace not sampled is nowhere to be found)."""
    ctx = span.get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
