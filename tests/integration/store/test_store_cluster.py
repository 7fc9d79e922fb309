"""The call store, pub/sub and the key layout on a real Redis Cluster (six redis-server processes, three primaries and
three replicas), including a primary killed mid-call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from _store_helpers import wait_until

from bridge.devkit.redis_cluster import RedisClusterLab, cluster_tools
from bridge.store import keys
from bridge.store.calls import CallStore, StoreTuning
from bridge.store.channels import follow, publish
from bridge.store.connection import connect, is_cluster

pytestmark = pytest.mark.integration

FAST = StoreTuning(
    flush_interval_s=0.05, heartbeat_interval_s=0.2, retry_initial_s=0.05, retry_cap_s=0.3, reap_interval_s=None
)


@pytest.fixture
def cluster() -> Iterator[RedisClusterLab]:
    if (why := cluster_tools()) is not None:
        pytest.skip(f"no Redis Cluster here: {why}")
    with RedisClusterLab() as lab:
        yield lab


@pytest.fixture
async def client(cluster: RedisClusterLab) -> AsyncIterator[aioredis.Redis]:
    c = connect(cluster.url)
    yield c
    await c.aclose()


async def test_calls_on_every_shard_are_written_and_read_back(cluster: RedisClusterLab, client: aioredis.Redis) -> None:
    assert is_cluster(client)
    store = CallStore(cluster.url, worker="w0", tuning=FAST)
    await store.start()
    calls = [f"call-{n}" for n in range(12)]  # their tags hash to slots on all three primaries
    assert len({cluster.primary_of(keys.call(c)) for c in calls}) == 3
    try:
        for c in calls:
            store.begin(c, caller="+15550100", dialplan="support")
            store.update(c, phase="LISTENING")
            store.event(c, "note", f"line of {c}")
        assert await store.flush()
        live = {s.call_id for s in await store.list_calls()}
        assert live == set(calls)
        for c in calls[:6]:
            store.end(c, "hung up")
        assert await store.flush()
        detail = await store.get_call(calls[0])
        assert detail is not None and detail.state["phase"] == "ENDED" and detail.state["end_reason"] == "hung up"
        assert {s.call_id for s in await store.list_calls()} == set(calls[6:])
        assert await client.ttl(keys.call(calls[0])) > 0 and await client.ttl(keys.call_events(calls[7])) > 0
    finally:
        await store.close()


async def test_sharded_pub_sub_carries_a_channel_to_its_subscriber(cluster: RedisClusterLab) -> None:
    listener, speaker = connect(cluster.url, decode_responses=False), connect(cluster.url)
    got: list[bytes] = []
    task = asyncio.create_task(follow(listener, keys.LISTEN_CONTROL, got.append, "listen control"))
    try:
        channel = keys.LISTEN_CONTROL

        async def heard() -> bool:
            await publish(speaker, channel, b"hello")
            return bool(got)

        await wait_until(heard, what="a sharded message through the cluster")
        assert got[0] == b"hello"
        assert await speaker.pubsub_shardnumsub(channel) and not await speaker.publish(channel, b"plain")  # type: ignore[attr-defined]  # RedisCluster's
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.aclose()
        await speaker.aclose()


async def test_a_primary_killed_mid_call_its_replica_takes_over_and_the_record_completes(
    cluster: RedisClusterLab, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.store")
    store = CallStore(cluster.url, worker="w0", tuning=replace(FAST, retry_cap_s=0.5))
    await store.start()
    call = "call-failover"
    try:
        store.begin(call, caller="+15550100", dialplan="support")
        for n in range(5):
            store.event(call, "note", f"before {n}")
        assert await store.flush()
        primary = cluster.primary_of(keys.call(call))
        await asyncio.to_thread(cluster.kill, primary)
        killed = time.monotonic()
        for n in range(20):  # the call goes on while its shard has no primary
            store.event(call, "note", f"during {n}")
            store.update(call, phase="LISTENING" if n % 2 else "SPEAKING")
            await asyncio.sleep(0.1)
        store.end(call, "hung up")

        async def written() -> bool:
            try:
                return await client.hget(keys.call(call), "phase") == "ENDED"
            except Exception:
                return False

        await wait_until(written, timeout_s=30, what="the call's end written after the failover")
        resumed = time.monotonic() - killed
        assert cluster.primary_of(keys.call(call)) != primary  # the replica was promoted
        entries = await client.xrange(keys.call_events(call))
        summaries = [fields["summary"] for _, fields in entries]
        assert summaries == [f"before {n}" for n in range(5)] + [f"during {n}" for n in range(20)], summaries
        state = await client.hgetall(keys.call(call))
        assert state["end_reason"] == "hung up" and state["caller"] == "+15550100"
        assert store.outages >= 1 and store.dropped_writes == 0
        assert any("unavailable, queueing" in r.message for r in caplog.records)
        assert any("re-synced" in r.message for r in caplog.records)
        # within the cluster's failover time (node timeout, then the election) plus the writer's retry delay
        assert resumed < 2 + 15 * cluster.node_timeout_ms / 1000, resumed
    finally:
        await store.close()
