"""Delivery against real parts: Redis (a private redis-server), real HTTP endpoints (aiohttp servers that verify
every signature with the ``standardwebhooks`` package and every body against docs/webhooks.schema.json), the outbox
and the deliverer as ``serve`` and its workers run them."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from _webhooks import Receiver, call_event, running, schema_errors, waker_for
from _webhooks import routes as named_routes

from bridge.devkit.redis_server import EmbeddedRedis
from bridge.store import keys
from bridge.store.connection import OutageLog
from bridge.webhooks import queue
from bridge.webhooks.delivery import Deliverer, Pace
from bridge.webhooks.endpoints import DEFAULT, Endpoint
from bridge.webhooks.lane import Lane, LaneSetup
from bridge.webhooks.limits import DEFAULT as LIMITS
from bridge.webhooks.outbox import SPOOL_SUBDIR, SUFFIX, Outbox
from bridge.webhooks.signing import new_secret

SECRET = new_secret()


def routes(url: str) -> Callable[[], Mapping[str, Endpoint]]:
    return named_routes((DEFAULT, url))


def deliverer(client: aioredis.Redis, url: str, **kw: Any) -> Deliverer:
    """A deliverer on the connection pool's server, with its own client for the blocking wait; ``kw``: its pace."""
    waker = waker_for(f"redis://{client.connection_pool.connection_kwargs['host']}:"
                      f"{client.connection_pool.connection_kwargs['port']}")  # fmt: skip
    return Deliverer(client, routes(url), lambda e: SECRET, waker=waker, pace=Pace(**kw))


async def outbox(url: str, redis_url: str, spool: Path | None = None) -> Outbox:
    box = Outbox(aioredis.from_url(redis_url, decode_responses=True), routes(url), spool)
    box.start()
    return box


async def settled(client: aioredis.Redis, within_s: float = 10.0) -> None:
    """Once nothing is pending or dead in Redis."""
    deadline = time.monotonic() + within_s
    while await client.hlen(keys.WEBHOOKS_DELIVERIES) or await client.scard(keys.WEBHOOKS_ENDPOINTS):
        assert time.monotonic() < deadline, "deliveries still stored"
        await asyncio.sleep(0.05)


async def queued(client: aioredis.Redis, n: int, within_s: float = 10.0) -> None:
    """Once ``n`` deliveries are pending in Redis."""
    deadline = time.monotonic() + within_s
    while (await queue.backlog(client, time.time()))[0] < n:
        assert time.monotonic() < deadline, "not queued"
        await asyncio.sleep(0.05)


async def test_an_event_arrives_signed_once_and_leaves_nothing_behind(redis_server: EmbeddedRedis,
                                                                      raw: aioredis.Redis) -> None:  # fmt: skip
    hook = await Receiver(SECRET).start()
    box = await outbox(hook.url, redis_server.url)
    try:
        msg_id = box.emit("call.ended", call_event("call.ended", "c1", 1), chain="c1", seq=1)
        async with running(deliverer(raw, hook.url)):
            (got,) = await hook.wait_for(lambda r: len(r) >= 1, 10)
            await settled(raw)  # delivered: gone from Redis, so no second send can come
    finally:
        await box.close()
        await hook.stop()
    assert got.verified and got.id == msg_id and got.answered == 204
    assert got.body["type"] == "call.ended" and got.body["data"]["call_id"] == "c1"
    assert len(hook.received) == 1
    left = [k for k in await raw.keys("cb:{webhooks}:*") if k != keys.WEBHOOKS_WAKE]
    assert left == [keys.webhooks_of(DEFAULT, "ended")]  # no index, no chain, no byte count left behind: only the
    assert await raw.zrange(left[0], 0, -1) == ["c1"] and await raw.ttl(left[0]) > 0  # call.ended's, for a while
    stored = json.dumps([await raw.type(k) for k in await raw.keys("*")])
    assert SECRET not in stored


async def test_a_503_gets_the_same_id_again_within_seconds(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    hook = await Receiver(SECRET, answer=lambda n: 503 if n == 0 else 200).start()
    box = await outbox(hook.url, redis_server.url)
    try:
        msg_id = box.emit("call.started", call_event("call.started", "c2", 1))
        async with running(deliverer(raw, hook.url)):
            first, again = await hook.wait_for(lambda r: len(r) >= 2, 30)
    finally:
        await box.close()
        await hook.stop()
    assert (first.answered, again.answered) == (503, 200)
    assert first.id == again.id == msg_id and first.verified and again.verified
    assert first.body == again.body  # the same bytes, signed again with the attempt's timestamp
    assert 4.0 <= again.at - first.at < 15.0  # the schedule's first retry: 5 s
    assert await raw.hlen(keys.WEBHOOKS_DELIVERIES) == 0


async def test_a_redirect_is_not_followed(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    hook = await Receiver(SECRET).start()
    moved = hook.url.replace("/hook", "/redirect")
    box = await outbox(moved, redis_server.url)
    try:
        msg_id = box.emit("call.ended", call_event("call.ended", "c3", 1))
        async with running(deliverer(raw, moved)) as d:
            deadline = time.monotonic() + 10
            while not (records := await queue.listing(raw, dead=False)) or not records[0].attempts:
                assert time.monotonic() < deadline, "no attempt"
                await asyncio.sleep(0.1)
            due = await queue.due_times(raw)
            del d
    finally:
        await box.close()
        await hook.stop()
    assert hook.moved == []  # the redirect's target never heard of it
    (record,) = records
    assert (record.id, record.attempts, record.last) == (msg_id, 1, "redirect 302 not followed")
    assert due[record.key] > time.time()  # pending, due again after the schedule's delay


async def test_a_slow_endpoint_times_out_and_is_tried_again(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    from aiohttp import web

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slow"
    box = await outbox(url, redis_server.url)
    try:
        box.emit("call.ended", call_event("call.ended", "c4", 1))
        async with running(deliverer(raw, url, timeout_s=0.5)):
            deadline = time.monotonic() + 10
            while not (records := await queue.listing(raw, dead=False)) or not records[0].attempts:
                assert time.monotonic() < deadline, "no attempt"
                await asyncio.sleep(0.1)
    finally:
        await box.close()
        await runner.cleanup()
    assert records[0].last == "timeout"


async def test_two_deliverers_never_send_one_event_twice(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    hook = await Receiver(SECRET).start()
    box = await outbox(hook.url, redis_server.url)
    other = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        ids = [box.emit("call.ended", call_event("call.ended", f"c{i}", 1)) for i in range(40)]
        await queued(raw, 40)  # all queued before either deliverer starts: they race for each one
        async with running(deliverer(raw, hook.url)), running(deliverer(other, hook.url)):
            await hook.wait_for(lambda r: len(r) >= 40, 20)
            await settled(raw)
    finally:
        await box.close()
        await other.aclose()
        await hook.stop()
    got = [r.id for r in hook.received]
    assert sorted(got) == sorted(ids) and len(set(got)) == 40


async def test_a_deliverer_that_dies_with_a_claim_leaves_it_to_another_after_the_lease(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    hook = await Receiver(SECRET).start()
    box = await outbox(hook.url, redis_server.url)
    started = time.monotonic()
    try:
        msg_id = box.emit("call.ended", call_event("call.ended", "c5", 1))
        await queued(raw, 1)
        got_claim = await queue.claim(raw, DEFAULT, time.time(), 1.0, 10, LIMITS.dead_ttl_s)  # one claims, then dies
        lease, (claimed,) = got_claim.lease, got_claim.deliveries
        assert claimed.id == msg_id and got_claim.next_due == lease
        async with running(deliverer(raw, hook.url)):
            (got,) = await hook.wait_for(lambda r: len(r) >= 1, 5)
            assert got.at >= started + 1.0 - 0.05  # leased: nobody else sent it before the lease ran out
        assert not await queue.settle(raw, claimed, lease, "done", time.time(), LIMITS.dead_ttl_s, time.time())
    finally:
        await box.close()
        await hook.stop()
    assert got.id == msg_id and got.verified


async def test_the_listing_shows_a_claimed_delivery_in_flight_with_its_deliverer_and_lease(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    box = await outbox("http://127.0.0.1:9/hook", redis_server.url)
    env = {"CALLBRIDGE_REDIS_URL": redis_server.url}
    try:
        msg_id = box.emit("call.ended", call_event("call.ended", "c7", 1))
        await queued(raw, 1)
        got = await queue.claim(raw, DEFAULT, time.time(), 60.0, 10, LIMITS.dead_ttl_s, holder="node-b pid 77")
        (claimed,) = got.deliveries
        code, text = await cli(env, "list")
        assert code == 0, text
        assert f"{DEFAULT}|{msg_id}" in text and "in flight: leased by node-b pid 77 until " in text, text
        assert " due " not in text, text  # a lease's end is no due time
        code, listed = await cli(env, "list", "--json")
        (row,) = json.loads(listed)
        assert row["in_flight"]["by"] == "node-b pid 77"
        assert abs(datetime.fromisoformat(row["in_flight"]["until"]).timestamp() - got.lease) < 0.01
        # its attempt failed: due again, nobody's
        assert await queue.settle(raw, claimed, got.lease, "retry", time.time() + 300, LIMITS.dead_ttl_s, time.time())
        (row,) = json.loads((await cli(env, "list", "--json"))[1])
        assert row["in_flight"] is None and row["due"] is not None
        assert not await raw.hlen(keys.webhooks_of(DEFAULT, "leases"))  # settling removed the note
        # claimed by a deliverer that then stopped: once the lease ran out, it is due again, not in flight
        await raw.zadd(keys.webhooks_of(DEFAULT, "due"), {claimed.key: time.time()})
        short = await queue.claim(raw, DEFAULT, time.time(), 0.2, 10, LIMITS.dead_ttl_s, holder="node-c pid 9")
        assert short.deliveries
        await asyncio.sleep(max(0.0, short.lease - time.time()) + 0.05)
        code, text = await cli(env, "list")
        assert "in flight" not in text and " due " in text, text
    finally:
        await box.close()


async def test_past_the_last_retry_a_dead_letter_that_retry_sends_again(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    answers = {"status": 500}
    hook = await Receiver(SECRET, answer=lambda n: answers["status"]).start()
    box = await outbox(hook.url, redis_server.url)
    env = {"CALLBRIDGE_REDIS_URL": redis_server.url}
    try:
        msg_id = box.emit("call.ended", call_event("call.ended", "c6", 1))
        async with running(deliverer(raw, hook.url, delays=(0.2, 0.2))):
            await hook.wait_for(lambda r: len(r) >= 3, 10)
            deadline = time.monotonic() + 5
            while not await raw.zcard(keys.webhooks_of(DEFAULT, "dead")):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            code, listed = await cli(env, "list", "--dead", "--json")
            assert code == 0, listed
            (dead,) = json.loads(listed)
            assert (dead["id"], dead["endpoint"], dead["attempts"], dead["last"]) == (msg_id, DEFAULT, 3, "500")
            assert "body" not in dead  # the listing shows where and why, not the call's data
            answers["status"] = 200
            code, said = await cli(env, "retry", "--all")
            assert code == 0 and "1 dead letter" in said, said
            await hook.wait_for(lambda r: r[-1].answered == 200, 10)
    finally:
        await box.close()
        await hook.stop()
    assert {r.id for r in hook.received} == {msg_id} and len(hook.received) == 4
    assert await raw.zcard(keys.webhooks_of(DEFAULT, "dead")) == 0 and await raw.hlen(keys.WEBHOOKS_DELIVERIES) == 0


async def cli(env: Mapping[str, str], *args: str) -> tuple[int, str]:
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "webhooks", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_events_wait_in_memory_while_redis_is_away_and_in_the_spool_at_stop(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    port = redis_server.port
    hook = await Receiver(SECRET).start()
    box = await outbox(hook.url, redis_server.url, tmp_path)
    try:
        await asyncio.to_thread(redis_server.stop)
        waited = box.emit("call.ended", call_event("call.ended", "in-memory", 1))
        deadline = time.monotonic() + 10
        while not box._outage.down:  # the outbox met Redis away
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert [d.id for d in box.queue] == [waited]  # Redis away: kept
        with EmbeddedRedis(port=port) as back:  # back (empty): the outbox writes it
            client = aioredis.from_url(back.url, decode_responses=True)
            deadline = time.monotonic() + 10  # the queue empties as a batch is taken out to be written: ask Redis
            while [d.id for d in await queue.listing(client, dead=False)] != [waited]:
                assert time.monotonic() < deadline, "not written after Redis came back"
                await asyncio.sleep(0.1)
            assert not box.queue
            await client.aclose()
        spooled = box.emit("call.ended", call_event("call.ended", "spooled", 1))
        await box.close(within_s=0.5)  # a stop while Redis is away: to the spool
        files = list((tmp_path / SPOOL_SUBDIR).glob(f"*{SUFFIX}"))
        assert len(files) == 1 and oct(files[0].stat().st_mode & 0o777) == "0o600"
        with EmbeddedRedis(port=port) as again:  # back, empty again (no persistence)
            client = aioredis.from_url(again.url, decode_responses=True)
            nxt = await outbox(hook.url, again.url, tmp_path)  # the next start queues the spool first
            async with running(deliverer(client, hook.url)):
                (got,) = await hook.wait_for(lambda r: len(r) >= 1, 10)
            await nxt.close()
            await client.aclose()
    finally:
        await hook.stop()
    assert got.id == spooled and got.body["data"]["call_id"] == "spooled"
    assert not list((tmp_path / SPOOL_SUBDIR).iterdir())


async def test_a_workers_call_events_are_queued_with_each_endpoints_caller(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    """The worker's hooks fed the reports a call emits: call.started at the answer, call.transferred at a warm
    transfer's join, call.ended from the report; each endpoint gets the caller in the form it asked for."""
    from bridge import events as ev
    from bridge.call.report import CallReport
    from bridge.dialplan import Dialplan
    from bridge.rollout.policy import Decision
    from bridge.serve.webhooks import CallHooks
    from bridge.webhooks.endpoints import endpoints

    plan = Dialplan.model_validate({
        "name": "support", "match": ["1000"],
        "webhooks": [{"url": "https://crm.example/h", "secret": {"env": "X"}, "caller": "full", "name": "crm"},
                     {"url": "https://qa.example/h", "secret": {"env": "Y"}, "events": ["call.ended"], "name": "qa"}],
    })  # fmt: skip
    box = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), lambda: endpoints(None, [plan]))
    hooks = CallHooks(box, tmp_path)
    from types import SimpleNamespace

    call = SimpleNamespace(call_id="c-1", caller="+15551234567", called="1000", original_called="",
                           sip_call_id="a84b@pc33.example")  # fmt: skip
    listen = hooks.listener(call, plan, Decision("ga", "ga", "gpt-x", "alloy", "r"), "ga")
    report = CallReport("c-1", "ga", "support")
    for t, r in [(5.0, ev.Answered()), (900.0, ev.AgentSaid("Hello.", "a")), (2000.0, ev.CallerSaid("A human.", "b")),
                 (4000.0, ev.WarmTransferEnded(ev.TransferOutcome.COMPLETED, "sip:agent@pbx", 200, 3.5)),
                 (9000.0, ev.CallEnded("transferred", ev.CallOutcome.TRANSFERRED, ev.EndedBy.AGENT))]:  # fmt: skip
        report.note(t, r)
        listen(r)
    report.end_reason, report.ended_by = "transferred", ev.EndedBy.AGENT
    msg_id = hooks.ended("c-1", report, {"variant": "ga", "model": "gpt-x", "cost_usd": 0.01, "usage": {}})
    await box.close()
    got = {(d.endpoint, json.loads(d.body)["type"]): d for d in await queue.listing(raw, dead=False)}
    assert {k: schema_errors(json.loads(d.body)) for k, d in got.items()} == {k: [] for k in got}  # as published
    assert sorted(got) == [("support.crm", "call.ended"), ("support.crm", "call.started"),
                           ("support.crm", "call.transferred"), ("support.qa", "call.ended")]  # fmt: skip
    crm, qa = (json.loads(got[(e, "call.ended")].body)["data"] for e in ("support.crm", "support.qa"))
    assert got[("support.crm", "call.ended")].id == got[("support.qa", "call.ended")].id == msg_id
    assert crm["caller"] == "+15551234567" and qa["caller"] == "•" * 10 + "67"
    assert crm["sip_call_id"] == qa["sip_call_id"] == "a84b@pc33.example"  # the carrier's and the PBX's name for it
    seqs = {t: (d.chain, d.seq, json.loads(d.body)["data"]["seq"]) for (e, t), d in got.items() if e == "support.crm"}
    assert seqs == {"call.started": ("c-1", 1, 1), "call.transferred": ("c-1", 2, 2), "call.ended": ("c-1", 3, 3)}
    assert got[("support.qa", "call.ended")].seq == 3  # the call's own numbering: qa takes call.ended only
    moved = json.loads(got[("support.crm", "call.transferred")].body)["data"]
    assert (moved["mode"], moved["target"], moved["outcome"]) == ("warm", "sip:agent@pbx", "completed")
    assert (crm["outcome"], crm["ended_by"], crm["model"], crm["cost"]["usd"]) == (
        "transferred",
        "agent",
        "gpt-x",
        0.01,
    )
    assert [t["speaker"] for t in crm["transcript"]] == ["agent", "caller"]
    assert crm["answered_at"] is not None and crm["duration_s"] >= 0


async def test_a_lane_whose_attempts_all_end_in_one_turn_claims_again_at_once(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    """Four attempts (the lane's concurrency) settle, then end in the same turn of the loop: each pokes the lane
    before its task is done, and the lane must still see four free slots and claim the next four at once, not sleep
    until its idle look (an hour here) for a poke that already came."""
    box = await outbox("http://127.0.0.1:9/hook", redis_server.url)
    release, attempted = asyncio.Event(), []

    async def attempt(d: queue.Delivery, lease: float) -> None:
        attempted.append(d.id)
        assert await queue.settle(raw, d, lease, "done", time.time(), LIMITS.dead_ttl_s, time.time())
        await release.wait()  # every attempt of a claim ends in the turn after the release

    setup = LaneSetup(raw, attempt, OutageLog(logging.getLogger("test"), "webhooks"), 60.0, LIMITS.dead_ttl_s,
                      concurrency=4, idle_s=3600.0)  # fmt: skip
    lane = Lane(DEFAULT, setup)
    try:
        for i in range(8):
            box.emit("call.ended", call_event("call.ended", f"c{i}", 1))
        await queued(raw, 8)
        lane.start()
        deadline = time.monotonic() + 10
        while len(attempted) < 4:
            assert time.monotonic() < deadline, attempted
            await asyncio.sleep(0.01)
        release.set()
        while len(attempted) < 8:
            assert time.monotonic() < deadline, f"the lane slept with free slots: {len(attempted)} of 8 attempted"
            await asyncio.sleep(0.01)
    finally:
        await lane.close()
        await box.close()
    assert len(set(attempted)) == 8
