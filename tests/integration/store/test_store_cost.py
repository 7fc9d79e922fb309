"""What a call costs its Redis: one round trip per write, the ticking fields with the heartbeat, TTLs set once and
present on every key, and the worker's heartbeat as the one liveness signal (counted with MONITOR on a private
redis-server)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from _store_helpers import wait_until

from bridge.devkit.redis_count import CommandCount
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.store import keys
from bridge.store.calls import CallStore, StoreTuning

pytestmark = pytest.mark.integration

EVENTS = 10
FAST = StoreTuning(
    flush_interval_s=0.05, heartbeat_interval_s=0.5, retry_initial_s=0.05, retry_cap_s=0.3, reap_interval_s=None
)


def store_for(url: str, **tuning: Any) -> CallStore:
    return CallStore(url, worker="w0", tuning=replace(FAST, **tuning))


async def ttls(raw: aioredis.Redis) -> dict[str, int]:
    return {k: await raw.ttl(k) async for k in raw.scan_iter("cb:*")}


async def test_a_ticking_call_writes_its_hash_with_the_heartbeat_and_sets_its_ttl_once(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    store = store_for(redis_server.url)
    frames = [0]
    await store.start()
    try:
        store.begin("c1", caller="+15550100", dialplan="support")
        store.watch("c1", lambda: {"last_user_audio_seq": frames[0]})
        assert await store.flush()
        async with CommandCount(redis_server.url) as count:
            began = time.monotonic()
            for _ in range(EVENTS):  # some 2 s: the probe changes at every flush, as a call's audio does
                frames[0] += 1
                store.event("c1", "note", "a line")  # an event now and then
                await asyncio.sleep(0.2)
            await wait_until(lambda: count.by_command[("call stream", "xadd")] >= EVENTS, what="the events written")
            beats = (time.monotonic() - began) / 0.5 + 2  # heartbeats in that time, one more at each end
        # every 0.5 s with the heartbeat, and with each event's write (last_activity rides along): not every 50 ms
        hsets = count.by_command[("call hash", "hset")]
        assert 0 < hsets <= EVENTS + beats, (beats, count.by_command)
        assert count.by_command[("call hash", "expire")] == 0, count.by_command  # set at creation, not per write
        assert count.by_command[("call stream", "expire")] == 1, count.by_command  # with its first entry, once
        assert count.by_command[("worker heartbeat", "set")] <= beats, (beats, count.by_command)
        assert count.by_command[("worker heartbeat", "exists")] == 0 and count.by_kind["workers"] == 0, count.by_kind
        # what the probe read last is in Redis within a heartbeat, without a flush
        await wait_until(lambda: _field_is(raw, "c1", "last_user_audio_seq", str(frames[0])), what="the tick in Redis")
        for key, ttl in (await ttls(raw)).items():  # every key but the set of workers has a TTL
            assert ttl > 0 or key == keys.WORKERS, (key, ttl)
        store.end("c1", "hung up")
        assert await store.flush()
        for key, ttl in (await ttls(raw)).items():
            assert ttl > keys.CALL_TTL_S - 60 or key in (keys.WORKERS, keys.worker_heartbeat("w0")), (key, ttl)
        assert await raw.hget(keys.call("c1"), "phase") == "ENDED"
    finally:
        await store.close()


async def _field_is(raw: aioredis.Redis, call_id: str, name: str, value: str) -> bool:
    return await raw.hget(keys.call(call_id), name) == value


async def test_one_round_trip_per_write(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    """A write of several calls' changes, entries and the heartbeat reaches Redis as one pipeline: the server sees it
    from one connection in one burst (MONITOR's lines carry the same client and consecutive), and the store's
    client opened one connection for it."""
    store = store_for(redis_server.url)
    await store.start()
    try:
        assert await store.flush()
        before = (await raw.info("stats"))["total_connections_received"]
        async with CommandCount(redis_server.url) as count:
            for n in range(5):
                store.begin(f"c{n}", dialplan="support")
                store.event(f"c{n}", "note", "one")
                store.update(f"c{n}", phase="LISTENING")
            assert await store.flush()
        assert count.by_command[("call hash", "hset")] == 5 and count.by_command[("call stream", "xadd")] == 5
        assert count.by_command[("call hash", "expire")] == 5 and count.by_command[("call stream", "expire")] == 5
        assert store.flushes >= 2  # the writer's own
        after = (await raw.info("stats"))["total_connections_received"]
        assert after - before <= 2  # MONITOR's and at most one new one of the store's pool, not one per command
        assert count.bursts <= 2, count.bursts  # the 27 commands in one write (two if a tick raced the flush)
    finally:
        await store.close()


async def test_a_restarted_empty_redis_gets_every_ttl_again(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    store = store_for(redis_server.url)
    await store.start()
    try:
        store.begin("c1", dialplan="support")
        store.event("c1", "note", "one")
        assert await store.flush()
        await raw.flushall()
        store.request_resync()
        assert await store.flush()
        found = await ttls(raw)
        assert {keys.call("c1"), keys.call_events("c1"), keys.worker_calls("w0")} <= set(found), found
        for key, ttl in found.items():
            assert ttl > 0 or key == keys.WORKERS, (key, ttl)
    finally:
        await store.close()
