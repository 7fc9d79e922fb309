"""``callbridge serve``: the worker pool.

Port layout (document for the dispatcher in front; see deploy/):

* worker *i* is a SIP user agent on ``sip_port + i`` (UDP and TCP), on ``sip_host``;
* its RTP ports are ``rtp_port + i * rtp_ports_per_worker`` onward (RTCP = RTP + 1);
* each carries at most the calls one process can hold (read from pjsua at start: 4 with this wheel); a full worker
  answers ``486 Busy Here``, so a dispatcher (Kamailio ``dispatcher`` with call-load balancing) fails over.

The pool restarts a worker that dies (with backoff), and never starts a second worker on a live worker's port: each
worker holds an exclusive lock on its port (``bridge.serve.worker.lock_port``). Workers are forked from a preloaded
parent that shares its imported pages with them (``bridge.serve.zygote``; ``worker_start: exec`` starts each as a
fresh interpreter instead); the parent is released once every worker is ready, and a worker started later starts a
new one first.

With ``--front kamailio`` (``bridge.serve.front``) Kamailio takes ``sip_port``, the one address callers use, and
worker *i* moves to ``sip_port + 1 + i``; the front starts once every worker has reported its call cap (its
``maxload``).

SIGTERM stops the node without dropping a call, SIGUSR1 / SIGUSR2 drain / resume it, SIGHUP reloads the users file,
the dialplans and the HTTP certificate (``bridge.serve.control``, which also serves ``callbridge reload`` and
``callbridge restart --rolling``); the workers ignore the node's signals and take their orders from the pool, on a
socket pair each (``bridge.serve.stopping``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import SecretStr

from bridge.config import (
    SUPERVISOR_READONLY_TOKEN_ENV,
    SUPERVISOR_TOKEN_ENV,
    WILDCARD_HOSTS,
    Settings,
    load_settings_with_sources,
    otlp_headers,
    secret_from_env,
    secret_variables,
)
from bridge.errors import ConfigError
from bridge.events import EndedBy
from bridge.realtime.credentials import BROKER_TOKEN_ENV, BROKER_URL_ENV
from bridge.realtime.ws_fastpath import fast_path_problems
from bridge.runtime import logs, traces
from bridge.runtime.sdnotify import READY, STOPPING, WATCHDOG, Notifier
from bridge.runtime.secrets import forget_environment, send_through_pipe, without_secrets
from bridge.serve.control import tls_context
from bridge.serve.front import RESTART_BACKOFF_S, KamailioFront, node_destinations, require_kamailio
from bridge.serve.front_files import Destination, FrontError
from bridge.serve.front_rpc import ACTIVE, DRAINED
from bridge.serve.ready import OUTPUT_STREAM_LIMIT, forward_output, parse_ready, read_report
from bridge.serve.stopping import IGNORED, read_calls
from bridge.serve.trunks import unlisted_trunk_warning
from bridge.serve.zygote import Unavailable, Zygote, reap_orphans
from bridge.store.spool import kept_key

if TYPE_CHECKING:
    from bridge.supervisor.gate import Gate

log = logging.getLogger("bridge.serve.pool")
NOT_READY_EXIT_S = 5.0  # a worker whose ready channel closed without a report: its exit awaited this long
WORKER_COMMAND = (sys.executable, "-m", "bridge.serve.worker")
ORPHANS_EVERY_S = 30.0  # how often processes re-parented to the pool (a child subreaper) are looked for


def worker_settings_json(settings: Settings, broker_token: str | None = None) -> str:
    """A worker's settings, secrets included (the API key unless in broker mode, trunk passwords, the Redis URL), the
    broker's token and the OTLP exporter's headers: sent through an inherited pipe
    (:func:`bridge.runtime.secrets.send_through_pipe`), never in the worker's command line or environment."""
    secret = {"api_key", "sip_auth_users", "sip_auth_nonce_secret", "listen_key", "rollout_key", "webhook_secret"}
    # no webhook's: serve alone sends webhooks (bridge/webhooks/delivery.py)
    data = json.loads(settings.model_dump_json(exclude=secret))
    data["sip_auth_users"] = {user: pw.get_secret_value() for user, pw in settings.sip_auth_users.items()}
    for name in ("sip_auth_nonce_secret", "listen_key", "rollout_key"):
        value = getattr(settings, name)
        if value is not None:
            data[name] = value.get_secret_value()
    if settings.api_key is not None and broker_token is None:  # broker mode: workers never hold the key
        data["api_key"] = settings.api_key.get_secret_value()
    sent: dict[str, Any] = {"settings": data, "broker_token": broker_token}
    # the OTLP exporter's (an API key): serve holds them; a pool in another process (the bench) finds them as told
    if settings.tracing == "otlp" and (headers := traces.held_headers() or otlp_headers()):
        sent["otlp_headers"] = headers
    return json.dumps(sent)


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
    control: asyncio.StreamWriter | None = None  # the worker's command channel (bridge/serve/stopping.py)
    calls: int = 0  # the worker's live calls, as it last said on that channel
    replacing: bool = False  # a rolling restart stops it: started again at once, without a backoff


NODE_KEY_FILE = "listen_key"  # in spool_dir: the node's listen_key when none is set


def with_node_keys(settings: Settings) -> Settings:
    """``settings`` with the node's own keys where none is set: the SIP nonce key (random; one for all the node's
    workers: a caller's answer to a challenge may reach another worker) and ``listen_key`` (signs listen-in requests,
    seals the calls' dialogs and the queued webhooks: this process and its workers alone hold it), kept in
    ``spool_dir`` so that a restarted node opens what it sealed before (random for this run if it cannot be kept)."""
    if settings.sip_auth_users and settings.sip_auth_nonce_secret is None:
        settings = settings.model_copy(update={"sip_auth_nonce_secret": SecretStr(secrets.token_hex(32))})
    if settings.listen_key is None:
        try:
            key = kept_key(settings.spool_dir, NODE_KEY_FILE)
        except OSError as exc:
            lost = "webhooks queued and not yet sent are refused after a restart"
            log.warning("listen_key: none set and none kept (%s): a random one for this run; %s", exc, lost)
            key = secrets.token_hex(32)
        settings = settings.model_copy(update={"listen_key": SecretStr(key)})
    return settings


class Pool:
    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        settings = with_node_keys(settings)
        self.settings = settings
        extra = dict(extra_env or {})
        self.broker_token = extra.pop(BROKER_TOKEN_ENV, None)  # to the workers through their settings pipe
        self.extra_env = extra  # e.g. the broker's URL
        self.slots = [WorkerSlot(i) for i in range(settings.workers)]
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.front: KamailioFront | None = None  # set by main() with --front kamailio
        self._background: set[asyncio.Task[None]] = set()
        self._redis: Any = None  # a client for closing dead workers' calls (bridge/serve/lost.py), made on first use
        self.worker_command = [*WORKER_COMMAND]  # then --index, --settings-fd, --ready-fd, --control-fd
        self.zygote = Zygote()  # the preloaded parent the workers are forked from (worker_start: preload)
        self._preload = False  # set at start: worker_start is preload and worker_command the default
        # serve's own process: collect processes re-parented to it (a child subreaper) that nobody waits for. Not
        # where the pool runs inside another program (bench, replay, tests), whose own children it must not collect
        self.collect_orphans = False
        self.http_app: web.Application | None = None  # the supervisor API, once started (a reload reads its users)
        self.tls: ssl.SSLContext | None = None  # the HTTP API's certificate (a reload loads it again)

    async def at_front(self, slots: Sequence[WorkerSlot], active: bool) -> None:
        """The front (if the node has one) takes ``slots``' workers back (``active``) or out."""
        front = self.front
        if front is None:
            return
        try:
            for slot in slots:
                worker = Destination(self.settings.front_host, slot.sip_port, slot.max_calls)
                for dest in await front.set_state(worker.address, ACTIVE if active else DRAINED):
                    log.warning("front: worker %s is %s", dest.address, dest.state.word)
        except FrontError as exc:
            log.error("front: %s", exc)

    def tell(self, slot: WorkerSlot, word: str) -> None:
        """One command to the slot's worker (bridge/serve/stopping.py); nothing if it has no live channel."""
        if slot.control is not None and not slot.control.is_closing():
            slot.control.write(f"{word}\n".encode())

    async def _spawn(self, slot: WorkerSlot) -> str | None:
        """Start the slot's worker and wait for its ready report (bridge/serve/ready.py): None once it is ready,
        else why it is not (then it has exited, or must be stopped)."""
        slot.ready.clear()  # a respawned worker is ready once it says so, not when it is forked
        settings_fd = send_through_pipe(worker_settings_json(self.settings, self.broker_token).encode())
        ready_fd, report_fd = os.pipe()
        ours, theirs = socket.socketpair()
        args = ["--index", str(slot.index), "--settings-fd", str(settings_fd), "--ready-fd", str(report_fd)]
        args += ["--control-fd", str(theirs.fileno())]
        try:
            slot.proc = await self._start_process(args, (settings_fd, report_fd, theirs.fileno()))
        except BaseException:
            os.close(ready_fd)
            ours.close()
            raise
        finally:
            os.close(settings_fd)
            os.close(report_fd)
            theirs.close()
        slot.calls = 0
        reader, slot.control = await asyncio.open_unix_connection(sock=ours)
        self._keep(asyncio.create_task(read_calls(reader, lambda n: setattr(slot, "calls", n)), name="calls"))
        slot.started_at = time.monotonic()
        assert slot.proc.stdout is not None
        self._keep(asyncio.create_task(forward_output(slot.proc.stdout, slot.index), name=f"output-{slot.index}"))
        data = await read_report(ready_fd)
        if not data.strip():  # the channel closed without a report: the worker exited, or closed it and lives on
            try:
                rc = await asyncio.wait_for(slot.proc.wait(), NOT_READY_EXIT_S)
            except TimeoutError:
                return "it closed its ready channel without a report"
            return f"it exited with {rc} before it was ready"
        try:
            report = parse_ready(data)
        except ValueError as exc:
            return str(exc)
        slot.sip_port, slot.max_calls, slot.scheduling = report.sip_port, report.max_calls, report.scheduling
        slot.ready.set()
        if self._preload:  # every worker ready: the preloaded parent's pages are theirs, its own copy is let go
            self._keep(asyncio.create_task(self.zygote.release(self._all_ready), name="release-parent"))
        denied = self.settings.realtime_priority and not slot.scheduling.startswith("SCHED_")
        (log.warning if denied else log.info)(
            "worker %d (pid %d) ready on port %d, scheduling %s",
            slot.index,
            slot.proc.pid,
            slot.sip_port,
            slot.scheduling,
        )
        return None

    def _all_ready(self) -> bool:
        return all(s.ready.is_set() and s.proc is not None and s.proc.returncode is None for s in self.slots)

    async def _start_process(self, args: list[str], pass_fds: tuple[int, ...]) -> asyncio.subprocess.Process:
        """A worker's process with ``args`` and the descriptors ``pass_fds``: forked from the preloaded parent
        (``worker_start: preload``, bridge/serve/zygote.py), else a fresh interpreter running
        ``worker_command``. A parent that cannot be had is logged once; the workers then start by exec."""
        env = self._worker_env()
        if self._preload:
            self.zygote.want(self._preloaded_sdks())
            try:
                return await self.zygote.fork(args, env, pass_fds)
            except Unavailable as exc:
                self._preload = False
                log.warning("worker_start preload: no preloaded parent (%s); workers start by exec", exc)
                await self.zygote.close()
        # the node's control signals stay blocked in the child until its handlers are set (a USR1 to every process
        # of the unit must not kill a worker still starting); unblocked here once it is forked
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, IGNORED)
        try:
            return await asyncio.create_subprocess_exec(
                *self.worker_command,
                *args,
                stdout=asyncio.subprocess.PIPE,  # forwarded to the log line by line, never parsed
                limit=OUTPUT_STREAM_LIMIT,
                env=env,
                pass_fds=pass_fds,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _preloaded_sdks(self) -> tuple[str, ...]:
        """The SDKs the served plans use that a worker would otherwise import itself (the MCP SDK, the traces'
        with ``tracing: otlp``): the preloaded parent loads them, so its workers share them. Plans that cannot be
        read now: the parent's as they are."""
        from bridge.dialplan import load_dialplans
        from bridge.serve.zygote import TRACING_MODULES
        from bridge.tools.mcp import sdk_needed

        traced = TRACING_MODULES if self.settings.tracing == "otlp" else ()
        try:
            return sdk_needed(load_dialplans(self.settings.dialplans)) + traced
        except (ConfigError, OSError):
            return self.zygote.also

    async def _start_worker(self, slot: WorkerSlot) -> bool:
        """Start the slot's worker until it is ready or has failed to be; False if it could not even be started.
        A worker that cannot report ready is logged with the reason at once and stopped: it is then restarted
        like one that crashed."""
        try:
            problem = await self._spawn(slot)
        except OSError as exc:  # no process at all (out of processes or descriptors): tried again after a backoff
            log.error("worker %d could not be started: %s", slot.index, exc)
            return False
        except Exception:  # a bug here must not end the slot's supervision silently
            log.exception("worker %d: its start failed", slot.index)
            problem = "its start failed (the error above)"
        if problem is not None and not self._stopping and slot.proc is not None:
            log.error("worker %d (pid %d) is not ready: %s; restarting it", slot.index, slot.proc.pid, problem)
            if slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()
        return slot.proc is not None

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _worker_env(self) -> dict[str, str]:
        """The workers' environment: no secret in it (they come through the settings pipe). One BLAS thread: a second
        one would compete with pjmedia's clock thread (bench audio)."""
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **self.extra_env}
        return without_secrets(env, secret_variables(env))

    async def _close_lost(self, slot: WorkerSlot, returncode: int | None) -> None:
        """The records of the calls a dead worker (or this node's previous run) left open (bridge/serve/lost.py)."""
        if not self.settings.redis_url:
            return
        from bridge.dialplan import load_dialplans
        from bridge.serve.lost import close_lost_calls
        from bridge.store.connection import connect

        if self._redis is None:
            self._redis = connect(self.settings.redis_url)
        try:
            plans = load_dialplans(self.settings.dialplans)
        except ConfigError as exc:
            log.error("the records of worker %d's calls: %s", slot.index, exc)
            plans = []
        await close_lost_calls(self._redis, self.settings, plans, slot.index, returncode)

    async def _supervise(self, slot: WorkerSlot) -> None:
        with contextlib.suppress(TimeoutError):  # Redis away: the worker's own start marks them ended later
            await asyncio.wait_for(self._close_lost(slot, None), 5.0)  # a previous run of this node, killed whole
        while not self._stopping:
            if not await self._start_worker(slot):
                slot.restarts += 1
                await asyncio.sleep(RESTART_BACKOFF_S[min(slot.restarts, len(RESTART_BACKOFF_S)) - 1])
                continue
            assert slot.proc is not None
            rc = await slot.proc.wait()
            from bridge import metrics

            metrics.mark_process_dead(slot.proc.pid)
            if slot.control is not None:
                slot.control.close()
                slot.control = None
            if self._stopping:
                return
            if slot.replacing:  # a rolling restart: its calls are over; the new code and settings start at once
                slot.replacing = False
                self.zygote.renew_before(slot.started_at)  # the installed code, loaded again by a new parent
                slot.ready.clear()
                log.info("worker %d exited with %s to be replaced: starting it again", slot.index, rc)
                continue
            await self._close_lost(slot, rc)  # before the restart: its calls end as "worker died", recorded
            uptime = time.monotonic() - slot.started_at
            if uptime > 60:
                slot.restarts = 0
            delay = RESTART_BACKOFF_S[min(slot.restarts, len(RESTART_BACKOFF_S) - 1)]
            slot.restarts += 1
            metrics.WORKER_RESTARTS.labels(str(slot.index)).inc()
            slot.ready.clear()
            log.warning("worker %d exited with %s after %.1f s; restarting in %.1f s", slot.index, rc, uptime, delay)
            await asyncio.sleep(delay)

    async def start(self) -> None:
        announce_node(self.settings, len(self.slots))
        self._preload = self.settings.worker_start == "preload" and tuple(self.worker_command) == WORKER_COMMAND
        if not self._preload:
            log.info("workers start by exec (worker_start: %s)", self.settings.worker_start)
        self._tasks = [asyncio.create_task(self._supervise(s), name=f"worker-{s.index}") for s in self.slots]
        if self._preload and self.collect_orphans:
            self._tasks.append(asyncio.create_task(self._reap_orphans(), name="orphans"))

    async def _reap_orphans(self) -> None:
        """Processes re-parented to the pool that nobody waits for (bridge/serve/zygote.py: reap_orphans)."""
        seen: set[int] = set()
        while True:
            await asyncio.sleep(ORPHANS_EVERY_S)
            keep = {s.proc.pid for s in self.slots if s.proc is not None}
            seen = reap_orphans(seen, keep)

    async def wait_ready(self) -> None:
        await asyncio.gather(*(s.ready.wait() for s in self.slots))

    def health(self) -> dict[str, object]:
        front = {"front": self.front.health()} if self.front is not None else {}
        from bridge import metrics

        open_ = metrics.breakers_open()
        # "down": a worker's breaker is open; its new calls go straight to the hold message and the failover
        realtime = {"realtime": {"state": "down" if open_ else "up", "breaker_open_workers": [int(w) for w in open_]}}
        # the installed packages cannot serve the Realtime socket's fast paths (to this model: wss:// needs TLS)
        slow = fast_path_problems(secure=self.settings.realtime_url.startswith("wss://"))
        return (
            front
            | realtime
            | {"fast_path": {"on": not slow, "problems": slow}}
            # whether outcome records and flag changes are signed (rollout_key), and with how many keys: never a key
            | {"rollout_records": rollout_records_state(self.settings), "rollout_keys": len(self.settings.rollout_keys)}
            | {
                "workers": [
                    {
                        "index": s.index,
                        "pid": s.proc.pid if s.proc else None,
                        "alive": s.proc is not None and s.proc.returncode is None,
                        # alive and reported its port since it (re)started
                        "ready": s.proc is not None and s.proc.returncode is None and s.ready.is_set(),
                        "sip_port": s.sip_port,
                        "max_calls": s.max_calls,  # the calls it can hold, as it reported at start
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
        """Stop every worker without dropping a call (bridge/serve/control.py: drain, then a goodbye)."""
        from bridge.serve.control import drain_out

        self._stopping = True
        await drain_out(self, self.slots, EndedBy.SHUTDOWN, lambda line: log.info("%s", line))
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.zygote.close()
        if self._redis is not None:
            await self._redis.aclose()


def announce_node(settings: Settings, workers: int) -> None:
    """serve's own series from its start (each worker's: :meth:`bridge.serve.worker.Worker.announce_metrics`; the
    front's: :meth:`bridge.serve.front.KamailioFront.announce_metrics`): the build, each worker's restarts, its Redis's
    up gauge, each served rollout's missing state, and each webhook endpoint's counters, at 0 (or 1: the build)."""
    from bridge import metrics  # not at import: serve sets up multiprocess metrics first
    from bridge.dialplan import load_dialplans, rollout_specs
    from bridge.webhooks.endpoints import endpoints

    metrics.announce_build(workers)
    if settings.redis_url:  # its Redis's up gauge (0 until the node's first check); none at all without Redis
        from bridge.serve.nodewatch import redis_identity

        metrics.REDIS_UP.labels(redis_identity(settings.redis_url))
    try:
        plans = load_dialplans(settings.dialplans)
    except ConfigError as exc:  # serve checked them before it started; a pool inside another program may not have
        log.warning("dialplans not read: their series appear with their first events: %s", exc)
        return
    metrics.prime_rollout_state(rollout_specs(plans))
    if settings.redis_url:  # webhooks need Redis (bridge/serve/webhooks.py: start_node)
        metrics.prime_webhooks(endpoints(settings.webhook_url, plans, settings.webhook_caller))


def announce_fast_path(settings: Settings) -> None:
    """One line at start when the installed packages cannot serve the Realtime socket's fast paths (to the model
    ``settings`` name: ``wss://`` needs the native TLS engine too)."""
    if slow := fast_path_problems(secure=settings.realtime_url.startswith("wss://")):
        log.warning("fast path off: %s", "; ".join(slow))


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings, kamailio, open_to = _configure(args)
    except (ConfigError, FrontError) as exc:
        print(f"callbridge serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, "serve")
    console = ConsoleTokens.from_environment()
    traces.hold_headers(otlp_headers())  # for serve's exporter, and sent to each worker through its settings pipe
    # workers, Kamailio and /proc/<pid> see none of them
    forget_environment(_secret_values(settings, console), secret_variables(os.environ))
    log.info("settings: %s", json.dumps(settings.public(), default=str))
    log.info("SIP access: %s", open_to)
    from bridge.sip.exposure import open_warnings

    for warning in open_warnings(settings):  # every start says what is left open
        log.warning("open: %s", warning)
    if trunks := unlisted_trunk_warning(settings):  # what holds a trunk's SBC until it is listed
        log.warning("%s", trunks)
    announce_fast_path(settings)

    # Workers are processes: prometheus-client must merge their samples (multiprocess mode). Set before the
    # metrics module is imported anywhere, here and (inherited) in every worker.
    metrics_dir = tempfile.TemporaryDirectory(prefix="callbridge-metrics-")
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir.name)
    try:
        return asyncio.run(_serve(settings, kamailio, console))
    finally:
        metrics_dir.cleanup()


@dataclass(frozen=True)
class ConsoleTokens:
    """The supervisor API's tokens, read once at start (then dropped from the environment)."""

    operator: str | None = None
    readonly: str | None = None

    @classmethod
    def from_environment(cls) -> ConsoleTokens:
        """From ``CALLBRIDGE_SUPERVISOR_TOKEN`` (or the file ``..._FILE`` names) and its read-only twin."""
        return cls(secret_from_env(SUPERVISOR_TOKEN_ENV), secret_from_env(SUPERVISOR_READONLY_TOKEN_ENV))


def _secret_values(settings: Settings, console: ConsoleTokens) -> list[str]:
    """Every configured secret's value: blanked wherever the process's start-up arguments and environment hold it."""
    values = [console.operator or "", console.readonly or "", settings.credential_or_none or ""]
    values += [pw.get_secret_value() for pw in settings.sip_auth_users.values()]
    for key in (settings.sip_auth_nonce_secret, settings.listen_key, settings.rollout_key, settings.webhook_secret):
        if key is not None:
            values.append(key.get_secret_value())
    values += [key.decode() for key in settings.rollout_keys]  # each of the list, wherever it stands alone
    if settings.redis_url:
        with contextlib.suppress(ValueError):
            values.append(urlsplit(settings.redis_url).password or "")
    return values


def _parser() -> argparse.ArgumentParser:
    from bridge.cli import build_parser

    parser = build_parser(
        "serve", "run N SIP worker processes (worker i on --sip-port + i; with --front, Kamailio on --sip-port)"
    )
    add_settings_flags(parser)
    return parser


# the flag of a setting whose flag is not --<field-name>
FLAG_NAMES = {"front_peers": "--front-peer", "sip_trusted_fronts": "--trust-front"}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """The settings flags of ``serve`` (``config show`` and ``health`` take the same, to read the same settings)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ["CALLBRIDGE_CONFIG"]) if os.environ.get("CALLBRIDGE_CONFIG") else None,
        metavar="YAML",
        help="a settings file (default: $CALLBRIDGE_CONFIG; CALLBRIDGE_* variables and flags win over it)",
    )
    parser.add_argument("--workers", type=int, help="worker processes (default 1)")
    parser.add_argument("--sip-host", help="the SIP address to bind (default 127.0.0.1)")
    parser.add_argument("--sip-port", type=int, help="the first worker's SIP port, or the front's (default 5060)")
    parser.add_argument("--realtime-url", help="the model service's WebSocket URL (default: the local emulator)")
    parser.add_argument(
        "--redis-url",
        help="per-call state (redis://, rediss://, unix://, redis+sentinel://, redis+cluster://: "
        "docs/configuration.md); none: no state",
    )
    parser.add_argument("--http-port", type=int, help="the HTTP API, console and /metrics (default: off)")
    parser.add_argument("--dialplans", type=Path, metavar="DIR", help="the dialplan files (default ./dialplans)")
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


def settings_from_args(args: argparse.Namespace) -> tuple[Settings, dict[str, str]]:
    """The settings (flags over the environment over the file) and the source of each value set by one."""
    return load_settings_with_sources(
        args.config,
        flags=FLAG_NAMES,
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


def _configure(args: argparse.Namespace) -> tuple[Settings, str | None, str]:
    """The settings (flags over the environment over the file), checked before anything starts, and Kamailio's
    binary when the front is on. Raises :class:`ConfigError` or :class:`FrontError`."""
    settings, _ = settings_from_args(args)
    from bridge.dialplan import load_dialplans, require_folder

    require_folder(settings.dialplans)
    load_dialplans(settings.dialplans)  # nothing starts half-configured
    kamailio = None
    if settings.front == "kamailio":  # how the node is laid out comes before who may call it
        if not settings.sip_port:
            raise ConfigError("settings", "sip_port", "the front needs a fixed port (--sip-port)")
        if settings.sip_host in WILDCARD_HOSTS:
            raise ConfigError(
                "settings", "sip_host", "the front needs the address callers use (it goes in Record-Route)"
            )
    from bridge.sip.exposure import check_exposure

    open_to = check_exposure(settings)  # closed by default: a public address needs someone named to call it
    from bridge.sip.tlsfiles import check_tls

    open_to += "; " + check_tls(settings)  # a certificate missing, unreadable or expired stops the start here
    if settings.front == "kamailio":
        kamailio = require_kamailio()
    return settings, kamailio, open_to


def rollout_records_state(settings: Settings) -> str:
    """``signed`` with a ``rollout_key``, else ``unsigned``: ``/healthz``'s ``rollout_records``."""
    return "signed" if settings.rollout_keys else "unsigned"


def rollout_key_lines(settings: Settings) -> list[str]:
    """The start-up lines on how rollout flags and outcome records are sealed: how many keys, never a key."""
    keys = settings.rollout_keys
    if not keys:
        why = "a Redis writer who also writes an audit entry is obeyed"
        return [
            f"rollout flags: no rollout_key: the audit alone vouches for a stored flag ({why}); set it",
            "rollout evidence: no rollout_key: outcome records are unsigned, and a Redis writer can add records "
            "that move a rollout's steps; set it (docs/operating.md, Rollout keys)",
        ]
    vouch = "its key" if len(keys) == 1 else f"any of its {len(keys)} keys (changes signed with the first)"
    return [
        f"rollout flags: obeyed only with an audit entry signed with rollout_key, {vouch}",
        "rollout evidence: outcome records signed with rollout_key; unsigned ones are left out and counted",
    ]


async def _seal_rollout_flags(settings: Settings) -> None:
    """Say how rollout flags are vouched for, seal the served plans' flags stored before flags were sealed
    (``RolloutStore.adopt_unsealed``): calls obey no unsealed flag (bridge/rollout/seal.py), and, during a key
    rotation (``rollout_key: new,old``), sign again with the new key those signed with another listed key
    (``bridge.rollout.store.reseal``)."""
    if not settings.redis_url:
        return
    from bridge.dialplan import load_dialplans, rollout_specs
    from bridge.rollout.attest import gate_line
    from bridge.rollout.probes import probe_line
    from bridge.rollout.store import RolloutStore, reseal
    from bridge.store.connection import StoreUnavailable

    for line in rollout_key_lines(settings):
        (log.info if settings.rollout_keys else log.warning)("%s", line)
    specs = rollout_specs(load_dialplans(settings.dialplans))
    for name, spec in sorted(specs.items()):  # whether arming a candidate needs a green replay report of it
        log.info("%s", gate_line(spec.require_gate, name))
        log.info("%s", probe_line(spec.probes, name))
    async with RolloutStore(settings.redis_url, specs=specs, rollout_keys=settings.rollout_keys) as store:
        try:
            await asyncio.wait_for(store.adopt_unsealed(sorted(specs), who="callbridge serve"), 10.0)
            await asyncio.wait_for(reseal(store, sorted(specs), who="callbridge serve"), 10.0)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("rollout flags: stored flags not checked for a seal: %s", exc)


async def _serve(settings: Settings, kamailio: str | None, console: ConsoleTokens | None = None) -> int:
    """Run the pool (and the broker, the front, the HTTP API when configured) until SIGTERM or SIGINT."""
    from bridge.serve.nodewatch import NodeWatch
    from bridge.serve.preflight import preflight

    if not await preflight(settings):
        return 2
    from bridge.serve.webhooks import start_node

    settings = with_node_keys(settings)  # the workers' and the deliverer's: one listen_key seals the queued webhooks
    try:
        webhooks = start_node(settings)  # signed webhooks: this node's deliverer (bridge/serve/webhooks.py)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    await _seal_rollout_flags(settings)
    from bridge.supervisor.gate import quiet_accept_errors, raise_open_files

    log.info("open files: soft limit %d, hard limit %d", *raise_open_files())  # the soft raised to the hard
    quiet_accept_errors(asyncio.get_running_loop())  # out of open files: one line per interval, not per attempt
    broker_runner, extra_env = await _start_broker(settings) if settings.credentials == "broker" else (None, {})
    from bridge.serve.control import ControlServer

    pool = Pool(settings, extra_env)
    pool.collect_orphans = True
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop_signal, stop, sig)
    for sig in IGNORED:  # SIGUSR1 / SIGUSR2 drain / resume the node, SIGHUP reloads (bridge/serve/control.py)
        loop.add_signal_handler(sig, _control_signal, pool, sig)
    systemd = Notifier.from_environ()  # taken out of the environment: workers and Kamailio do not inherit it
    control = ControlServer(pool)
    await pool.start()
    checks = asyncio.create_task(NodeWatch(settings, pool.health).run(), name="node-checks")  # the node's gauges
    runner = None
    watchdog: asyncio.Task[None] | None = None
    try:
        await control.start()
        if kamailio is not None:
            pool.front = await start_front(pool, kamailio)
        runner = await start_http(pool, settings, console) if settings.http_port is not None else None
        watchdog = asyncio.create_task(_tell_systemd(pool, systemd))
        await stop.wait()
    except (FrontError, ConfigError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        systemd.notify(STOPPING)
        await control.close()
        checks.cancel()
        if watchdog is not None:
            watchdog.cancel()
        await _stop_node(pool, runner)
        if webhooks is not None:
            await webhooks.close()
        if broker_runner is not None:
            await broker_runner.cleanup()
        log.info("stopped")
    return 0


def _stop_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("%s: stopping without dropping a call", sig.name)
    stop.set()


async def _stop_node(pool: Pool, runner: web.AppRunner | None) -> None:
    """The front takes the node out, the workers drain (their BYEs go through the front), then the front and the
    HTTP API stop."""
    await pool.at_front(pool.slots, False)
    await pool.stop()
    if pool.front is not None:
        await pool.front.stop()
    if runner is not None:
        await runner.cleanup()  # last: /healthz and /metrics answer while the node drains


async def _tell_systemd(pool: Pool, systemd: Notifier) -> None:
    """READY=1 once every worker is up (Type=notify), then WATCHDOG=1 every half interval while the event loop runs
    (WatchdogSec= restarts a node whose loop hangs)."""
    await pool.wait_ready()
    systemd.notify(READY)
    while systemd.watchdog_s:
        systemd.notify(WATCHDOG)
        await asyncio.sleep(systemd.watchdog_s)


async def _start_broker(settings: Settings) -> tuple[web.AppRunner, dict[str, str]]:
    """The credential broker, and the environment that points the workers at it (they never get the API key)."""
    from bridge.serve.broker import new_token, start_broker

    token = new_token()
    runner, broker_url = await start_broker(
        settings.credential, settings.realtime_url, token=token, port=settings.broker_port or 0
    )
    os.environ.pop("OPENAI_API_KEY", None)  # nothing spawned from now on inherits it
    log.info("credential broker on %s; workers get short-lived credentials only", broker_url)
    return runner, {BROKER_URL_ENV: broker_url, BROKER_TOKEN_ENV: token}


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


def _control_signal(pool: Pool, sig: signal.Signals) -> None:
    """SIGUSR1 / SIGUSR2: drain / resume the node (its calls go on); SIGHUP: reload (bridge/serve/control.py)."""
    from bridge.serve.control import reload_node, set_draining

    log.info("%s received", sig.name)
    if sig == signal.SIGHUP:
        reload_node(pool, lambda line: log.info("reload: %s", line))
        return
    task = asyncio.get_running_loop().create_task(set_draining(pool, sig == signal.SIGUSR1), name="drain")
    pool._keep(task)


async def _start_metrics(
    settings: Settings, token: str | None, gate: Gate
) -> Callable[[web.Application], Awaitable[None]]:
    """``/metrics`` alone on ``http_metrics_port``, its connections counted by the main port's ``gate``; returns
    what stops it (the main app's cleanup)."""
    from bridge.supervisor import gate as door
    from bridge.supervisor.api import metrics_app

    runner = web.AppRunner(metrics_app(token), **door.runner_options(gate.limits))
    await runner.setup()
    await door.GatedSite(runner, settings.http_host, settings.http_metrics_port, gate).start()
    log.info("/metrics on http://%s:%s", settings.http_host, runner.addresses[0][1] if runner.addresses else "?")

    async def stop(app: web.Application) -> None:
        await runner.cleanup()

    return stop


async def start_http(pool: Pool, settings: Settings, console: ConsoleTokens | None = None) -> web.AppRunner:
    """The supervisor API, the console, /healthz and /metrics on ``settings.http_host``:``http_port``."""
    from bridge.dialplan import load_dialplans, rollout_specs
    from bridge.rollout.store import RolloutStore
    from bridge.store.connection import connect
    from bridge.supervisor import gate as door
    from bridge.supervisor.accounts import load_users
    from bridge.supervisor.api import ConsoleOptions, create_app
    from bridge.supervisor.auth import SESSION_TTL_S, FailureLimits
    from bridge.supervisor.cors import Cors

    plans = load_dialplans(settings.dialplans)
    users = load_users(settings.users_file) if settings.users_file is not None else None
    redis = connect(settings.redis_url) if settings.redis_url else None
    specs, sealed_by = rollout_specs(plans), settings.rollout_keys
    rollouts = RolloutStore(client=redis, specs=specs, rollout_keys=sealed_by) if redis is not None else None
    console = console or ConsoleTokens.from_environment()
    token, readonly_token = console.operator, console.readonly
    session_s = os.environ.get("CALLBRIDGE_SUPERVISOR_SESSION_S", "")
    if session_s and not session_s.replace(".", "", 1).isdigit():
        log.error("CALLBRIDGE_SUPERVISOR_SESSION_S=%r is not a number of seconds; using the default", session_s)
        session_s = ""
    metrics_token = settings.http_metrics_token.get_secret_value() if settings.http_metrics_token else None
    open_files = door.raise_open_files()
    gate = door.Gate(door.limits_of(settings, open_files[0]))
    door.name_the_server()  # Server: callbridge, no version
    app = create_app(
        token=token,
        redis=redis,
        # listen-in's audio is binary: its own client, without decoding (bridge/supervisor/listen.py)
        listen_audio=connect(settings.redis_url, decode_responses=False) if settings.redis_url else None,
        rollouts=rollouts,
        health=pool.health,
        dialplans=plans,
        lost_workers=pool.dead_workers,
        options=ConsoleOptions(
            readonly_token=readonly_token,
            users=users,
            limits=FailureLimits(settings.http_signin_failures, settings.http_signin_window_s),
            trusted_proxies=settings.http_trusted_proxies,
            metrics_token=metrics_token,
            metrics_here=settings.http_metrics_port is None,
            listen_key=pool.settings.listen_key.get_secret_value().encode() if pool.settings.listen_key else None,
            session_ttl_s=float(session_s) if session_s else SESSION_TTL_S,
            users_file=settings.users_file,  # read again when it changes: a removed account is signed out
            gate=gate,
            health_detail=settings.http_health_detail,
            cors_origins=settings.http_cors_origins,
            trace_ui_url=settings.tracing_ui_url,
            requests_per_minute=settings.http_api_requests_per_minute,
        ),
    )
    if settings.http_metrics_port is not None:
        app.on_cleanup.append(await _start_metrics(settings, metrics_token, gate))
    pool.http_app = app
    runner = web.AppRunner(app, **door.runner_options(gate.limits))
    await runner.setup()
    pool.tls = tls_context(settings)
    site = door.GatedSite(runner, settings.http_host, settings.http_port, gate, ssl_context=pool.tls)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.http_port
    where = f"{'https' if settings.http_tls_cert else 'http'}://{settings.http_host}:{port}"
    log.info(
        "supervisor API and console on %s; /metrics %s%s; trusted proxies: %s",
        where, "on its own port" if settings.http_metrics_port is not None else "here",
        " (bearer token)" if metrics_token else "", ", ".join(settings.http_trusted_proxies) or "none",
    )  # fmt: skip
    door.log_limits(gate.limits, open_files, health_open=settings.http_health_detail == "open")
    if settings.http_cors_origins:
        log.info("supervisor API: CORS on for %s", Cors.of(settings.http_cors_origins).describe())
    if users is not None:
        log.info("console accounts: %d account(s) from %s", len(users.accounts), settings.users_file)
    else:
        log.warning(
            "supervisor console on %s in DEMO mode: shared tokens (admin token %s, viewer token %s), no accounts; "
            "set users_file (`callbridge users add`) for anything but a demo",
            where, "set" if token else "NOT set", "set" if readonly_token else "NOT set",
        )  # fmt: skip
    print(json.dumps({"http_port": port}), flush=True)
    return runner
