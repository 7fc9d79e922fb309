"""Every Prometheus metric of the bridge, defined once.

Workers are separate processes, so prometheus-client runs in multiprocess mode: ``callbridge serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` for its workers before they import this module, and serves the merged registry at
``/metrics`` (:func:`render`). Labels stay low in cardinality: dialect, dialplan, rollout variant, model, outcome,
error class, segment. Never a call id, a caller number or anything secret.

Per rollout variant (``callbridge_variant_*``, labels ``dialplan`` and ``variant``; a plan pinned to a dialect is one
variant named after it), counted once per finished call from ``bridge.rollout.health.CallStats.record``: calls by
outcome, fallbacks to the variant's fallback model, the greeting and the first reply, barge-in truncates by result,
function calls by result, tokens and the estimated cost (``bridge.rollout.catalog``); and from the call's report, its
longest wait and longest dead air. PromQL takes the sliding windows (``rate(...[5m])``);
``deploy/prometheus/alerts.yml`` records the failure ratio and the cost per call.

The latency budget, one histogram with a ``segment`` label:

==============  ===========================================================
capture         RTP frame received (clock thread) -> append handed to the socket queue
uplink          one WebSocket write
inference       speech_stopped -> first audio delta
downlink        delta received -> queued for playout (resampled)
playback        queued -> first frame handed to RTP
greeting        200 OK -> first agent frame handed to RTP, on a plan whose agent speaks first (none where the
                caller speaks first)
turn            a reply: speech_stopped -> first agent frame handed to RTP (end to end)
first_reply     the call's first ``turn``
caller_turn     the caller-felt turn: the end of the caller's speech (where the service's VAD places it on the
                audio sent) -> first agent frame handed to RTP; VAD's silence window included
caller_turn_model  the model's share of it: the end of the caller's speech -> first audio delta received
session_setup   WebSocket open + session.updated, before the 200 OK
recovery_gap    Realtime session lost -> new session ready
==============  ===========================================================

With tracing on, each bucket of the latency histograms (``callbridge_latency_seconds``,
``callbridge_tool_latency_seconds``) has an exemplar: the trace of the latest sampled call measured there
(:class:`_Exemplars`), in the OpenMetrics exposition when the scraper asks for it (:func:`render`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from bridge import events as ev

NS = "callbridge"
SEGMENTS = (
    "capture", "uplink", "inference", "downlink", "playback", "greeting", "first_reply", "turn", "session_setup",
    "recovery_gap", "orchestrator", "caller_turn", "caller_turn_model",
)  # fmt: skip
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

CALLS_STARTED = Counter(f"{NS}_calls_started", "Calls answered by a worker", ["dialect", "dialplan"])
CALLS_ACTIVE = Gauge(f"{NS}_calls_active", "Calls in progress", ["dialect", "dialplan"], multiprocess_mode="livesum")
CALLS_ENDED = Counter(f"{NS}_calls_ended", "Calls ended, by outcome", ["dialect", "dialplan", "outcome"])
CALLS_ABANDONED = Counter(
    f"{NS}_calls_abandoned", "Calls whose caller hung up while ringing (CANCEL, or BYE before the answer)", ["dialplan"]
)
SIP_REJECTED = Counter(f"{NS}_sip_rejected", "INVITEs refused, by SIP status", ["code"])
# The statuses a worker refuses an INVITE with (bridge/sip/service.py: pjsua's own, the screening's, a failed
# screening's 500) and a draining worker's 503 (bridge/serve/stopping.py)
SIP_REJECT_CODES = ("400", "401", "403", "415", "420", "486", "488", "500", "503", "513")
SIP_SLOT_REFUSALS = Counter(
    f"{NS}_sip_slot_refusals",
    "INVITEs refused for want of a call slot, by reason (calls_per_source: the source's concurrent calls; "
    "unlisted_share: the calls of sources outside the listed trunks, at their share of the worker's)",
    ["reason"],
)
SIP_BOUNDED = Counter(
    f"{NS}_sip_bounded_calls",
    "Calls a bound ended: media timeout, session timer expired (the SIP layer), max call duration (the dialplan)",
    ["reason"],
)
RTP_FOREIGN_DROPPED = Counter(
    f"{NS}_rtp_foreign_dropped",
    "Media packets dropped on calls' RTP/RTCP sockets: not from the caller's media address (bridge.sip.rtpguard), "
    "or over a full socket buffer",
)
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
ECHO_GUARD = Counter(
    f"{NS}_echo_guard_speech_starts",
    "Speech starts over the agent judged by the echo guard: taken (barge-in), rejected (echo), paused, resumed",
    ["dialect", "outcome"],
)
TRUNCATES = Counter(f"{NS}_truncates", "conversation.item.truncate outcomes", ["dialect", "result"])
TRUNCATE_ERROR = Histogram(
    f"{NS}_truncate_error_seconds",
    "audio_end_ms sent minus the wall-clock audio the caller had heard, in seconds",
    ["dialect"],
    buckets=(0, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5),
)
MODEL_AUDIO_SECONDS = Counter(
    f"{NS}_model_audio_seconds", "Session audio time the service counts (dialects priced by it)", ["dialect"]
)
MODEL_TOKENS = Counter(f"{NS}_model_tokens", "Response tokens the service counts", ["dialect", "direction"])
TALK_OVER = Histogram(
    f"{NS}_talk_over_seconds",
    "After a barge-in, how long a model that stops itself went on speaking over the caller, in seconds",
    ["dialect"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0, 5.0),
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
REDIS_WRITES_WAITING = Gauge(
    f"{NS}_redis_writes_waiting_seconds",
    "How long a worker's state writes have waited for Redis (an outage, or a Sentinel failover being re-synced); "
    "0 while they are written",
    ["worker"],
    multiprocess_mode="livemax",
)
CREDENTIAL_ROTATIONS = Counter(f"{NS}_credential_rotations", "Short-lived credentials minted", ["dialect", "result"])
CALLS_LOST = Counter(
    f"{NS}_calls_lost_to_worker_death",
    "Calls whose worker died mid-call (records closed by the pool)",
    ["dialplan", "variant"],
)
SIP_DIALOGS_UNOPENED = Counter(
    f"{NS}_sip_dialogs_unopened",
    "Stored SIP dialogs of orphaned calls that did not open (sealed under another listen_key, or altered in Redis): "
    "their callers got no BYE (bridge/store/dialogseal.py)",
)
CALL_STATE_SPOOLED = Counter(
    f"{NS}_call_state_spooled",
    "Calls whose final state a stop during a Redis outage wrote to the spool (spooled), and later to Redis (replayed)",
    ["stage"],
)
CALL_RECORD_FAILURES = Counter(
    f"{NS}_call_record_failures",
    "Parts of a call's record that could not be written: redis, report, recording, rollout, spool",
    ["part"],
)
# Signed webhooks (bridge/webhooks): per endpoint name (``default``, ``<dialplan>.<name>``), never a URL
WEBHOOKS_DELIVERED = Counter(f"{NS}_webhooks_delivered", "Webhook deliveries answered 2xx", ["endpoint"])
WEBHOOKS_FAILED = Counter(
    f"{NS}_webhooks_failed",
    "Webhook attempts that failed, by status class: 3xx (redirects are not followed), 4xx, 5xx, timeout, error",
    ["endpoint", "status"],
)
WEBHOOK_FAILURES = ("3xx", "4xx", "5xx", "timeout", "error")  # bridge.webhooks.schedule.status_class
WEBHOOKS_DEAD = Counter(
    f"{NS}_webhooks_dead_lettered", "Webhook deliveries given up after the last retry (dead letters)", ["endpoint"]
)
WEBHOOKS_DROPPED = Counter(
    f"{NS}_webhooks_dropped",
    "Webhook deliveries dropped unsent, the oldest first: full (the endpoint's webhook_max_events or webhook_max_mb in"
    " Redis), memory (a process's queue while Redis is away)",
    ["endpoint", "reason"],
)
WEBHOOK_DROPS = ("full", "memory")
TRACE_SPANS_DROPPED = Counter(
    f"{NS}_trace_spans_dropped",
    "Trace spans never exported (tracing: otlp): queue_full (OTEL_BSP_MAX_QUEUE_SIZE spans were waiting), "
    "export_failed (the collector down, slow or refusing)",
    ["reason"],
)
TRACE_DROPS = ("queue_full", "export_failed")
WEBHOOKS_ENDED_TWICE = Counter(
    f"{NS}_webhooks_ended_twice",
    "A call's second call.ended, not queued: one was queued already (a worker's call a reaper had ended for it)",
    ["endpoint"],
)
WEBHOOKS_REFUSED = Counter(
    f"{NS}_webhooks_refused",
    "Queued webhook deliveries not sent, dead letters at once: their record unreadable or their seal not holding "
    "(written to Redis outside callbridge)",
    ["endpoint"],
)
WEBHOOKS_PENDING = Gauge(f"{NS}_webhooks_pending", "Webhook deliveries waiting in Redis", multiprocess_mode="livemax")
WEBHOOKS_OLDEST_PENDING = Gauge(
    f"{NS}_webhooks_oldest_pending_seconds",
    "Age of the oldest webhook delivery waiting in Redis (0: none)",
    multiprocess_mode="livemax",
)
ROLLBACKS = Counter(
    f"{NS}_rollout_rollbacks", "Automatic rollbacks of a variant's weight to the safe variant", ["dialplan", "variant"]
)
ROLLOUT_DECISIONS = Counter(
    f"{NS}_rollout_decisions",
    "Decisions of a guarded rollout on evidence (bridge.rollout.engine): action rollback, promote, srm or complete",
    ["dialplan", "variant", "action"],
)
ROLLOUT_ESTIMATE = Gauge(
    f"{NS}_rollout_estimate",
    "A guarded rollout's estimate over the calls since each candidate was armed, as this worker last computed "
    "it: stat value (the variant's), diff, ci95_low, ci95_high (a candidate's difference from the safe variant "
    "and its always-valid 95 % interval)",
    ["dialplan", "variant", "metric", "stat"],
)
ROLLOUT_SRM = Gauge(
    f"{NS}_rollout_srm",
    "1 while a rollout's sample-ratio test finds the observed split of its outcome records unlike its weights "
    "(promotions stop, rollback stays armed; bridge.rollout.experiment)",
    ["dialplan"],
    multiprocess_mode="livemax",
)
ROLLOUT_PROBES = Counter(
    f"{NS}_rollout_probes",
    "Probes of a rollout's safe variant's model for the breaker (bridge.rollout.probes): result ok or failed",
    ["dialplan", "variant", "result"],
)
ROLLOUT_PROBE_SECONDS = Counter(
    f"{NS}_rollout_probe_seconds",
    "Seconds the rollout's probes held a model session open (a probe asks no response: no tokens are billed)",
    ["dialplan", "variant"],
)
ROLLOUT_RECORDS_REJECTED = Counter(
    f"{NS}_rollout_records_rejected",
    "Outcome records the rollout's engine left out: reason unsigned or bad signature (with rollout_key set)",
    ["dialplan", "reason"],
)
ROLLOUT_WEIGHT = Gauge(
    f"{NS}_rollout_weight",
    "Each rollout variant's current share of new calls, percent (its weight in the flag; the kill switch: 0 or 100), "
    "as the workers last read the flag",
    ["dialplan", "variant"],
    multiprocess_mode="livemax",
)
WORKER_RESTARTS = Counter(f"{NS}_worker_restarts", "Worker processes that exited and were started again", ["worker"])
BUILD_INFO = Gauge(
    f"{NS}_build_info", "1, labelled with the running callbridge and Python versions", ["version", "python"],
    multiprocess_mode="livemax",
)  # fmt: skip
MODEL_SHUTDOWN = Gauge(
    f"{NS}_rollout_model_shutdown_timestamp_seconds",
    "Announced shutdown date (Unix time) of a rollout variant's model (bridge/rollout/data/shutdowns.yaml)",
    ["dialplan", "variant", "model"],
    multiprocess_mode="livemax",
)
MODEL_REFUSALS = Counter(
    f"{NS}_rollout_model_refusals",
    "Sessions the service refused for the model itself (not found, retired, not allowed), per variant",
    ["dialplan", "variant", "model"],
)
VARIANT_REFUSED = Gauge(
    f"{NS}_rollout_variant_refused",
    "1 while a rollout variant is marked refused: the service refuses its model (bridge/rollout/refusals.py)",
    ["dialplan", "variant", "model"],
    multiprocess_mode="livemax",
)
_VARIANT = ["dialplan", "variant"]
VARIANT_CALLS = Counter(
    f"{NS}_variant_calls", "Finished calls per rollout variant, by outcome (ok, connect_failure, dropped, recovered)",
    [*_VARIANT, "outcome"],
)  # fmt: skip
VARIANT_FALLBACKS = Counter(
    f"{NS}_variant_fallbacks", "Calls whose variant model failed to connect and ran on its fallback model", _VARIANT
)
VARIANT_GREETING = Histogram(
    f"{NS}_variant_greeting_seconds", "Answer -> the agent's greeting (agent-first plans), per rollout variant",
    _VARIANT, buckets=LATENCY_BUCKETS,
)  # fmt: skip
VARIANT_FIRST_REPLY = Histogram(
    f"{NS}_variant_first_reply_seconds", "The caller stops -> the agent's first reply, per rollout variant", _VARIANT,
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
VARIANT_TRUNCATES = Counter(
    f"{NS}_variant_truncates", "Barge-in truncates per variant: ok (confirmed), failed (refused or never confirmed)",
    [*_VARIANT, "result"],
)  # fmt: skip
VARIANT_FUNCTION_CALLS = Counter(
    f"{NS}_variant_function_calls", "Tool calls per variant: ok, failed (an error output)", [*_VARIANT, "result"]
)
VARIANT_TOKENS = Counter(f"{NS}_variant_tokens", "response.done usage per variant", [*_VARIANT, "direction"])
VARIANT_COST = Counter(f"{NS}_variant_cost_usd", "Estimated cost of the priced calls of a variant, USD", _VARIANT)
VARIANT_PRICED_CALLS = Counter(f"{NS}_variant_priced_calls", "Calls whose model has a price (cost_usd)", _VARIANT)
TOOL_CALLS = Counter(
    f"{NS}_tool_calls",
    "Business tool calls (a dialplan's HTTP and MCP tools) per variant and tool, by outcome: ok, timeout, "
    "http_status, unreachable, too_large, not_json, bad_arguments, tool_error, unverified",
    [*_VARIANT, "tool", "outcome"],
)
TOOL_GUARDED = Counter(
    f"{NS}_tool_guarded",
    "Business tool calls the plan's guards kept from the model, per dialplan and tool: unverified (not called, the "
    "caller not verified yet: verify_before), pinned_argument (the model sent an argument the plan pins: discarded)",
    ["dialplan", "tool", "guard"],
)
TOOL_LATENCY = Histogram(
    f"{NS}_tool_latency_seconds", "The model's tool call -> its result, per variant and tool", [*_VARIANT, "tool"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
TOOL_WAIT_SILENCE = Histogram(
    f"{NS}_tool_wait_longest_silence_seconds",
    "The longest the caller heard nothing while a business tool worked, per tool call", _VARIANT,
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
VARIANT_LONGEST_SILENCE = Histogram(
    f"{NS}_variant_longest_silence_seconds",
    "Per call, its longest dead air: the caller heard nothing while waiting on the agent (a turn gap, or during a "
    "tool; hold audio ends it)", _VARIANT, buckets=LATENCY_BUCKETS,
)  # fmt: skip
VARIANT_LONGEST_WAIT = Histogram(
    f"{NS}_variant_longest_wait_seconds",
    "Per call, the longest the caller waited for the agent: the greeting, or a turn's end of speech -> the agent's "
    "audio, hold audio included", _VARIANT, buckets=LATENCY_BUCKETS,
)  # fmt: skip
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
# The front's edge (bridge/serve/kamailio/kamailio.cfg): what Kamailio answered itself, from its counters
FRONT_REFUSED = Counter(
    f"{NS}_front_refused",
    "Requests the front answered itself, by reason: source (403), credentials (403), challenged (401), dialog (404: "
    "no dialog the front set up), dialog_source (403: an in-dialog request from another address than its side's), "
    "method (405), calls_per_source (486: its source held front_calls_per_source calls), merged (482: a copy of an "
    "INVITE the front already has, on another branch), user_locked (403: its digest user is guarded, "
    "and its source is no listed trunk), too_large (513: over a worker's SIP buffer even trimmed of what no worker "
    "reads)",
    ["reason"],
)
FRONT_BANS = Counter(f"{NS}_front_bans", "Source addresses the front banned for flooding (front_pike_requests)")
FRONT_USER_LOCKS = Counter(
    f"{NS}_front_user_locks",
    "Digest users the front put under a guard for wrong passwords from unlisted sources (front_auth_user_failures)",
)
FRONT_BANNED_DROPPED = Counter(f"{NS}_front_banned_dropped", "Requests from banned source addresses, dropped")
FRONT_FULL = Counter(f"{NS}_front_full", "New calls the front answered 503: no worker had room")
SUPERVISOR_REFUSED_TOKENS = Counter(
    f"{NS}_supervisor_refused_tokens", "Wrong supervisor tokens (console sign-in or API bearer)", ["via"]
)
# serve's HTTP port (bridge/supervisor/gate.py): reason source|total (a new connection answered 503), evicted (an
# idle or half-sent connection closed for a new one), body_timeout (408)
HTTP_CONNECTIONS_REFUSED = Counter(
    f"{NS}_http_connections_refused", "HTTP connections refused or closed by serve's connection limits", ["reason"]
)
# Outages (bridge/call/outage.py): the model unreachable during a call
OUTAGE_SECONDS = Counter(f"{NS}_outage_seconds", "Seconds calls spent without the model (lost or never opened)")
CALLS_ON_HOLD = Gauge(
    f"{NS}_calls_on_hold", "Calls hearing the hold message now", ["dialplan"], multiprocess_mode="livesum"
)
OUTAGES_RESUMED = Counter(f"{NS}_outages_resumed", "Calls whose model came back after an outage", ["dialplan"])
FAILOVERS = Counter(f"{NS}_failovers", "Calls failed over after outage.hold_s, by failover", ["dialplan", "reason"])
WARM_TRANSFERS = Counter(
    f"{NS}_warm_transfers", "Warm transfers (a plan's transfer: {mode: warm}), by outcome", ["dialplan", "outcome"]
)
ORCHESTRATOR_DECISIONS = Counter(
    f"{NS}_orchestrator_decisions", "Decisions of a dialplan's orchestrator, by action", ["dialplan", "action"]
)
ORCHESTRATOR_ERRORS = Counter(
    f"{NS}_orchestrator_errors", "Failed requests to a dialplan's orchestrator, by kind", ["dialplan", "kind"]
)
ORCHESTRATOR_FILLERS = Counter(
    f"{NS}_orchestrator_fillers", "Fillers said because the orchestrator was slower than timeout_ms", ["dialplan"]
)
BREAKER_OPEN = Gauge(
    f"{NS}_realtime_breaker_open",
    "1 while a worker's circuit breakers are open for every model it has tried (new calls go straight to hold)",
    ["worker"],
    multiprocess_mode="livemax",
)
SUPERVISOR_SIGNINS = Counter(f"{NS}_supervisor_signins", "Console sign-ins, by role", ["role"])
# Listen-in (bridge/supervisor/listen.py, bridge/serve/listen.py)
LISTENERS_ACTIVE = Gauge(
    f"{NS}_listeners_active", "Supervisors listening in to a call now (serve process)", multiprocess_mode="livesum"
)
LISTEN_REFUSED = Counter(
    f"{NS}_listen_requests_refused",
    "Listen-in control messages a worker refused: unsigned, wrongly signed, expired or replayed",
)
TAKEOVER_REFUSED = Counter(
    f"{NS}_takeover_requests_refused",
    "Take-over requests or take-over audio a worker refused: no take-over leg, or audio wrongly signed or replayed",
)
ACTIONS_REFUSED = Counter(
    f"{NS}_action_requests_refused",
    "Supervisor action messages a worker refused: unsigned, wrongly signed, expired, replayed, malformed, or a "
    "transfer target the call's plan does not name",
)
LISTEN_TAPS_ACTIVE = Gauge(
    f"{NS}_listen_taps_active", "Calls whose audio is copied for listen-in now (workers)", multiprocess_mode="livesum"
)
LISTEN_SESSIONS = Counter(f"{NS}_listen_sessions", "Listen-ins opened, and refused by reason", ["result"])
GC_PAUSE = Histogram(
    f"{NS}_gc_pause_seconds", "Full garbage collections after calls end (bridge/runtime/memory.py), event loop paused",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
)  # fmt: skip
# The node's own checks, from the serve process every few seconds (bridge/serve/nodewatch.py)
NODE_READY = Gauge(
    f"{NS}_ready",
    "1 while this node passes the readiness checks of /healthz (workers ready, Redis answering, no model breaker "
    "open), 0 while /healthz would answer 503",
    multiprocess_mode="livemax",
)
REDIS_UP = Gauge(  # labelled, so that no series exists until a node with redis_url checks its Redis
    f"{NS}_redis_up",
    "1 while Redis answers this node's PING, 0 while it does not; redis: which Redis (its host, port and database, "
    "hashed); absent without redis_url",
    ["redis"],
    multiprocess_mode="livemax",
)
ROLLOUT_STATE_MISSING = Gauge(
    f"{NS}_rollout_state_missing",
    "1 for a rollout dialplan whose stored flag (weights, kill switch) vanished from Redis: a Redis that lost its "
    "data; 0 once a flag is stored again (`callbridge rollout import`)",
    ["dialplan"],
    multiprocess_mode="livemax",
)

# A stored rollout flag that no audit entry of the product vouches for (bridge/rollout/seal.py): written to Redis
# outside callbridge. Counted once per change of the stored flag, by every process that reads it.
ROLLOUT_FLAG_REFUSED = Counter(
    f"{NS}_rollout_flag_refused",
    "Stored rollout flags not obeyed because no signed audit entry vouches for them (a write outside callbridge); "
    "calls keep the last valid flag",
    ["dialplan"],
)


def announce_build(workers: int) -> None:
    """The serve process at start: ``callbridge_build_info`` and every worker's restart counter at zero."""
    import importlib.metadata
    import platform

    try:
        version = importlib.metadata.version("callbridge")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    BUILD_INFO.labels(version, platform.python_version()).set(1)
    for index in range(workers):
        WORKER_RESTARTS.labels(str(index))


def prime(
    dialects: tuple[str, ...],
    dialplans: tuple[str, ...],
    variants: Mapping[str, tuple[str, ...]] | None = None,
    *,
    rollouts: tuple[str, ...] = (),
    probed: Mapping[str, str] | None = None,
    orchestrated: tuple[str, ...] = (),
    orchestrator: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
) -> None:
    """Create every label set a worker can produce at zero, so /metrics shows each metric before its first event:
    a dashboard must tell "no failures" from "no data", and an alert on ``increase()`` sees a counter's first event
    only if the counter was there at 0 before it. ``variants``: each dialplan's variants; ``rollouts``: the
    dialplans with a rollout flag; ``probed``: those whose probes are on, each with its safe variant;
    ``orchestrated``: the dialplans with an orchestrator, ``orchestrator`` its actions and error kinds
    (``bridge.orchestrator``'s, given by the worker: this module is below it)."""
    classes = ("network", "auth", "protocol", "server")
    for d in dialects:
        for segment in SEGMENTS:
            LATENCY.labels(segment, d)
        for dp in dialplans:
            CALLS_STARTED.labels(d, dp)
            CALLS_ACTIVE.labels(d, dp)
            for ended in ev.CallOutcome:
                CALLS_ENDED.labels(d, dp, ended)
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
    for code in SIP_REJECT_CODES:
        SIP_REJECTED.labels(code)
    SIP_SLOT_REFUSALS.labels("calls_per_source")
    SIP_SLOT_REFUSALS.labels("unlisted_share")
    for dp in dialplans:
        CALLS_ON_HOLD.labels(dp)
        CALLS_ABANDONED.labels(dp)
        OUTAGES_RESUMED.labels(dp)
        for reason in ("transfer", "goodbye"):
            FAILOVERS.labels(dp, reason)
        for warm in ev.TransferOutcome:
            WARM_TRANSFERS.labels(dp, warm)
    OUTAGE_SECONDS.inc(0)
    for dp in rollouts:
        ROLLOUT_FLAG_REFUSED.labels(dp)
        ROLLOUT_SRM.labels(dp)
    for dp, safe in (probed or {}).items():
        ROLLOUT_PROBE_SECONDS.labels(dp, safe)
        for result in ("ok", "failed"):
            ROLLOUT_PROBES.labels(dp, safe, result)
    for dp in orchestrated:
        for action in orchestrator[0]:
            ORCHESTRATOR_DECISIONS.labels(dp, action)
        for kind in orchestrator[1]:
            ORCHESTRATOR_ERRORS.labels(dp, kind)
        ORCHESTRATOR_FILLERS.labels(dp)
    _prime_variants(variants or {})
    REDIS_QUEUE_DEPTH.set(0)
    REDIS_DROPPED_WRITES.inc(0)
    for part in ("redis", "report", "recording", "rollout", "spool"):
        CALL_RECORD_FAILURES.labels(part)
    for stage in ("spooled", "replayed"):
        CALL_STATE_SPOOLED.labels(stage)


def _prime_variants(variants: Mapping[str, tuple[str, ...]]) -> None:
    for dp, names in variants.items():
        for name in names:
            for outcome in ("ok", "connect_failure", "dropped", "recovered", "abandoned"):  # rollout.health.OUTCOMES
                VARIANT_CALLS.labels(dp, name, outcome)
            CALLS_LOST.labels(dp, name)
            for result in ("ok", "failed"):
                VARIANT_TRUNCATES.labels(dp, name, result)
                VARIANT_FUNCTION_CALLS.labels(dp, name, result)
            for direction in ("input", "output"):
                VARIANT_TOKENS.labels(dp, name, direction)
            VARIANT_FALLBACKS.labels(dp, name)
            VARIANT_GREETING.labels(dp, name)
            VARIANT_FIRST_REPLY.labels(dp, name)
            VARIANT_LONGEST_WAIT.labels(dp, name)
            VARIANT_LONGEST_SILENCE.labels(dp, name)
            VARIANT_COST.labels(dp, name)
            VARIANT_PRICED_CALLS.labels(dp, name)
            ROLLBACKS.labels(dp, name)
            for action in ("rollback", "promote", "srm", "complete"):
                ROLLOUT_DECISIONS.labels(dp, name, action)


def prime_webhooks(endpoints: Iterable[str]) -> None:
    """Every webhook endpoint's counters at zero (``endpoints``: their names), in the process that reads them from
    the settings and the dialplans: a first dead letter or drop is then an increase from 0."""
    for endpoint in endpoints:
        WEBHOOKS_DELIVERED.labels(endpoint)
        WEBHOOKS_DEAD.labels(endpoint)
        WEBHOOKS_ENDED_TWICE.labels(endpoint)
        for status in WEBHOOK_FAILURES:
            WEBHOOKS_FAILED.labels(endpoint, status)
        for reason in WEBHOOK_DROPS:
            WEBHOOKS_DROPPED.labels(endpoint, reason)


def prime_rollout_state(dialplans: Iterable[str]) -> None:
    """``callbridge_rollout_state_missing`` of each rollout dialplan the node serves: 0 until its checks find a flag
    missing (a label set already there keeps its value)."""
    for dp in dialplans:
        ROLLOUT_STATE_MISSING.labels(dp)


_LATENCY_BY: dict[tuple[str, str], Histogram] = {}  # LATENCY's children, looked up once (a sample is per second)


def observe_latency(segment: str, dialect: str, ms: float) -> None:
    child = _LATENCY_BY.get((segment, dialect))
    if child is None:
        if segment not in SEGMENTS:
            return
        child = _LATENCY_BY[segment, dialect] = LATENCY.labels(segment=segment, dialect=dialect)
    child.observe(ms / 1000.0)


def call_listener(dialect: str, dialplan: str) -> Callable[[ev.Report], None]:
    """A :class:`~bridge.call.session.CallSession` listener that turns its reports into metrics."""

    def barge_in(r: ev.BargeIn) -> None:
        BARGE_INS.labels(dialect).inc()
        if r.truncate_error_ms is not None:
            TRUNCATE_ERROR.labels(dialect).observe(r.truncate_error_ms / 1000.0)

    held = [False]  # this call is counted in CALLS_ON_HOLD

    def on_hold(now: bool) -> None:
        if now != held[0]:
            held[0] = now
            CALLS_ON_HOLD.labels(dialplan).inc(1 if now else -1)

    answered_now = [False]  # this call is counted in CALLS_ACTIVE (a call refused or abandoned never was)

    def ended(r: ev.CallEnded) -> None:
        on_hold(False)
        if answered_now[0]:
            answered_now[0] = False
            CALLS_ACTIVE.labels(dialect, dialplan).dec()
        CALLS_ENDED.labels(dialect, dialplan, r.outcome).inc()
        if r.outcome is ev.CallOutcome.ABANDONED:
            CALLS_ABANDONED.labels(dialplan).inc()
        if r.reason == ev.MAX_CALL_DURATION:  # the dialplan's bound (the SIP layer counts its own)
            SIP_BOUNDED.labels(r.reason).inc()

    def answered(r: ev.Answered) -> None:
        answered_now[0] = True
        CALLS_STARTED.labels(dialect, dialplan).inc()
        CALLS_ACTIVE.labels(dialect, dialplan).inc()

    def resumed(r: ev.OutageEnded) -> None:
        OUTAGE_SECONDS.inc(r.outage_s)
        OUTAGES_RESUMED.labels(dialplan).inc()

    def failed_over(r: ev.FailedOver) -> None:
        OUTAGE_SECONDS.inc(r.outage_s)
        FAILOVERS.labels(dialplan, r.failover).inc()

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
        .on(ev.RealtimeUnavailable, lambda r: CONNECT_FAILURES.labels(dialect, r.error_class).inc())
        .on(ev.ReconnectFailed, lambda r: CONNECT_FAILURES.labels(dialect, r.error_class).inc())
        .on(ev.SessionLost, lambda r: DROPPED_SESSIONS.labels(dialect, r.error_label).inc())
        .on(ev.Recovered, lambda r: RECONNECTS.labels(dialect).inc())
        .on(ev.ServiceError, lambda r: REALTIME_ERRORS.labels(dialect, r.error_class).inc())
        .on(ev.UnknownServerEvent, lambda r: UNKNOWN_EVENTS.labels(dialect).inc())
        .on(ev.BargeIn, barge_in)
        .on(ev.EchoJudged, lambda r: ECHO_GUARD.labels(dialect, r.outcome).inc())
        .on(ev.TalkedOver, lambda r: TALK_OVER.labels(dialect).observe(r.talk_over_ms / 1000.0))
        .on(ev.UsageTotals, usage)
        .on(ev.Truncated, lambda r: TRUNCATES.labels(dialect, "ok").inc())
        .on(ev.TruncateRefused, lambda r: TRUNCATES.labels(dialect, "failed").inc())
        .on(ev.PlayoutTotals, playout)
        .on(ev.HoldStarted, lambda r: on_hold(True))
        .on(ev.HoldEnded, lambda r: on_hold(False))
        .on(ev.CallEnded, ended)
        .on(ev.OutageEnded, resumed)
        .on(ev.FailedOver, failed_over)
        .on(ev.WarmTransferEnded, lambda r: WARM_TRANSFERS.labels(dialplan, r.outcome).inc())
        .on(ev.OrchestratorDecided, lambda r: ORCHESTRATOR_DECISIONS.labels(dialplan, r.action).inc())
        .on(ev.OrchestratorFailed, lambda r: ORCHESTRATOR_ERRORS.labels(dialplan, r.error).inc())
        .on(ev.OrchestratorLate, lambda r: ORCHESTRATOR_FILLERS.labels(dialplan).inc())
        .on(ev.ToolGuarded, lambda r: TOOL_GUARDED.labels(dialplan, r.name, r.guard).inc())
    )


def record_variant_call(dialplan: str, variant: str, record: Mapping[str, Any]) -> None:
    """One finished call of a variant (``bridge.rollout.health.CallStats.record``)."""
    VARIANT_CALLS.labels(dialplan, variant, str(record["outcome"])).inc()
    if record.get("fallback"):
        VARIANT_FALLBACKS.labels(dialplan, variant).inc()
    if record.get("greeting_ms") is not None:
        VARIANT_GREETING.labels(dialplan, variant).observe(float(record["greeting_ms"]) / 1000.0)
    if record.get("first_reply_ms") is not None:
        VARIANT_FIRST_REPLY.labels(dialplan, variant).observe(float(record["first_reply_ms"]) / 1000.0)
    failed = int(record.get("truncate_failures", 0))
    VARIANT_TRUNCATES.labels(dialplan, variant, "ok").inc(int(record.get("truncates", 0)) - failed)
    VARIANT_TRUNCATES.labels(dialplan, variant, "failed").inc(failed)
    failed = int(record.get("tool_failures", 0))
    VARIANT_FUNCTION_CALLS.labels(dialplan, variant, "ok").inc(int(record.get("tool_calls", 0)) - failed)
    VARIANT_FUNCTION_CALLS.labels(dialplan, variant, "failed").inc(failed)
    VARIANT_TOKENS.labels(dialplan, variant, "input").inc(int(record.get("input_tokens", 0)))
    VARIANT_TOKENS.labels(dialplan, variant, "output").inc(int(record.get("output_tokens", 0)))
    if record.get("cost_usd") is not None:
        VARIANT_COST.labels(dialplan, variant).inc(float(record["cost_usd"]))
        VARIANT_PRICED_CALLS.labels(dialplan, variant).inc()


def observe_waits(dialplan: str, variant: str, longest_wait_ms: float | None, longest_silence_ms: float | None) -> None:
    """One finished call's longest wait and longest dead air (``CallReport``; None: it had none)."""
    for histogram, ms in ((VARIANT_LONGEST_WAIT, longest_wait_ms), (VARIANT_LONGEST_SILENCE, longest_silence_ms)):
        if ms is not None:
            histogram.labels(dialplan, variant).observe(ms / 1000.0)


def observe_tool(dialplan: str, variant: str, r: ev.ToolFinished) -> None:
    """One business tool call of a variant (its outcome, latency and the caller's longest silence meanwhile)."""
    TOOL_CALLS.labels(dialplan, variant, r.name, r.outcome).inc()
    TOOL_LATENCY.labels(dialplan, variant, r.name).observe(r.latency_ms / 1000.0)
    TOOL_WAIT_SILENCE.labels(dialplan, variant).observe(r.longest_silence_ms / 1000.0)


# -- exemplars: from a slow bucket to the trace of a call that landed there ------------------------------------------

EXEMPLAR_FLUSH_S = 1.0  # a worker writes its exemplars at most this often (and at each traced call's end)


class _Exemplars:
    """This process's latest exemplar of each bucket of the histograms a traced call notes: the trace (and its root
    span) of the last observation that landed in the bucket. In multiprocess mode a worker writes its own to a file
    beside its metric files (``exemplars_<pid>.json``, replaced whole: at most once per :data:`EXEMPLAR_FLUSH_S`,
    and at each traced call's end), which ``/metrics`` reads; else they stay in memory. One entry per bucket and
    label set, so the file is as bounded as the histograms are."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}
        self.flushed_at = 0.0
        self.dirty = False

    def note(self, histogram: Histogram, values: tuple[str, ...], seconds: float, ids: Mapping[str, str]) -> None:
        bound = next((b for b in histogram._upper_bounds if seconds <= b), math.inf)  # the last bound is +Inf
        series = dict(zip(histogram._labelnames, values, strict=True))
        le = floatToGoString(bound)  # type: ignore[no-untyped-call]  # prometheus-client lacks a hint
        key = json.dumps([histogram._name, sorted(series.items()), le])
        self.latest[key] = {"labels": dict(ids), "value": seconds, "ts": time.time()}
        self.dirty = True
        if time.monotonic() - self.flushed_at >= EXEMPLAR_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory or not self.dirty:
            return
        self.dirty, self.flushed_at = False, time.monotonic()
        path = Path(directory) / f"exemplars_{os.getpid()}.json"
        part = path.with_suffix(".part")
        try:
            part.write_text(json.dumps(self.latest))
            os.replace(part, path)
        except OSError:  # a full or vanished directory costs the call nothing: the next flush tries again
            self.dirty = True

    def read(self) -> dict[str, dict[str, Any]]:
        """Every process's exemplars, the latest of each bucket."""
        found = dict(self.latest)
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        for path in sorted(Path(directory).glob("exemplars_*.json")) if directory else ():
            with contextlib.suppress(OSError, ValueError):
                for key, entry in json.loads(path.read_text()).items():
                    if key not in found or entry["ts"] > found[key]["ts"]:
                        found[key] = entry
        return found


_EXEMPLARS = _Exemplars()


def exemplar_latency(segment: str, dialect: str, ms: float, ids: Mapping[str, str]) -> None:
    """A latency sample of a sampled traced call (``ids``: its ``trace_id``, ``span_id``): the exemplar of the
    bucket :func:`observe_latency` puts it in."""
    if segment in SEGMENTS and ids:
        _EXEMPLARS.note(LATENCY, (segment, dialect), ms / 1000.0, ids)


def exemplar_tool(dialplan: str, variant: str, tool: str, latency_ms: float, ids: Mapping[str, str]) -> None:
    """A tool call's latency of a sampled traced call: the exemplar of its bucket (:func:`observe_tool`)."""
    if ids:
        _EXEMPLARS.note(TOOL_LATENCY, (dialplan, variant, tool), latency_ms / 1000.0, ids)


def flush_exemplars() -> None:
    """Write this process's exemplars now (a traced call ended)."""
    _EXEMPLARS.flush()


class _WithExemplars(Collector):
    """``registry``'s families, each histogram bucket with its exemplar (for the OpenMetrics exposition)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        found = _EXEMPLARS.read()
        for family in self.registry.collect():
            if found and family.type == "histogram":
                family.samples = [_with_exemplar(family.name, s, found) for s in family.samples]
            yield family


def _with_exemplar(family: str, sample: Sample, found: Mapping[str, Mapping[str, Any]]) -> Sample:
    if sample.name != f"{family}_bucket" or "le" not in sample.labels:
        return sample
    series = sorted((k, v) for k, v in sample.labels.items() if k != "le")
    entry = found.get(json.dumps([family, series, sample.labels["le"]]))
    if entry is None:
        return sample
    return sample._replace(exemplar=Exemplar(entry["labels"], entry["value"], entry["ts"]))


class _MergedFiles(multiprocess.MultiProcessCollector):
    """The worker processes' metric files merged, leaving out a file that goes between the listing and its read (a
    process that has just exited, or the preloaded parent dropping the files its imports made) and one too short to
    hold its header yet (a process that is creating it now: nothing in it to merge)."""

    def collect(self) -> list[Any]:
        files = sorted(str(p) for p in Path(self._path).glob("*.db"))
        while True:
            try:
                return list(self.merge(files, accumulate=True))  # type: ignore[no-untyped-call]  # prometheus-client lacks a hint
            except FileNotFoundError as exc:
                if exc.filename not in files:
                    raise
                files.remove(exc.filename)
            except struct.error:  # the header's 4 bytes are not there yet
                short = [f for f in files if _size(f) < _HEADER_BYTES]
                if not short:
                    raise
                files = [f for f in files if f not in short]


_HEADER_BYTES = 8  # a metric file's used-bytes word and its padding (prometheus-client's mmap_dict)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def registry() -> CollectorRegistry:
    """The registry to serve: merged across worker processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        reg = CollectorRegistry()
        _MergedFiles(reg)  # type: ignore[no-untyped-call]  # prometheus-client lacks a hint (its __init__)
        return reg
    from prometheus_client import REGISTRY

    return REGISTRY


def render(accept: str = "") -> tuple[bytes, str]:
    """The exposition and its content type: OpenMetrics, with the latency histograms' exemplars, when ``accept`` (the
    scraper's ``Accept`` header) asks for ``application/openmetrics-text``; else Prometheus' text format."""
    reg = registry()
    if "application/openmetrics-text" not in accept:
        return generate_latest(reg), CONTENT_TYPE_LATEST
    encoder, content_type = choose_encoder(accept)
    return encoder(_WithExemplars(reg)), content_type


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # prometheus-client lacks a hint


def redis_writes_waiting() -> dict[str, float]:
    """The workers whose state writes wait for Redis now, and for how long (merged across worker processes), for
    ``/healthz``."""
    out: dict[str, float] = {}
    for family in registry().collect():
        if family.name == REDIS_WRITES_WAITING._name:
            for smp in family.samples:
                if smp.value > 0 and "worker" in smp.labels:
                    out[smp.labels["worker"]] = max(out.get(smp.labels["worker"], 0.0), smp.value)
    return out


def breakers_open() -> list[str]:
    """The workers whose Realtime circuit breaker is open (merged across worker processes), for ``/healthz``."""
    out = []
    for family in registry().collect():
        if family.name == BREAKER_OPEN._name:
            out += [smp.labels["worker"] for smp in family.samples if smp.value >= 1 and "worker" in smp.labels]
    return sorted(set(out), key=lambda w: (len(w), w))


def export_estimates(dialplan: str, estimates: Mapping[str, Mapping[str, Any]]) -> None:
    """A rollout experiment's estimates (``bridge.rollout.experiment.Experiment.estimates``) as gauges."""
    for variant, metrics in estimates.items():
        verdict = metrics.get("verdict")
        if isinstance(verdict, Mapping):
            ROLLOUT_SRM.labels(dialplan).set(1.0 if verdict.get("srm") else 0.0)
        for metric, m in metrics.items():
            if not isinstance(m, Mapping) or m.get("value") is None:
                continue
            ROLLOUT_ESTIMATE.labels(dialplan, variant, metric, "value").set(float(m["value"]))
            vs = m.get("vs_safe")
            if vs:
                ROLLOUT_ESTIMATE.labels(dialplan, variant, metric, "diff").set(float(vs["diff"]))
                ROLLOUT_ESTIMATE.labels(dialplan, variant, metric, "ci95_low").set(float(vs["ci95"][0]))
                ROLLOUT_ESTIMATE.labels(dialplan, variant, metric, "ci95_high").set(float(vs["ci95"][1]))
