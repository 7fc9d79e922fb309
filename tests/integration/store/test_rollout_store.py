"""RolloutStore against a real redis-server: flags of variants, migration of the flags before variants, the audit
stream, health windows per variant, automatic rollback with its numbers, outages."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis
from bridge.errors import ConfigError
from bridge.rollout.health import CallStats
from bridge.rollout.policy import RolloutSpec, Variant
from bridge.rollout.store import RolloutStore
from bridge.store import keys
from bridge.store.connection import StoreUnavailable

pytestmark = pytest.mark.integration

SUPPORT = RolloutSpec(
    safe="gpt-realtime",
    variants=(
        Variant(name="gpt-realtime", dialect="ga", model="gpt-realtime", weight=100),
        Variant(name="gpt-realtime-2.1", dialect="ga", model="gpt-realtime-2.1", fallback_model="gpt-realtime"),
    ),
)
NEW, SAFE = "gpt-realtime-2.1", "gpt-realtime"
SPECS = {"support": SUPPORT}


def store_of(redis_server: EmbeddedRedis, **kw: Any) -> RolloutStore:
    return RolloutStore(redis_server.url, specs=SPECS, **kw)


async def test_set_show_and_audit(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    async with store_of(redis_server) as store:
        assert await store.stored_flag("support") is None
        default = await store.get_flag("support")
        assert default.weights == {SAFE: 100, NEW: 0} and store.last_source["support"] == "default"
        before = time.time()
        first = await store.set_flag("support", {"weights": {SAFE: 75, NEW: 25}}, "alice", "ramp up after the canary")
        assert first.changed and first.new.weights == {SAFE: 75, NEW: 25} and first.old.weights == {SAFE: 100, NEW: 0}
        second = await store.set_flag(
            "support", {"allow": {NEW: ["sip:+1 555 0100@pbx"]}, "kill": True}, "bob", "incident 42"
        )
        assert second.new.allow == {NEW: ("+15550100",)} and second.new.kill
        assert await store.stored_flag("support") == second.new
        assert await store.dialplans() == ["support"]

        # The hash is readable with redis-cli: one field per setting, objects as JSON.
        stored = await raw.hgetall(keys.rollout_flag("support"))
        assert json.loads(stored["weights"]) == {SAFE: 75, NEW: 25}
        assert (stored["kill"], stored["allow"], stored["sticky"], stored["cost_ratio_threshold"]) == (
            "1", '{"gpt-realtime-2.1": ["+15550100"]}', "caller", "null",
        )  # fmt: skip

        audit = await store.audit("support")
        assert [e.who for e in audit] == ["bob", "alice"]  # newest first
        newest, oldest = audit
        assert (oldest.old, oldest.new, oldest.reason) == (
            {"weights": {SAFE: 100, NEW: 0}},
            {"weights": {SAFE: 75, NEW: 25}},
            "ramp up after the canary",
        )
        assert newest.old == {"allow": {}, "kill": False}
        assert newest.new == {"allow": {NEW: ["+15550100"]}, "kill": True}
        when = datetime.fromisoformat(oldest.when.replace("Z", "+00:00"))
        assert when.tzinfo == UTC and before - 1 <= when.timestamp() <= time.time() + 1
        assert await raw.xlen(keys.ROLLOUT_AUDIT) == 2

        unchanged = await store.set_flag("support", {"weights": {SAFE: 75, NEW: 25}}, "carol", "again")
        assert not unchanged.changed and await raw.xlen(keys.ROLLOUT_AUDIT) == 2


@pytest.mark.parametrize(
    ("changes", "who", "reason", "field"),
    [
        ({"weights": {"gpt-realtime-3": 5}}, "alice", "why", "weights.gpt-realtime-3"),
        ({"weights": {SAFE: 0, NEW: 0}}, "alice", "why", "weights"),
        ({"deny": {SAFE: ["+1"]}}, "alice", "why", f"deny.{SAFE}"),
        ({"colour": "blue"}, "alice", "why", "colour"),
        ({"ga_percent": 5}, "alice", "why", "ga_percent"),  # the old setting is read, never written
        ({"kill": True}, "alice", "  ", "reason"),
        ({"kill": True}, "", "why", "who"),
        ({"allow": {NEW: ["+1"]}, "deny": {NEW: ["+1"]}}, "alice", "why", "(flag)"),
    ],
)
async def test_invalid_changes_are_refused_before_anything_is_written(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, changes: dict[str, object], who: str, reason: str, field: str
) -> None:
    async with store_of(redis_server) as store:
        with pytest.raises(ConfigError) as info:
            await store.set_flag("support", changes, who, reason)
        assert info.value.field == field, info.value
    assert await raw.keys("*") == []


async def test_a_change_applies_to_the_next_call_without_restart(redis_server: EmbeddedRedis) -> None:
    worker = store_of(redis_server)  # a worker's store, alive the whole time
    supervisor = store_of(redis_server)  # someone else, e.g. the CLI
    try:
        assert (await worker.decide("support", "+15550100", "call-1")).variant == SAFE
        await supervisor.set_flag("support", {"weights": {NEW: 100, SAFE: 0}}, "alice", "all on 2.1")
        decision = await worker.decide("support", "+15550100", "call-2", voice="marin")
        assert (decision.variant, decision.dialect, decision.model, decision.voice) == (NEW, "ga", NEW, "marin")
        await supervisor.set_flag("support", {"deny": {NEW: ["+15550100"]}}, "alice", "this caller reported trouble")
        denied = await worker.decide("support", "+15550100", "call-3")
        assert denied.variant == SAFE and denied.reason.endswith(f"deny list of {NEW} -> {SAFE}")
    finally:
        await worker.close()
        await supervisor.close()


async def test_a_flag_stored_before_variants_is_migrated_on_read_and_rewritten_by_the_next_change(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    legacy = {"ga_percent": "30", "sticky": "caller", "salt": "callbridge", "allow": '["+15550101"]',
              "deny": '["+15550102"]', "kill": "0", "model_selection": "auto", "ga_model": "gpt-realtime",
              "legacy_model": "gpt-4o-realtime-preview", "fallback_voice": "alloy", "window_s": "300",
              "min_calls": "20", "failure_rate_threshold": "0.2"}  # fmt: skip
    await raw.hset(keys.rollout_flag("canary"), mapping=legacy)  # a plan with no rollout section: GA against beta
    await raw.hset(keys.rollout_flag("support"), mapping={"ga_percent": "10"})  # a plan with variants
    await raw.sadd(keys.ROLLOUT_DIALPLANS, "canary", "support")
    async with store_of(redis_server) as store:
        assert await store.adopt_unsealed(["canary", "support", "sales"], "callbridge serve") == ["canary", "support"]
        canary = await store.get_flag("canary")
        assert store.last_source["canary"] == "redis"
        assert canary.weights == {"ga": 30, "beta": 70}
        assert (canary.allow, canary.deny) == ({"ga": ("+15550101",)}, {"ga": ("+15550102",)})
        assert (await store.decide("canary", "+15550101", "c")).variant == "ga"
        support = await store.get_flag("support")
        assert support.weights == {SAFE: 90, NEW: 10}  # the first variant that is not the safe one
        change = await store.set_flag("support", {"kill": True}, "alice", "after the migration")
        assert change.old.weights == {SAFE: 90, NEW: 10} and change.new.kill
    stored = await raw.hgetall(keys.rollout_flag("support"))
    assert "ga_percent" not in stored and json.loads(stored["weights"]) == {SAFE: 90, NEW: 10}


async def test_concurrent_changes_both_land(redis_server: EmbeddedRedis) -> None:
    stores = [store_of(redis_server) for _ in range(4)]
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
def call(outcome: str = "ok", *, first_reply_ms: float = 500.0, cost: float | None = 0.01) -> dict[str, Any]:
    stats = CallStats()
    stats.unavailable = outcome == "connect_failure"
    stats.dropped = outcome == "dropped"
    stats.first_reply_ms = first_reply_ms
    stats.cost_usd = cost
    return stats.record()


async def record(store: RolloutStore, variant: str, ok: int, failed: int = 0, dropped: int = 0) -> None:
    for outcome, n in (("ok", ok), ("connect_failure", failed), ("dropped", dropped)):
        for _ in range(n):
            assert await store.record_call("support", variant, call(outcome))


async def test_auto_rollback_fires_on_an_injected_failure_rate_and_is_audited_with_the_numbers(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    async with store_of(redis_server) as store:
        await store.set_flag(
            "support",
            {"weights": {SAFE: 50, NEW: 50}, "min_calls": 10, "failure_rate_threshold": 0.2,
             "allow": {NEW: ["+15550199"]}},
            "alice",
            "half on 2.1",
        )  # fmt: skip
        await record(store, SAFE, ok=19, failed=1)  # 5 %
        await record(store, NEW, ok=9)
        assert await store.check_rollback("support") == []  # 9 calls: under the minimum sample
        await record(store, NEW, ok=2, failed=3, dropped=2)  # 16 calls, 5 failed: 31 %
        stats = await store.window("support")
        assert (stats[NEW].calls, stats[NEW].failures, stats[SAFE].calls) == (16, 5, 20)
        assert stats[NEW].first_reply_p95_ms == 500.0 and stats[NEW].cost_per_call == pytest.approx(0.01)

        [rollback] = await store.check_rollback("support")
        assert rollback.variant == NEW
        assert rollback.reason.startswith(f"{NEW}: failure rate 31.2% (3 connection failures + 2 dropped of 16 calls")
        assert "the safe variant's 5.0% (1 of 20)" in rollback.reason
        assert store.rollbacks == 1
        flag = await store.get_flag("support")
        assert flag.weights == {SAFE: 100, NEW: 0} and not flag.kill and flag.allow == {NEW: ("+15550199",)}
        entry = (await store.audit("support"))[0]
        assert (entry.who, entry.reason, entry.old, entry.new) == (
            "auto-rollback", rollback.reason, {"weights": {SAFE: 50, NEW: 50}}, {"weights": {SAFE: 100, NEW: 0}},
        )  # fmt: skip
        numbers = entry.evidence
        assert (numbers["variant"]["name"], numbers["variant"]["calls"], numbers["variant"]["connect_failures"]) == (
            NEW, 16, 3,
        )  # fmt: skip
        assert (numbers["variant"]["dropped"], numbers["variant"]["failure_rate"]) == (2, 0.3125)
        assert (numbers["safe"]["name"], numbers["safe"]["calls"], numbers["safe"]["failure_rate"]) == (SAFE, 20, 0.05)
        last = (await raw.xrevrange(keys.ROLLOUT_AUDIT, count=1))[0][1]
        assert last["who"] == "auto-rollback" and last["dialplan"] == "support" and json.loads(last["evidence"])
        assert await store.check_rollback("support") == []  # nothing left to roll back
        assert store.rollbacks == 1


async def test_a_slow_variant_is_rolled_back_when_its_rule_checks_the_first_reply(redis_server: EmbeddedRedis) -> None:
    async with store_of(redis_server) as store:
        await store.set_flag(
            "support", {"weights": {SAFE: 1, NEW: 1}, "min_calls": 5, "first_audio_p95_excess_ms": 300}, "a", "b"
        )
        for _ in range(5):
            await store.record_call("support", SAFE, call(first_reply_ms=400))
            await store.record_call("support", NEW, call(first_reply_ms=650))
        assert await store.check_rollback("support") == []  # 250 ms slower: within 300
        await store.record_call("support", NEW, call(first_reply_ms=1200))
        [rollback] = await store.check_rollback("support")
        assert "first-reply p95 1200 ms is 800 ms above the safe variant's 400 ms" in rollback.reason


async def test_no_rollback_when_the_safe_variant_fails_as_much(redis_server: EmbeddedRedis) -> None:
    async with store_of(redis_server) as store:
        await store.set_flag("support", {"weights": {SAFE: 50, NEW: 50}, "min_calls": 10}, "alice", "half")
        await record(store, NEW, ok=10, failed=5)
        await record(store, SAFE, ok=10, failed=10)  # the network, not the variant
        assert await store.check_rollback("support") == []
        assert (await store.get_flag("support")).weights == {SAFE: 50, NEW: 50}


async def test_calls_outside_the_window_do_not_count(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    now = [1_000_000.0]
    async with store_of(redis_server, clock=lambda: now[0]) as store:
        await store.set_flag("support", {"weights": {NEW: 1, SAFE: 1}, "min_calls": 5, "window_s": 60}, "a", "half")
        await record(store, NEW, ok=0, failed=10)
        now[0] += 61
        await record(store, NEW, ok=5)
        assert (await store.window("support"))[NEW].calls == 5
        assert await store.check_rollback("support") == []
        now[0] += keys.HEALTH_RETENTION_S
        await record(store, NEW, ok=1)  # trims what is older than the retention
        assert await raw.zcard(keys.variant_calls("support", NEW)) == 1
        assert 0 < await raw.ttl(keys.variant_calls("support", NEW)) <= keys.HEALTH_TTL_S


async def test_calls_an_older_version_recorded_during_a_rolling_upgrade_still_count(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    """Before the per-variant hash tags a window lived under ``{rollout}``; a worker of that version, still running
    beside this one, writes there, and a rollback decided here counts its calls too."""
    async with store_of(redis_server) as store:
        await store.set_flag("support", {"weights": {NEW: 1, SAFE: 1}, "min_calls": 20}, "a", "half")
        now = time.time()
        for i in range(20):  # what the older worker wrote: every call of the new variant failed
            member = json.dumps({"t": now, "id": f"old{i}", **call("connect_failure")})
            await raw.zadd(keys.variant_calls_untagged("support", NEW), {member: now})
        await record(store, SAFE, ok=20)
        await record(store, NEW, ok=1)
        stats = await store.window("support")
        assert (stats[NEW].calls, stats[NEW].failures) == (21, 20)
        (rollback,) = await store.check_rollback("support")
        assert rollback.variant == NEW


# ------------------------------------------------------------------------------------------------ Redis outage
async def test_a_redis_outage_never_blocks_a_call(redis_server: EmbeddedRedis) -> None:
    sales = SUPPORT.model_copy(update={"variants": (SUPPORT.variants[0].model_copy(update={"weight": 0}),
                                                    SUPPORT.variants[1].model_copy(update={"weight": 1}))})  # fmt: skip
    store = RolloutStore(redis_server.url, specs={**SPECS, "sales": sales}, retry_after_s=0.5)
    try:
        await store.set_flag("support", {"weights": {NEW: 1}}, "alice", "all on 2.1")
        assert (await store.get_flag("support")).weights == {NEW: 1}
        await asyncio.to_thread(redis_server.stop)

        t0 = time.monotonic()
        assert (await store.get_flag("support")).weights == {NEW: 1}  # the last flag read
        assert store.last_source["support"] == "cache"
        assert (await store.get_flag("sales")).weights == {SAFE: 0, NEW: 1}  # never read: the dialplan's default
        assert store.last_source["sales"] == "fallback-default"
        assert (await store.decide("other", "+1555", "c")).variant == "beta"  # an unknown plan: GA against beta
        assert not await store.record_call("support", NEW, call("dropped"))
        assert await store.check_rollback("support") == []
        assert time.monotonic() - t0 < 1.5
        assert store.read_failures == 1 and store.record_failures == 1  # later reads skipped Redis altogether
        with pytest.raises(StoreUnavailable, match=r"Redis unreachable at redis://127\.0\.0\.1"):
            await store.set_flag("support", {"kill": True}, "alice", "during the outage")

        redis_server.proc = None
        await asyncio.to_thread(redis_server.start)  # empty again: the flag is gone, the default applies
        await asyncio.sleep(0.6)
        assert (await store.get_flag("support")) == SUPPORT.default_flag() and store.last_source["support"] == "default"
    finally:
        await store.close()
