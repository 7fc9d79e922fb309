"""One worker process: a SIP user agent on its own port, a few calls, one asyncio loop.

The pjsua2 wheel caps a process at 4 calls and runs every media callback on one clock thread, so the bridge is a
pool of these (``bridge.serve.pool``). A worker holds an exclusive lock on its SIP port for as long as it lives, so a
second worker can never take the port of a live one (UDP sockets can share a port under SO_REUSEADDR; the lock can't).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import math
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, get_args

from bridge import events as ev
from bridge import metrics
from bridge.audio import playout_native
from bridge.call.leg import PhoneLeg
from bridge.call.privacy import mask_number
from bridge.call.recorder import consent_greeting
from bridge.call.report import CallReport
from bridge.call.session import CallOptions, CallSession, Listener
from bridge.call.takeover import TakeOverLeg
from bridge.call.tap import ListenTap
from bridge.config import WILDCARD_HOSTS, Settings, otlp_headers, secret_variables
from bridge.dialplan import Dialplan, load_dialplans, rollout_specs, route, shutdown_errors
from bridge.errors import BridgeError, ConfigError, ConnectError, ModelRefused, redact
from bridge.orchestrator.client import OrchestratorClient
from bridge.realtime import downlink
from bridge.realtime.credentials import BROKER_TOKEN_ENV, BROKER_URL_ENV, Sources
from bridge.realtime.dialects import DIALECTS, get_dialect
from bridge.rollout import catalog, refusals
from bridge.rollout.policy import Decision, RolloutFlag, RolloutSpec, decide, shares
from bridge.rollout.store import RolloutStore
from bridge.runtime import logs, traces
from bridge.runtime.lifetime import die_with_parent
from bridge.runtime.memory import CycleCollector
from bridge.runtime.metronome import for_loop as metronome_for
from bridge.runtime.sched import use_realtime
from bridge.runtime.secrets import forget_environment, read_from_fd
from bridge.serve import calltraces, outcome
from bridge.serve.actions import CallActions
from bridge.serve.breaker import Breakers
from bridge.serve.listen import ListenHub
from bridge.serve.probe import Prober
from bridge.serve.ready import ReadyReport, send_ready
from bridge.serve.stopping import IGNORED, WorkerControl
from bridge.serve.takeover import TakeOverHub
from bridge.serve.variant import VariantCall
from bridge.serve.webhooks import CallHooks
from bridge.store.calls import CallStore
from bridge.store.connection import StoreUnavailable, connect
from bridge.store.dialogseal import DialogSeal
from bridge.store.record import CallTimes, call_record
from bridge.store.reportfile import append_report
from bridge.supervisor.targets import allowed_targets
from bridge.tools.mcp import load_sdk, load_sdk_soon

if TYPE_CHECKING:  # pjsua2 is imported when the worker runs (Worker.run), not when this module is
    from bridge.call.recorder import RecordingLeg
    from bridge.sip.endpoint import RejectedCall
    from bridge.sip.gateway import IncomingCall
    from bridge.sip.sipconfig import SipConfig

log = logging.getLogger("bridge.serve.worker")

EXIT_PORT_LOCKED = 3
EXIT_CONFIG = 4


def lock_port(host: str, port: int) -> IO[str] | None:
    """An exclusive, process-lifetime lock on ``host:port``; None if a live process holds it."""
    path = Path(tempfile.gettempdir()) / f"callbridge-sip-{host}-{port}.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def reread_plans(settings: Settings, index: int) -> list[Dialplan] | None:
    """The dialplans read again; None (logged, naming the file and field) if one is wrong: the old ones stay."""
    try:
        plans = load_dialplans(settings.dialplans)
    except ConfigError as exc:
        log.error("worker %d: dialplans not reloaded (the old ones stay): %s", index, exc)
        return None
    log.info("worker %d: %d dialplan(s) read again from %s", index, len(plans), settings.dialplans)
    load_sdk_soon(plans)  # a plan's first MCP server: the SDK imported now, beside the calls, not in one
    return plans


def fixed_decision(plan: Dialplan) -> Decision:
    """A plan pinned to one dialect: one variant, named after the dialect, on its own model (or the dialect's
    default) and voice."""
    dialect = get_dialect(plan.dialect)
    model = plan.profile.model or dialect.default_model
    return Decision(dialect.name, dialect.name, model, plan.profile.voice, f"dialplan pins {dialect.name}")


def warn_shutdowns(
    plans: list[Dialplan], today: dt.date | None = None, *, log_due: bool = True
) -> list[catalog.Shutdown]:
    """Set the shutdown gauge of every model of every rollout variant (its fallback model too): its announced
    shutdown date, or +Inf (none announced); and (``log_due``) log a warning for each within
    :data:`~bridge.rollout.catalog.SHUTDOWN_WARNING_DAYS`. Returns those due."""
    specs = rollout_specs(plans)
    found = catalog.shutdowns((dp, v) for dp, spec in specs.items() for v in spec.variants)
    dates = {
        (s.dialplan, s.variant, s.model): dt.datetime.combine(s.date, dt.time(), dt.UTC).timestamp() for s in found
    }
    for dp, spec in specs.items():
        for v in spec.variants:
            for model in (m for m in v.models() if m is not None):
                metrics.MODEL_SHUTDOWN.labels(dp, v.name, model).set(dates.get((dp, v.name, model), math.inf))
    today = today or dt.datetime.now(dt.UTC).date()
    due = catalog.due(found, today)
    for s in due if log_due else ():
        log.warning("%s", s.warning(today))
    for error in (e for p in plans for e in shutdown_errors(p, today)) if log_due else ():
        log.warning("%s (calls go to the healthy variants; `dialplan check` fails on this plan)", error)
    return due


def prime_plans(plans: list[Dialplan]) -> None:
    """Every label set the calls of ``plans`` can produce, at zero (:func:`bridge.metrics.prime`)."""
    from bridge.orchestrator.client import KINDS  # here, not at import: the worker's module stays free of aiohttp
    from bridge.orchestrator.models import Action

    variants = {p.name: (p.rollout_spec.names if p.rollout_spec else (p.dialect,)) for p in plans}
    metrics.prime(
        tuple(DIALECTS),
        tuple(p.name for p in plans),
        variants,
        rollouts=tuple(p.name for p in plans if p.rollout_spec is not None),
        probed={p.name: p.rollout_spec.safe for p in plans if p.rollout_spec and p.rollout_spec.probes.enabled},
        orchestrated=tuple(p.name for p in plans if p.orchestrator is not None),
        orchestrator=(tuple(get_args(Action)), tuple(KINDS)),
    )


def export_weights(plan: Dialplan, spec: RolloutSpec, flag: RolloutFlag) -> None:
    """Each variant's share of new calls under ``flag`` (``callbridge_rollout_weight``)."""
    for name, share in shares(spec, flag).items():
        metrics.ROLLOUT_WEIGHT.labels(plan.name, name).set(share)


async def announce_worker(worker: Worker) -> None:
    """A worker's series from its start (serve's own: :func:`bridge.serve.pool.announce_node`): every label set its
    calls can produce at zero, each rollout's weights as its flag reads at start (the default flag without Redis),
    each rollout variant's model shutdown date, and (worker 0) whether each variant is refused."""
    prime_plans(worker.plans)
    for plan in worker.plans:
        if (spec := plan.rollout_spec) is not None:
            flag = await worker.rollouts.get_flag(plan.name) if worker.rollouts else spec.default_flag()
            export_weights(plan, spec, flag)
    warn_shutdowns(worker.plans, log_due=worker.index == 0)  # one warning per node, not one per worker
    if worker.index == 0:
        await worker._warn_refused()


def sip_config(s: Settings, index: int, port: int) -> SipConfig:
    """Worker ``index``'s SIP endpoint, listening on ``port``."""
    from bridge.sip.sipconfig import SipConfig

    tls_port = s.worker_tls_port(index)
    return SipConfig(
        host=s.sip_host,
        port=port,
        # behind a front, the front announces the public SIP address (its Record-Route); RTP goes straight to
        # the worker, so the worker's SDP carries the public media address either way
        public_address=s.sip_public_address if s.front == "none" else "",
        rtp_public_address=s.rtp_public_address or s.sip_public_address,
        transports=("udp", "tcp", "tls") if tls_port is not None else ("udp", "tcp"),
        tls_port=tls_port or 0,
        tls_cert=str(s.sip_tls_cert or ""),
        tls_key=str(s.sip_tls_key or ""),
        tls_ca=str(s.sip_tls_ca or ""),
        tls_verify=s.sip_tls_verify,
        user_agent=s.sip_server_header,
        srtp=s.srtp,
        rtp_port=s.worker_rtp_port(index),
        rtp_port_range=s.rtp_ports_per_worker if s.rtp_port else 0,
        pjsua_log_level=s.pjsua_log_level,
        allowed_sources=s.sip_allowed_sources,
        auth_users={user: pw.get_secret_value() for user, pw in s.sip_auth_users.items()},
        auth_realm=s.sip_auth_realm,
        auth_nonce_secret=s.sip_auth_nonce_secret.get_secret_value() if s.sip_auth_nonce_secret else "",
        trusted_fronts=s.trusted_fronts(),
        media_beat_frames=s.media_beat_frames,
        jitter_buffer_ms=s.sip_jitter_buffer_ms,
        allow_any_source=s.sip_allow_any_source,
        calls_per_source=s.sip_calls_per_source,
        trunk_sources=s.sip_trunk_sources,
        unlisted_share=s.sip_unlisted_share,
        rtp_timeout_s=s.rtp_timeout_s,
        rtp_hold_timeout_s=s.rtp_hold_timeout_s,
        session_expires_s=s.sip_session_expires_s,
        session_min_se_s=s.sip_session_min_se_s,
    )


def log_sessions(call_id: str, vc: VariantCall) -> Listener:
    """A call listener that logs each model session the call opens (its ``sess_...`` id and the model)."""

    def listener(report: ev.Report) -> None:
        if isinstance(report, ev.SessionOpened):
            log.info("call %s: model session %s opened (%s)", call_id, report.session_id, vc.decision.model)

    return listener


def log_ended(call_id: str, report: CallReport) -> None:
    """The call's last line: who ended it and why, its turns, and the model sessions it had."""
    log.info(
        "call %s ended by %s (%s): %s phases, %d caller / %d agent turns; model session(s) %s",
        call_id,
        report.ended_by,
        report.end_reason,
        len(report.phases),
        len(report.caller_transcript),
        len(report.agent_transcript),
        ", ".join(report.session_ids) or "none",
    )


def report_line(
    index: int, call: IncomingCall, plan: Dialplan, vc: VariantCall, report: CallReport, times: CallTimes
) -> dict[str, Any]:
    """The call's report line (``report_file``: docs/report.schema.json): its report, its variant's fields, and the
    fields every record of a call has (:mod:`bridge.store.record`), the numbers masked as in logs and Redis."""
    fields = vc.report_fields()
    caller, original = masked_numbers(call, plan)
    who = {"call_id": call.call_id, "sip_call_id": call.sip_call_id, "dialplan": plan.name, "caller": caller}
    identity = fields | who | {"called": call.called, "original_called": original}
    shown = report.to_json()
    record = call_record(identity, times.as_dict() | {"ended_at": times.end()}, shown)
    return {"worker": index, **shown, **fields, **record}


def masked_numbers(call: IncomingCall, plan: Dialplan) -> tuple[str, str]:
    """The caller and a forwarded call's original called number ("" for none), masked as the plan's privacy keeps a
    caller's number in logs and Redis."""
    visible = plan.privacy.caller_visible_digits
    return mask_number(call.caller, visible), mask_number(call.original_called, visible)


class Worker:
    def __init__(
        self, settings: Settings, index: int, broker_token: str | None = None, ready_fd: int | None = None
    ) -> None:
        self.settings = settings
        self.index = index
        self.ready_fd = ready_fd  # where the ready report goes (bridge/serve/ready.py); None: nobody waits for it
        self.plans = load_dialplans(settings.dialplans)
        self.specs = rollout_specs(self.plans)
        self.prices = catalog.load_prices(settings.price_table)
        env = {**os.environ, **({BROKER_TOKEN_ENV: broker_token} if broker_token else {})}
        key = None if env.get(BROKER_URL_ENV) else settings.credential
        self.credentials = Sources.from_environment(
            settings.realtime_url, key, mint=settings.credentials == "mint", env=env
        )
        self.store: CallStore | None = None
        self.rollouts: RolloutStore | None = None
        self.refused: dict[str, set[str]] = {}  # dialplan -> variants whose model the service refuses
        self._marking: set[str] = set()  # refused variants this worker has not yet marked in Redis
        self._dropped_exported = 0
        self._spool_exported: dict[str, int] = {}
        self.collector = CycleCollector(observe=metrics.GC_PAUSE.observe)
        self.breakers = Breakers(settings.breaker_failures)  # per model: one failing model leaves the others' calls be
        self.orchestrator = OrchestratorClient()  # one HTTP session for every orchestrated call of this worker
        metrics.BREAKER_OPEN.labels(str(index)).set(0)
        self._background: set[asyncio.Task[Any]] = set()
        self.listen: ListenHub | None = None  # listen-in: every call's leg has a tap, idle until someone listens
        self.actions: CallActions | None = None  # supervisor actions (hang up, whisper, transfer) into a call's inbox
        self.control: WorkerControl | None = None  # drain, stop and the node's ends (bridge/serve/stopping.py)
        listen_key = settings.listen_key.get_secret_value() if settings.listen_key else None
        self.dialogs = DialogSeal.under(listen_key)  # seals the calls' stored dialogs (bridge/store/dialogseal.py)
        self.hooks = CallHooks.of(settings, lambda: self.plans)  # the calls' webhook events (serve/webhooks.py)
        prober = Prober(self.credentials, settings.realtime_url, f"worker {index}")  # the rollouts' probes
        self.outcomes = outcome.Outcomes(listen_key, settings.rollout_keys, prober)  # outcome records; the rollouts

    async def announce_metrics(self) -> None:
        """This worker's series from its start (:func:`announce_worker`)."""
        await announce_worker(self)

    def reload_plans(self) -> None:
        """The dialplans read again (serve's SIGHUP); a call keeps the plan it started with."""
        if (plans := reread_plans(self.settings, self.index)) is not None:
            self.plans, self.specs = plans, rollout_specs(plans)
            prime_plans(plans)  # a plan new to the folder: its series at zero too
            if self.rollouts is not None:
                self.rollouts.specs = dict(self.specs)

    async def _variant_call(self, plan: Dialplan, call: IncomingCall) -> VariantCall:
        """The call's variant: a pinned plan's only one, or the rollout's decision on the plan's flag (without
        Redis: the dialplan's own defaults)."""
        spec = plan.rollout_spec
        if spec is None:
            decision, variant, fallback_voice = fixed_decision(plan), None, plan.profile.voice
            rollout: tuple[RolloutSpec, RolloutFlag] | None = None
        else:
            flag: RolloutFlag = await self.rollouts.get_flag(plan.name) if self.rollouts else spec.default_flag()
            refused = await self._refused_variants(plan)
            decision = decide(spec, flag, call.caller, call.call_id, voice=plan.profile.voice, refused=refused)
            export_weights(plan, spec, flag)
            variant, fallback_voice = spec.variant(decision.variant), flag.fallback_voice
            rollout = (spec, flag)
        vc = VariantCall(
            plan,
            decision,
            variant=variant,
            fallback_voice=fallback_voice,
            sources=self.credentials,
            realtime_url=self.settings.realtime_url,
            prices=self.prices,
            rollout=rollout,
        )
        vc.known_refused = frozenset(self.refused.get(plan.name, ()))
        vc.on_refusal.append(lambda name, exc: self._refused(plan, name, exc))
        return vc

    async def _refused_variants(self, plan: Dialplan) -> set[str]:
        """The plan's refused variants: Redis's (with this worker's marks still on their way), or without Redis the
        ones this worker saw refused; each variant's refused gauge follows."""
        refused = self.refused.setdefault(plan.name, set())
        if self.rollouts is not None:
            refused = set(await refusals.refused_for_call(self.rollouts, plan.name)) | self._marking
            self.refused[plan.name] = refused
        for v in plan.rollout_spec.variants if plan.rollout_spec is not None else ():
            metrics.VARIANT_REFUSED.labels(plan.name, v.name, v.models()[0]).set(1 if v.name in refused else 0)
        return refused

    async def _warn_refused(self) -> None:
        """At start: a plan whose safe variant the service refuses (marked in Redis) sends its calls elsewhere."""
        for plan in self.plans:
            spec = plan.rollout_spec
            if spec is None or spec.safe not in await self._refused_variants(plan):
                continue
            log.warning(
                "dialplan %s: its safe variant %s is marked refused (the service refuses its model): its calls go to "
                "the healthy variants; point it at a current model, then `callbridge rollout unrefuse %s %s`",
                plan.name, spec.safe, plan.name, spec.safe,
            )  # fmt: skip

    def _refused(self, plan: Dialplan, variant: str, exc: ModelRefused) -> None:
        """The service refused ``variant``'s model: count it (the alert), keep it from this worker's next calls, and
        mark it refused in Redis (its weight moves to the healthy variants) without holding up the call."""
        metrics.MODEL_REFUSALS.labels(plan.name, variant, exc.model).inc()
        metrics.VARIANT_REFUSED.labels(plan.name, variant, exc.model).set(1)
        self.refused.setdefault(plan.name, set()).add(variant)
        if self.rollouts is None or plan.rollout_spec is None:
            return
        self._marking.add(variant)
        task = asyncio.create_task(self._mark_refused(plan.name, variant, exc), name=f"refused-{variant}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mark_refused(self, dialplan: str, variant: str, exc: ModelRefused) -> None:
        assert self.rollouts is not None
        try:
            await refusals.mark_refused(self.rollouts, dialplan, variant, exc.model, exc.code)
        except (StoreUnavailable, ConfigError) as error:
            log.error("rollout %s: could not mark %s refused: %s", dialplan, variant, error)
            return  # this worker keeps it from its calls (``_marking``) until a mark lands
        self._marking.discard(variant)

    async def handle(self, call: IncomingCall) -> None:
        control = self.control
        if control is not None and not control.begin(call):  # draining: 503, the caller (or the front) goes elsewhere
            return
        try:
            await self._handle(call)
        finally:
            self.collector.call_ended()  # free the call's reference cycles now (bridge/runtime/memory.py)
            if control is not None:
                control.finished(call.call_id)

    def _end_orphans(self, dialogs: list[tuple[str, str]]) -> None:
        """Calls of a dead worker (or of this worker's previous run): BYE to each caller (bridge/sip/orphans.py)."""
        from bridge.sip.orphans import end_orphans

        host = self.settings.sip_host
        local = None if host in WILDCARD_HOSTS else host  # a wildcard: the kernel picks
        task = asyncio.create_task(end_orphans(self.dialogs.open_all(dialogs), local), name="orphan-byes")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _remember_dialog(self, call: IncomingCall) -> None:
        """Once the caller's ACK confirms the dialog, keep it in the call's hash, sealed (for :meth:`_end_orphans`)."""
        for _ in range(100):  # up to 10 s: the ACK follows the 200 OK within a round trip
            dialog = call.dialog
            if dialog is not None and self.store is not None:
                self.store.update(
                    call.call_id, sip_dialog=self.dialogs.seal(call.call_id, json.dumps(dialog.to_json()))
                )
                return
            if call.disconnected.is_set():
                return
            await asyncio.sleep(0.1)

    async def _handle(self, call: IncomingCall) -> None:
        logs.CALL_ID.set(call.call_id)  # every line of this call's task (and the tasks it starts) names it
        plan = route(self.plans, call.called, call.original_called)
        if plan is None:
            call.reject(404, "No dialplan for this number")
            return
        if plan.allowed_sources and not call.enforce_sources(plan.allowed_sources):
            return  # 403, counted (metrics via on_rejected)
        vc = await self._variant_call(plan, call)
        decision, dialect = vc.decision, vc.dialect
        caller, original = masked_numbers(call, plan)  # in logs and Redis (the console)
        log.info(
            "call %s from %s to %s%s: variant %s (%s, %s, voice %s; %s)",
            call.call_id, caller, call.called, f" (originally to {original})" if original else "", decision.variant,
            dialect.name, decision.model, decision.voice, decision.reason,
        )  # fmt: skip
        times = CallTimes()  # its arrival, answer and end: the report line's and the webhooks' alike
        listeners: list[Listener] = [times.listener, metrics.call_listener(dialect.name, plan.name), vc.listen]
        listeners.append(log_sessions(call.call_id, vc))
        trace = calltraces.call_trace(call, plan, vc, listeners)  # its ids in the webhooks' bodies (tracing on)
        hook = self.hooks.listener(call, plan, decision, dialect.name, self.store, times, trace.ids())
        if hook is not None:
            listeners.append(hook)
        if self.store is not None:
            listeners.append(
                self.store.listener_for(
                    call.call_id, caller=caller, called=call.called, original_called=original, dialplan=plan.name,
                    variant=decision.variant, dialect=dialect.name, model=decision.model, voice=decision.voice,
                )
            )  # fmt: skip
            started = f"{times.started_at:.3f}"  # the arrival as the report line and the webhooks say it
            self.store.update(  # Call-ID: data, no key; the trace's id for the console
                call.call_id, sip_call_id=call.sip_call_id, started_at=started, **calltraces.hash_fields(trace)
            )
        session = self._session(call, plan, vc, self._leg(call, plan, dialect.name, listeners), listeners)
        if self.actions is not None:
            self.actions.add(call.call_id, session.inbox.put, allowed_targets(plan))
        if self.control is not None:
            self.control.attach(call.call_id, session.inbox.put)
        if self.store is not None:
            store = self.store
            # a fallback to the variant's fallback model, or a move off a refused model: the call's hash follows
            vc.on_fallback.append(lambda _retry: store.update(call.call_id, **vc.hash_fields()))
            store.watch(call.call_id, session.progress)
            remember = asyncio.create_task(self._remember_dialog(call), name=f"dialog-{call.call_id}")
            self._background.add(remember)
            remember.add_done_callback(self._background.discard)
        try:
            report = await session.run()
        except BridgeError as exc:
            log.error("call %s failed: %s", call.call_id, redact(str(exc)))
            raise
        finally:
            if self.listen is not None:
                self.listen.remove(call.call_id)
            if self.actions is not None:
                self.actions.remove(call.call_id)
        await self._finish(call, plan, vc, session, report, times)

    def _leg(self, call: IncomingCall, plan: Dialplan, dialect: str, listeners: list[Listener]) -> PhoneLeg:
        """The call's phone leg: recorded if the plan says so, with a listen-in tap if this worker has listen-in."""
        leg: PhoneLeg = call
        if plan.recording.enabled:
            recording = _recording_leg(call, plan, dialect, self.settings.recordings_dir)
            listeners.append(recording.listener)
            leg = recording
        if self.actions is not None and self.actions.takeover is not None:
            takeover = TakeOverLeg(leg)  # inside the tap: a listening supervisor never hears their own voice back
            self.actions.takeover.add(takeover)
            leg = takeover
        if self.listen is not None:
            tap = ListenTap(leg)
            self.listen.add(tap)
            leg = tap
        return leg

    def _session(
        self, call: IncomingCall, plan: Dialplan, vc: VariantCall, leg: PhoneLeg, listeners: list[Listener]
    ) -> CallSession:
        """The call's session on its variant: the variant's profile (it follows a fallback), the worker's breaker,
        beat and orchestrator client."""
        settings, dialect = self.settings, vc.dialect
        return CallSession(
            leg,
            plan.model_copy(update={"profile": vc.profile(), "greeting": consent_greeting(plan)}),
            dialect,
            vc.connect,
            CallOptions(
                listeners=listeners,
                max_session_s=settings.realtime_max_session_s or dialect.capabilities.session_cap_s,
                credentials=vc.credentials,  # follows a fallback to the variant's fallback model
                metronome=metronome_for(),  # one 20 ms beat for every call of the worker, on the media clock
                model_down=self.breakers.of(vc.decision.model).open,
                reject_when_down=settings.reject_when_model_down,
                on_connect=lambda exc: self._connected(vc.decision.model, exc),  # the model it is on now
                orchestrator=self.orchestrator.ask,
                variant=vc.decision.variant,
                profile=vc.profile,  # a fallback changes its model and voice (session.update with the fallback's voice)
                on_refused=vc.refused,  # the service refuses the model: on to the next healthy variant at once
                post_call_timeout_s=settings.post_call_timeout_s,
                consent_prompt=True,  # a recorded plan's consent prompt, played first
            ),
        )

    async def _finish(
        self,
        call: IncomingCall,
        plan: Dialplan,
        vc: VariantCall,
        session: CallSession,
        report: CallReport,
        times: CallTimes,
    ) -> None:
        """The ended call's media counters, its report line (``times``: its times), and its variant's health and
        cost."""
        report.media = {
            "port": call.media_port_kind,
            "clock": call.clock_priority,
            **call.media_counters,
            "rtp_dropped": call.rtp_dropped,  # packets from hosts the call does not admit (bridge/sip/rtpguard.py)
            **session.link.media_counts,  # uplink: who sent the caller's frames; downlink: who decoded the model's
            # dead air inside an answer (the playout buffer ran dry): when, on the monotonic clock, the latest were
            "underrun_at": [round(t, 3) for t in session.playout.underrun_times],
        }
        log_ended(call.call_id, report)
        vc.finish()
        record = vc.stats.record()
        metrics.record_variant_call(plan.name, vc.decision.variant, record)
        metrics.observe_waits(plan.name, vc.decision.variant, report.longest_wait_ms, report.longest_silence_ms)
        if self.settings.report_file is not None:
            append_report(self.settings.report_file, report_line(self.index, call, plan, vc, report, times))
        self.hooks.ended(call.call_id, report, vc.report_fields())  # call.ended, signed, to the plan's webhooks
        if self.rollouts is not None and plan.rollout_spec is not None:
            await self.rollouts.record_call(plan.name, vc.decision.variant, record)
            await self.outcomes.after_call(self.rollouts, plan, call.caller, vc, report, record)

    def _connected(self, model: str, exc: ConnectError | None) -> None:
        """Each Realtime open's outcome: ``model``'s breaker, one log line per failure cause (URL, status, no key)."""
        url = self.settings.realtime_url.split("?", 1)[0]
        breaker = self.breakers.of(model)
        if isinstance(exc, ModelRefused):  # the service is up and says no to one model: no outage, no breaker
            log.error("realtime %s refused model %s (%s)", url, exc.model, exc.code)
            return
        if exc is None:
            if breaker.succeeded():
                log.warning("realtime %s reachable again for %s: circuit breaker closed", url, model)
        else:
            was_open = breaker.open
            if breaker.failed(f"{exc.error_class}:{exc.code}:{exc}"):
                status = f"HTTP {exc.code}" if exc.code.isdigit() else (exc.code or "no status")
                log.error("realtime connect to %s for %s failed (%s, %s): %s", url, model, status, exc.error_class, exc)
            if breaker.open and not was_open:
                log.error("realtime %s: %d connects for %s failed in a row: breaker open", url, breaker.failures, model)
        metrics.BREAKER_OPEN.labels(str(self.index)).set(1 if self.breakers.all_open else 0)

    def _export_store_gauges(self) -> None:
        if self.store is None:
            return
        metrics.REDIS_QUEUE_DEPTH.set(self.store.queue_depth)
        metrics.REDIS_WRITES_WAITING.labels(str(self.index)).set(self.store.writes_waiting)
        dropped = self.store.dropped_writes - self._dropped_exported
        if dropped > 0:
            metrics.REDIS_DROPPED_WRITES.inc(dropped)
            self._dropped_exported += dropped
        store, done = self.store, self._spool_exported
        for stage, count in (("spooled", store.spooled_calls), ("replayed", store.replayed_calls)):
            if count > done.get(stage, 0):
                metrics.CALL_STATE_SPOOLED.labels(stage).inc(count - done.get(stage, 0))
                done[stage] = count
        if store.spool_failures > done.get("failed", 0):
            metrics.CALL_RECORD_FAILURES.labels("spool").inc(store.spool_failures - done.get("failed", 0))
            done["failed"] = store.spool_failures

    async def run(self, stop: asyncio.Event) -> int:
        from bridge.sip.service import SipGateway

        s = self.settings
        port = s.worker_sip_port(self.index)
        lock = lock_port(s.sip_host, port) if port else None
        if port and lock is None:
            log.error("worker %d: %s:%d is held by a live worker; not starting", self.index, s.sip_host, port)
            return EXIT_PORT_LOCKED
        scheduling = use_realtime(s.realtime_priority)  # before pjsua starts: its clock thread inherits it
        config = sip_config(s, self.index, port)
        if s.redis_url:
            self.store = CallStore(s.redis_url, worker=f"{s.sip_host}:{port or self.index}", spool_dir=s.spool_dir)
            self.store.on_orphaned, self.store.on_lost = self._end_orphans, self.hooks.lost  # BYE, call.ended
            await self.store.start()
            self.rollouts = RolloutStore(s.redis_url, specs=self.specs, rollout_keys=s.rollout_keys)
            key = s.listen_key.get_secret_value().encode() if s.listen_key is not None else None
            # binary: the audio, and control messages read as bytes (one that is not UTF-8 is refused like any other)
            binary = connect(s.redis_url, decode_responses=False)
            self.listen = ListenHub(binary, key)
            await self.listen.start()
            hub = TakeOverHub(binary, key)  # closes the client, after the listen hub (closed first) is done with it
            self.actions = CallActions(binary, self.store.worker, hub, key)
            await self.actions.start()
        await self.announce_metrics()
        gateway = SipGateway(
            config,
            on_incoming=self.handle,
            on_rejected=lambda r: rejected(self.store, r),
        )
        await gateway.start()
        self.collector.freeze_startup()
        log.info(
            "worker %d listening on sip:%s:%d (udp+tcp%s), rtp %s (srtp %s), up to %d calls, realtime %s, "
            "scheduling %s",
            self.index,
            s.sip_host,
            gateway.sip_port,
            f", tls {gateway.endpoint.tls_port}" if "tls" in config.transports else "",
            f"{config.rtp_port}+{config.rtp_port_range}" if config.rtp_port else "any",
            s.srtp,
            gateway.max_calls,
            s.realtime_url,
            scheduling,
        )
        if self.ready_fd is not None:  # to the pool, on a channel of its own: stdout is the native libraries'
            send_ready(self.ready_fd, ReadyReport(gateway.sip_port, gateway.max_calls, scheduling), self.index)
            self.ready_fd = None
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                self._export_store_gauges()
        finally:
            self.collector.thaw()
            await gateway.close()
            await self.orchestrator.close()
            for part in (self.listen, self.actions, self.hooks, self.rollouts):  # listen-in first (actions' client)
                if part is not None:
                    await part.close()
            if self.store is not None:
                await self.store.close()
                self._export_store_gauges()  # what went to the spool at close is counted too
            if lock is not None:
                lock.close()
        return 0


def rejected(store: CallStore | None, call: RejectedCall) -> None:
    """An INVITE this worker refused: counted by status, and a 486 or 503 (a caller who did not get through: busy,
    no room, draining) counted per minute in Redis for the wallboard."""
    metrics.SIP_REJECTED.labels(str(call.status_code)).inc()
    if store is not None and call.status_code in (486, 503):
        store.refuse()


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser

    parser = build_parser("worker", "one SIP worker process (started by `callbridge serve`)")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument(
        "--settings-fd",
        type=int,
        help="an inherited descriptor holding the settings and the broker's token as JSON (serve's pool.worker_"
        "settings_json); default: the defaults",
    )
    parser.add_argument(
        "--settings-json", help="settings as JSON, without secrets (a command line is readable by every user)"
    )
    parser.add_argument(
        "--ready-fd", type=int, help="an inherited descriptor to write the ready report on (serve's pool reads it)"
    )
    parser.add_argument(
        "--control-fd", type=int, help="an inherited socket for the pool's commands (bridge/serve/stopping.py)"
    )
    args = parser.parse_args(argv)
    for sig in IGNORED:  # the node's control signals are serve's: `systemctl kill -s USR1` must not kill a worker
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, IGNORED)  # the pool started this process with them blocked
    if args.ready_fd is not None:
        os.set_inheritable(args.ready_fd, False)  # nothing this process starts holds the pool's channel open
    die_with_parent()  # a killed `serve` takes its workers with it (each hangs its calls up first)
    try:
        sent = json.loads(read_from_fd(args.settings_fd)) if args.settings_fd is not None else {}
        if args.settings_json:
            sent = {**sent, "settings": json.loads(args.settings_json)}
        settings = Settings.model_validate(sent.get("settings") or {})
        traces.hold_headers(sent.get("otlp_headers") or otlp_headers())  # the OTLP exporter's, never the environment
        forget_environment([], secret_variables(os.environ))  # none stays, whoever started it
        logs.configure(settings.log_format, str(args.index))
        calltraces.configure(settings.tracing, str(args.index))  # off: nothing of OpenTelemetry is loaded
        downlink.configure(settings.native_downlink)
        playout_native.configure(settings.native_playout)
        worker = Worker(settings, args.index, broker_token=sent.get("broker_token"), ready_fd=args.ready_fd)
        load_sdk(worker.plans)  # the MCP SDK if a plan has MCP servers, before any call (the parent may have it)
    except (BridgeError, ValueError, OSError) as exc:
        print(f"callbridge worker: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG

    async def amain() -> int:
        stop = asyncio.Event()
        worker.control = control = WorkerControl(args.index, stop, worker.reload_plans)
        control.on_signals(asyncio.get_running_loop())  # SIGTERM, SIGINT: drain, then exit
        channel = asyncio.create_task(control.serve(args.control_fd)) if args.control_fd is not None else None
        try:
            return await worker.run(stop)
        finally:
            if channel is not None:
                channel.cancel()

    rc = asyncio.run(amain())
    calltraces.close()  # the last spans out
    with contextlib.suppress(Exception):
        logging.shutdown()
    return rc


def run(argv: list[str]) -> int:
    """The worker process: ``python -m bridge.serve.worker ARGS``, or forked by serve's preloaded parent with the
    same arguments (``bridge/serve/zygote.py``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))


def _recording_leg(call: IncomingCall, plan: Dialplan, dialect: str, recordings_dir: Path) -> RecordingLeg:
    """The call's leg recorded from the end of the consent prompt the bridge plays (bridge/call/consent.py)."""
    from bridge.call.recorder import RecordingLeg, recorded_plan, recording_dir

    return RecordingLeg(
        call,
        recording_dir(recordings_dir, call.call_id),  # the bridge's id, checked to stay inside
        consent=True,
        after_prompt=True,
        pause_on_keys=plan.privacy.pause_recording_on_dtmf,
        meta={
            "caller": mask_number(call.caller, plan.privacy.caller_visible_digits),
            "dialplan": recorded_plan(plan.model_dump(mode="json", exclude={"source_file"})),  # no secret
            "dialect": dialect,
            "sip_call_id": call.sip_call_id,
        },
    )
