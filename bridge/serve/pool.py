"""``callbridge serve``: the worker pool.

Port layout (document for the dispatcher in front; see deploy/):

* worker *i* is a SIP user agent on ``sip_port + i`` (UDP and TCP), on ``sip_host``;
* its RTP ports are ``rtp_port + i * rtp_ports_per_worker`` onward (RTCP = RTP + 1);
* each carries at most the calls one process can hold (read from pjsua at start: 4 with this wheel); a full worker
  answers ``486 Busy Here``, so a dispatcher (Kamailio ``dispatcher`` with call-load balancing) fails over.

The pool restarts a worker that dies (with backoff), and never starts a second worker on a live worker's port: each
worker holds an exclusive lock on its port (``bridge.serve.worker.lock_port``).

With ``--front kamailio`` (``bridge.serve.front``) Kamailio takes ``sip_port``, the one address callers use, and
worker *i* moves to ``sip_port + 1 + i``; the front starts once every worker has reported its call cap (its
``maxload``), and SIGUSR1 / SIGUSR2 drain / resume this node's workers at the front.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from bridge.config import WILDCARD_HOSTS, Settings, load_settings
from bridge.errors import ConfigError
from bridge.realtime.credentials import BROKER_TOKEN_ENV, BROKER_URL_ENV
from bridge.serve.front import (
    ACTIVE,
    DRAINED,
    Destination,
    FrontError,
    KamailioFront,
    node_destinations,
    require_kamailio,
)

log = logging.getLogger("bridge.serve.pool")

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
WORKER_SETTINGS_ENV = "CALLBRIDGE_WORKER_SETTINGS"


def worker_settings_json(settings: Settings) -> str:
    """Settings for a worker, in its environment (readable by this user only, unlike argv): trunk passwords
    included, the API key never (it travels as OPENAI_API_KEY, and not at all in broker mode)."""
    data = json.loads(settings.model_dump_json(exclude={"api_key", "sip_auth_users", "sip_auth_nonce_secret"}))
    data["sip_auth_users"] = {user: pw.get_secret_value() for user, pw in settings.sip_auth_users.items()}
    if settings.sip_auth_nonce_secret is not None:
        data["sip_auth_nonce_secret"] = settings.sip_auth_nonce_secret.get_secret_value()
    return json.dumps(data)


@dataclass
class WorkerSlot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    sip_port: int = 0
    max_calls: int = 0  # the calls the worker's process can hold, as it reported at start
    scheduling: str = ""  # as the worker reported it: "ordinary", "SCHED_RR 10", or why it stayed ordinary
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Pool:
    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        if settings.sip_auth_users and settings.sip_auth_nonce_secret is None:
            # one nonce key for all the node's workers: a caller's answer to a challenge may reach another worker
            settings = settings.model_copy(update={"sip_auth_nonce_secret": SecretStr(secrets.token_hex(32))})
        self.settings = settings
        self.extra_env = dict(extra_env or {})  # e.g. the broker's URL and token
        self.slots = [WorkerSlot(i) for i in range(settings.workers)]
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.front: KamailioFront | None = None  # set by main() with --front kamailio
        self._background: set[asyncio.Task[None]] = set()

    async def _spawn(self, slot: WorkerSlot) -> None:
        slot.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.serve.worker",
            "--index",
            str(slot.index),
            stdout=asyncio.subprocess.PIPE,
            env={**self._worker_env(), WORKER_SETTINGS_ENV: worker_settings_json(self.settings)},
        )
        slot.started_at = time.monotonic()
        assert slot.proc.stdout is not None
        line = await slot.proc.stdout.readline()  # {"worker", "sip_port", "max_calls", "scheduling"} when up
        if line:
            info = json.loads(line)
            slot.sip_port = int(info["sip_port"])
            slot.max_calls = int(info.get("max_calls", 0))
            slot.scheduling = str(info.get("scheduling", ""))
            slot.ready.set()
            denied = self.settings.realtime_priority and not slot.scheduling.startswith("SCHED_")
            (log.warning if denied else log.info)(
                "worker %d (pid %d) ready on port %d, scheduling %s",
                slot.index,
                slot.proc.pid,
                slot.sip_port,
                slot.scheduling,
            )

    def _worker_env(self) -> dict[str, str]:
        # One BLAS thread: a second one would compete with pjmedia's clock thread (bench audio).
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **self.extra_env}
        if BROKER_URL_ENV in env:
            env.pop("OPENAI_API_KEY", None)  # broker mode: workers never hold the long-lived key
        return env

    async def _supervise(self, slot: WorkerSlot) -> None:
        while not self._stopping:
            await self._spawn(slot)
            assert slot.proc is not None
            rc = await slot.proc.wait()
            from bridge import metrics

            metrics.mark_process_dead(slot.proc.pid)
            if self._stopping:
                return
            uptime = time.monotonic() - slot.started_at
            if uptime > 60:
                slot.restarts = 0
            delay = RESTART_BACKOFF_S[min(slot.restarts, len(RESTART_BACKOFF_S) - 1)]
            slot.restarts += 1
            slot.ready.clear()
            log.warning("worker %d exited with %s after %.1f s; restarting in %.1f s", slot.index, rc, uptime, delay)
            await asyncio.sleep(delay)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._supervise(s), name=f"worker-{s.index}") for s in self.slots]

    async def wait_ready(self) -> None:
        await asyncio.gather(*(s.ready.wait() for s in self.slots))

    def health(self) -> dict[str, object]:
        front = {"front": self.front.health()} if self.front is not None else {}
        from bridge import metrics

        open_ = metrics.breakers_open()
        # "down": a worker's breaker is open; its new calls go straight to the hold message and the failover
        realtime = {"realtime": {"state": "down" if open_ else "up", "breaker_open_workers": [int(w) for w in open_]}}
        return (
            front
            | realtime
            | {
                "workers": [
                    {
                        "index": s.index,
                        "pid": s.proc.pid if s.proc else None,
                        "alive": s.proc is not None and s.proc.returncode is None,
                        "sip_port": s.sip_port,
                        "restarts": s.restarts,
                        "scheduling": s.scheduling,
                    }
                    for s in self.slots
                ]
            }
        )

    def dead_workers(self) -> frozenset[str]:
        """The call-store ids (``<sip_host>:<sip port or index>``, as each worker names itself) of the workers whose
        process is not running: the console shows their calls as lost before their heartbeat expires."""
        s = self.settings
        return frozenset(
            f"{s.sip_host}:{s.worker_sip_port(slot.index) or slot.index}"
            for slot in self.slots
            if slot.proc is None or slot.proc.returncode is not None
        )

    async def stop(self) -> None:
        self._stopping = True
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.proc is not None:
                try:
                    await asyncio.wait_for(slot.proc.wait(), 10)
                except TimeoutError:
                    slot.proc.kill()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser

    parser = build_parser(
        "serve", "run N SIP worker processes (worker i on --sip-port + i; with --front, Kamailio on --sip-port)"
    )
    parser.add_argument("--config", type=Path)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--sip-host")
    parser.add_argument("--sip-port", type=int)
    parser.add_argument("--realtime-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--dialplans", type=Path)
    parser.add_argument(
        "--realtime-priority",
        type=int,
        help="run the workers SCHED_RR at this priority (1-99; needs CAP_SYS_NICE); default 0: ordinary scheduling",
    )
    parser.add_argument("--report-file", type=Path, help="append one JSON line per finished call")
    parser.add_argument(
        "--front",
        choices=("none", "kamailio"),
        help="kamailio: one SIP address (--sip-port) for every worker; the workers take the ports after it",
    )
    parser.add_argument(
        "--front-peer",
        action="append",
        dest="front_peers",
        metavar="HOST:PORT[/MAX_CALLS]",
        help="a worker of another serve node for the front to dispatch to (repeatable)",
    )
    parser.add_argument("--front-dir", type=Path, help="the front's run directory (config, control socket, log)")
    parser.add_argument(
        "--trust-front",
        action="append",
        dest="sip_trusted_fronts",
        metavar="CIDR",
        help="a front on another machine whose X-Callbridge-Source header names the caller (repeatable)",
    )
    parser.add_argument(
        "--realtime-check",
        choices=("warn", "require", "off"),
        help="at start, check the endpoint and credential: warn (default), require (a failure stops), off",
    )
    parser.add_argument(
        "--reject-when-model-down", action="store_true", default=None, help="answer new calls 503 while it is down"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            args.config,
            workers=args.workers,
            sip_host=args.sip_host,
            sip_port=args.sip_port,
            realtime_url=args.realtime_url,
            redis_url=args.redis_url,
            http_port=args.http_port,
            dialplans=args.dialplans,
            realtime_priority=args.realtime_priority,
            report_file=args.report_file,
            front=args.front,
            front_peers=tuple(args.front_peers) if args.front_peers else None,
            front_dir=args.front_dir,
            sip_trusted_fronts=tuple(args.sip_trusted_fronts) if args.sip_trusted_fronts else None,
            realtime_check=args.realtime_check,
            reject_when_model_down=args.reject_when_model_down,
        )
        from bridge.dialplan import load_dialplans

        load_dialplans(settings.dialplans)  # nothing starts half-configured
        kamailio = None
        if settings.front == "kamailio":
            if not settings.sip_port:
                raise ConfigError("settings", "sip_port", "the front needs a fixed port (--sip-port)")
            if settings.sip_host in WILDCARD_HOSTS:
                raise ConfigError(
                    "settings", "sip_host", "the front needs the address callers use (it goes in Record-Route)"
                )
            kamailio = require_kamailio()
    except (ConfigError, FrontError) as exc:
        print(f"callbridge serve: {exc}", file=sys.stderr)
        return 2
    log.info("settings: %s", json.dumps(settings.public(), default=str))

    # Workers are processes: prometheus-client must merge their samples (multiprocess mode). Set before the
    # metrics module is imported anywhere, here and (inherited) in every worker.
    metrics_dir = tempfile.TemporaryDirectory(prefix="callbridge-metrics-")
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir.name)

    async def amain() -> int:
        from bridge.serve.preflight import preflight

        if not await preflight(settings):
            return 2
        broker_runner, extra_env = None, {}
        if settings.credentials == "broker":
            from bridge.serve.broker import new_token, start_broker

            token = new_token()
            broker_runner, broker_url = await start_broker(
                settings.credential, settings.realtime_url, token=token, port=settings.broker_port or 0
            )
            extra_env = {BROKER_URL_ENV: broker_url, BROKER_TOKEN_ENV: token}
            os.environ.pop("OPENAI_API_KEY", None)  # nothing spawned from now on inherits it
            log.info("credential broker on %s; workers get short-lived credentials only", broker_url)
        pool = Pool(settings, extra_env)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await pool.start()
        runner = None
        try:
            if kamailio is not None:
                pool.front = await start_front(pool, kamailio)
                loop.add_signal_handler(signal.SIGUSR1, _drain_node, pool, DRAINED)
                loop.add_signal_handler(signal.SIGUSR2, _drain_node, pool, ACTIVE)
            runner = await start_http(pool, settings) if settings.http_port is not None else None
            await stop.wait()
        except FrontError as exc:
            log.error("%s", exc)
            return 1
        finally:
            if runner is not None:
                await runner.cleanup()
            await pool.stop()  # first: the workers' BYEs to their callers go through the front
            if pool.front is not None:
                await pool.front.stop()
            if broker_runner is not None:
                await broker_runner.cleanup()
        return 0

    try:
        return asyncio.run(amain())
    finally:
        metrics_dir.cleanup()


async def start_front(pool: Pool, kamailio: str, ready_within_s: float = 60.0) -> KamailioFront:
    """Once every worker has reported its port and call cap, start Kamailio in front of them (and the peers)."""
    try:
        await asyncio.wait_for(pool.wait_ready(), ready_within_s)
    except TimeoutError:
        raise FrontError(f"the workers were not all up within {ready_within_s:.0f} s; no front started") from None
    caps = [(slot.sip_port, slot.max_calls) for slot in pool.slots]
    front = KamailioFront(pool.settings, node_destinations(pool.settings, caps), binary=kamailio)
    await front.start()
    address = f"{pool.settings.sip_host}:{pool.settings.sip_port}"
    print(json.dumps({"front": address, "run_dir": str(front.run_dir)}), flush=True)
    return front


def _drain_node(pool: Pool, state: str) -> None:
    """SIGUSR1 / SIGUSR2: drain / resume this node's workers at the front (their calls go on)."""
    front = pool.front
    if front is None:
        return

    async def apply() -> None:
        try:
            for slot in pool.slots:
                worker = Destination(pool.settings.front_host, slot.sip_port, slot.max_calls)
                for dest in await front.set_state(worker.address, state):
                    log.warning("front: worker %s is %s", dest.address, "drained" if dest.state == "D" else "active")
        except FrontError as exc:
            log.error("front: %s", exc)

    task = asyncio.get_running_loop().create_task(apply(), name="drain")
    pool._background.add(task)
    task.add_done_callback(pool._background.discard)


async def start_http(pool: Pool, settings: Settings) -> web.AppRunner:
    """The supervisor API, the console and /metrics on ``settings.http_port`` (127.0.0.1 unless sip_host is public)."""
    from bridge.dialplan import load_dialplans, rollout_specs
    from bridge.rollout.store import RolloutStore
    from bridge.store.connection import connect
    from bridge.supervisor.api import create_app

    plans = load_dialplans(settings.dialplans)
    redis = connect(settings.redis_url) if settings.redis_url else None
    rollouts = RolloutStore(client=redis, specs=rollout_specs(plans)) if redis is not None else None
    token = os.environ.get("CALLBRIDGE_SUPERVISOR_TOKEN")
    readonly_token = os.environ.get("CALLBRIDGE_SUPERVISOR_READONLY_TOKEN")
    session_s = os.environ.get("CALLBRIDGE_SUPERVISOR_SESSION_S", "")
    if session_s and not session_s.replace(".", "", 1).isdigit():
        log.error("CALLBRIDGE_SUPERVISOR_SESSION_S=%r is not a number of seconds; using the default", session_s)
        session_s = ""
    app = create_app(
        token=token,
        redis=redis,
        # listen-in's audio is binary: its own client, without decoding (bridge/supervisor/listen.py)
        listen_audio=connect(settings.redis_url, decode_responses=False) if settings.redis_url else None,
        rollouts=rollouts,
        health=pool.health,
        readonly_token=readonly_token,
        dialplans=plans,
        lost_workers=pool.dead_workers,
        **({"session_ttl_s": float(session_s)} if session_s else {}),
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.sip_host, settings.http_port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.http_port
    log.info(
        "supervisor API, console and /metrics on http://%s:%s (operator token %s, read-only token %s)",
        settings.sip_host,
        port,
        "set" if token else "NOT set",
        "set" if readonly_token else "NOT set",
    )
    print(json.dumps({"http_port": port}), flush=True)
    return runner
