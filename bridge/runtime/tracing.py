"""OpenTelemetry traces of a process (a worker's calls, serve's webhook deliveries), exported over OTLP/HTTP.

Imported only where ``tracing: otlp`` is set (:func:`start`, through :func:`bridge.runtime.tracing_on`): with tracing
off no module of OpenTelemetry is loaded. Configured the standard way, by the SDK's own environment variables:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_SERVICE_NAME`` (default ``callbridge``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_BSP_*``; ``OTEL_SDK_DISABLED=true`` turns it off again. The resource names the
node (``callbridge.node``), the process (``callbridge.worker``: a worker's index, or ``serve``) and the version.

Never in a call's way: spans are recorded on the loop and exported by the batch processor's thread; at most
``OTEL_BSP_MAX_QUEUE_SIZE`` (2048) wait, and a span past that is dropped, not queued (:class:`BoundedProcessor`).
An export that fails (the collector down, slow or refusing) drops its spans. Both are counted
(``callbridge_trace_spans_dropped_total{reason}``) and said in one log line a minute at most (:class:`GuardedExporter`),
naming the endpoint without its credentials; the exporter's headers are never logged, and are given to
:func:`start` (:func:`bridge.runtime.traces.held_headers`), not read from the environment (serve takes them out).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.re import parse_env_headers

from bridge import metrics
from bridge.privacy.masking import mask_url
from bridge.runtime import tracecontext
from bridge.runtime.calltrace import CallTrace

log = logging.getLogger("bridge.tracing")

SERVICE: Final = "callbridge"
MAX_QUEUE: Final = 2048  # the SDK's default OTEL_BSP_MAX_QUEUE_SIZE
LOG_EVERY_S: Final = 60.0  # export failures: one line a minute at most
QUIET: Final = ("opentelemetry.exporter", "opentelemetry.sdk._shared_internal", "opentelemetry.sdk.trace.export")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _env_int(name: str, default: int) -> int:
    """A positive whole number from the environment; its default (said once) if it is anything else."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if text.isdigit() and int(text) > 0:
        return int(text)
    log.error("traces: %s=%r is no positive whole number: %d is used", name, text[:40], default)
    return default


def _version() -> str:
    try:
        return metadata.version("callbridge")
    except metadata.PackageNotFoundError:
        return "unknown"


def resource(worker: str) -> Resource:
    """Ours (service ``callbridge``, its version, the node and the process), under what ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` say (theirs win)."""
    mine: dict[str, str] = {
        "service.name": SERVICE,
        "service.version": _version(),
        "callbridge.node": socket.gethostname(),
        "callbridge.worker": worker,
    }
    told = Resource.create().attributes  # the environment's, and the SDK's own (telemetry.sdk.*)
    for key, value in told.items():
        if key == "service.name" and str(value).startswith("unknown_service"):
            continue  # the SDK's placeholder: no name was given
        mine[key] = str(value)
    return Resource(mine)


class GuardedExporter(SpanExporter):
    """The OTLP exporter, never raising; what it could not send is counted as dropped and said once a minute."""

    def __init__(self, inner: SpanExporter, where: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner, self.where, self.clock = inner, where, clock
        self.waiting = 0  # spans handed to the batch processor and not yet exported (or dropped)
        self.lock = threading.Lock()
        self.closing = False
        self.failing = False
        self._logged_at = float("-inf")
        self._unsaid = 0  # spans dropped since the last line

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        why = ""
        if self.closing and self.failing:
            why = "still failing at close"  # a down collector does not hold the process's exit
        else:
            try:
                if self.inner.export(spans) is SpanExportResult.SUCCESS:
                    self._settled(len(spans), ok=True)
                    return SpanExportResult.SUCCESS
                why = "refused or unreachable"
            except Exception as exc:  # the exporter must never take the batch thread down
                why = type(exc).__name__
        self._settled(len(spans), ok=False)
        metrics.TRACE_SPANS_DROPPED.labels("export_failed").inc(len(spans))
        self._say(len(spans), why)
        return SpanExportResult.FAILURE

    def _settled(self, count: int, *, ok: bool) -> None:
        with self.lock:
            self.waiting = max(0, self.waiting - count)
        if ok and self.failing:
            log.info("traces: export to %s works again", self.where)
        self.failing = not ok

    def dropped_full(self) -> None:
        metrics.TRACE_SPANS_DROPPED.labels("queue_full").inc()
        self._say(1, "the export queue is full")

    def _say(self, count: int, why: str) -> None:
        self._unsaid += count
        now = self.clock()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "traces: %d span(s) dropped (%s; export to %s); next line at most in %g s",
                self._unsaid,
                why,
                self.where,
                LOG_EVERY_S,
            )
            self._unsaid = 0

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedProcessor(SpanProcessor):
    """The batch processor behind a bound that is ours: past ``max_queue`` spans waiting, a span is dropped and
    counted here (the SDK's own queue would drop its oldest silently)."""

    def __init__(self, guard: GuardedExporter, max_queue: int) -> None:
        self.guard, self.max_queue = guard, max_queue
        batch = min(max_queue, _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
        self.batch = BatchSpanProcessor(guard, max_queue_size=max_queue, max_export_batch_size=batch)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        guard = self.guard
        with guard.lock:
            full = guard.waiting >= self.max_queue
            if not full:
                guard.waiting += 1
        if full:
            guard.dropped_full()
            return
        self.batch.on_end(span)

    def shutdown(self) -> None:
        self.guard.closing = True
        self.batch.shutdown()  # type: ignore[no-untyped-call]  # the SDK's shutdown has no annotations

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.batch.force_flush(timeout_millis)


def body_trace(body: str) -> tuple[int, int] | None:
    """(trace id, span id) a webhook body's ``data`` names; None if none (an event of no traced call)."""
    try:
        data = json.loads(body).get("data") or {}
        trace_id, span_id = int(data["trace_id"], 16), int(data["span_id"], 16)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return (trace_id, span_id) if trace_id and span_id else None


def remote(trace_id: int, span_id: int, sampled: bool, state: str = "") -> Context:
    """The context of a span of another process (a caller's, a call's for its webhook): what a new span is a child
    of; ``state``: the caller's ``tracestate`` (W3C: what its vendors keep along the trace; one not well formed is
    dropped, as OpenTelemetry's propagator drops it)."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    vendors = TraceState.from_header([state]) if state else None
    return trace.set_span_in_context(
        NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags, trace_state=vendors))
    )


class DeliveryAttempt:
    """One delivery attempt's span (:class:`bridge.runtime.tracecontext.Attempt`)."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        ctx = span.get_span_context()
        self.traceparent = (
            tracecontext.traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled) if ctx.is_valid else ""
        )

    def done(self, status: int | None, error: str) -> None:
        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
        if status is None or status >= 300:
            why = error or str(status)
            self.span.set_attribute("error.type", why)
            self.span.set_status(Status(StatusCode.ERROR, why))
        self.span.end()


def endpoint() -> str:
    """Where spans go, as the SDK reads it, its credentials masked (for the log)."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return mask_url(traces)
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    return mask_url(base.rstrip("/") + "/v1/traces")


class Tracing:
    """One process's tracer provider and its export (see the module doc)."""

    def __init__(self, worker: str, headers: str | None = None) -> None:
        for name in QUIET:  # their failures are ours to say, once a minute (never a line per batch)
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.where = endpoint()
        sent = parse_env_headers(headers, liberal=True) if headers else None  # never from the environment
        self.guard = GuardedExporter(OTLPSpanExporter(headers=sent), self.where)
        max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE)
        self.ids = ChosenIds()  # random, but for a stand-in's (stand_in)
        self.provider = TracerProvider(resource=resource(worker), id_generator=self.ids)  # sampler: OTEL_TRACES_SAMPLER
        self.provider.add_span_processor(BoundedProcessor(self.guard, max_queue))
        self.tracer = self.provider.get_tracer("callbridge", _version())
        for reason in metrics.TRACE_DROPS:
            metrics.TRACE_SPANS_DROPPED.labels(reason)  # at 0 from the start: a first drop is an increase

    def call(
        self,
        identity: Mapping[str, str],
        model: Callable[[], str],
        parent: tuple[int, int, bool] | None = None,
        state: str = "",
    ) -> CallTrace:
        """A new call's trace: its root span is open from now, under ``parent`` (trace id, span id, sampled: a
        trusted caller's ``traceparent``; ``state``: its ``tracestate``) if given, else the root of a trace of its
        own."""
        return CallTrace(self.tracer, identity, model, remote(*parent, state=state) if parent else None)

    def attempt(self, body: str, attributes: tracecontext.Attributes) -> DeliveryAttempt:
        """A webhook delivery attempt's span: a child of the call's root span that the body's ``data`` names
        (``trace_id``, ``span_id``), else the root of a trace of its own."""
        ids = body_trace(body)
        parent = remote(*ids, sampled=True) if ids is not None else None  # a body names only a sampled call's
        event = str(attributes.get("callbridge.webhook.type", ""))
        span = self.tracer.start_span(
            f"webhook {event}".strip(), context=parent, kind=SpanKind.CLIENT, attributes=dict(attributes)
        )
        return DeliveryAttempt(span)

    def stand_in(
        self, ids: tuple[int, int], attributes: tracecontext.Attributes, start_s: float, end_s: float, failed: str
    ) -> None:
        """End a stand-in for the root span ``ids`` (trace id, span id) of a call whose process died before it
        exported it: a ``call`` span with those very ids (so the spans the call exported hang from it), from
        ``start_s`` to ``end_s``, its status an error saying ``failed``."""
        self.ids.next = ids
        try:
            span = self.tracer.start_span(
                "call", kind=SpanKind.SERVER, attributes=dict(attributes), start_time=int(start_s * 1e9)
            )
        finally:
            self.ids.next = None
        span.set_status(Status(StatusCode.ERROR, failed))
        span.end(end_time=int(max(end_s, start_s) * 1e9))

    def close(self) -> None:
        """Export what waits (a collector that is failing is not waited for), then stop."""
        self.provider.shutdown()


class ChosenIds(RandomIdGenerator):
    """Random ids, but for the next root span when ``next`` (trace id, span id) is set: those (a stand-in's)."""

    def __init__(self) -> None:
        self.next: tuple[int, int] | None = None

    def generate_trace_id(self) -> int:
        return self.next[0] if self.next is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        if self.next is not None:
            span_id, self.next = self.next[1], None
            return span_id
        return super().generate_span_id()


def start(worker: str, headers: str | None = None) -> Tracing | None:
    """This process's tracing (``worker``: its index, or ``serve``; ``headers``: the exporter's, ``key=value,...``);
    None when ``OTEL_SDK_DISABLED`` is true."""
    if _flag("OTEL_SDK_DISABLED"):
        log.info("traces: tracing is otlp but OTEL_SDK_DISABLED is true: no spans")
        return None
    tracing = Tracing(worker, headers)
    log.info("traces: exported to %s (OTLP/HTTP)", tracing.where)
    return tracing
