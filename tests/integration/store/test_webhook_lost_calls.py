"""A call whose worker died ends in exactly one ``call.ended`` (issue 62 item 9), against real parts: a private
redis-server, two workers' call stores and webhook hooks as a worker runs them (``bridge.serve.webhooks.CallHooks``),
the deliverer, and a real HTTP endpoint that verifies every signature (``standardwebhooks``) and every body against
docs/webhooks.schema.json. Here another worker's reaper finds the dead worker from its expired heartbeat; the pool's
own path (``bridge.serve.lost``) with a real `callbridge serve` is in tests/integration/serve."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from _webhooks import Receiver, routes, running, waker_for
from prometheus_client import REGISTRY
from test_webhook_delivery import settled

from bridge import events as ev
from bridge.call.report import CallReport
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.dialplan import Dialplan
from bridge.rollout.policy import Decision
from bridge.serve.webhooks import CallHooks
from bridge.store import keys
from bridge.store.calls import CallStore, StoreTuning
from bridge.webhooks.delivery import Deliverer
from bridge.webhooks.endpoints import DEFAULT
from bridge.webhooks.outbox import Outbox
from bridge.webhooks.signing import new_secret

SECRET = new_secret()
PLAN = Dialplan(name="support", match=("100",), dialect="ga")


@dataclass
class Incoming:
    """What the hooks read of an incoming call."""

    call_id: str = "c-lost"
    caller: str = "+15551234567"
    called: str = "100"
    original_called: str = ""  # not forwarded
    sip_call_id: str = "a84b4c76e66710@pc33.example"


def twice(endpoint: str = DEFAULT) -> float:
    return REGISTRY.get_sample_value("callbridge_webhooks_ended_twice_total", {"endpoint": endpoint}) or 0


async def test_a_dead_workers_call_found_by_another_workers_reaper_ends_in_one_call_ended_after_its_start(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    hook = await Receiver(SECRET).start()
    found = routes((DEFAULT, hook.url))
    call = Incoming()
    dead = CallStore(
        redis_server.url, worker="127.0.0.1:9", tuning=StoreTuning(heartbeat_ttl_s=1, reap_interval_s=None)
    )
    reaper = CallStore(redis_server.url, worker="w-reaper", tuning=StoreTuning(reap_interval_s=0.1))
    reaper.reaper.probe = None  # an expired heartbeat is death (serve's workers ask it over SIP first)
    own = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), found)
    other = Outbox(aioredis.from_url(redis_server.url, decode_responses=True), found)
    hooks, reaping = CallHooks(own, tmp_path), CallHooks(other, tmp_path)
    reaper.on_lost = reaping.lost
    before = twice()
    try:
        async with running(Deliverer(raw, found, lambda e: SECRET, waker=waker_for(redis_server.url))):
            # the worker answers a call: call.started (seq 1) is delivered, the answer and the seq are in its hash
            await dead.start()
            dead.begin(call.call_id, caller="+*******4567", called=call.called, dialplan="support", variant="ga",
                       dialect="ga", model="gpt-x", voice="alloy")  # fmt: skip
            dead.update(call.call_id, sip_call_id=call.sip_call_id)  # as the worker does
            listen = hooks.listener(call, PLAN, Decision("ga", "ga", "gpt-x", "alloy", "r"), "ga", dead)
            listen(ev.Answered())
            await hook.wait_for(lambda r: len(r) == 1, 10)
            assert await dead.flush()
            await dead.close()  # killed with the call live: its heartbeat runs out, nobody ends the call
            await reaper.start()
            (started, ended) = await hook.wait_for(lambda r: len(r) == 2, 20)
            assert (await raw.hgetall(keys.call(call.call_id)))["end_reason"] == "worker died"

            # the worker was only stalled: it comes back and ends the call itself, too late; nothing more is sent
            report = CallReport(call.call_id, "ga", "support")
            report.end_reason, report.ended_by = "caller hung up", ev.EndedBy.CALLER
            assert hooks.ended(call.call_id, report, {}) is not None  # emitted, and refused by the queue
            await own.close()
            await settled(raw)
    finally:
        await reaper.close()
        await other.close()
        await hook.stop()
    assert [r.body["type"] for r in hook.received] == ["call.started", "call.ended"] and started.verified
    data = ended.body["data"]
    assert (data["call_id"], data["seq"], started.body["data"]["seq"]) == (call.call_id, 2, 1)
    assert (data["end_reason"], data["ended_by"], data["outcome"]) == ("worker died", "fault", "failed")
    assert data["sip_call_id"] == call.sip_call_id == started.body["data"]["sip_call_id"]
    assert data["answered_at"] == started.body["data"]["answered_at"] and data["duration_s"] > 0
    assert data["caller"] == started.body["data"]["caller"] == "•" * 10 + "67"  # viewer, as before the death
    assert twice() == before + 1
    left = await raw.keys("cb:{webhooks}:*")
    assert sorted(left) == [keys.webhooks_of(DEFAULT, "ended"), keys.WEBHOOKS_WAKE] or sorted(left) == [
        keys.webhooks_of(DEFAULT, "ended")
    ]  # the call is remembered (for a day), nothing else is left
    assert 0 < await raw.ttl(keys.webhooks_of(DEFAULT, "ended")) <= keys.CALL_TTL_S
    assert json.dumps(data).count("4567") == 0  # the number stays masked
