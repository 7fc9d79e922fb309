"""A Redis Cluster that is down, met by the webhooks' loops (issue 62, item 20): redis-py's cluster client raises
``RedisClusterException`` ("Redis Cluster cannot be connected"), which is neither a ``RedisError`` nor an ``OSError``;
the clients of ``bridge.store.connection.connect`` raise ``ClusterUnreachable`` (a ``ConnectionError``) instead, so
every caller's outage handling applies. Every webhook loop that meets it writes one warning (and then at most one a
minute), never a traceback, and keeps trying at a growing pause; ``callbridge webhooks`` says Redis is unreachable in
one line.

The cluster's only node is a real TCP listener that closes every connection it accepts: the client's attempts are
counted there, so the tests wait for attempts, not for time. And a real Redis Cluster (``RedisClusterLab``: six
nodes): a call's events are delivered in order on it (every script's keys in one slot, the blocking wait followed to
its shard), then the whole cluster stops and the deliverer says so once."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator

import pytest
from _webhooks import Receiver, call_event, routes, running
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from bridge.devkit.redis_cluster import RedisClusterLab, cluster_tools
from bridge.store import keys
from bridge.store.connection import ClusterUnreachable, connect, is_outage
from bridge.webhooks.delivery import Deliverer
from bridge.webhooks.endpoints import DEFAULT
from bridge.webhooks.outbox import Outbox
from bridge.webhooks.signing import new_secret


class DeadNode:
    """A listener that accepts and closes at once (a cluster node that is not answering): ``attempts`` counted."""

    def __init__(self) -> None:
        self.attempts = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        writer.close()

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.port}"

    async def wait_attempts(self, n: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while self.attempts < n:
            assert time.monotonic() < deadline, f"{self.attempts} attempts within {within_s} s"
            await asyncio.sleep(0.05)


@pytest.fixture
async def dead_node() -> AsyncIterator[DeadNode]:
    node = DeadNode()
    server = await asyncio.start_server(node._accept, "127.0.0.1", 0)
    node.port = server.sockets[0].getsockname()[1]
    async with server:
        yield node


async def test_a_cluster_that_reaches_no_node_is_a_redis_connection_error(dead_node: DeadNode) -> None:
    client = connect(dead_node.url)
    with pytest.raises(RedisConnectionError, match="Redis Cluster cannot be connected") as caught:
        await client.zcard("x")
    assert isinstance(caught.value, ClusterUnreachable) and is_outage(caught.value)
    await client.aclose()


def webhook_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("bridge.webhooks")]


async def test_the_deliverer_logs_a_cluster_down_once_without_a_traceback(
    dead_node: DeadNode, caplog: pytest.LogCaptureFixture
) -> None:
    client, waker = connect(dead_node.url), connect(dead_node.url, socket_timeout=60.0)
    deliverer = Deliverer(client, routes((DEFAULT, "http://127.0.0.1:9/hook")), lambda e: None, waker=waker)
    caplog.set_level(logging.INFO, "bridge")
    async with running(deliverer):
        await dead_node.wait_attempts(3, 30)
    await client.aclose()
    await waker.aclose()
    lines = webhook_lines(caplog)
    assert [(r.levelname, r.exc_info is None) for r in lines] == [("WARNING", True)], [r.getMessage() for r in lines]
    assert "Redis unreachable (ClusterUnreachable: Redis Cluster cannot be connected" in lines[0].getMessage()


async def test_the_outbox_logs_a_cluster_down_once_and_keeps_the_event(
    dead_node: DeadNode, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(connect(dead_node.url), routes((DEFAULT, "http://127.0.0.1:9/hook")))
    caplog.set_level(logging.INFO, "bridge")
    msg_id = box.emit("call.ended", call_event("call.ended", "c-1", 1), chain="c-1", seq=1)
    await dead_node.wait_attempts(3, 30)
    assert [d.id for d in box.queue] == [msg_id]  # kept for when Redis is back
    box._closing = True  # stop without the spool (none configured: the close would log the loss)
    box._wake.set()
    lines = webhook_lines(caplog)
    await box.close(within_s=0.1)
    assert [(r.levelname, r.exc_info is None) for r in lines] == [("WARNING", True)], [r.getMessage() for r in lines]
    assert "Redis unreachable (ClusterUnreachable: Redis Cluster cannot be connected" in lines[0].getMessage()


async def test_the_cli_says_the_cluster_is_unreachable_in_one_line(dead_node: DeadNode) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "webhooks", "--redis-url", dead_node.url, "list",
        env={**os.environ}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    said = err.decode().strip().splitlines()
    assert proc.returncode == 1, err.decode()
    assert len(said) == 1 and "unreachable: ClusterUnreachable" in said[0], said


@pytest.mark.skipif(cluster_tools() is not None, reason=f"no Redis Cluster here: {cluster_tools()}")
async def test_on_a_real_cluster_events_go_in_order_and_its_death_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    secret = new_secret()
    hook = await Receiver(secret).start()
    found = routes((DEFAULT, hook.url))
    caplog.set_level(logging.INFO, "bridge")
    try:
        with RedisClusterLab() as lab:
            client, waker = connect(lab.url), connect(lab.url, socket_timeout=60.0)
            box = Outbox(connect(lab.url), found)
            deliverer = Deliverer(client, found, lambda e: secret, waker=waker)
            async with running(deliverer):
                for seq, kind in enumerate(("call.started", "call.transferred", "call.ended"), 1):
                    box.emit(kind, call_event(kind, "c-cl", seq), chain="c-cl", seq=seq)
                await hook.wait_for(lambda r: len(r) >= 3, 20)
                deadline = time.monotonic() + 10  # each is removed from Redis once its 204 is back: after the receipt
                while await client.hlen(keys.WEBHOOKS_DELIVERIES):
                    assert time.monotonic() < deadline, "delivered, yet still stored"
                    await asyncio.sleep(0.05)
                with pytest.raises(RedisClusterException, match="same key slot"):  # a misuse is no outage
                    await client.eval("return 1", 2, "a", "b")
                before = len(caplog.records)
                await asyncio.to_thread(lab.stop)  # every node gone
                deadline = time.monotonic() + 30
                while deliverer.outage.failures < 3:
                    assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records[before:]]
                    await asyncio.sleep(0.05)
                down = [r for r in caplog.records[before:] if r.name.startswith("bridge.webhooks")]
            await box.close(within_s=0.1)
            await client.aclose()
            await waker.aclose()
    finally:
        await hook.stop()
    assert [(r.body["type"], r.body["data"]["seq"]) for r in hook.received] == [
        ("call.started", 1), ("call.transferred", 2), ("call.ended", 3)]  # fmt: skip
    assert [(r.levelname, r.exc_info is None) for r in down] == [("WARNING", True)], [r.getMessage() for r in down]
