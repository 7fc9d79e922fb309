"""A call's trace from its reports (bridge/runtime/calltrace.py), the export's bounds (bridge/runtime/tracing.py) and
the traceparent a call's requests carry (bridge/runtime/tracecontext.py), with the official SDK's in-memory exporter;
and with tracing off, a worker-like process loads nothing of OpenTelemetry."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge import events as ev
from bridge.runtime import tracecontext

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the OpenTelemetry SDK (the otel extra) is not installed")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402  (after the skip: the SDK is optional)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from bridge import metrics  # noqa: E402
from bridge.runtime import tracing  # noqa: E402
from bridge.runtime.calltrace import CallTrace  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
IDENTITY = {
    "call_id": "c-1",
    "sip_call_id": "abc@pbx",
    "dialplan": "support",
    "variant": "ga",
    "dialect": "ga",
    "model": "gpt-realtime",
}
CALLER = "+15551234567"


def a_call(trace: CallTrace) -> None:
    """A call's reports: a session, the greeting, one caller turn answered after a tool, a barge-in, the end."""
    for report in [
        ev.Ringing(CALLER, "1000", "support", "ga"),
        ev.SessionOpened("sess_1"),
        ev.Answered(),
        ev.ResponseBegan("resp_0"),
        ev.Latency("greeting", 812.0),
        ev.AgentSaid("Hello, Acme support.", "item_0"),
        ev.ResponseEnded("resp_0", ev.ResponseStatus.COMPLETED, ev.Usage(30, 10, 20)),
        ev.CallerSpeechStarted(1000),
        ev.CallerSpeechStopped(2500),
        ev.CallerSaid(f"my number is {CALLER}", "item_1"),
        ev.ToolStarted("order_status", "call_1", '{"order": "A-42"}'),
    ]:
        trace.listen(report)
    assert trace.traceparent("order_status", {"http.request.method": "GET"})  # the tool's request asks for it
    for report in [
        ev.ToolFinished(
            "order_status", "call_1", '{"order": "A-42"}', '{"status": "shipped"}', ev.ToolCallOutcome.OK, 420.0
        ),
        ev.ResponseBegan("resp_1"),
        ev.Latency("caller_turn", 1234.5),
        ev.BargeIn("caller spoke", 12.0),
        ev.ResponseEnded("resp_1", ev.ResponseStatus.CANCELLED, ev.Usage(50, 40, 10)),
        ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER),
    ]:
        trace.listen(report)


def traced() -> tuple[CallTrace, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return CallTrace(provider.get_tracer("test"), IDENTITY, lambda: "gpt-realtime"), exporter


def test_one_trace_per_call_a_root_and_its_session_turn_answer_and_tool_spans() -> None:
    trace, exporter = traced()
    a_call(trace)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == [
        "agent answer", "call", "caller turn", "opening", "realtime gpt-realtime", "tool order_status",
    ]  # fmt: skip
    assert len(exporter.get_finished_spans()) == 7  # two answers: the greeting and the turn's
    opening = spans["opening"]
    assert opening.start_time and opening.end_time and spans["agent answer"].start_time
    assert opening.end_time <= spans["agent answer"].start_time  # the answer, then the greeting
    root = spans["call"]
    assert root.parent is None and root.context is not None
    for span in exporter.get_finished_spans():
        assert span.context is not None and span.context.trace_id == root.context.trace_id
        if span is not root:
            assert span.parent is not None and span.parent.span_id == root.context.span_id
            assert root.start_time is not None and span.start_time is not None and span.end_time is not None
            assert root.start_time <= span.start_time <= span.end_time <= (root.end_time or 0)
    attrs = dict(root.attributes or {})
    assert attrs["callbridge.call_id"] == "c-1" and attrs["callbridge.sip_call_id"] == "abc@pbx"
    assert (attrs["callbridge.dialplan"], attrs["callbridge.variant"], attrs["callbridge.dialect"]) == (
        "support",
        "ga",
        "ga",
    )
    assert attrs["gen_ai.request.model"] == "gpt-realtime"
    assert (attrs["callbridge.end_reason"], attrs["callbridge.outcome"], attrs["callbridge.ended_by"]) == (
        "caller hung up",
        "completed",
        "caller",
    )
    session = dict(spans["realtime gpt-realtime"].attributes or {})
    assert session["gen_ai.system"] == "openai" and session["gen_ai.request.model"] == "gpt-realtime"
    assert (session["gen_ai.usage.input_tokens"], session["gen_ai.usage.output_tokens"]) == (50, 30)
    answers = [s for s in exporter.get_finished_spans() if s.name == "agent answer"]
    greeting, turn = (dict(a.attributes or {}) for a in answers)
    assert greeting["callbridge.latency.greeting_ms"] == 812.0 and greeting["callbridge.turn"] == 0
    assert turn["callbridge.latency.caller_turn_ms"] == 1234.5 and turn["callbridge.barge_in"] is True
    tool = dict(spans["tool order_status"].attributes or {})
    assert tool["callbridge.tool.outcome"] == "ok" and tool["http.request.method"] == "GET"
    text = json.dumps([json.loads(s.to_json()) for s in exporter.get_finished_spans()])
    for private in (CALLER, CALLER[2:], "my number", "A-42", "shipped", "Hello, Acme"):
        assert private not in text  # no caller number, transcript, tool argument or result in any span


def exemplars(store: metrics._Exemplars) -> dict[tuple[str, str], tuple[dict[str, str], float]]:
    """(histogram, segment or dialplan) -> (exemplar labels, value) of what the call noted."""
    noted = {}
    for key, entry in store.latest.items():
        name, series, _ = json.loads(key)
        labels = dict(series)
        noted[name, labels.get("segment") or labels["dialplan"]] = (entry["labels"], entry["value"])
    return noted


def test_a_traced_calls_latency_and_tool_measures_are_their_buckets_exemplars_naming_the_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = metrics._Exemplars()
    monkeypatch.setattr(metrics, "_EXEMPLARS", store)
    trace, exporter = traced()
    a_call(trace)
    root = trace.ids()["trace_id"]
    spans = {s.context.span_id: s.name for s in exporter.get_finished_spans() if s.context is not None}
    noted = exemplars(store)
    assert set(noted) == {
        ("callbridge_latency_seconds", "greeting"), ("callbridge_latency_seconds", "caller_turn"),
        ("callbridge_tool_latency_seconds", "support"),
    }  # fmt: skip
    for (_, what), (labels, _) in noted.items():
        assert labels["trace_id"] == root
        name = spans[int(labels["span_id"], 16)]
        assert name == ("tool order_status" if what == "support" else "agent answer"), (what, name)
    assert noted[("callbridge_latency_seconds", "caller_turn")][1] == 1.2345  # seconds, as the histogram counts


def test_the_traceparent_names_the_open_tool_span_else_the_call() -> None:
    trace, exporter = traced()
    root = trace.root.get_span_context()
    assert tracecontext.parse(trace.traceparent()) == (root.trace_id, root.span_id, True)
    trace.listen(ev.ToolStarted("lookup", "call_9", "{}"))
    trace_id, span_id, _ = tracecontext.parse(trace.traceparent("lookup")) or (0, 0, False)
    assert trace_id == root.trace_id and span_id != root.span_id
    trace.listen(ev.ToolFinished("lookup", "call_9", "{}", "{}", ev.ToolCallOutcome.TIMEOUT, 8000.0))
    (tool,) = exporter.get_finished_spans()
    assert tool.context is not None and tool.context.span_id == span_id
    assert tool.status.status_code.name == "ERROR"
    assert trace.ids() == {"trace_id": f"{root.trace_id:032x}", "span_id": f"{root.span_id:016x}"}
    token = tracecontext.CURRENT.set(trace)
    try:
        assert tracecontext.headers("nothing open") == {"traceparent": trace.traceparent()}
    finally:
        tracecontext.CURRENT.reset(token)
    assert tracecontext.headers("lookup") == {}  # no call in this task: nothing


@pytest.mark.parametrize(
    "value",
    ["", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "00-" + "a" * 32 + "-" + "0" * 16 + "-01", "01-" + "a" * 32 + "-x"],
)
def test_a_traceparent_that_is_no_valid_one_is_refused(value: str) -> None:
    assert tracecontext.parse(value) is None


class Refusing(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        return SpanExportResult.FAILURE


def dropped(reason: str) -> float:
    return metrics.TRACE_SPANS_DROPPED.labels(reason)._value.get()


def test_a_refusing_collector_drops_and_counts_spans_and_says_so_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    guard = tracing.GuardedExporter(Refusing(), "http://collector:4318/v1/traces", clock=lambda: now[0])
    before = dropped("export_failed")
    caplog.set_level(logging.WARNING, "bridge.tracing")
    spans = [ReadableSpan(name=f"s{i}") for i in range(3)]
    for _ in range(10):
        assert guard.export(spans) is SpanExportResult.FAILURE
        now[0] += 5.0
    assert dropped("export_failed") - before == 30
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.tracing"]
    assert len(lines) == 1 and "3 span(s) dropped" in lines[0]
    now[0] += 60.0
    guard.export(spans)
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.tracing"]
    assert len(lines) == 2 and "30 span(s) dropped" in lines[1]  # the ones since the last line, then this batch's


def test_past_the_bound_a_span_is_dropped_and_counted_not_queued() -> None:
    guard = tracing.GuardedExporter(Refusing(), "x")
    processor = tracing.BoundedProcessor(guard, max_queue=2)
    before = dropped("queue_full")
    guard.waiting = 2  # two spans wait for an export that does not come
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("late").end()
    assert dropped("queue_full") - before == 1 and guard.waiting == 2
    guard.closing = True
    processor.batch.shutdown()


def loaded(code: str) -> list[str]:
    """The modules of OpenTelemetry and of the bridge's tracing a fresh interpreter has after ``code``."""
    probe = code + "\nimport sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith(WATCHED))))"
    head = "import json\nWATCHED = ('opentelemetry', 'bridge.runtime.tracing', 'bridge.runtime.calltrace')\n"
    out = subprocess.run([sys.executable, "-c", head + probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_with_tracing_off_a_worker_loads_nothing_of_opentelemetry_beyond_what_redis_py_does() -> None:
    """A worker's modules, a call's parts, a tool's request with tracing off bring no module of OpenTelemetry in:
    only redis-py's own optional import of the SDK's metrics, where the SDK is installed, remains."""
    worker = loaded(
        "from bridge.config import Settings\n"
        "from bridge.runtime import tracecontext, traces\n"
        "import bridge.serve.worker, bridge.call.session, bridge.tools.http, bridge.webhooks.delivery\n"
        "import bridge.serve.webhooks\n"
        "assert Settings().tracing == 'off' and traces.start(Settings().tracing, '0') is None\n"
        "assert tracecontext.headers('any') == {}"
    )
    assert worker == loaded("import redis.asyncio")
    assert not [m for m in worker if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter", "bridge."))]


def test_a_traced_calls_json_log_lines_carry_its_trace_and_span_ids() -> None:
    from bridge.runtime.logs import JsonFormatter

    trace, _ = traced()
    record = logging.LogRecord("bridge.call", logging.INFO, __file__, 1, "caller turn %d", (1,), None)
    formatter = JsonFormatter("0")
    assert "trace_id" not in json.loads(formatter.format(record))  # no call traced in this task
    token = tracecontext.CURRENT.set(trace)
    try:
        line = json.loads(formatter.format(record))
    finally:
        tracecontext.CURRENT.reset(token)
    root = trace.root.get_span_context()
    assert (line["trace_id"], line["span_id"]) == (f"{root.trace_id:032x}", f"{root.span_id:016x}")
    assert line["message"] == "caller turn 1"


def test_the_resource_names_the_service_node_worker_and_version_under_what_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,callbridge.node=edge-1")
    attrs = tracing.resource("2").attributes
    assert attrs["service.name"] == "callbridge" and attrs["callbridge.worker"] == "2"
    assert attrs["service.version"] and attrs["deployment.environment"] == "prod"
    assert attrs["callbridge.node"] == "edge-1"  # the environment's word wins over the host name
    monkeypatch.setenv("OTEL_SERVICE_NAME", "voice-bridge")
    assert tracing.resource("serve").attributes["service.name"] == "voice-bridge"


def test_tracing_off_or_disabled_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.runtime import traces

    assert traces.start("off", "0") is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert traces.start("otlp", "0") is None


def test_a_bad_queue_size_falls_back_to_the_default_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "lots")
    assert tracing._env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048) == 2048
    assert "OTEL_BSP_MAX_QUEUE_SIZE='lots' is no positive whole number" in caplog.text


def test_a_webhook_attempt_is_a_child_of_the_call_its_body_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/")  # never reached: nothing is exported
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    started = tracing.start("serve")
    assert started is not None
    body = json.dumps({"type": "call.ended", "data": {"trace_id": "ab" * 16, "span_id": "cd" * 8}})
    attempt = started.attempt(body, {"callbridge.webhook.type": "call.ended", "http.request.method": "POST"})
    parsed = tracecontext.parse(attempt.traceparent)
    assert parsed is not None and parsed[0] == int("ab" * 16, 16) and parsed[2]
    span = attempt.span
    assert isinstance(span, ReadableSpan) and span.parent is not None and span.parent.span_id == int("cd" * 8, 16)
    assert span.name == "webhook call.ended"
    attempt.done(503, "")
    assert span.status.status_code.name == "ERROR" and dict(span.attributes or {})["http.response.status_code"] == 503
    alone = started.attempt(json.dumps({"type": "rollout.decision", "data": {}}), {})
    assert isinstance(alone.span, ReadableSpan) and alone.span.parent is None  # no call: a trace of its own
    alone.done(None, "timeout")
    started.guard.closing = started.guard.failing = True  # nothing to wait for at close
    started.close()


def test_a_warm_transfer_is_the_human_legs_span_from_its_dial_to_its_outcome() -> None:
    trace, exporter = traced()
    trace.listen(ev.Answered())
    trace.listen(ev.TransferDecided("sip:desk@pbx", ev.TransferMode.WARM))
    trace.listen(ev.TransferStepped(ev.TransferStep.RINGING))
    trace.listen(ev.TransferStepped(ev.TransferStep.BRIEFING))
    trace.listen(ev.WarmTransferEnded(ev.TransferOutcome.DECLINED, "sip:desk@pbx", 603, 7.5))
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "transfer warm"]
    attrs = dict(span.attributes or {})
    assert (attrs["callbridge.transfer.outcome"], attrs["callbridge.transfer.sip_code"]) == ("declined", 603)
    assert attrs["error.type"] == "declined" and [e.name for e in span.events] == ["ringing", "briefing"]
    assert "desk" not in span.to_json()  # the target is no attribute


def test_a_call_sampled_out_sends_an_unsampled_traceparent_and_names_no_trace_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    store = metrics._Exemplars()
    monkeypatch.setattr(metrics, "_EXEMPLARS", store)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace = CallTrace(provider.get_tracer("test"), IDENTITY, lambda: "gpt-realtime")
    a_call(trace)
    parsed = tracecontext.parse(trace.traceparent())
    assert parsed is not None and parsed[2] is False  # the tool's server may record it or not: its own sampler says
    assert trace.ids() == {}  # no webhook body or log line names a trace nobody kept
    assert store.latest == {}  # nor any exemplar on /metrics
    assert exporter.get_finished_spans() == ()


def test_the_post_call_work_is_a_span_under_the_call_from_its_start_to_the_calls_end() -> None:
    trace, exporter = traced()
    token = tracecontext.CURRENT.set(trace)
    try:
        tracecontext.post_call_began(asked=True)  # as the call's end says, in the call's task
    finally:
        tracecontext.CURRENT.reset(token)
    tracecontext.post_call_began(asked=True)  # no call in this task: nothing
    trace.listen(ev.PostCallDone("timed out"))
    trace.listen(ev.ChecksDone(2, "disclosure"))
    trace.listen(ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    post, root = spans["post call"], spans["call"]
    assert post.parent is not None and root.context is not None and post.parent.span_id == root.context.span_id
    assert post.start_time is not None and root.start_time is not None and root.start_time <= post.start_time
    assert post.end_time is not None and root.end_time is not None and post.end_time <= root.end_time
    assert post.attributes == {
        "callbridge.post_call.asked": True,
        "callbridge.post_call.status": "timed out",
        "error.type": "timed out",
        "callbridge.checks.total": 2,
        "callbridge.checks.failed": 1,
    }
    assert post.status.status_code.name == "ERROR"
