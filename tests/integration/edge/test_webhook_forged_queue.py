"""A webhook queued by a writer of Redis is never delivered: a real ``callbridge serve`` (one worker, its own
redis-server, the emulator) with a webhook endpoint that verifies every Standard Webhooks signature
(``tests/_webhooks.py``). Someone with the Redis password, without the webhook secret, queues its own ``call.ended``
with the product's own queueing script, and a record that is not JSON; then a real call is made. The call's
``call.started`` and ``call.ended`` arrive, signed; the forged ones never do: each is a dead letter at once, counted in
``callbridge_webhooks_refused_total`` and logged without its body."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from _edge import Node, serve_node, wait_report
from _ending import PLAN, metrics_text, sample, webhook_env
from _webhooks import Receiver, call_event

from bridge.store import keys
from bridge.webhooks import queue
from bridge.webhooks.body import envelope
from bridge.webhooks.limits import DEFAULT as LIMITS
from bridge.webhooks.signing import new_id, new_secret
from tests.integration.sip._helpers import RawSip, RtpPeer, in_dialog, open_dialog, sdp_offer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

FORGED_CALL = "forged-call-0001"


async def forge(node: Node) -> list[str]:
    """Queue a forged ``call.ended`` and a record that is not JSON, as a writer of Redis can; their webhook ids."""
    now = time.time()
    body = envelope("call.ended", call_event("call.ended", FORGED_CALL, 2), now).decode()
    forged = queue.Delivery(new_id(), "default", "call.ended", body, now, chain=FORGED_CALL, seq=2)
    garbled = queue.Delivery(new_id(), "default", "call.ended", "", now)
    client = aioredis.from_url(node.redis.url, decode_responses=True)
    try:
        await queue.enqueue(client, [forged], now, LIMITS)
        pipe = client.pipeline(transaction=True)  # what the queueing script does, with a record that is no JSON
        pipe.hset(keys.WEBHOOKS_DELIVERIES, garbled.key, "{not json")
        pipe.sadd(keys.WEBHOOKS_ENDPOINTS, "default")
        pipe.zadd(keys.webhooks_of("default", "pending"), {garbled.key: now})
        pipe.zadd(keys.webhooks_of("default", "due"), {garbled.key: now})
        pipe.rpush(keys.WEBHOOKS_WAKE, "1")
        await pipe.execute()
    finally:
        await client.aclose()
    return [forged.id, garbled.id]


async def refused(node: Node, count: int, within_s: float = 20.0) -> float:
    deadline = time.monotonic() + within_s
    while True:
        n = sample(await metrics_text(node), "callbridge_webhooks_refused_total", endpoint="default")
        if n >= count or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_a_webhook_queued_in_redis_by_another_writer_is_never_delivered(tmp_path: Path) -> None:
    hook = await Receiver(new_secret()).start()
    try:
        async with serve_node(tmp_path / "node", [PLAN], webhook_env(tmp_path, hook)) as node:
            forged_ids = await forge(node)
            with RtpPeer() as caller, RawSip(node.sip_port) as raw:
                final, dialog = open_dialog(raw, sdp_offer(caller.port, {0: "PCMU/8000"}), user="1000")
                assert final.status == 200, final.raw
                assert in_dialog(raw, dialog, "BYE").status == 200
            report = await wait_report(node, dialog.call_id)
            await hook.wait_for(lambda r: any(x.body["type"] == "call.ended" for x in r), 30)
            assert await refused(node, 2) == 2
            log = node.log.read_text(errors="replace")
    finally:
        await hook.stop()
    assert all(r.verified for r in hook.received), [(r.id, r.verified) for r in hook.received]
    assert hook.arrived == len(hook.received)
    assert [r.body["data"]["call_id"] for r in hook.of_type("call.ended")] == [report["call_id"]]
    assert not [r for r in hook.received if r.id in forged_ids]  # never sent, signed or not
    lines = [line for line in log.splitlines() if "refused, a dead letter" in line]
    assert len(lines) == 2 and all(" ERROR " in line for line in lines), lines
    assert "seal does not hold" in "".join(lines) and "not readable" in "".join(lines)
    assert FORGED_CALL not in log and "Hello." not in "".join(lines)  # the body stays out of the log
