"""A real Redis primary, its replica and one sentinel (quorum 1) on private loopback ports, for the tests of a
failover (Debian's ``redis-server`` and ``redis-sentinel``). Nothing on disk but their configs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bridge.devkit.ports import free_port_block
from bridge.devkit.process import stop_process

SERVICE = "callbridge"


def sentinel_binaries() -> tuple[str, str] | None:
    """``(redis-server, redis-sentinel)`` on PATH, or None."""
    server, sentinel = shutil.which("redis-server"), shutil.which("redis-sentinel")
    return (server, sentinel) if server and sentinel else None


class SentinelSet:
    """``SentinelSet(tmp)``: a master, a replica of it and a sentinel that watches them; ``url`` is the
    ``redis+sentinel://`` URL of the service, :meth:`stop` ends all three."""

    def __init__(self, tmp: Path, *, down_after_ms: int = 1000) -> None:
        found = sentinel_binaries()
        if found is None:
            raise RuntimeError(
                "redis-server and redis-sentinel are needed (apt-get install redis-server redis-sentinel)"
            )
        server, sentinel = found
        self.master_port, self.replica_port, self.sentinel_port = (free_port_block(1) for _ in range(3))
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
        self.master = subprocess.Popen([server, "--port", str(self.master_port), *common], **_quiet())
        replica_of = ["--replicaof", "127.0.0.1", str(self.master_port)]
        self.replica = subprocess.Popen([server, "--port", str(self.replica_port), *common, *replica_of], **_quiet())
        conf = tmp / "sentinel.conf"  # the sentinel rewrites its config as it learns: a file of its own
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {tmp}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        self.sentinel = subprocess.Popen([sentinel, str(conf)], **_quiet())

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}"

    def sentinel_client(self) -> aioredis.Redis:
        return aioredis.Redis(port=self.sentinel_port, decode_responses=True)

    async def master_address(self) -> tuple[str, int]:
        client = self.sentinel_client()
        try:
            host, port = await client.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)  # type: ignore[no-untyped-call]
            return str(host), int(port)
        finally:
            await client.aclose()

    async def failover(self) -> None:
        """``SENTINEL FAILOVER``: a planned switch to the replica (the master stays up and is demoted)."""
        client = self.sentinel_client()
        try:
            await client.execute_command("SENTINEL", "FAILOVER", SERVICE)  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()

    async def ready(self) -> bool:
        """The replica follows the master and the sentinel knows both."""
        try:
            replica = aioredis.Redis(port=self.replica_port, decode_responses=True)
            sentinel = self.sentinel_client()
            try:
                link = (await replica.info("replication")).get("master_link_status")
                replicas = await sentinel.execute_command("SENTINEL", "replicas", SERVICE)  # type: ignore[no-untyped-call]
                return link == "up" and len(replicas) == 1
            finally:
                await replica.aclose()
                await sentinel.aclose()
        except (OSError, aioredis.RedisError):
            return False

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica, self.master):
            stop_process(proc, 10)


def _quiet() -> dict[str, Any]:
    return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
