"""What webhooks may hold (issue 62, item 16), against a real redis-server and real endpoints (every signature and
every body's schema checked): an endpoint's queue keeps its newest past its caps (count and bytes; dead letters go
first; a dropped head lets its call's next event go), counted in ``callbridge_webhooks_dropped_total``; a dead letter
goes after its time; a long string is cut with a marker; a process's memory queue while Redis is away is bounded."""

from __future__ import annotations

import asyncio
import json
import time

import redis.asyncio as aioredis
from _webhooks import Receiver, call_event, routes, running, waker_for
from prometheus_client import REGISTRY

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.store import keys
from bridge.webhooks import queue
from bridge.webhooks.body import CUT_MARK
from bridge.webhooks.delivery import Deliverer, Pace
from bridge.webhooks.limits import Limits
from bridge.webhooks.outbox import Outbox
from bridge.webhooks.signing import new_secret

SECRET = new_secret()
NOWHERE = "http://127.0.0.1:9/hook"


def dropped(endpoint: str, reason: str) -> float:
    return REGISTRY.get_sample_value("callbridge_webhooks_dropped_total", {"endpoint": endpoint, "reason": reason}) or 0


async def written(box: Outbox, within_s: float = 10.0) -> None:
    """Once the outbox has handed everything to Redis."""
    deadline = time.monotonic() + within_s
    while box.queue:
        assert time.monotonic() < deadline, "not written"
        await asyncio.sleep(0.05)


def ended(call: str, seq: int = 1) -> dict[str, object]:
    return call_event("call.ended", call, seq)


async def test_past_its_cap_an_endpoint_keeps_its_newest_and_a_dropped_head_lets_its_call_go_on(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    box = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), routes(("capped", NOWHERE)),
                 limits=Limits(max_events=5))  # fmt: skip
    ids = [box.emit("call.started", call_event("call.started", "c-a", 1), chain="c-a", seq=1)]
    await written(box)
    ids += [box.emit("call.ended", ended(f"c-{i}"), chain=f"c-{i}", seq=1) for i in range(4)]
    await written(box)
    ids += [box.emit("call.ended", ended("c-a", 2), chain="c-a", seq=2)]  # behind c-a's first, in its chain
    await written(box)
    ids += [box.emit("call.ended", ended("c-new"), chain="c-new", seq=1)]
    await box.close()
    kept = [d.id for d in await queue.listing(raw, dead=False)]
    assert kept == ids[2:]  # the two oldest dropped: c-a's first and c-0
    assert dropped("capped", "full") == 2
    due = await raw.zrange(keys.webhooks_of("capped", "due"), 0, -1)
    assert f"capped|{ids[5]}" in due  # c-a's second: its head was dropped, so it is due now
    assert await raw.hget(keys.webhooks_of("capped", "heads"), "c-a") == f"capped|{ids[5]}"
    assert await raw.zcard(keys.webhooks_of("capped", "waiting")) == 0


async def test_the_byte_cap_and_dead_letters_go_first(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    hook = await Receiver(SECRET, answer=lambda n: 500).start()
    found = routes(("bytes", hook.url))
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    box = Outbox(client, found)
    deliverer = Deliverer(raw, found, lambda e: SECRET, waker=waker_for(redis_server.url), pace=Pace(delays=()))
    try:
        dead = [box.emit("call.ended", ended(f"d-{i}"), chain=f"d-{i}", seq=1) for i in range(2)]
        async with running(deliverer):  # no retry: each refusal makes a dead letter
            deadline = time.monotonic() + 10
            while await raw.zcard(keys.webhooks_of("bytes", "dead")) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        await hook.stop()
    size = int(await raw.hget(keys.WEBHOOKS_BYTES, "bytes") or 0) // 2
    died = await queue.dead_times(raw)
    later = max(dead, key=lambda i: died[f"bytes|{i}"])
    box.limits = Limits(max_bytes=int(size * 3.5))  # room for three records
    fresh = [box.emit("call.ended", ended(f"p-{i}"), chain=f"p-{i}", seq=1) for i in range(2)]
    await box.close()
    assert [d.id for d in await queue.listing(raw, dead=True)] == [later]  # the older dead letter went first
    assert [d.id for d in await queue.listing(raw, dead=False)] == fresh
    assert dropped("bytes", "full") == 1
    assert int(await raw.hget(keys.WEBHOOKS_BYTES, "bytes") or 0) <= size * 3.5


async def test_a_dead_letter_goes_after_its_time(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    hook = await Receiver(SECRET, answer=lambda n: 500).start()
    found = routes(("ttl", hook.url))
    box = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), found)
    limits = Limits(dead_ttl_s=1.0)
    deliverer = Deliverer(raw, found, lambda e: SECRET, waker=waker_for(redis_server.url), limits=limits,
                          pace=Pace(delays=(), wait_s=0.2, housekeeping_s=0.2))  # fmt: skip
    try:
        box.emit("call.ended", ended("c-ttl"), chain="c-ttl", seq=1)
        async with running(deliverer):
            deadline = time.monotonic() + 10
            while not await raw.zcard(keys.webhooks_of("ttl", "dead")):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            died = time.monotonic()
            while await raw.zcard(keys.webhooks_of("ttl", "dead")):
                assert time.monotonic() < deadline, "the dead letter outlived its time"
                await asyncio.sleep(0.05)
            gone = time.monotonic()
    finally:
        await box.close()
        await hook.stop()
    assert gone - died >= 0.9
    assert await raw.hlen(keys.WEBHOOKS_DELIVERIES) == 0 and await raw.scard(keys.WEBHOOKS_ENDPOINTS) == 0


async def test_a_callers_long_utterance_is_cut_with_a_marker(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    hook = await Receiver(SECRET).start()
    found = routes(("long", hook.url))
    box = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), found)
    said = "I would like to say " + "a great deal " * 1600  # about 20 kB in one utterance
    data = ended("c-long") | {"transcript": [{"at_s": 1.0, "speaker": "caller", "text": said}]}
    try:
        box.emit("call.ended", data, chain="c-long", seq=1)
        async with running(Deliverer(raw, found, lambda e: SECRET, waker=waker_for(redis_server.url))):
            (got,) = await hook.wait_for(lambda r: len(r) >= 1, 10)
    finally:
        await box.close()
        await hook.stop()
    text = got.body["data"]["transcript"][0]["text"]
    assert text == said[:4000] + CUT_MARK.format(n=len(said) - 4000)
    assert text.endswith(f"…[cut: {len(said) - 4000} more characters]")
    assert len(json.dumps(got.body)) < 6000


async def test_while_redis_is_away_a_process_keeps_only_its_newest_events(tmp_path: object) -> None:
    away = aioredis.from_url(f"redis://127.0.0.1:{free_port()}", decode_responses=True)  # nobody listens there
    box = Outbox(away, routes(("mem", NOWHERE)), limits=Limits(memory_max_events=3))
    ids = [box.emit("call.ended", ended(f"m-{i}"), chain=f"m-{i}", seq=1) for i in range(5)]
    assert [d.id for d in box.queue] == ids[2:]
    assert dropped("mem", "memory") == 2
    size = box.queue[0].size()
    box.limits = Limits(memory_max_bytes=int(size * 2.5))
    more = box.emit("call.ended", ended("m-5"), chain="m-5", seq=1)
    assert [d.id for d in box.queue] == [ids[4], more]
    assert dropped("mem", "memory") == 4 and box.queued_bytes == sum(d.size() for d in box.queue)
    await box.close(within_s=0.2)
