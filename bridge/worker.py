"""One worker process: a SIP user agent on its own port, a few calls, one asyncio loop.

The pjsua2 wheel caps a process at 4 calls and runs every media callback on one clock thread, so the bridge is a
pool of these (``bridge.workers``). A worker holds an exclusive lock on its SIP port for as long as it lives, so a
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
from typing import IO, Any

from pydantic import SecretStr

from bridge.call.session import CallSession
from bridge.config import Settings
from bridge.dialplan import Dialplan, load_dialplans, route
from bridge.errors import BridgeError, redact
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import Dialect, get_dialect

log = logging.getLogger("bridge.worker")

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


def choose_dialect(plan: Dialplan, caller: str) -> Dialect:
    """The dialect for one call. ``rollout`` plans are decided by the rollout flag (GA until it lands)."""
    return get_dialect("ga" if plan.dialect == "rollout" else plan.dialect)


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
        self.active: set[asyncio.Task[Any]] = set()

    async def handle(self, call: Any) -> None:
        plan = route(self.plans, call.called)
        if plan is None:
            call.reject(404, "No dialplan for this number")
            return
        dialect = choose_dialect(plan, call.caller)
        settings = self.settings

        async def connect() -> RealtimeClient:
            client = RealtimeClient(dialect, settings.realtime_url, settings.credential, model=plan.profile.model)
            await client.connect()
            return client

        from bridge import metrics

        session = CallSession(call, plan, dialect, connect, listeners=[metrics.call_listener(dialect.name, plan.name)])
        try:
            report = await session.run()
        except BridgeError as exc:
            log.error("call %s failed: %s", call.call_id, redact(str(exc)))
            raise
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

    async def run(self, stop: asyncio.Event) -> int:
        from bridge.sip.endpoint import SipConfig
        from bridge.sip.gateway import SipGateway

        s = self.settings
        port = s.worker_sip_port(self.index)
        lock = lock_port(s.sip_host, port) if port else None
        if port and lock is None:
            log.error("worker %d: %s:%d is held by a live worker; not starting", self.index, s.sip_host, port)
            return EXIT_PORT_LOCKED
        config = SipConfig(
            host=s.sip_host,
            port=port,
            rtp_port=s.worker_rtp_port(self.index),
            rtp_port_range=s.rtp_ports_per_worker if s.rtp_port else 0,
            pjsua_log_level=s.pjsua_log_level,
        )
        gateway = SipGateway(config, on_incoming=self.handle)
        await gateway.start()
        log.info(
            "worker %d listening on sip:%s:%d (udp+tcp), rtp %s, up to %d calls, realtime %s",
            self.index,
            s.sip_host,
            gateway.sip_port,
            f"{config.rtp_port}+{config.rtp_port_range}" if config.rtp_port else "any",
            gateway.max_calls,
            s.realtime_url,
        )
        print(
            json.dumps({"worker": self.index, "sip_port": gateway.sip_port, "max_calls": gateway.max_calls}), flush=True
        )
        try:
            await stop.wait()
        finally:
            await gateway.close()
            if lock is not None:
                lock.close()
        return 0


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser

    parser = build_parser("worker", "one SIP worker process (started by `callbridge serve`)")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--settings-json", required=True, help="Settings as JSON (without the API key)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.model_validate_json(args.settings_json)
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
