"""The front door: Kamailio in front of the workers, so that one SIP address reaches every worker of every node.

A worker process holds at most a few calls (4 with the pjsua2 wheel), and a trunk points at one address. With
``callbridge serve --front kamailio`` the pool starts Kamailio (Debian's ``kamailio`` package) on
``sip_host:sip_port`` and the workers on the ports after it; Kamailio's ``dispatcher`` module spreads new calls by
call load over every worker it knows, this node's and the ``front_peers`` of other nodes. The routing script is
``bridge/serve/kamailio/kamailio.cfg`` (read it: it says what happens to a call); this module writes what it
includes into a run directory:

* ``front.defs``: the listen address, the control socket and the timers, as Kamailio ``#!define``/``#!substdef``;
* ``dispatcher.list``: one destination per worker, ``maxload`` = the calls the worker's process reported it holds;
* ``front.sources``: ``front_allowed_sources`` (group 1) and ``sip_trunk_sources`` (group 2) as the permissions
  module's address file;
* ``front.users`` (mode 0600): the HA1 of each ``sip_auth_users`` user for digest at the front (``front_auth``),
  the key of its nonces and of topology hiding, random per front;
* ``rpc.sock``: Kamailio's JSON-RPC control socket (a Unix datagram socket, mode 0600), used by
  ``callbridge drain`` and by :meth:`KamailioFront.destinations`;
* ``kamailio.log``: Kamailio's own log, unless ``serve``'s stderr is the journal (under systemd): its lines then go
  there, beside ``serve``'s (``journalctl -u callbridge``). Either way ``serve`` writes them (:func:`relay_log`):
  one line per message, peer data in it escaped, cut and its numbers masked.

The edge (:class:`Edge`): a flood limit per source address, an allow-list, the listed trunks (trusted peers, never
refused by a user's guard), digest auth with a guard per user against guess storms from unlisted sources, a copy
of an INVITE it already has (another branch) refused 482, in-dialog requests relayed only within dialogs the front
set up, topology hiding. What Kamailio refused is read from its counters over the control socket and exported as
metrics (:func:`edge_counts`).

Drain (``callbridge drain NODE|WORKER``, or SIGUSR1 to ``serve``): the worker's destination is set to disabled, so
no new call reaches it while its calls go on (their in-dialog requests follow the dialog, not the dispatcher);
``--undo`` (SIGUSR2) makes it active again. A restarted Kamailio forgets drains and current loads.

This module starts, supervises and stops Kamailio (:class:`KamailioFront`); what it writes and reads is in modules of
its own: ``front_files`` (the run directory), ``front_edge`` (the edge), ``front_dialogs`` (the dialog store),
``front_rpc`` (the control socket) and ``front_process`` (the process group, the log, the SIP probe); ``callbridge
drain`` is ``drain_cli``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.runtime.lifetime import pdeathsig_prefix
from bridge.runtime.logs import stderr_is_journal
from bridge.runtime.sched import renice_group
from bridge.serve.front_conns import Warden
from bridge.serve.front_dialogs import dialog_store, write_dialog_schemas
from bridge.serve.front_edge import Conns, Edge, address_file, front_users
from bridge.serve.front_files import (
    Destination,
    FrontError,
    Listen,
    dispatcher_list,
    front_defs,
    front_run_dir,
    parse_peer,
    prepare_run_dir,
    tls_cfg,
    write_private,
)
from bridge.serve.front_process import (
    LOG_ENGINE,
    LOG_READ_LIMIT,
    end_group,
    front_environment,
    options_status,
    relay_log,
)
from bridge.serve.front_rpc import (
    DestinationState,
    Dispatch,
    EdgeExport,
    destinations_of,
    edge_counts,
    rpc_call,
    set_state,
)

log = logging.getLogger("bridge.serve.front")

INSTALL_HINT = "apt-get install kamailio"
TEMPLATE_ENV = "CALLBRIDGE_KAMAILIO_CFG"  # another routing script than the package's (kamailio/kamailio.cfg)
# Kamailio's niceness: every call's signalling passes its few processes, and on a machine the workers fill, fair
# shares among a hundred busy processes leave each SIP hop waiting for a core. Needs CAP_SYS_NICE (else ordinary).
FRONT_NICE = -10
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_S = 30.0  # a front that ran this long before it died restarts after the backoff's first step again
METRICS_INTERVAL_S = 2.0  # the dispatcher's view of the workers is exported this often
_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # Debian's place, often absent from a user's PATH


def kamailio_binary() -> str | None:
    """``kamailio`` from PATH (or the sbin directories a non-root PATH often lacks); None if not installed."""
    found = shutil.which("kamailio")
    if found:
        return found
    for directory in _SEARCH_PATH:
        candidate = Path(directory) / "kamailio"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_kamailio() -> str:
    binary = kamailio_binary()
    if binary is None:
        raise FrontError(f"--front kamailio: Kamailio is not installed; install it with `{INSTALL_HINT}`")
    return binary


def template_path() -> Path:
    """The routing script: ``$CALLBRIDGE_KAMAILIO_CFG``, else the package's own ``bridge/serve/kamailio/kamailio.cfg``
    (package data, in a checkout and in the wheel alike), whatever the working directory."""
    configured = os.environ.get(TEMPLATE_ENV)
    path = Path(configured) if configured else Path(str(resources.files("bridge.serve") / "kamailio" / "kamailio.cfg"))
    if not path.is_file():
        raise FrontError(f"the Kamailio routing script {path} is missing (set {TEMPLATE_ENV} to its path)")
    return path


class KamailioFront:
    """Kamailio for one node: writes the run directory, starts it, restarts it if it dies, stops it."""

    def __init__(self, settings: Settings, destinations: Sequence[Destination], binary: str | None = None) -> None:
        self.settings = settings
        self.destinations = list(destinations)
        self.binary = binary or require_kamailio()
        self.run_dir = front_run_dir(settings)
        self.edge = Edge.from_settings(settings)
        self.conns = Conns.from_settings(settings)
        self.dialogs = dialog_store(settings)
        self.dialog_db = self.dialogs.url  # "": dialogs in Kamailio's memory only
        self._keys = (secrets.token_hex(16), secrets.token_hex(16))  # nonces, topoh: one pair per front, not per start
        self.listen_host = settings.sip_host
        self.port = settings.sip_port
        self.proc: asyncio.subprocess.Process | None = None
        self.scheduling = "ordinary"  # its niceness, as set at start (FRONT_NICE), for the log
        self.to_journal = stderr_is_journal()  # Kamailio's log beside serve's in the journal, else in the run dir
        self.restarts = 0
        self.answering = False  # answered OPTIONS since it last started, and its main process has not ended
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._warden_task: asyncio.Task[None] | None = None
        self._log_task: asyncio.Task[None] | None = None

    @property
    def rpc_socket(self) -> Path:
        return self.run_dir / "rpc.sock"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "kamailio.log"

    def write(self) -> Path:
        """Write the run directory; returns the config file Kamailio runs."""
        prepare_run_dir(self.run_dir)
        config = self.run_dir / "kamailio.cfg"
        config.write_text(template_path().read_text(encoding="utf-8"), encoding="utf-8")
        defs = front_defs(
            Listen(self.listen_host, self.port, self.settings.sip_public_address, self.settings.sip_tls_port),
            self.run_dir,
            self.settings.front_retry_after_s,
            edge=self.edge,
            dialog_db=self.dialog_db,
            dialog_id=self.settings.front_dialog_id,
            conns=self.conns,
        )
        if self.dialog_db:
            write_dialog_schemas(self.run_dir / "db_redis")
        write_private(self.run_dir / "front.defs", defs)  # the dialog store's URL may hold Redis's password
        (self.run_dir / "dispatcher.list").write_text(dispatcher_list(self.destinations), encoding="utf-8")
        (self.run_dir / "front.sources").write_text(
            address_file(self.edge.allowed_sources, self.edge.trunk_sources), encoding="utf-8"
        )
        write_private(self.run_dir / "front.users", front_users(self.edge, *self._keys))
        if self.settings.sip_tls_port is not None:
            (self.run_dir / "tls.cfg").write_text(tls_cfg(self.settings), encoding="utf-8")
        with contextlib.suppress(FileNotFoundError):
            self.rpc_socket.unlink()  # a previous run's
        return config

    async def _spawn(self) -> None:
        config = self.write()
        # Kamailio's output on a pipe of serve's own, not the subprocess's: its children outlive a killed main process
        # with the pipe open, and the process's wait() would wait for them too (asyncio waits for its pipes).
        read_end, write_end = os.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *pdeathsig_prefix(),  # a killed `serve` takes Kamailio with it (bridge/runtime/lifetime.py)
                self.binary, LOG_ENGINE, "-DD", "-E", "-m", str(self.conns.memory_mb), "-f", str(config), "-Y",
                str(self.run_dir), "-w", str(self.run_dir),
                stdin=asyncio.subprocess.DEVNULL, stdout=write_end, stderr=write_end,
                env=front_environment(os.environ),
                start_new_session=True,  # a terminal's Ctrl-C reaches serve, which stops Kamailio itself
            )  # fmt: skip
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._log_task = asyncio.create_task(self._relay(read_end), name="front-log")
        self.scheduling = renice_group(self.proc.pid, FRONT_NICE)  # before it forks its SIP processes, mostly

    async def _relay(self, read_end: int) -> None:
        """Kamailio's log (the pipe ``read_end``) to ``kamailio.log`` of the run directory, or beside serve's lines in
        the journal, until the last of its processes has closed the pipe."""
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=LOG_READ_LIMIT)
        with open(read_end, "rb", buffering=0) as pipe:  # noqa: ASYNC230  # a pipe: the loop reads it, never blocks
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), pipe)
            try:
                if self.to_journal:
                    await relay_log(stream, sys.stderr.buffer)
                    return
                with self.log_file.open("ab") as out:  # appends, flushed a line at a time
                    await relay_log(stream, out)
            finally:
                transport.close()

    async def _log_written(self, within_s: float = 2.0) -> None:
        """Wait (a little) until every line of an ended Kamailio is in its log."""
        if self._log_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, OSError):
                await asyncio.wait_for(asyncio.shield(self._log_task), within_s)

    def announce_metrics(self) -> None:
        """The front's series from its start, before Kamailio first reports (serve's own:
        :func:`bridge.serve.pool.announce_node`): each worker's calls at 0, its cap, each of its states at 0 (the
        first read of the dispatcher sets the one it is in), and every reason the edge counts at 0."""
        from bridge import metrics  # not at import: serve sets up multiprocess metrics first

        for dest in self.destinations:
            metrics.FRONT_WORKER_CALLS.labels(dest.address).set(0)
            metrics.FRONT_WORKER_MAX_CALLS.labels(dest.address).set(dest.max_calls)
            for state in Dispatch:
                if state is not Dispatch.UNKNOWN:
                    metrics.FRONT_WORKER_STATE.labels(dest.address, state.word).set(0)
        EdgeExport.prime()

    async def start(self, ready_within_s: float = 15.0) -> None:
        """Start Kamailio and wait until it answers OPTIONS on the front address; FrontError if it does not."""
        self.announce_metrics()
        await self._spawn()
        try:
            await self._wait_ready(ready_within_s)
        except BaseException:
            await self.stop()  # nothing half-started is left behind
            raise
        log.info(
            "front: Kamailio (pid %d, %s) on sip:%s:%d dispatching to %d workers (%s); %s; %s; %s; run directory %s; "
            "its log %s",
            self.proc.pid if self.proc else 0,
            self.scheduling,
            self.listen_host,
            self.port,
            len(self.destinations),
            ", ".join(f"{d.address}/{d.max_calls}" for d in self.destinations),
            self.edge.describe(),
            self.conns.describe(),
            self.dialogs.describe(),
            self.run_dir,
            "in the journal" if self.to_journal else self.log_file,
        )
        self._task = asyncio.create_task(self._supervise(), name="front")
        self._metrics_task = asyncio.create_task(self._export(), name="front-metrics")
        self._warden_task = asyncio.create_task(self._warden().run(), name="front-connections")

    def _warden(self) -> Warden:
        """Per source connection limits: the workers, the front's own address and the listed trunks have none."""
        own = {self.settings.front_host, self.listen_host, *(d.host for d in self.destinations)}
        exempt = [host for host in own if host not in ("0.0.0.0", "::")] + list(self.edge.trunk_sources)
        ports = [self.port] + ([self.settings.sip_tls_port] if self.settings.sip_tls_port else [])
        return Warden(self.rpc_socket, ports, self.conns.per_source, exempt)

    async def _wait_ready(self, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        probe_host = self.settings.front_host
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.returncode is not None:
                await self._log_written()
                raise FrontError(f"Kamailio exited at start: {self.log_tail()}")
            # from the front's own address, which its allow-list and flood limit exempt (the kernel would pick
            # 127.0.0.1 to reach a loopback alias such as 127.0.0.2)
            if await options_status(probe_host, self.port, 0.5, local_host=probe_host) == 200:
                self.answering = True  # until its main process ends: /healthz is 503 from then until it answers again
                self.scheduling = renice_group(self.proc.pid, FRONT_NICE)  # and the processes forked meanwhile
                return
            await asyncio.sleep(0.1)
        raise FrontError(f"Kamailio did not answer OPTIONS on {probe_host}:{self.port} within {within_s:.0f} s")

    def log_tail(self, lines: int = 12) -> str:
        if self.to_journal:
            return "(its log is in the journal, beside serve's)"
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        wanted = [line for line in text.splitlines() if "ERROR" in line or "CRITICAL" in line] or text.splitlines()
        return "\n".join(wanted[-lines:])

    async def _supervise(self) -> None:
        """Kamailio is one process group (a session of its own): when its main process ends (a child that dies takes
        the main process with it), what is left of the group is killed before Kamailio starts again on the same
        address, so nothing of a dead front keeps the port. Deaths in a row back off; STABLE_S of running resets it."""
        failures = 0
        while not self._stopping:
            assert self.proc is not None
            started = time.monotonic()
            rc = await self.proc.wait()
            self.answering = False
            if self._stopping:
                return
            ended = await end_group(self.proc.pid)  # pgid = the main process's pid (start_new_session)
            await self._log_written()
            if time.monotonic() - started >= STABLE_S:
                failures = 0
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            failures += 1
            self.restarts += 1
            log.error(
                "front: Kamailio (pid %d) exited with %s; %d processes left of its group killed; restarting on "
                "sip:%s:%d in %.1f s: %s",
                self.proc.pid, rc, len(ended), self.listen_host, self.port, delay, self.log_tail(4),
            )  # fmt: skip
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                await self._wait_ready(15.0)
                log.info("front: Kamailio restarted (pid %d) on sip:%s:%d", self.proc.pid, self.listen_host, self.port)
            except (FrontError, OSError) as exc:
                log.error("front: restart failed: %s", exc)

    async def _export(self) -> None:
        """Publish the dispatcher's view of every worker as metrics (calls, cap, whether it takes new calls)."""
        from bridge import metrics  # not at import: serve sets up multiprocess metrics first

        edge = EdgeExport()
        while not self._stopping:
            try:
                for dest in await self.states():
                    metrics.FRONT_WORKER_CALLS.labels(dest.address).set(dest.load)
                    metrics.FRONT_WORKER_MAX_CALLS.labels(dest.address).set(dest.max_calls)
                    for state in Dispatch:
                        if state is not Dispatch.UNKNOWN:
                            metrics.FRONT_WORKER_STATE.labels(dest.address, state.word).set(int(dest.state is state))
                edge.update(
                    edge_counts(await asyncio.to_thread(rpc_call, self.rpc_socket, "cnt.grp_get_all", ["front"]))
                )
            except FrontError as exc:
                log.debug("front metrics: %s", exc)
            await asyncio.sleep(METRICS_INTERVAL_S)

    def health(self) -> dict[str, Any]:
        return {
            "kind": "kamailio",
            "address": f"{self.listen_host}:{self.port}",
            "pid": self.proc.pid if self.proc else None,
            "alive": self.answering and self.proc is not None and self.proc.returncode is None,
            "restarts": self.restarts,
            "run_dir": str(self.run_dir),
            "dialogs": self.dialogs.to_json(),
        }

    async def states(self) -> list[DestinationState]:
        return destinations_of(await asyncio.to_thread(rpc_call, self.rpc_socket, "dispatcher.list"))

    async def set_state(self, target: str, state: str) -> list[DestinationState]:
        return await asyncio.to_thread(set_state, self.rpc_socket, target, state)

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._metrics_task, self._warden_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        if proc is not None:
            await end_group(proc.pid)  # anything of the group that outlived its main process
            await proc.wait()
            await self._log_written()


def node_destinations(settings: Settings, worker_caps: Sequence[tuple[int, int]]) -> list[Destination]:
    """This node's workers ((port, max_calls) as they reported at start), then ``settings.front_peers``."""
    own = [
        Destination(settings.front_host, port, cap, settings.worker_tls_port(index) or 0)
        for index, (port, cap) in enumerate(worker_caps)
    ]
    default_cap = min((cap for _, cap in worker_caps), default=1)
    try:
        peers = [parse_peer(text, default_cap) for text in settings.front_peers]
    except ValueError as exc:
        raise ConfigError("settings", "front_peers", str(exc)) from None
    return own + peers
