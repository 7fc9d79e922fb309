"""RolloutStore against a real redis-server: flags, the audit stream, health windows, auto rollback, outages."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from bridge.errors import ConfigError
from bridge.rollout.policy import RolloutFlag
from bridge.rollout.store import RolloutStore
from bridge.store import keys
from bridge.store.calls import StoreUnavailable
from bridge.store.server import EmbeddedRedis

pytestmark = pytest.mark.integration


async def test_set_show_and_audit(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    async with RolloutStore(redis_server.url) as store:
        assert await store.stored_flag("support") is None
        assert await store.get_flag("support") == RolloutFlag() and store.last_source["support"] == "default"
        before = time.time()
        first = await store.set_flag("support", {"ga_percent": 25}, "alice", "ramp up after the canary")
        assert first.changed and first.new.ga_percent == 25 and first.old.ga_percent == 0
        second = await store.set_flag("support", {"allow": ["sip:+1 555 0100@pbx"], "kill": True}, "bob", "incident 42")
        assert second.new.allow == ("+15550100",) and second.new.kill
        assert await store.stored_flag("support") == second.new
        assert await store.dialplans() == ["support"]

        # The hash is readable with redis-cli: one field per setting.
        stored = await raw.hgetall(keys.rollout_flag("support"))
        assert (stored["ga_percent"], stored["kill"], stored["allow"], stored["sticky"]) == (
            "25",
            "1",
            '["+15550100"]',
            "caller",
        )

        audit = await store.audit("support")
        assert [e.who for e in audit] == ["bob", "alice"]  # newest first
        newest, oldest = audit
        assert (oldest.old, oldest.new, oldest.reason) == (
            {"ga_percent": 0},
            {"ga_percent": 25},
            "ramp up after the canary",
        )
        assert newest.old == {"allow": [], "kill": False} and newest.new == {"allow": ["+15550100"], "kill": True}
        when = datetime.fromisoformat(oldest.when.replace("Z", "+00:00"))
        assert when.tzinfo == UTC and before - 1 <= when.timestamp() <= time.time() + 1
        assert await raw.xlen(keys.ROLLOUT_AUDIT) == 2

        unchanged = await store.set_flag("support", {"ga_percent": 25}, "carol", "again")
        assert not unchanged.changed and await raw.xlen(keys.ROLLOUT_AUDIT) == 2


@pytest.mark.parametrize(
    ("changes", "who", "reason", "field"),
    [
        ({"ga_percent": 150}, "alice", "why", "ga_percent"),
        ({"colour": "blue"}, "alice", "why", "colour"),
        ({"ga_percent": 5}, "alice", "  ", "reason"),
        ({"ga_percent": 5}, "", "why", "who"),
        ({"allow": ["+1"], "deny": ["+1"]}, "alice", "why", "(flag)"),
    ],
)
async def test_invalid_changes_are_refused_before_anything_is_written(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, changes: dict[str, object], who: str, reason: str, field: str
) -> None:
    async with RolloutStore(redis_server.url) as store:
        with pytest.raises(ConfigError) as info:
            await store.set_flag("support", changes, who, reason)
        assert info.value.field == field
    assert await raw.keys("*") == []


async def test_a_change_applies_to_the_next_call_without_restart(redis_server: EmbeddedRedis) -> None:
    worker = RolloutStore(redis_server.url)  # a worker's store, alive the whole time
    supervisor = RolloutStore(redis_server.url)  # someone else, e.g. the CLI
    try:
        assert (await worker.decide("support", "+15550100", "call-1")).dialect == "beta"
        await supervisor.set_flag("support", {"ga_percent": 100}, "alice", "full GA")
        decision = await worker.decide("support", "+15550100", "call-2", voice="marin")
        assert (decision.dialect, decision.model, decision.voice) == ("ga", "gpt-realtime", "marin")
        await supervisor.set_flag("support", {"deny": ["+15550100"]}, "alice", "this caller reported trouble")
        assert (await worker.decide("support", "+15550100", "call-3")).reason == "deny list"
    finally:
        await worker.close()
        await supervisor.close()


async def test_concurrent_changes_both_land(redis_server: EmbeddedRedis) -> None:
    stores = [RolloutStore(redis_server.url) for _ in range(4)]
    try:
        await asyncio.gather(
            *(
                s.set_flag("support", {"salt": f"salt-{i}"} if i % 2 else {"min_calls": 10 + i}, f"u{i}", "race")
                for i, s in enumerate(stores)
            )
        )
        assert len(await stores[0].audit("support")) == 4
        flag = await stores[0].stored_flag("support")
        assert flag is not None and flag.min_calls in (10, 12) and flag.salt in ("salt-1", "salt-3")
    finally:
        for s in stores:
            await s.close()


# ------------------------------------------------------------------------------------------------ health, rollback
async def record(store: RolloutStore, dialect: str, ok: int, failed: int = 0, dropped: int = 0) -> None:
    for outcome, n in (("ok", ok), ("connect_failure", failed), ("dropped", dropped)):
        for _ in range(n):
            assert await store.record_outcome(dialect, "support", outcome)


async def test_auto_rollback_fires_on_an_injected_ga_failure_rate_and_is_audited(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    async with RolloutStore(redis_server.url) as store:
        await store.set_flag(
            "support",
            {"ga_percent": 50, "min_calls": 10, "failure_rate_threshold": 0.2, "allow": ["+15550199"]},
            "alice",
            "half GA",
        )
        await record(store, "beta", ok=19, failed=1)  # 5 %
        await record(store, "ga", ok=9)
        assert await store.check_rollback("support") is None  # 9 GA calls: under the minimum sample
        await record(store, "ga", ok=2, failed=3, dropped=2)  # 16 calls, 5 failed: 31 %
        stats = await store.window_stats("support")
        assert (stats["ga"].calls, stats["ga"].failures, stats["beta"].calls) == (16, 5, 20)

        reason = await store.check_rollback("support")
        assert reason is not None and reason.startswith("GA failure rate 31.2%") and "beta's 5.0%" in reason
        assert store.rollbacks == 1
        flag = await store.get_flag("support")
        assert flag.ga_percent == 0 and not flag.kill and flag.allow == ("+15550199",)
        entry = (await store.audit("support"))[0]
        assert (entry.who, entry.reason, entry.old, entry.new) == (
            "auto-rollback",
            reason,
            {"ga_percent": 50},
            {"ga_percent": 0},
        )
        last = (await raw.xrevrange(keys.ROLLOUT_AUDIT, count=1))[0][1]
        assert last["who"] == "auto-rollback" and last["dialplan"] == "support"
        assert await store.check_rollback("support") is None  # nothing left to roll back
        assert store.rollbacks == 1


async def test_no_rollback_when_beta_fails_as_much(redis_server: EmbeddedRedis) -> None:
    async with RolloutStore(redis_server.url) as store:
        await store.set_flag("support", {"ga_percent": 50, "min_calls": 10}, "alice", "half")
        await record(store, "ga", ok=10, failed=5)
        await record(store, "beta", ok=10, failed=10)  # the network, not GA
        assert await store.check_rollback("support") is None
        assert (await store.get_flag("support")).ga_percent == 50


async def test_outcomes_outside_the_window_do_not_count(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    now = [1_000_000.0]
    async with RolloutStore(redis_server.url, clock=lambda: now[0]) as store:
        await store.set_flag("support", {"ga_percent": 50, "min_calls": 5, "window_s": 60}, "alice", "half")
        await record(store, "ga", ok=0, failed=10)
        now[0] += 61
        await record(store, "ga", ok=5)
        assert (await store.window_stats("support"))["ga"].calls == 5
        assert await store.check_rollback("support") is None
        now[0] += keys.HEALTH_RETENTION_S
        await record(store, "ga", ok=1)  # trims what is older than the retention
        assert await raw.zcard(keys.health("support", "ga", "connect_failure")) == 10  # other keys trim on their write
        assert await raw.zcard(keys.health("support", "ga", "ok")) == 1
        assert 0 < await raw.ttl(keys.health("support", "ga", "ok")) <= keys.HEALTH_TTL_S
        # a plan pinned to Live counts its outcomes too (beside the rollout's two arms, which alone decide)
        assert await store.record_outcome("live", "live", "ok")
        assert await raw.zcard(keys.health("live", "live", "ok")) == 1
        assert set(await store.window_stats("live")) == {"beta", "ga"}
    with pytest.raises(ValueError, match="unknown outcome"):
        await RolloutStore(redis_server.url).record_outcome("ga", "support", "meh")
    with pytest.raises(ValueError, match="unknown dialect"):
        await RolloutStore(redis_server.url).record_outcome("gamma", "support", "ok")


# ------------------------------------------------------------------------------------------------ Redis outage
async def test_a_redis_outage_never_blocks_a_call(redis_server: EmbeddedRedis) -> None:
    store = RolloutStore(redis_server.url, defaults={"sales": RolloutFlag(ga_percent=100)}, retry_after_s=0.5)
    try:
        await store.set_flag("support", {"ga_percent": 100}, "alice", "GA")
        assert (await store.get_flag("support")).ga_percent == 100
        await asyncio.to_thread(redis_server.stop)

        t0 = time.monotonic()
        assert (await store.get_flag("support")).ga_percent == 100  # the last flag read
        assert store.last_source["support"] == "cache"
        assert (await store.get_flag("sales")).ga_percent == 100  # never read: the dialplan's default
        assert store.last_source["sales"] == "fallback-default"
        assert (await store.decide("other", "+1555", "c")).dialect == "beta"  # the global default
        assert not await store.record_outcome("ga", "support", "dropped")
        assert await store.check_rollback("support") is None
        assert time.monotonic() - t0 < 1.5
        assert store.read_failures == 1 and store.outcome_failures == 1  # later reads skipped Redis altogether
        with pytest.raises(StoreUnavailable, match=r"Redis unreachable at redis://127\.0\.0\.1"):
            await store.set_flag("support", {"ga_percent": 0}, "alice", "during the outage")

        redis_server.proc = None
        await asyncio.to_thread(redis_server.start)  # empty again: the flag is gone, the default applies
        await asyncio.sleep(0.6)
        assert (await store.get_flag("support")) == RolloutFlag() and store.last_source["support"] == "default"
    finally:
        await store.close()
