"""A forged ``call.ended`` never takes a real call's one ``call.ended`` slot, against a private redis-server, the
outboxes and deliverer a node runs (sealing with the node's key) and a real HTTP endpoint that verifies every
signature. A writer of Redis without the key queues a ``call.ended`` under a real call's id with the product's own
queueing script, and marks the call's slot taken by hand; the call's worker then ends it: its ``call.ended`` is queued
and delivered, the forged one is a dead letter. A reaper's second ``call.ended`` of the same call (the same key) is
still refused as a duplicate: one slot per call for everyone who holds the key."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from _webhooks import Receiver, call_event, routes, running, waker_for
from prometheus_client import REGISTRY

from bridge.devkit.redis_server import EmbeddedRedis
from bridge.store import keys
from bridge.webhooks import queue
from bridge.webhooks.body import envelope
from bridge.webhooks.delivery import Deliverer
from bridge.webhooks.endpoints import DEFAULT
from bridge.webhooks.limits import DEFAULT as LIMITS
from bridge.webhooks.outbox import Outbox
from bridge.webhooks.signing import new_id, new_secret, queue_key

SECRET = new_secret()
SEAL = queue_key("listen-key-of-the-nodes-" + "x" * 16)
CALL = "c-real-0001"


def _count(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"endpoint": DEFAULT}) or 0


async def test_a_forged_call_ended_under_a_real_calls_id_does_not_take_its_slot(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    now = time.time()
    body = envelope("call.ended", call_event("call.ended", CALL, 2, end_reason="forged"), now).decode()
    forged = queue.Delivery(new_id(), DEFAULT, "call.ended", body, now, chain=CALL, seq=2)
    assert (await queue.enqueue(raw, [forged], now, LIMITS)).twice == {}  # the attacker's, with no key
    await raw.zadd(keys.webhooks_of(DEFAULT, "ended"), {CALL: now})  # and the slot as it would be named without one
    twice, refused = _count("callbridge_webhooks_ended_twice_total"), _count("callbridge_webhooks_refused_total")
    hook = await Receiver(SECRET).start()
    found = routes((DEFAULT, hook.url))
    worker = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), found, seal_key=SEAL)
    reaper = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), found, seal_key=SEAL)
    deliverer = Deliverer(raw, found, lambda e: SECRET, waker=waker_for(redis_server.url), seal_key=SEAL)
    try:
        async with running(deliverer):
            assert worker.emit("call.ended", call_event("call.ended", CALL, 2), chain=CALL, seq=2) is not None
            (ended,) = await hook.wait_for(lambda r: len(r) == 1, 10)
            await hook.wait_until(lambda: _count("callbridge_webhooks_refused_total") == refused + 1, 10)
            reaper.emit("call.ended", call_event("call.ended", CALL, 2, end_reason="worker died"), chain=CALL, seq=2)
            await reaper.close()  # flushed: its call.ended met the slot the worker's took
            await worker.close()
    finally:
        await hook.stop()
    assert ended.verified and ended.body["data"]["call_id"] == CALL
    assert ended.body["data"]["end_reason"] == "caller hung up", ended.body["data"]  # the worker's, not the forged
    assert ended.id != forged.id and len(hook.received) == 1
    assert _count("callbridge_webhooks_ended_twice_total") == twice + 1  # the reaper's, refused as a duplicate
    assert [d.id for d in await queue.listing(raw, dead=True)] == [forged.id]  # refused at send, a dead letter
