"""One worker process: a SIP user agent on its own port, a few calls, one asyncio loop.

The pjsua2 wheel caps a process at 4 calls and runs every media callback on one clock thread, so the bridge is a
pool of these (``bridge.serve.pool``). A worker holds an exclusive lock on its SIP port for as long as it lives, so a
second worker can never take the port of a live one (UDP sockets can share a port under SO_REUSEADDR; the lock can't).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, cast

from pydantic import SecretStr

from bridge import metrics
from bridge.call.session import CallSession, Listener
from bridge.config import Settings
from bridge.dialplan import Dialplan, load_dialplans, route
from bridge.errors import BridgeError, ConnectError, redact
from bridge.realtime.client import RealtimeClient
from bridge.realtime.credentials import BROKER_URL_ENV, Sources
from bridge.realtime.dialects import DIALECTS, get_dialect
from bridge.rollout.policy import CallHealth, Decision, DialectName, RolloutFlag, decide, fallback
from bridge.rollout.store import RolloutStore
from bridge.runtime.memory import CycleCollector
from bridge.runtime.metronome import for_loop as metronome_for
from bridge.runtime.sched import use_realtime
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
    """A plan pinned to one dialect: its own model (or the dialect's default) and voice."""
    dialect = get_dialect(plan.dialect)
    model = plan.profile.model or dialect.default_model
    name = cast(DialectName, dialect.name)  # a pinned plan may name any dialect
    return Decision(name, model, plan.profile.voice, f"dialplan pins {name}")


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
        key = None if os.environ.get(BROKER_URL_ENV) else settings.credential
        self.credentials = Sources.from_environment(settings.realtime_url, key, mint=settings.credentials == "mint")
        self.store: CallStore | None = None
        self.rollouts: RolloutStore | None = None
        self._dropped_exported = 0
        self.collector = CycleCollector(observe=metrics.GC_PAUSE.observe)
        self._background: set[asyncio.Task[Any]] = set()

    async def _decide(self, plan: Dialplan, call: Any) -> Decision:
        if plan.dialect != "rollout":
            return fixed_decision(plan)
        if self.rollouts is None:  # no Redis: the plan's built-in flag (GA 0% -> beta) decides
            return decide(RolloutFlag(), call.caller, call.call_id, voice=plan.profile.voice)
        return await self.rollouts.decide(plan.name, call.caller, call.call_id, voice=plan.profile.voice)

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
        decision = await self._decide(plan, call)
        dialect = get_dialect(decision.dialect)
        settings = self.settings
        profile = plan.profile.model_copy(update={"model": decision.model, "voice": decision.voice})
        call_plan = plan.model_copy(update={"profile": profile, "greeting": consent_greeting(plan)})
        log.info(
            "call %s from %s to %s: %s (%s)", call.call_id, call.caller, call.called, dialect.name, decision.reason
        )

        async def connect() -> RealtimeClient:
            nonlocal decision
            source = self.credentials.get(dialect, decision.model)
            client = RealtimeClient(dialect, settings.realtime_url, source, model=decision.model)
            try:
                await client.connect()
            except ConnectError:
                retry = fallback(decision, voice=plan.profile.voice, fallback_voice="alloy")
                if retry is None:
                    raise
                log.warning("call %s: %s; retrying with %s", call.call_id, decision.model, retry.model)
                decision = retry
                source = self.credentials.get(dialect, retry.model)
                client = RealtimeClient(dialect, settings.realtime_url, source, model=retry.model)
                await client.connect()
            return client

        health = CallHealth()
        listeners: list[Listener] = [metrics.call_listener(dialect.name, plan.name), health]
        if self.store is not None:
            listeners.append(
                self.store.listener_for(
                    call.call_id,
                    caller=call.caller,
                    called=call.called,
                    dialplan=plan.name,
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
        session = CallSession(
            leg,
            call_plan,
            dialect,
            connect,
            listeners=listeners,
            max_session_s=settings.realtime_max_session_s or dialect.capabilities.session_cap_s,
            credentials=self.credentials.get(dialect, decision.model),
            metronome=metronome_for(),  # one 20 ms beat for every call of the worker, on the media clock
        )
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
        if settings.report_file is not None:
            append_report(settings.report_file, {"worker": self.index, **report.to_json()})
        if self.rollouts is not None:
            await self.rollouts.record_outcome(dialect.name, plan.name, health.outcome)
            if plan.dialect == "rollout":
                reason = await self.rollouts.check_rollback(plan.name)
                if reason:
                    metrics.ROLLBACKS.labels(plan.name).inc()
                    log.warning("rollout %s rolled back to beta: %s", plan.name, reason)

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
            self.rollouts = RolloutStore(s.redis_url)
        metrics.prime(tuple(DIALECTS), tuple(p.name for p in self.plans))
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
