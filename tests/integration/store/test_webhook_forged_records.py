"""A delivery record written to Redis by hand that is no JSON is data, against a real redis-server: the listing
(``callbridge webhooks list``) and a claim show it as an unreadable delivery of its key instead of failing on it, and
the other deliveries of the endpoint are listed and claimed beside it."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis
from bridge.store import keys
from bridge.webhooks import queue
from bridge.webhooks.limits import DEFAULT as LIMITS

pytestmark = pytest.mark.integration


async def test_a_record_that_is_no_json_is_listed_and_claimed_as_unreadable(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    now = time.time()
    good = queue.Delivery("msg_good", "default", "call.started", '{"type":"call.started"}', now)
    await queue.enqueue(raw, [good], now, LIMITS)
    pipe = raw.pipeline(transaction=True)  # what the queueing script does, with a record that is no JSON
    pipe.hset(keys.WEBHOOKS_DELIVERIES, "default|msg_bad", "{not json")
    pipe.zadd(keys.webhooks_of("default", "pending"), {"default|msg_bad": now})
    pipe.zadd(keys.webhooks_of("default", "due"), {"default|msg_bad": now})
    await pipe.execute()

    listed = {d.key: d for d in await queue.listing(raw, dead=False)}
    assert sorted(listed) == ["default|msg_bad", "default|msg_good"]
    assert listed["default|msg_bad"].refusal(None) == "its record in Redis is not readable"
    assert listed["default|msg_good"].refusal(None) is None
    got = await queue.claim(raw, "default", time.time(), 30.0, 10, LIMITS.dead_ttl_s)
    assert sorted((d.id, d.type) for d in got.deliveries) == [("msg_bad", ""), ("msg_good", "call.started")]
    bad = next(d for d in got.deliveries if d.id == "msg_bad")
    assert await queue.settle(raw, bad, got.lease, "dead", time.time(), LIMITS.dead_ttl_s, time.time())
    assert [d.key for d in await queue.listing(raw, dead=True)] == ["default|msg_bad"]
