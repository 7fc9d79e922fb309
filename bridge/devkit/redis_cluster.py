"""A real Redis Cluster for the lab and the tests: six private ``redis-server --cluster-enabled yes`` processes
(three primaries, three replicas) on loopback ports, created with ``redis-cli --cluster create ... --cluster-replicas
1``. A primary that stops answering for ``node_timeout_ms`` is replaced by its replica (the tests kill one mid-call).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from bridge.devkit.ports import free_port_block
from bridge.devkit.process import stop_process
from bridge.devkit.redis_server import redis_server_binary
from bridge.runtime.service import SyncService

NODES = 6
NODE_TIMEOUT_MS = 1000  # how long a primary may stay silent before its replica takes over


def cluster_tools() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    if redis_server_binary() is None:
        return "no redis-server binary"
    if shutil.which("redis-cli") is None:
        return "no redis-cli (it creates the cluster)"
    return None


class RedisClusterLab(SyncService):
    """``with RedisClusterLab() as c: c.url`` -> ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2``."""

    def __init__(self, node_timeout_ms: int = NODE_TIMEOUT_MS) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="callbridge-cluster-")

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start(self) -> RedisClusterLab:
        exe = redis_server_binary()
        if exe is None or shutil.which("redis-cli") is None:
            raise RuntimeError(f"cannot start a Redis Cluster: {cluster_tools()}")
        first, bus = free_port_block(NODES), free_port_block(NODES)
        self.ports = [first + i for i in range(NODES)]
        for i, port in enumerate(self.ports):
            node_dir = Path(self._dir.name) / str(port)
            node_dir.mkdir()
            args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
            args += ["--cluster-port", str(bus + i), "--cluster-config-file", str(node_dir / "nodes.conf")]
            args += ["--cluster-node-timeout", str(self.node_timeout_ms), "--save", "", "--appendonly", "no"]
            args += ["--repl-diskless-sync-delay", "0"]  # replicas in sync at once (one not in sync never takes over)
            args += ["--dir", str(node_dir), "--daemonize", "no", "--loglevel", "warning"]
            self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p, socket_timeout=0.5).ping(), f"node {port} up")
        create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        done = subprocess.run([*create, "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, timeout=60)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout.decode(errors='replace')[-400:]}")
        for port in self.ports:
            self._wait(lambda p=port: self.state(p) == "ok", f"node {port} sees the cluster ok")
        for port in self.ports:
            self._wait(lambda p=port: self.in_sync(p), f"node {port} a primary or a replica in sync")
        return self

    def in_sync(self, port: int) -> bool:
        info = redis.Redis(port=port, socket_timeout=0.5).info("replication")
        return info.get("role") == "master" or info.get("master_link_status") == "up"

    def state(self, port: int) -> str:
        info = redis.Redis(port=port, socket_timeout=0.5).cluster("info")
        return str(info.get("cluster_state", "")) if isinstance(info, dict) else ""

    def primary_of(self, key: str) -> int:
        """The port of the primary now serving ``key``'s slot."""
        node = redis.RedisCluster(host="127.0.0.1", port=self.alive()[0]).get_node_from_key(key)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        assert node is not None and node.port is not None
        return int(node.port)

    def alive(self) -> list[int]:
        return [p for p in self.ports if self.procs[p].poll() is None]

    def kill(self, port: int) -> None:
        """SIGKILL one node (no goodbye: its replica takes over after the node timeout)."""
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(5)

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every node still running says the cluster is ok (after a failover: the replica promoted)."""
        for port in self.alive():
            self._wait(lambda p=port: self.state(p) == "ok", f"node {port} sees the cluster ok", timeout_s)

    @staticmethod
    def _wait(check: object, what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if callable(check) and check():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster: not {what} within {timeout_s:g} s")

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc, 5.0)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()
