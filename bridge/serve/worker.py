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
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from pydantic import SecretStr

from bridge import metrics
from bridge.call.session import CallSession, Listener
from bridge.call.tap import ListenTap
from bridge.config import Settings
from bridge.dialplan import Dialplan, load_dialplans, rollout_specs, route
from bridge.errors import BridgeError, ConnectError, redact
from bridge.orchestrator.client import OrchestratorClient
from bridge.realtime.breaker import Breaker
from bridge.realtime.credentials import BROKER_URL_ENV, Sources
from bridge.realtime.dialects import DIALECTS, get_dialect
from bridge.rollout import catalog
from bridge.rollout.calls import VariantCall
from bridge.rollout.policy import Decision, RolloutFlag, decide
from bridge.rollout.store import RolloutStore
from bridge.runtime.lifetime import die_with_parent
from bridge.runtime.memory import CycleCollector
from bridge.runtime.metronome import for_loop as metronome_for
from bridge.runtime.sched import use_realtime
from bridge.serve.listen import ListenHub
from bridge.store.calls import CallStore

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


def fixed_decision(plan: Dialplan) -> Decision:
    """A plan pinned to one dialect: one variant, named after the dialect, on its own model (or the dialect's
    default) and voice."""
    dialect = get_dialect(plan.dialect)
    model = plan.profile.model or dialect.default_model
    return Decision(dialect.name, dialect.name, model, plan.profile.voice, f"dialplan pins {dialect.name}")


def warn_shutdowns(
    plans: list[Dialplan], today: dt.date | None = None, *, log_due: bool = True
) -> list[catalog.Shutdown]:
    """Set the shutdown gauge of every rollout variant whose model has an announced shutdown date, and (``log_due``)
    log a warning for each within :data:`~bridge.rollout.catalog.SHUTDOWN_WARNING_DAYS`. Returns those due."""
    specs = rollout_specs(plans)
    found = catalog.shutdowns((dp, v) for dp, spec in specs.items() for v in spec.variants)
    for s in found:
        metrics.MODEL_SHUTDOWN.labels(s.dialplan, s.variant, s.model).set(
            dt.datetime.combine(s.date, dt.time(), dt.UTC).timestamp()
        )
    today = today or dt.datetime.now(dt.UTC).date()
    due = catalog.due(found, today)
    for s in due if log_due else ():
        log.warning("%s", s.warning(today))
    return due


def consent_greeting(plan: Dialplan) -> str | None:
    """With recording on, the agent first speaks the consent prompt, word for word, then greets."""
    if not plan.recording.enabled:
        return plan.greeting
    prompt = f'First say exactly: "{plan.recording.consent_prompt}"'
    return f"{prompt} Then: {plan.greeting}" if plan.greeting else prompt


def append_report(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, default=str) + "\n"
    with path.open("a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line)


class Worker:
    def __init__(self, settings: Settings, index: int) -> None:
        self.settings = settings
        self.index = index
        self.plans = load_dialplans(settings.dialplans)
        self.specs = rollout_specs(self.plans)
        self.prices = catalog.load_prices(settings.price_table)
        key = None if os.environ.get(BROKER_URL_ENV) else settings.credential
        self.credentials = Sources.from_environment(settings.realtime_url, key, mint=settings.credentials == "mint")
        self.store: CallStore | None = None
        self.rollouts: RolloutStore | None = None
        self._dropped_exported = 0
        self.collector = CycleCollector(observe=metrics.GC_PAUSE.observe)
        self.breaker = Breaker(settings.breaker_failures)
        self.orchestrator = OrchestratorClient()  # one HTTP session for every orchestrated call of this worker
        metrics.BREAKER_OPEN.labels(str(index)).set(0)
        self._background: set[asyncio.Task[Any]] = set()
        self.listen: ListenHub | None = None  # listen-in: every call's leg has a tap, idle until someone listens

    async def _variant_call(self, plan: Dialplan, call: Any) -> VariantCall:
        """The call's variant: a pinned plan's only one, or the rollout's decision on the plan's flag (without
        Redis: the dialplan's own defaults)."""
        spec = plan.rollout_spec
        if spec is None:
            decision, variant, fallback_voice = fixed_decision(plan), None, plan.profile.voice
        else:
            flag: RolloutFlag = await self.rollouts.get_flag(plan.name) if self.rollouts else spec.default_flag()
            decision = decide(spec, flag, call.caller, call.call_id, voice=plan.profile.voice)
            variant, fallback_voice = spec.variant(decision.variant), flag.fallback_voice
        return VariantCall(
            plan,
            decision,
            variant=variant,
            fallback_voice=fallback_voice,
            sources=self.credentials,
            realtime_url=self.settings.realtime_url,
            prices=self.prices,
        )

    async def handle(self, call: Any) -> None:
        try:
            await self._handle(call)
        finally:
            self.collector.call_ended()  # free the call's reference cycles now (bridge/runtime/memory.py)

    def _end_orphans(self, dialogs: list[str]) -> None:
        """Calls of a dead worker (or of this worker's previous run): BYE to each caller (bridge/sip/orphans.py)."""
        from bridge.sip.orphans import end_orphans

        task = asyncio.create_task(end_orphans(dialogs), name="orphan-byes")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _remember_dialog(self, call: Any) -> None:
        """Once the caller's ACK confirms the dialog, keep it in the call's hash (for :meth:`_end_orphans`)."""
        for _ in range(100):  # up to 10 s: the ACK follows the 200 OK within a round trip
            dialog = getattr(call, "dialog", None)
            if dialog is not None and self.store is not None:
                self.store.update(call.call_id, sip_dialog=json.dumps(dialog.to_json()))
                return
            if call.disconnected.is_set():
                return
            await asyncio.sleep(0.1)

    async def _handle(self, call: Any) -> None:
        plan = route(self.plans, call.called)
        if plan is None:
            call.reject(404, "No dialplan for this number")
            return
        if plan.allowed_sources and not call.enforce_sources(plan.allowed_sources):
            return  # 403, counted (metrics via on_rejected)
        vc = await self._variant_call(plan, call)
        decision, dialect, settings = vc.decision, vc.dialect, self.settings
        call_plan = plan.model_copy(update={"profile": vc.profile(), "greeting": consent_greeting(plan)})
        log.info(
            "call %s from %s to %s: variant %s (%s, %s, voice %s; %s)",
            call.call_id, call.caller, call.called, decision.variant, dialect.name, decision.model, decision.voice,
            decision.reason,
        )  # fmt: skip

        listeners: list[Listener] = [metrics.call_listener(dialect.name, plan.name), vc.stats]
        if self.store is not None:
            listeners.append(
                self.store.listener_for(
                    call.call_id,
                    caller=call.caller,
                    called=call.called,
                    dialplan=plan.name,
                    variant=decision.variant,
                    dialect=dialect.name,
                    model=decision.model,
                    voice=decision.voice,
                )
            )
        leg: Any = call
        if plan.recording.enabled:
            from bridge.call.recorder import RecordingLeg

            leg = RecordingLeg(
                call,
                settings.recordings_dir / call.call_id,
                consent=True,  # the consent prompt is the first thing the caller hears (consent_greeting)
                meta={"dialplan": plan.model_dump(mode="json", exclude={"source_file"}), "dialect": dialect.name},
            )
            listeners.append(leg.listener)
        if self.listen is not None:
            leg = ListenTap(leg)
            self.listen.add(leg)
        session = CallSession(
            leg,
            call_plan,
            dialect,
            vc.connect,
            listeners=listeners,
            max_session_s=settings.realtime_max_session_s or dialect.capabilities.session_cap_s,
            credentials=vc.credentials,  # follows a fallback to the variant's fallback model
            metronome=metronome_for(),  # one 20 ms beat for every call of the worker, on the media clock
            model_down=self.breaker.open,
            reject_when_down=settings.reject_when_model_down,
            on_connect=self._connected,
            orchestrator=self.orchestrator.ask,
            variant=decision.variant,
        )

        def fell_back(retry: Decision) -> None:
            # The session opens its next session with this profile (session.update with the fallback's voice).
            session.plan = session.plan.model_copy(update={"profile": vc.profile()})
            if self.store is not None:
                self.store.update(call.call_id, model=retry.model, voice=retry.voice)

        vc.on_fallback.append(fell_back)
        if self.store is not None:
            self.store.watch(call.call_id, session.progress)
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
        report.media = {
            "port": call.media_port_kind,
            "clock": call.clock_priority,
            **call.media_counters,
            "uplink": session.uplink_counts,  # who sent the caller's frames (bridge/native/cport.c, "Uplink")
            # dead air inside an answer (the playout buffer ran dry): when, on the monotonic clock, the latest were
            "underrun_at": [round(t, 3) for t in session.playout.underrun_times],
        }
        log.info(
            "call %s ended (%s): %s phases, %d caller / %d agent turns",
            call.call_id,
            report.end_reason,
            len(report.phases),
            len(report.caller_transcript),
            len(report.agent_transcript),
        )
        vc.finish()
        record = vc.stats.record()
        metrics.record_variant_call(plan.name, vc.decision.variant, record)
        if settings.report_file is not None:
            append_report(settings.report_file, {"worker": self.index, **report.to_json(), **vc.report_fields()})
        if self.rollouts is not None and plan.rollout_spec is not None:
            await self.rollouts.record_call(plan.name, vc.decision.variant, record)
            for rollback in await self.rollouts.check_rollback(plan.name):
                metrics.ROLLBACKS.labels(plan.name, rollback.variant).inc()

    def _connected(self, exc: ConnectError | None) -> None:
        """Each Realtime open's outcome: the breaker, and one log line per failure cause (URL, status, no key)."""
        url = self.settings.realtime_url.split("?", 1)[0]
        if exc is None:
            if self.breaker.succeeded():
                log.warning("realtime %s reachable again: circuit breaker closed", url)
            metrics.BREAKER_OPEN.labels(str(self.index)).set(0)
            return
        was_open = self.breaker.open
        if self.breaker.failed(f"{exc.error_class}:{exc.code}:{exc}"):
            status = f"HTTP {exc.code}" if exc.code.isdigit() else (exc.code or "no status")
            log.error("realtime connect to %s failed (%s, %s): %s", url, status, exc.error_class, exc)
        if self.breaker.open and not was_open:
            log.error("realtime %s: %d connects failed in a row: circuit breaker open", url, self.breaker.failures)
        metrics.BREAKER_OPEN.labels(str(self.index)).set(1 if self.breaker.open else 0)

    def _export_store_gauges(self) -> None:
        if self.store is None:
            return
        metrics.REDIS_QUEUE_DEPTH.set(self.store.queue_depth)
        dropped = self.store.dropped_writes - self._dropped_exported
        if dropped > 0:
            metrics.REDIS_DROPPED_WRITES.inc(dropped)
            self._dropped_exported += dropped

    async def run(self, stop: asyncio.Event) -> int:
        from bridge.sip.endpoint import SipConfig
        from bridge.sip.gateway import SipGateway

        s = self.settings
        port = s.worker_sip_port(self.index)
        lock = lock_port(s.sip_host, port) if port else None
        if port and lock is None:
            log.error("worker %d: %s:%d is held by a live worker; not starting", self.index, s.sip_host, port)
            return EXIT_PORT_LOCKED
        scheduling = use_realtime(s.realtime_priority)  # before pjsua starts: its clock thread inherits it
        config = SipConfig(
            host=s.sip_host,
            port=port,
            rtp_port=s.worker_rtp_port(self.index),
            rtp_port_range=s.rtp_ports_per_worker if s.rtp_port else 0,
            pjsua_log_level=s.pjsua_log_level,
            allowed_sources=s.sip_allowed_sources,
            auth_users={user: pw.get_secret_value() for user, pw in s.sip_auth_users.items()},
            auth_realm=s.sip_auth_realm,
            auth_nonce_secret=s.sip_auth_nonce_secret.get_secret_value() if s.sip_auth_nonce_secret else "",
            trusted_fronts=s.trusted_fronts(),
            media_beat_frames=s.media_beat_frames,
        )
        if s.redis_url:
            self.store = CallStore(s.redis_url, worker=f"{s.sip_host}:{port or self.index}")
            self.store.on_orphaned = self._end_orphans
            await self.store.start()
            self.rollouts = RolloutStore(s.redis_url, specs=self.specs)
            self.listen = ListenHub(self.store.client)
            await self.listen.start()
        variants = {p.name: (p.rollout_spec.names if p.rollout_spec else (p.dialect,)) for p in self.plans}
        metrics.prime(tuple(DIALECTS), tuple(p.name for p in self.plans), variants)
        warn_shutdowns(self.plans, log_due=self.index == 0)  # one warning per node, not one per worker
        gateway = SipGateway(
            config,
            on_incoming=self.handle,
            on_rejected=lambda r: metrics.SIP_REJECTED.labels(str(r.status_code)).inc(),
        )
        await gateway.start()
        self.collector.freeze_startup()
        log.info(
            "worker %d listening on sip:%s:%d (udp+tcp), rtp %s, up to %d calls, realtime %s, scheduling %s",
            self.index,
            s.sip_host,
            gateway.sip_port,
            f"{config.rtp_port}+{config.rtp_port_range}" if config.rtp_port else "any",
            gateway.max_calls,
            s.realtime_url,
            scheduling,
        )
        ready = {"worker": self.index, "sip_port": gateway.sip_port, "max_calls": gateway.max_calls}
        print(json.dumps({**ready, "scheduling": scheduling}), flush=True)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                self._export_store_gauges()
        finally:
            self.collector.thaw()
            await gateway.close()
            await self.orchestrator.close()
            if self.listen is not None:
                await self.listen.close()
            if self.store is not None:
                await self.store.close()
            if self.rollouts is not None:
                await self.rollouts.close()
            if lock is not None:
                lock.close()
        return 0


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser

    parser = build_parser("worker", "one SIP worker process (started by `callbridge serve`)")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument(
        "--settings-json", help="Settings as JSON, without the API key (default: $CALLBRIDGE_WORKER_SETTINGS)"
    )
    args = parser.parse_args(argv)
    die_with_parent()  # a killed `serve` takes its workers with it (each hangs its calls up first)
    try:
        settings = Settings.model_validate_json(
            args.settings_json or os.environ.get("CALLBRIDGE_WORKER_SETTINGS", "{}")
        )
        if os.environ.get("OPENAI_API_KEY"):
            settings = settings.model_copy(update={"api_key": SecretStr(os.environ["OPENAI_API_KEY"])})
        worker = Worker(settings, args.index)
    except (BridgeError, ValueError) as exc:
        print(f"callbridge worker: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG

    async def amain() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await worker.run(stop)

    rc = asyncio.run(amain())
    with contextlib.suppress(Exception):
        logging.shutdown()
    return rc


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main(sys.argv[1:]))
