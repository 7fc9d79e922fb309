"""How the deliverer spends Redis and time, against real parts (a private redis-server counted with ``MONITOR``, real
HTTP endpoints that verify every signature and every body's schema) (issue 62, items 14, 13, 10):

* idle: with no endpoint configured ``serve``'s webhooks issue no Redis command at all; with one, an idle node's
  only command is one blocking wait, and an event queued wakes it at once (no polling);
* a slow endpoint fills its own slots only: another endpoint's deliveries go on meanwhile;
* a call's events reach each endpoint in order (``seq``): a later one waits for the earlier one's delivery or dead
  letter, while other calls' events go on.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from _webhooks import Receiver, call_event, routes, running, waker_for

from bridge.config import Settings
from bridge.devkit.redis_count import CommandCount
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.serve.webhooks import start_node
from bridge.webhooks.delivery import Deliverer, Pace
from bridge.webhooks.endpoints import DEFAULT
from bridge.webhooks.outbox import Outbox
from bridge.webhooks.signing import new_secret

ROOT = Path(__file__).resolve().parents[3]
SECRET = new_secret()
QUIET_S = 3.0  # an idle node is watched this long for a command (the old deliverer polled 4 times a second)


async def first_command(count: CommandCount, within_s: float, ignore: frozenset[str] = frozenset()) -> list[Any]:
    """The commands ``count`` saw (those named in ``ignore`` aside) once there is one, or after ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        seen = [(kind, cmd) for (kind, cmd), n in count.by_command.items() if n and cmd not in ignore]
        if seen:
            return seen
        await asyncio.sleep(0.05)
    return []


async def test_with_no_endpoint_serves_webhooks_issue_no_redis_command(redis_server: EmbeddedRedis,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    settings = Settings(redis_url=redis_server.url, dialplans=ROOT / "dialplans", spool_dir=tmp_path)
    async with CommandCount(redis_server.url) as count:
        node = start_node(settings)
        assert node is not None  # a reload may add an endpoint: the deliverer runs, idle
        try:
            seen = await first_command(count, QUIET_S)
        finally:
            await node.close()
    assert seen == [], f"commands while no endpoint is configured: {dict(count.by_command)}"


async def test_an_idle_node_only_waits_on_redis_and_an_event_wakes_it_at_once(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    hook = await Receiver(SECRET).start()
    secret_file = tmp_path / "whsec"
    secret_file.write_text(SECRET)
    settings = Settings(redis_url=redis_server.url, dialplans=ROOT / "dialplans", spool_dir=tmp_path,
                        webhook_url=hook.url, webhook_secret=SECRET)  # type: ignore[arg-type]  # fmt: skip
    try:
        async with CommandCount(redis_server.url) as count:
            node = start_node(settings)
            assert node is not None
            try:
                assert await first_command(count, 10, frozenset()) != []
                deadline = time.monotonic() + 10
                while not count.by_command[("webhooks", "blpop")]:  # started: now it waits
                    assert time.monotonic() < deadline, dict(count.by_command)
                    await asyncio.sleep(0.05)
                count.by_command.clear()
                idle = await first_command(count, QUIET_S)
                sent_at = time.monotonic()
                msg_id = node.outbox.emit("call.ended", call_event("call.ended", "c-idle", 1), chain="c-idle", seq=1)
                (got,) = await hook.wait_for(lambda r: len(r) >= 1, 10)
            finally:
                await node.close()
    finally:
        await hook.stop()
    assert idle == [], f"an idle node's commands: {idle}"
    assert got.id == msg_id and got.verified
    assert got.at - sent_at < 2.0  # woken by the event, not by a timer (the wait is 30 s)


async def test_a_slow_endpoint_never_holds_back_another(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    release = asyncio.Event()
    slow = await Receiver(SECRET, hold=release).start()
    fast = await Receiver(SECRET).start()
    found = routes(("slow", slow.url), ("fast", fast.url))
    box = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), found)
    box.start()
    deliverer = Deliverer(raw, found, lambda e: SECRET, waker=waker_for(redis_server.url), pace=Pace(timeout_s=30))
    try:
        async with running(deliverer):
            first = box.emit("call.ended", call_event("call.ended", "c-0", 1), chain="c-0", seq=1)
            await slow.wait_until(lambda: slow.arrived >= 1, 10)  # the slow endpoint holds it
            later = [box.emit("call.ended", call_event("call.ended", f"c-{i}", 1), chain=f"c-{i}", seq=1)
                     for i in range(1, 8)]  # fmt: skip
            await fast.wait_for(lambda r: len(r) >= 8, 5)
            held = (slow.arrived, len(slow.received))
            release.set()
            await slow.wait_for(lambda r: len(r) >= 8, 20)
    finally:
        await box.close()
        await slow.stop()
        await fast.stop()
    assert sorted(r.id for r in fast.received) == sorted([first, *later])  # while the slow one still held its own
    assert held == (4, 0)  # the slow endpoint had its 4 slots full, none answered
    assert sorted(r.id for r in slow.received) == sorted([first, *later])


async def test_a_calls_events_arrive_in_order_while_other_calls_go_on(redis_server: EmbeddedRedis,
                                                                     raw: aioredis.Redis) -> None:  # fmt: skip
    tried: dict[tuple[str, str], int] = {}

    def answer(body: dict[str, Any]) -> int:
        """c1's call.started is refused once, c3's always; the rest are taken."""
        key = (body["data"]["call_id"], body["type"])
        tried[key] = tried.get(key, 0) + 1
        if key == ("c3", "call.started") or (key == ("c1", "call.started") and tried[key] == 1):
            return 503
        return 204

    hook = await Receiver(SECRET, by_body=answer).start()
    found = routes((DEFAULT, hook.url))
    box = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), found)
    box.start()
    deliverer = Deliverer(raw, found, lambda e: SECRET, waker=waker_for(redis_server.url), pace=Pace(delays=(0.5,)))
    try:
        for call in ("c1", "c3"):
            for seq, kind in enumerate(("call.started", "call.transferred", "call.ended"), 1):
                box.emit(kind, call_event(kind, call, seq), chain=call, seq=seq)
        box.emit("call.started", call_event("call.started", "c2", 1), chain="c2", seq=1)
        async with running(deliverer):
            await hook.wait_for(lambda r: len(r) == 9, 20)  # c1: 4 requests, c2: 1, c3: 2 refused, then 2
    finally:
        await box.close()
        await hook.stop()
    order = {c: [(r.body["type"], r.body["data"]["seq"], r.answered) for r in hook.received
                 if r.body["data"]["call_id"] == c] for c in ("c1", "c2", "c3")}  # fmt: skip
    assert order["c1"] == [("call.started", 1, 503), ("call.started", 1, 204), ("call.transferred", 2, 204),
                           ("call.ended", 3, 204)]  # fmt: skip
    assert order["c3"] == [("call.started", 1, 503), ("call.started", 1, 503),  # then a dead letter: the next go
                           ("call.transferred", 2, 204), ("call.ended", 3, 204)]  # fmt: skip
    c2 = next(r for r in hook.received if r.body["data"]["call_id"] == "c2")
    c1_done = next(r for r in hook.received if r.body["data"]["call_id"] == "c1" and r.answered == 204)
    assert c2.at < c1_done.at  # another call's event never waits behind c1's refused one
