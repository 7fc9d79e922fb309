"""Every Prometheus metric of the bridge, defined once.

Workers are separate processes, so prometheus-client runs in multiprocess mode: ``callbridge serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` for its workers before they import this module, and serves the merged registry at
``/metrics`` (:func:`render`). Labels stay low in cardinality: dialect, dialplan, outcome, error class, segment. Never
a call id, a caller number or anything secret.

The latency budget, one histogram with a ``segment`` label:

==============  ===========================================================
capture         RTP frame received (clock thread) -> append handed to the socket queue
uplink          one WebSocket write
inference       speech_stopped -> first audio delta
downlink        delta received -> queued for playout (resampled)
playback        queued -> first frame handed to RTP
first_audio     200 OK -> first agent frame handed to RTP
turn            speech_stopped -> first agent frame handed to RTP (end to end)
session_setup   WebSocket open + session.updated, before the 200 OK
recovery_gap    Realtime session lost -> new session ready
==============  ===========================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from bridge import events as ev

NS = "callbridge"
SEGMENTS = (
    "capture", "uplink", "inference", "downlink", "playback", "first_audio", "turn", "session_setup", "recovery_gap",
)  # fmt: skip
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

CALLS_STARTED = Counter(f"{NS}_calls_started", "Calls answered by a worker", ["dialect", "dialplan"])
CALLS_ACTIVE = Gauge(f"{NS}_calls_active", "Calls in progress", ["dialect", "dialplan"], multiprocess_mode="livesum")
CALLS_ENDED = Counter(f"{NS}_calls_ended", "Calls ended, by outcome", ["dialect", "dialplan", "outcome"])
SIP_REJECTED = Counter(f"{NS}_sip_rejected", "INVITEs refused, by SIP status", ["code"])
CONNECT_FAILURES = Counter(
    f"{NS}_realtime_connect_failures", "Realtime connections that failed to open", ["dialect", "error_class"]
)
DROPPED_SESSIONS = Counter(
    f"{NS}_realtime_dropped_sessions", "Realtime sessions lost mid-call", ["dialect", "error_class"]
)
RECONNECTS = Counter(f"{NS}_realtime_reconnects", "Realtime sessions re-established mid-call", ["dialect"])
REALTIME_ERRORS = Counter(f"{NS}_realtime_errors", "error events and local protocol faults", ["dialect", "error_class"])
UNKNOWN_EVENTS = Counter(f"{NS}_realtime_unknown_events", "Server events of an unknown type", ["dialect"])
BARGE_INS = Counter(f"{NS}_barge_ins", "Caller interruptions of agent audio", ["dialect"])
TRUNCATES = Counter(f"{NS}_truncates", "conversation.item.truncate outcomes", ["dialect", "result"])
TRUNCATE_ERROR = Histogram(
    f"{NS}_truncate_error_ms",
    "audio_end_ms sent minus the wall-clock audio the caller had heard",
    ["dialect"],
    buckets=(0, 5, 10, 20, 40, 60, 100, 200, 500),
)
MODEL_AUDIO_SECONDS = Counter(
    f"{NS}_model_audio_seconds", "Session audio time the service counts (dialects priced by it)", ["dialect"]
)
MODEL_TOKENS = Counter(f"{NS}_model_tokens", "Response tokens the service counts", ["dialect", "direction"])
TALK_OVER = Histogram(
    f"{NS}_talk_over_ms",
    "After a barge-in, how long a model that stops itself went on speaking over the caller",
    ["dialect"],
    buckets=(50, 100, 200, 300, 500, 800, 1200, 2000, 5000),
)
LATENCY = Histogram(
    f"{NS}_latency_seconds", "Latency budget segments (see bridge/metrics.py)", ["segment", "dialect"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
PLAYOUT_UNDERRUNS = Counter(f"{NS}_playout_underruns", "20 ms ticks of dead air inside agent audio", ["dialect"])
PLAYOUT_DROPS = Counter(f"{NS}_playout_dropped_frames", "Agent frames dropped by a full playout buffer", ["dialect"])
REDIS_QUEUE_DEPTH = Gauge(
    f"{NS}_redis_write_queue_depth", "State writes waiting for Redis", multiprocess_mode="livemax"
)
REDIS_DROPPED_WRITES = Counter(f"{NS}_redis_dropped_writes", "State writes dropped by a full queue")
CREDENTIAL_ROTATIONS = Counter(f"{NS}_credential_rotations", "Short-lived credentials minted", ["dialect", "result"])
ROLLBACKS = Counter(f"{NS}_rollout_rollbacks", "Automatic rollbacks of GA to beta", ["dialplan"])
# The front door (bridge/serve/front.py), as its dispatcher sees each worker, read by the serve process that runs it
FRONT_WORKER_CALLS = Gauge(
    f"{NS}_front_worker_calls", "Calls the front counts on each worker", ["worker"], multiprocess_mode="livemax"
)
FRONT_WORKER_MAX_CALLS = Gauge(
    f"{NS}_front_worker_max_calls", "Calls each worker can hold (its maxload)", ["worker"], multiprocess_mode="livemax"
)
FRONT_WORKER_STATE = Gauge(
    f"{NS}_front_worker_state",
    "1 for each worker's state at the front: active (takes new calls), inactive (not answering), trying, drained",
    ["worker", "state"],
    multiprocess_mode="livemax",
)
SUPERVISOR_REFUSED_TOKENS = Counter(
    f"{NS}_supervisor_refused_tokens", "Wrong supervisor tokens (console sign-in or API bearer)", ["via"]
)
SUPERVISOR_SIGNINS = Counter(f"{NS}_supervisor_signins", "Console sign-ins, by role", ["role"])
GC_PAUSE = Histogram(
    f"{NS}_gc_pause_seconds", "Full garbage collections after calls end (bridge/runtime/memory.py), event loop paused",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
)  # fmt: skip


def prime(dialects: tuple[str, ...], dialplans: tuple[str, ...]) -> None:
    """Create every label set a worker can produce at zero, so /metrics shows each metric before its first event
    (a dashboard must tell "no failures" from "no data")."""
    classes = ("network", "auth", "protocol", "server")
    for d in dialects:
        for dp in dialplans:
            CALLS_STARTED.labels(d, dp)
            CALLS_ACTIVE.labels(d, dp)
            for outcome in ("completed", "transferred", "failed"):
                CALLS_ENDED.labels(d, dp, outcome)
        for c in classes:
            CONNECT_FAILURES.labels(d, c)
            DROPPED_SESSIONS.labels(d, c)
            REALTIME_ERRORS.labels(d, c)
        for result in ("ok", "failed"):
            TRUNCATES.labels(d, result)
            CREDENTIAL_ROTATIONS.labels(d, result)
        RECONNECTS.labels(d)
        UNKNOWN_EVENTS.labels(d)
        BARGE_INS.labels(d)
        PLAYOUT_UNDERRUNS.labels(d)
        PLAYOUT_DROPS.labels(d)
    for dp in dialplans:
        ROLLBACKS.labels(dp)
    REDIS_QUEUE_DEPTH.set(0)
    REDIS_DROPPED_WRITES.inc(0)


def observe_latency(segment: str, dialect: str, ms: float) -> None:
    if segment in SEGMENTS:
        LATENCY.labels(segment=segment, dialect=dialect).observe(ms / 1000.0)


def call_listener(dialect: str, dialplan: str) -> Callable[[ev.Report], None]:
    """A :class:`~bridge.call.session.CallSession` listener that turns its reports into metrics."""

    def barge_in(r: ev.BargeIn) -> None:
        BARGE_INS.labels(dialect).inc()
        if r.truncate_error_ms is not None:
            TRUNCATE_ERROR.labels(dialect).observe(r.truncate_error_ms)

    def ended(r: ev.CallEnded) -> None:
        CALLS_ACTIVE.labels(dialect, dialplan).dec()
        CALLS_ENDED.labels(dialect, dialplan, r.outcome).inc()

    def answered(r: ev.Answered) -> None:
        CALLS_STARTED.labels(dialect, dialplan).inc()
        CALLS_ACTIVE.labels(dialect, dialplan).inc()

    def usage(r: ev.UsageTotals) -> None:
        MODEL_AUDIO_SECONDS.labels(dialect).inc(r.audio_seconds)
        MODEL_TOKENS.labels(dialect, "input").inc(r.input_tokens)
        MODEL_TOKENS.labels(dialect, "output").inc(r.output_tokens)

    def playout(r: ev.PlayoutTotals) -> None:
        PLAYOUT_UNDERRUNS.labels(dialect).inc(r.underruns)
        PLAYOUT_DROPS.labels(dialect).inc(r.dropped_frames)

    return (
        ev.ReportTable()
        .on(ev.Latency, lambda r: observe_latency(r.segment, dialect, r.ms))
        .on(ev.Answered, answered)
        .on(ev.CallEnded, ended)
        .on(ev.RealtimeUnavailable, lambda r: CONNECT_FAILURES.labels(dialect, r.error_class).inc())
        .on(ev.ReconnectFailed, lambda r: CONNECT_FAILURES.labels(dialect, r.error_class).inc())
        .on(ev.SessionLost, lambda r: DROPPED_SESSIONS.labels(dialect, r.error_label).inc())
        .on(ev.Recovered, lambda r: RECONNECTS.labels(dialect).inc())
        .on(ev.ServiceError, lambda r: REALTIME_ERRORS.labels(dialect, r.error_class).inc())
        .on(ev.UnknownServerEvent, lambda r: UNKNOWN_EVENTS.labels(dialect).inc())
        .on(ev.BargeIn, barge_in)
        .on(ev.TalkedOver, lambda r: TALK_OVER.labels(dialect).observe(r.talk_over_ms))
        .on(ev.UsageTotals, usage)
        .on(ev.Truncated, lambda r: TRUNCATES.labels(dialect, "ok").inc())
        .on(ev.TruncateRefused, lambda r: TRUNCATES.labels(dialect, "failed").inc())
        .on(ev.PlayoutTotals, playout)
    )


def registry() -> CollectorRegistry:
    """The registry to serve: merged across worker processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]  # prometheus-client lacks a hint
        return reg
    from prometheus_client import REGISTRY

    return REGISTRY


def render() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # prometheus-client lacks a hint
