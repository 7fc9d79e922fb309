"""The call state writer through a Redis failover, with real servers: a planned ``SENTINEL FAILOVER`` (the old
primary stays up and writable for seconds before Sentinel demotes it) is followed at the switch, logged with the new
primary's address, and loses nothing; and after any stall the dead-worker reaper gives the other workers, stalled
too, time to write their heartbeats again before it calls them dead."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis
from bridge.devkit.sentinel import SERVICE, SentinelSet, sentinel_binaries
from bridge.store import keys
from bridge.store.calls import CallStore, StoreTuning, reap_dead_workers

pytestmark = pytest.mark.integration


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, within_s: float = 30.0) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what}: not within {within_s} s")


@dataclasses.dataclass
class Feed:
    """A live call's records: a tick event and the audio sequence, one every ``every_s``."""

    store: CallStore
    every_s: float
    sent: int = 0

    async def run(self) -> None:
        while True:
            self.sent += 1
            self.store.event("c1", "tick", str(self.sent))
            self.store.update("c1", last_user_audio_seq=self.sent)
            await asyncio.sleep(self.every_s)


@pytest.fixture
def sentinels(tmp_path: Path) -> Any:
    if sentinel_binaries() is None:
        pytest.skip("redis-server and redis-sentinel are not installed (apt-get install redis-server redis-sentinel)")
    redis_set = SentinelSet(tmp_path)
    yield redis_set
    redis_set.stop()


async def test_a_planned_failover_is_followed_at_the_switch_and_loses_no_write(
    sentinels: SentinelSet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.store")
    await wait_for(sentinels.ready, "master, replica and sentinel up")
    # a short heartbeat: a writer left on the old primary would be "dead" on the new one within seconds (but not in
    # the second or two between the replica's promotion and Sentinel's announcing it)
    store = CallStore(sentinels.url, worker="w1", tuning=StoreTuning(heartbeat_interval_s=0.3, heartbeat_ttl_s=5))
    new_primary = aioredis.Redis(port=sentinels.replica_port, decode_responses=True)
    switches = sentinels.sentinel_client().pubsub()
    await switches.subscribe("+switch-master")
    feed = Feed(store, 0.02)  # a live call's records, one every 20 ms
    reaped: dict[str, list[str]] = {}

    async def other_nodes_reaper() -> None:  # another node's reaper on the new primary, as often as it likes
        while True:
            try:
                for worker, calls in (await reap_dead_workers(new_primary)).items():
                    reaped.setdefault(worker, []).extend(calls)
            except (aioredis.RedisError, OSError):
                pass
            await asyncio.sleep(0.1)

    await store.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        store.begin("c1", caller="+15550100", dialplan="support")
        tasks.append(asyncio.create_task(feed.run()))

        async def replicated() -> bool:
            return int(await new_primary.xlen(keys.call_events("c1"))) > 10

        await wait_for(replicated, "the call's records on the replica")
        tasks.append(asyncio.create_task(other_nodes_reaper()))
        await sentinels.failover()
        message = await wait_for(lambda: switches.get_message(ignore_subscribe_messages=True, timeout=0.5), "+switch")
        assert str(message["data"]).split()[3:] == ["127.0.0.1", str(sentinels.replica_port)]
        at_switch = feed.sent

        async def resumed() -> bool:
            seq = await new_primary.hget(keys.call("c1"), "last_user_audio_seq")
            return seq is not None and int(seq) > at_switch

        await wait_for(resumed, "writes on the new primary after the switch", 3.0)  # the bound
        moved = [r.getMessage() for r in caplog.records if "primary moved" in r.getMessage()]
        assert any(f"127.0.0.1:{sentinels.replica_port}" in line for line in moved), moved
        for task in tasks:
            task.cancel()
        assert await store.flush(10.0), store.last_error
        # every record arrived, once and in order (what went to the old primary was re-synced), and the call is live
        entries = await new_primary.xrange(keys.call_events("c1"))
        ticks = [int(fields["summary"]) for _, fields in entries if fields["kind"] == "tick"]
        assert ticks == list(range(1, feed.sent + 1)), (len(ticks), feed.sent)
        state = await new_primary.hgetall(keys.call("c1"))
        assert state["phase"] != "ENDED" and not state.get("end_reason"), state
        assert state["last_user_audio_seq"] == str(feed.sent)
        assert await new_primary.sismember(keys.worker_calls("w1"), "c1")
        assert not reaped, reaped
        assert store.primary_watch is not None and store.primary_watch.switches == 1
    finally:
        for task in tasks:
            task.cancel()
        await switches.aclose()  # type: ignore[no-untyped-call]
        await store.close()
        await new_primary.aclose()
        assert await sentinels.master_address() == ("127.0.0.1", sentinels.replica_port), SERVICE


async def test_a_connection_that_finds_the_primary_moved_before_the_watch_does_waits_for_the_resync(
    sentinels: SentinelSet, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch hears nothing (closed here; under load its ``+switch-master`` can come after Sentinel has killed the
    old primary's clients): the writer's pool reconnects, the sentinels name the new primary, and that connection
    is refused until a re-sync carries what went to the old primary first. Without it, new entries landed first and
    the re-synced older ones were refused as out of order: lost."""
    caplog.set_level(logging.INFO, logger="bridge.store")
    await wait_for(sentinels.ready, "master, replica and sentinel up")
    store = CallStore(sentinels.url, worker="w1", tuning=StoreTuning(heartbeat_interval_s=0.3, heartbeat_ttl_s=5))
    new_primary = aioredis.Redis(port=sentinels.replica_port, decode_responses=True)
    feed = Feed(store, 0.1)  # a record every 100 ms: the seconds the old primary stays writable fit the tail

    await store.start()
    task = asyncio.create_task(feed.run())
    try:
        store.begin("c1", caller="+15550100", dialplan="support")

        async def replicated() -> bool:
            return int(await new_primary.xlen(keys.call_events("c1"))) > 10

        await wait_for(replicated, "the call's records on the replica")
        assert store.primary_watch is not None
        await store.primary_watch.close()
        await sentinels.failover()
        await wait_for(lambda: _true(store.primary_watch is not None and store.primary_watch.switches == 1), "the move")
        at_move = feed.sent

        async def resumed() -> bool:
            seq = await new_primary.hget(keys.call("c1"), "last_user_audio_seq")
            return seq is not None and int(seq) > at_move

        await wait_for(resumed, "writes on the new primary")
        task.cancel()
        assert await store.flush(10.0), store.last_error
        entries = await new_primary.xrange(keys.call_events("c1"))
        ticks = [int(fields["summary"]) for _, fields in entries if fields["kind"] == "tick"]
        assert ticks == list(range(1, feed.sent + 1)), (len(ticks), feed.sent)
        moved = [r.getMessage() for r in caplog.records if "primary moved" in r.getMessage()]
        assert len(moved) == 1 and f"127.0.0.1:{sentinels.replica_port}" in moved[0], moved
        assert not [r for r in caplog.records if "unavailable" in r.getMessage()]  # a move, not an outage
    finally:
        task.cancel()
        await store.close()
        await new_primary.aclose()


@pytest.mark.parametrize("grace_s, reaped", [(15.0, False), (0.0, True)], ids=["grace", "no-grace"])
async def test_after_a_stall_the_reaper_waits_for_the_others_to_write_again(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, grace_s: float, reaped: bool
) -> None:
    """Redis stops answering for longer than B's heartbeat lives. A reconnects at once, B only seconds later (its
    backoff): A's reaper must not call B dead in between. Without the grace (the control case) it does."""
    often = StoreTuning(heartbeat_interval_s=0.2, heartbeat_ttl_s=1)  # both write all the time, so both see the stall
    a_tuning = dataclasses.replace(often, retry_initial_s=0.05, reap_interval_s=0.1, reap_grace_s=grace_s)
    a = CallStore(redis_server.url, worker="a", tuning=a_tuning)
    b = CallStore(redis_server.url, worker="b", tuning=dataclasses.replace(often, retry_initial_s=6.0))
    async with a, b:
        b.begin("b-call", caller="+15550101")
        assert await b.flush() and await a.flush()
        assert redis_server.proc is not None
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:

            async def both_stalled_past_bs_heartbeat() -> bool:
                return a.writes_waiting > 0 and b.writes_waiting > b.tuning.heartbeat_ttl_s + 0.5

            await wait_for(both_stalled_past_bs_heartbeat, "both writers stalled, longer than B's heartbeat lives")
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)

        async def a_back() -> bool:
            return a.writes_waiting == 0 and a.connected

        await wait_for(a_back, "A writing again")
        if reaped:
            await wait_for(lambda: _true(a.reaped_calls > 0), "A's reaper marking B's call ended")
            assert (await raw.hget(keys.call("b-call"), "end_reason")) == "worker died"
            return
        await wait_for(lambda: _true(b.writes_waiting == 0 and b.resyncs > 0), "B re-synced")
        assert a.reaped_calls == 0
        state = await raw.hgetall(keys.call("b-call"))
        assert state["phase"] != "ENDED" and not state.get("end_reason"), state


async def _true(value: bool) -> bool:
    return value
