"""Only the product's rollout flags are obeyed (bridge/rollout/seal.py, RolloutStore) against a real redis-server:
a raw ``HSET``, a deleted hash and an old signed hash put back are not obeyed (the last valid flag is, each refusal
logged at ERROR once and counted; with no valid entry left, the safe variant); without a key the audit alone
vouches; a change and its audit entry are one transaction; the audit names the OS user beside the claimed ``who``;
``serve`` seals at start a served plan's flag stored before flags were sealed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from bridge.config import Settings
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.rollout.policy import RolloutSpec, Variant
from bridge.rollout.store import RolloutStore
from bridge.serve.pool import _seal_rollout_flags
from bridge.store import keys

pytestmark = pytest.mark.integration

SAFE, NEW = "safe", "new"
SPECS = {
    "support": RolloutSpec(
        safe=SAFE,
        variants=(
            Variant(name=SAFE, dialect="ga", model="gpt-realtime", weight=100),
            Variant(name=NEW, dialect="ga", model="gpt-realtime-2.1"),
        ),
    )
}
FLAG = keys.rollout_flag("support")
KEY = b"a-rollout-key-of-the-store-test"


def refused() -> float:
    return REGISTRY.get_sample_value("callbridge_rollout_flag_refused_total", {"dialplan": "support"}) or 0.0


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the stored flag is not obeyed" in r.getMessage()]


@pytest.mark.parametrize("key", [(KEY,), ()], ids=["signed", "audit-only"])
async def test_a_raw_write_is_not_obeyed_and_is_logged_once_per_change(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture, key: tuple[bytes, ...]
) -> None:
    async with RolloutStore(redis_server.url, specs=SPECS, rollout_keys=key) as supervisor:
        await supervisor.set_flag("support", {"weights": {SAFE: 90, NEW: 10}}, "alice", "a canary")
    before = refused()
    async with RolloutStore(redis_server.url, specs=SPECS, rollout_keys=key) as worker:
        assert (await worker.get_flag("support")).weights == {SAFE: 90, NEW: 10}
        await raw.hset(FLAG, "weights", json.dumps({SAFE: 0, NEW: 100}))
        with caplog.at_level(logging.ERROR, logger="bridge.rollout"):
            flags = [await worker.get_flag("support") for _ in range(3)]
        assert [f.weights for f in flags] == [{SAFE: 90, NEW: 10}] * 3
        decided = [(await worker.decide("support", f"+1555010{i}", f"c{i}")).variant for i in range(10)]
        assert decided.count(NEW) < 5, decided  # the signed 10 %, not the written 100 %
        assert len(refusals(caplog)) == 1 and refused() == before + 1
        assert await worker.stored_flag("support") == flags[0]  # what `rollout show` and the rollback check see

        await raw.delete(FLAG)  # a deleted hash: the audit still has the last valid flag
        with caplog.at_level(logging.ERROR, logger="bridge.rollout"):
            assert (await worker.get_flag("support")).weights == {SAFE: 90, NEW: 10}
        assert "the stored flag is gone" in refusals(caplog)[-1] and refused() == before + 2

        # the same weights again over a refused hand-written hash: not "unchanged", the flag in force rewritten
        await raw.hset(FLAG, "weights", json.dumps({SAFE: 0, NEW: 100}))
        same = await worker.set_flag("support", {"weights": {SAFE: 90, NEW: 10}}, "carol", "put the canary back")
        assert same.changed and same.old == same.new and same.new.weights == {SAFE: 90, NEW: 10}
        assert json.loads(await raw.hget(FLAG, "weights")) == {SAFE: 90, NEW: 10}
        again = await worker.set_flag("support", {"weights": {SAFE: 90, NEW: 10}}, "carol", "once more")
        assert not again.changed  # now the stored hash is the obeyed one: nothing to write

        # a change by the product ends the refusal, from the last valid flag
        await raw.delete(FLAG)
        change = await worker.set_flag("support", {"kill": True}, "bob", "incident")
        assert change.old.weights == {SAFE: 90, NEW: 10} and change.new.kill
        assert (await worker.get_flag("support")).kill and len(refusals(caplog)) == 4  # the write and the delete


async def test_an_old_signed_flag_put_back_or_another_key_is_not_obeyed(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with RolloutStore(redis_server.url, specs=SPECS, rollout_keys=(KEY,)) as store:
        await store.set_flag("support", {"weights": {SAFE: 50, NEW: 50}}, "alice", "half")
        old = await raw.hgetall(FLAG)
        await store.set_flag("support", {"kill": True}, "bob", "incident 42")
    await raw.delete(FLAG)
    await raw.hset(FLAG, mapping=old)  # the signed flag from before the kill switch, replayed
    with caplog.at_level(logging.ERROR, logger="bridge.rollout"):
        async with RolloutStore(redis_server.url, specs=SPECS, rollout_keys=(KEY,)) as worker:
            assert (await worker.get_flag("support")).kill
        async with RolloutStore(redis_server.url, specs=SPECS, rollout_keys=(b"another-key-of-another-node",)) as other:
            flag = await other.get_flag("support")
    assert flag.kill and other.last_source["support"] == "fail-safe"  # no entry it can trust: the safe variant
    assert "a later audit entry" in refusals(caplog)[0] and "calls follow the last valid flag" in refusals(caplog)[0]
    assert "calls follow the safe variant safe (no audit entry of the plan is valid here)" in refusals(caplog)[1]


async def test_concurrent_changes_each_write_their_flag_with_their_signed_entry(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    stores = [RolloutStore(redis_server.url, specs=SPECS, rollout_keys=(KEY,)) for _ in range(4)]
    try:
        await asyncio.gather(
            *(s.set_flag("support", {"salt": f"salt-{i}"}, f"u{i}", "race") for i, s in enumerate(stores))
        )
        audit = await stores[0].audit("support")
    finally:
        for s in stores:
            await s.close()
    assert len(audit) == 4 and {e.who for e in audit} == {"u0", "u1", "u2", "u3"}
    assert {e.os_user for e in audit} == {pwd.getpwuid(os.getuid()).pw_name}
    stored = await raw.hgetall(FLAG)
    assert stored["audit"] == audit[0].id  # the flag names the last entry, which holds it
    async with RolloutStore(redis_server.url, specs=SPECS, rollout_keys=(KEY,)) as reader:
        assert (await reader.get_flag("support")).salt == stored["salt"] and reader.last_source["support"] == "redis"


async def test_serve_seals_at_start_a_flag_stored_before_flags_were_sealed(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    plans = Path(__file__).resolve().parents[3] / "dialplans"
    legacy = keys.rollout_flag("support-ga-to-live")
    await raw.hset(legacy, mapping={"weights": json.dumps({"ga": 20, "live": 80}), "kill": "1"})  # no audit entry
    await raw.hset(keys.rollout_flag("retired"), mapping={"kill": "1"})  # no plan of that name is served
    settings = Settings(redis_url=redis_server.url, dialplans=plans, rollout_key="a-rollout-key-for-serve-1")
    with caplog.at_level(logging.WARNING):
        await _seal_rollout_flags(settings)
        await _seal_rollout_flags(settings)  # once only
    sealed = [r.getMessage() for r in caplog.records if "sealed as found" in r.getMessage()]
    assert len(sealed) == 1 and sealed[0].startswith("rollout support-ga-to-live:"), sealed
    assert "audit" in await raw.hgetall(legacy) and "audit" not in await raw.hgetall(keys.rollout_flag("retired"))
    async with RolloutStore(redis_server.url, rollout_keys=settings.rollout_keys) as worker:
        flag = await worker.get_flag("support-ga-to-live")
        [entry] = await worker.audit("support-ga-to-live")
    assert flag.kill and flag.weights == {"ga": 20, "live": 80}  # the flag calls obeyed before, unchanged
    assert (entry.who, entry.os_user) == ("callbridge serve", pwd.getpwuid(os.getuid()).pw_name)
