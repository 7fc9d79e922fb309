"""A worker's take-over hub on a real Redis: the supervisor's audio, sealed by serve, published on the call's channel
reaches the call's leg, and audio a stranger writes straight into Redis (plain, replayed, another supervisor's) does
not; once no audio comes for the idle limit, the hub hands the call back to the model by itself (no caller
is left with a muted agent and nobody speaking); a hand-back stops the feed."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from bridge import events as ev
from bridge import metrics
from bridge.audio.analysis import tone
from bridge.call.takeover import TakeOverLeg
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.serve import takeover as hub_module
from bridge.serve.takeover import NOBODY, TakeOverHub
from bridge.store import keys
from bridge.supervisor.listen_token import seal

KEY = b"k" * 32


class Leg:
    def __init__(self) -> None:
        self.call_id, self.caller, self.called = "c-1", "+15550100", "100"
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.disconnected = asyncio.Event()


async def wait_until(condition: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_audio_reaches_the_leg_and_silence_hands_the_call_back(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "IDLE_S", 0.6)
    hub = TakeOverHub(aioredis.from_url(redis_server.url, decode_responses=False), KEY)
    publisher = aioredis.from_url(redis_server.url, decode_responses=False)
    leg = TakeOverLeg(Leg())  # type: ignore[arg-type]  # Leg has only what the proxy uses of a PhoneLeg
    hub.add(leg)
    inbox: list[ev.Event] = []
    try:
        assert not hub.begin("c-2", "sam", inbox.append)  # not this worker's call
        assert hub.begin("c-1", "sam", inbox.append) and leg.active
        voice = tone(1400.0, 0.1)
        channel = keys.takeover_audio("c-1")
        await wait_until(lambda: hub._feeds)  # the feed task runs; its subscription follows at once
        heard, sealed = 0, seal(KEY, "c-1", "sam", voice)
        refused = metrics.TAKEOVER_REFUSED._value.get()
        for _ in range(250):  # the hub's subscription is on its way
            if heard := await publisher.publish(channel, tone(400.0, 0.02)):  # plain PCM: dropped
                break
            await asyncio.sleep(0.02)
        assert heard == 1
        for forged in (seal(KEY, "c-1", "mallory", tone(400.0, 0.02)), seal(b"x" * 32, "c-1", "sam", voice)):
            await publisher.publish(channel, forged)
        await publisher.publish(channel, sealed)
        await publisher.publish(channel, sealed)  # replayed: dropped
        # in order: the plain one, the two forged ones and the replay refused, the sealed one played
        await wait_until(lambda: metrics.TAKEOVER_REFUSED._value.get() == refused + 4)
        assert leg.queued == 5
        assert b"".join(leg.next_frame() for _ in range(5)) == voice
        # nobody sends any more: handed back by the hub, through the call's inbox
        await wait_until(lambda: not leg.active, within=3.0)
        assert inbox == [ev.SupervisorAction(ev.SupervisorKind.HANDBACK, NOBODY)]
        assert await publisher.publish(channel, sealed) == 0  # the subscription is gone

        # a hand-back by the supervisor: the feed stops, nothing is delivered
        assert hub.begin("c-1", "sam", inbox.append)
        hub.end("c-1")
        assert not leg.active
        await asyncio.sleep(0.1)
        assert await publisher.publish(channel, sealed) == 0 and len(inbox) == 1
    finally:
        await hub.close()
        await publisher.aclose()
