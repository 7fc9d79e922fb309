"""callbridge on several hosts of a :class:`bridge.devkit.lab.Lab`: the front (Kamailio alone, as a front machine
runs it), a `serve` node per host, Redis (one server, or a primary, a replica and a Sentinel, each on a host of its
own), the emulator as the model service and a host for the callers. Every host has its own address on 10.77.0.0/24;
nothing listens on loopback but what a host keeps to itself.

=========  ==========  =====================================================================================
host       address     runs
=========  ==========  =====================================================================================
front      10.77.0.2   Kamailio on :5060, its dispatcher naming every node's workers (its dialogs in Redis
                       database 5 with a single Redis: a restarted front carries the live calls)
model      10.77.0.5   ``callbridge emulator`` on :8765
redis      10.77.0.10  ``redis-server`` on :6379 (with ``sentinel``: redis-1 .11, redis-2 .12 and the sentinel
                       on .13:26379, service ``callbridge``)
node-a...  10.77.0.21+ ``callbridge serve``: its workers on :5070 up, HTTP (/healthz, /metrics) on :9090
caller     10.77.0.100 the softphones and SIPp of whoever places calls
=========  ==========  =====================================================================================

Each server also listens on a Unix socket in the lab's run directory, so the root namespace (a test) reads Redis
without a route into the lab. ``python -m bridge.devkit.labstack`` (``./dev lab``) starts one by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from bridge.config import load_settings
from bridge.devkit.lab import Lab, in_netns
from bridge.serve.front import KamailioFront, node_destinations
from bridge.serve.front_files import FrontError
from bridge.serve.front_process import front_environment
from bridge.serve.front_rpc import DestinationState, Dispatch, destinations_of, rpc_call
from bridge.store.reportfile import read_reports

ROOT = Path(__file__).resolve().parents[2]
CALLER_WAV = ROOT / "bridge" / "assets" / "caller_hours.wav"
ADDRESSES = {"front": 2, "model": 5, "redis": 10, "redis-1": 11, "redis-2": 12, "sentinel": 13, "caller": 100}
FIRST_NODE = 21
FRONT_PORT, WORKER_PORT, HTTP_PORT, MODEL_PORT = 5060, 5070, 9090, 8765
REDIS_PORT, SENTINEL_PORT, SERVICE = 6379, 26379, "callbridge"
DIALOG_DB = 5  # the front's dialogs, beside the bridge's own state in database 0
PEER_CAP = 8  # calls the front gives each worker at most
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a lab runs: ``nodes`` serve nodes of ``workers`` workers each; Redis alone, or behind a Sentinel."""

    nodes: int = 2
    workers: int = 1
    sentinel: bool = False
    model_speed: float = 4.0

    @property
    def node_names(self) -> list[str]:
        return [f"node-{chr(ord('a') + i)}" for i in range(self.nodes)]

    @property
    def hosts(self) -> list[str]:
        redis_hosts = ["redis-1", "redis-2", "sentinel"] if self.sentinel else ["redis"]
        return ["front", "model", *redis_hosts, *self.node_names, "caller"]


def wait_until(check: Callable[[], T | None], what: str, within_s: float = 60.0, every_s: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + within_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise TimeoutError(f"lab: {what} within {within_s:.0f} s (last: {last!r})")


class CallLab:
    """``CallLab(run_dir, Plan()).start()``: every host up and ready (the front dispatching to every worker);
    :meth:`stop` ends it all and deletes the namespaces."""

    def __init__(self, run_dir: Path, plan: Plan | None = None) -> None:
        self.plan = plan or Plan()
        self.run_dir = run_dir
        addresses = dict(ADDRESSES) | {name: FIRST_NODE + i for i, name in enumerate(self.plan.node_names)}
        self.lab = Lab(self.plan.hosts, addresses=addresses)
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.front_proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REDIS_URL")}
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env["CALLBRIDGE_HTTP_HEALTH_DETAIL"] = "open"  # the lab waits on each node's workers in /healthz
        # one for every node, kept across a node's restart: a node's reaper opens another's stored dialogs with it
        self.listen_key = secrets.token_hex(32)

    # -- addresses ------------------------------------------------------------------------------------------------

    def address(self, host: str) -> str:
        return self.lab.address(host)

    @property
    def front_uri(self) -> str:
        return f"sip:1000@{self.address('front')}:{FRONT_PORT}"

    @property
    def redis_url(self) -> str:
        """The URL the nodes use (over the lab's network)."""
        if self.plan.sentinel:
            return f"redis+sentinel://{self.address('sentinel')}:{SENTINEL_PORT}/{SERVICE}"
        return f"redis://{self.address('redis')}:{REDIS_PORT}/0"

    @property
    def redis_host(self) -> str:
        """The host of the Redis primary now (the sentinel's answer, with a Sentinel)."""
        return self.primary() if self.plan.sentinel else "redis"

    def socket_path(self, host: str) -> Path:
        """The Unix socket of the Redis server (or sentinel) on ``host``, for the root namespace."""
        return self.run_dir / host / "redis.sock"

    def redis(self, host: str = "redis", db: int = 0) -> redis.Redis:
        """A client of the Redis on ``host`` over its Unix socket (the caller closes it)."""
        return redis.Redis(unix_socket_path=str(self.socket_path(host)), db=db, decode_responses=True)

    def workers(self, node: str) -> list[str]:
        """``node``'s workers as the front and Redis name them (``HOST:PORT``)."""
        return [f"{self.address(node)}:{WORKER_PORT + i}" for i in range(self.plan.workers)]

    # -- start ------------------------------------------------------------------------------------------------------

    def start(self) -> CallLab:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lab.start()
        try:
            if self.plan.sentinel:
                self._start_sentinel_set()
            else:
                self._start_redis("redis")
            self._start_model()
            for node in self.plan.node_names:
                self.start_node(node)
            self.start_front()
            for node in self.plan.node_names:
                self.wait_node(node)
            self.wait_front()
        except BaseException:
            self.stop()
            raise
        return self

    def _dir(self, host: str) -> Path:
        path = self.run_dir / host
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _start_redis(self, host: str, *, replica_of: str | None = None) -> None:
        work = self._dir(host)
        args = [
            "redis-server", "--bind", self.address(host), "--port", str(REDIS_PORT), "--unixsocket",
            str(self.socket_path(host)), "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir",
            str(work), "--loglevel", "warning",
            "--protected-mode", "no",  # answers other hosts without a password: the lab's network is its own
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", self.address(replica_of), str(REDIS_PORT)]
        self.lab.spawn(host, args, log=work / "redis.log")
        wait_until(lambda: self._pings(host), f"redis-server on {host}", 15)

    def _pings(self, host: str) -> bool:
        client = self.redis(host)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _start_sentinel_set(self) -> None:
        self._start_redis("redis-1")
        self._start_redis("redis-2", replica_of="redis-1")
        work = self._dir("sentinel")
        conf = work / "sentinel.conf"  # the sentinel rewrites its config as it learns
        conf.write_text(
            f"port {SENTINEL_PORT}\nprotected-mode no\nbind {self.address('sentinel')}\ndir {work}\n"
            f"unixsocket {self.socket_path('sentinel')}\nunixsocketperm 700\n"
            f"sentinel monitor {SERVICE} {self.address('redis-1')} {REDIS_PORT} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\nsentinel failover-timeout {SERVICE} 10000\n"
        )
        self.lab.spawn("sentinel", ["redis-sentinel", str(conf)], log=work / "sentinel.log")
        wait_until(self._sentinel_ready, "the sentinel knowing the primary and its replica", 30)

    def _sentinel_ready(self) -> bool:
        try:
            return len(self.sentinel("replicas", SERVICE)) == 1 and self._replica_linked()
        except (redis.RedisError, OSError):
            return False

    def _replica_linked(self) -> bool:
        for host in ("redis-1", "redis-2"):
            client = self.redis(host)
            try:
                if client.info("replication").get("master_link_status") == "up":
                    return True
            finally:
                client.close()
        return False

    def sentinel(self, *command: str) -> Any:
        """A ``SENTINEL`` command to the lab's sentinel (over its Unix socket)."""
        client = self.redis("sentinel")
        try:
            return client.execute_command("SENTINEL", *command)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def primary(self) -> str:
        """The host the sentinel names as the primary now."""
        host, _port = self.sentinel("get-master-addr-by-name", SERVICE)
        return next(name for name in ("redis-1", "redis-2") if self.address(name) == host)

    def _start_model(self) -> None:
        work = self._dir("model")
        self.lab.spawn(
            "model",
            [sys.executable, "-m", "bridge", "emulator", "--host", self.address("model"), "--port", str(MODEL_PORT),
             "--speed", str(self.plan.model_speed), "--log-level", "WARNING"],
            log=work / "emulator.log", env=self.env, cwd=ROOT,
        )  # fmt: skip
        wait_until(lambda: self.connects("caller", "model", MODEL_PORT), "the emulator", 30)

    def connects(self, src: str, dst: str, port: int) -> bool:
        """A TCP connection from host ``src`` to ``dst``:``port`` succeeds."""

        def attempt() -> bool:
            try:
                with socket.create_connection((self.address(dst), port), timeout=1.0):
                    return True
            except OSError:
                return False

        return in_netns(self.lab.host(src).netns, attempt)

    # -- nodes ------------------------------------------------------------------------------------------------------

    def start_node(self, node: str) -> subprocess.Popen[bytes]:
        """Start ``callbridge serve`` on ``node`` (again, after it was killed); :meth:`wait_node` waits for it."""
        work = self._dir(node)
        config = work / "serve.yaml"
        settings = {
            "http_host": self.address(node),
            "sip_trusted_fronts": [f"{self.address('front')}/32"],
            "spool_dir": str(work / "spool"),
            "listen_key": self.listen_key,
        }
        config.write_text(json.dumps(settings))  # JSON is YAML
        args = [
            sys.executable, "-m", "bridge", "serve", "--config", str(config), "--workers", str(self.plan.workers),
            "--sip-host", self.address(node), "--sip-port", str(WORKER_PORT), "--realtime-url",
            f"ws://{self.address('model')}:{MODEL_PORT}/v1", "--redis-url", self.redis_url, "--http-port",
            str(HTTP_PORT), "--dialplans", str(ROOT / "dialplans"), "--report-file", str(self.report_file(node)),
        ]  # fmt: skip
        self.nodes[node] = self.lab.spawn(node, args, log=work / "serve.log", env=self.env, cwd=ROOT)
        return self.nodes[node]

    def report_file(self, node: str) -> Path:
        return self.run_dir / node / "calls.jsonl"

    def health(self, node: str) -> dict[str, Any]:
        """``node``'s /healthz, asked from the node itself ({} while it does not answer)."""
        return self.lab.http_json(node, f"http://{self.address(node)}:{HTTP_PORT}/healthz")

    def wait_node(self, node: str, within_s: float = 90.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            proc = self.nodes[node]
            if proc.poll() is not None:
                raise RuntimeError(f"lab: serve on {node} exited with {proc.returncode}: {self.log_tail(node)}")
            health = self.health(node)
            workers = health.get("workers") or []
            return health if workers and all(w.get("alive") and w.get("sip_port") for w in workers) else None

        return wait_until(ready, f"serve on {node} up", within_s)

    def reports(self, node: str) -> list[dict[str, Any]]:
        """One line per call ``node`` finished."""
        return read_reports(self.report_file(node))

    def log_tail(self, host: str, name: str = "serve.log", chars: int = 3000) -> str:
        try:
            return (self.run_dir / host / name).read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop_node(self, node: str, within_s: float = 25.0) -> int | None:
        """SIGTERM ``node``'s serve and wait for its exit status (None: it had to be killed)."""
        proc = self.nodes[node]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(within_s)
            except subprocess.TimeoutExpired:
                self.lab.kill_host(node)
                proc.wait()
                return None
        return proc.returncode

    # -- the front --------------------------------------------------------------------------------------------------

    @property
    def front_dir(self) -> Path:
        return self.run_dir / "front"

    def start_front(self) -> subprocess.Popen[bytes]:
        """Kamailio alone on the front host, dispatching to every node's workers (started again after a kill: the
        same run directory and address)."""
        peers = [f"{w}/{PEER_CAP}" for node in self.plan.node_names for w in self.workers(node)]
        dialogs: dict[str, Any] = {} if self.plan.sentinel else {"front_dialog_db": DIALOG_DB}
        settings = load_settings(
            None, sip_host=self.address("front"), sip_port=FRONT_PORT, front="kamailio", front_peers=tuple(peers),
            front_dir=self.front_dir, redis_url=self.redis_url if dialogs else None, **dialogs,
            front_calls_per_source=0,  # the lab's one caller address is a trunk: many calls at once
        )  # fmt: skip
        front = KamailioFront(settings, node_destinations(settings, []))
        config = front.write()
        self.front_proc = self.lab.spawn(
            "front", [front.binary, "-DD", "-E", "-f", str(config), "-Y", str(self.front_dir), "-w",
                      str(self.front_dir)],
            log=self.front_dir / "kamailio.log", env=front_environment(os.environ),
        )  # fmt: skip
        return self.front_proc

    def front_rpc(self, method: str, *params: Any) -> Any:
        return rpc_call(self.front_dir / "rpc.sock", method, params, timeout_s=1.0)

    def front_states(self) -> dict[str, DestinationState]:
        """The front's view of every worker (``{}`` while its control socket does not answer)."""
        try:
            return {d.address: d for d in destinations_of(self.front_rpc("dispatcher.list"))}
        except FrontError:
            return {}

    def wait_front(self, within_s: float = 60.0) -> dict[str, DestinationState]:
        """Until the front is up with every worker of every running node active (answering its OPTIONS)."""
        wanted = {w for node, proc in self.nodes.items() if proc.poll() is None for w in self.workers(node)}

        def ready() -> dict[str, DestinationState] | None:
            if self.front_proc is not None and self.front_proc.poll() is not None:
                raise RuntimeError(f"lab: Kamailio exited with {self.front_proc.returncode}: {self.front_log()}")
            states = self.front_states()
            active = all(w in states and states[w].state is Dispatch.ACTIVE for w in wanted)
            return states if wanted and active else None

        return wait_until(ready, "the front dispatching to every worker", within_s)

    def kill_front(self) -> None:
        """Every process of the front at once (the machine lost, or the OOM killer at the whole group)."""
        self.lab.kill_host("front")
        if self.front_proc is not None:
            self.front_proc.wait()

    def front_log(self, chars: int = 3000) -> str:
        return self.log_tail("front", "kamailio.log", chars)

    def dialogs(self) -> list[dict[str, Any]]:
        """The front's dialog table (``dlg.list``); [] while it does not answer."""
        try:
            return list(self.front_rpc("dlg.list") or [])
        except FrontError:
            return []

    # -- callers ----------------------------------------------------------------------------------------------------

    async def call(self, seconds: float, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """A pjsua2 softphone on the caller host calls the front and hangs up ``seconds`` after the answer unless
        the other side does first: its ``--json`` result (answered, hangup_by, duration_s, call_id...)."""
        args = [
            sys.executable, "-m", "bridge", "call", self.front_uri, "--play", str(CALLER_WAV), "--loop",
            "--hangup-after", str(seconds), "--timeout", str(timeout_s), "--host", self.address("caller"), "--json",
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *self.lab.command("caller", args), cwd=ROOT, env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:
            proc.kill()  # the softphone goes with the task that waits for it
            await proc.wait()
            raise
        lines = out.decode(errors="replace").strip().splitlines()
        if not lines:
            raise RuntimeError(f"lab: the softphone printed nothing (exit {proc.returncode})")
        return dict(json.loads(lines[-1]))

    # -- stop -------------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Every process of the lab ended, its namespaces deleted (the run directory stays, with the logs)."""
        for node in list(self.nodes):
            if self.nodes[node].poll() is None:
                self.nodes[node].terminate()
        self.lab.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the lab as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    """``./dev lab``: start a lab and keep it until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="./dev lab", description="callbridge on several hosts of one machine")
    parser.add_argument("--nodes", type=int, default=2, help="serve nodes (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="workers per node (default 1)")
    parser.add_argument("--sentinel", action="store_true", help="Redis as a primary, a replica and a Sentinel")
    parser.add_argument("--dir", type=Path, help="the run directory (logs, sockets); default: a new temporary one")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("./dev lab: network namespaces need root (ip netns add)", file=sys.stderr)
        return 2
    run_dir = args.dir or Path(tempfile.mkdtemp(prefix="callbridge-lab-"))
    lab = CallLab(run_dir, Plan(nodes=args.nodes, workers=args.workers, sentinel=args.sentinel))
    print(f"== starting the lab in {run_dir}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        lab.start()
        for host in lab.lab.hosts.values():
            print(f"   {host.name:<9} {host.address:<12} ip netns exec {host.netns} ...")
        print(f"== up. A call: ip netns exec {lab.lab.host('caller').netns} {sys.executable} -m bridge call "
              f"{lab.front_uri} --host {lab.address('caller')}\n== Ctrl-C stops it and deletes the namespaces",
              flush=True)  # fmt: skip
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        lab.stop()
        print("== lab stopped, namespaces deleted", flush=True)


if __name__ == "__main__":
    sys.exit(main())
