"""Keys that rotate, against a real redis-server: with ``rollout_key: new,old`` every flag and record signed by the
old key is still obeyed and every change is signed with the new one; once only the new key is listed, a flag signed
by the old one is refused, and a refused flag never moves calls onto a candidate: when it asks for the kill switch
(or cannot say whether it does), or no valid entry of the plan is left, every call goes to the safe variant, not to
the plan's defaults. The refusal is logged once, counted, and shown by ``rollout show``; no key is ever logged."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client import REGISTRY

from bridge.config import Settings
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.rollout import backup, records, seal
from bridge.rollout.policy import RolloutSpec
from bridge.rollout.store import RolloutStore
from bridge.serve import rollout_cli
from bridge.serve.pool import _seal_rollout_flags
from bridge.store import keys

pytestmark = pytest.mark.integration

NEW_KEY = "new-rollout-key-5f0e8c1d2b3a4f60"
OLD_KEY = "old-rollout-key-9a8b7c6d5e4f3a21"
GONE_KEY = "a-key-nobody-lists-any-more-0000"
ALL_KEYS = (NEW_KEY, OLD_KEY, GONE_KEY)
SAFE, CAND = "safe", "cand"
PLAN = {
    "name": "support",
    "match": ["3300"],
    "dialect": "rollout",
    "rollout": {
        "safe": SAFE,
        # the plan's own defaults send half the calls to the candidate: what calls must not fall back to
        "variants": [
            {"name": CAND, "dialect": "ga", "model": "gpt-realtime-2.1-mini", "weight": 50},
            {"name": SAFE, "dialect": "ga", "model": "gpt-realtime-2.1", "weight": 50},
        ],
    },
}
SPEC = RolloutSpec.model_validate(PLAN["rollout"])
SPECS = {"support": SPEC}
FLAG = keys.rollout_flag("support")


def keys_of(text: str) -> tuple[bytes, ...]:
    """The keys of ``rollout_key: text``, as serve reads them."""
    return Settings(rollout_key=text).rollout_keys


def store(url: str, text: str) -> RolloutStore:
    # a read bound far above a loaded machine's first connect (the default 0.5 s is a call's, and its fallback to
    # the default flag is another test's case): here every read must reach Redis
    return RolloutStore(url, specs=SPECS, rollout_keys=keys_of(text), read_timeout_s=10.0)


def refused_total() -> float:
    return REGISTRY.get_sample_value("callbridge_rollout_flag_refused_total", {"dialplan": "support"}) or 0.0


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the stored flag is not obeyed" in r.getMessage()]


@pytest.fixture(autouse=True)
def no_key_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test does, no log record holds a key."""
    caplog.set_level(logging.DEBUG)
    yield
    logged = [r.getMessage() for phase in ("setup", "call") for r in caplog.get_records(phase)]
    assert logged  # the fixture sees what the test logged
    leaked = [m for m in logged if any(k in m for k in ALL_KEYS)]
    assert not leaked, leaked


async def decided(node: RolloutStore, calls: int = 40) -> set[str]:
    return {(await node.decide("support", f"+1555010{i:02d}", f"c{i}")).variant for i in range(calls)}


async def test_during_a_rotation_old_flags_are_obeyed_and_changes_are_signed_with_the_new_key(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with store(redis_server.url, OLD_KEY) as before:
        await before.set_flag("support", {"weights": {SAFE: 90, CAND: 10}}, "alice", "a canary")
    async with store(redis_server.url, f"{NEW_KEY},{OLD_KEY}") as node:  # step 1: the new key added first
        assert (await node.get_flag("support")).weights == {SAFE: 90, CAND: 10}
        assert node.last_source["support"] == "redis" and node.refusal("support") is None
        change = await node.set_flag("support", {"weights": {SAFE: 80, CAND: 20}}, "bob", "the next step")
    assert not refusals(caplog)
    [(entry_id, entry)] = await raw.xrange(keys.ROLLOUT_AUDIT, min=change.audit_id, max=change.audit_id)
    assert entry["sig"] == seal.entry_sig(NEW_KEY.encode(), entry_id, entry)  # signed with the first key
    async with store(redis_server.url, NEW_KEY) as after:  # step 2: the old key dropped
        assert (await after.get_flag("support")).weights == {SAFE: 80, CAND: 20}
        assert after.refusal("support") is None
    # a node left on the old key alone does not take the new key's change: it keeps the last flag it can verify
    async with store(redis_server.url, OLD_KEY) as stale:
        assert (await stale.get_flag("support")).weights == {SAFE: 90, CAND: 10}
        why = stale.refusal("support")
    assert why is not None and f"its audit entry {entry_id} is not signed with a key of rollout_key here" in why
    assert len(refusals(caplog)) == 1


async def test_with_only_the_new_key_a_kill_switch_signed_by_the_old_one_sends_every_call_to_the_safe_variant(
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with store(redis_server.url, OLD_KEY) as before:
        await before.set_flag("support", {"weights": {SAFE: 0, CAND: 100}}, "alice", "all on the candidate")
        await before.set_flag("support", {"kill": True}, "alice", "incident 7")
        assert await decided(before) == {SAFE}
    counted = refused_total()
    async with store(redis_server.url, NEW_KEY) as node:  # the old key dropped too early
        flags = [await node.get_flag("support") for _ in range(3)]
        assert all(f.kill for f in flags) and node.last_source["support"] == "fail-safe"
        assert await decided(node) == {SAFE}  # not the plan's defaults (half on the candidate)
        assert (await node.decide("support", "+15550100", "c")).reason == "kill switch"
        assert (await node.stored_flag("support")).kill  # what `rollout show` and the rollback check see
        assert await node.check_rollback("support") == []
        why = node.refusal("support")
    assert why is not None and "is not signed with a key of rollout_key here" in why
    assert "calls follow the safe variant safe (the refused flag asks for the kill switch" in why
    assert len(refusals(caplog)) == 1 and refused_total() == counted + 1  # once, not once per call

    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "support.yaml").write_text(yaml.safe_dump(PLAN))
    monkeypatch.setenv("CALLBRIDGE_ROLLOUT_KEY", NEW_KEY)
    where = ["--dialplans", str(plans), "--redis-url", redis_server.url]
    assert await asyncio.to_thread(rollout_cli.main, ["show", "support", *where]) == 0
    out = capsys.readouterr().out
    assert "NOT OBEYED    the stored flag is not obeyed: its audit entry" in out
    assert "calls follow the safe variant safe" in out and "kill switch   on   (every call on safe)" in out
    assert await asyncio.to_thread(rollout_cli.main, ["show", "support", "--json", *where]) == 0
    [shown] = json.loads(capsys.readouterr().out)["dialplans"]
    assert shown["flag"]["kill"] and "calls follow the safe variant safe" in shown["flag_refused"]
    assert {v["name"]: v["share_percent"] for v in shown["variants"]} == {CAND: 0.0, SAFE: 100.0}

    # a change signed with the new key ends the refusal: the flag is the product's again
    async with store(redis_server.url, NEW_KEY) as node:
        change = await node.set_flag("support", {"kill": False}, "carol", "signed with the new key")
        assert change.old.kill and not change.new.kill
        assert not (await node.get_flag("support")).kill and node.last_source["support"] == "redis"
        assert node.refusal("support") is None
    assert await asyncio.to_thread(rollout_cli.main, ["show", "support", *where]) == 0
    assert "NOT OBEYED" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "case",
    ["unlisted key", "raw kill over a valid flag", "unreadable kill", "gone, nothing valid", "refused, last valid"],
)
async def test_a_refused_flag_never_moves_calls_onto_a_candidate(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    if case in ("unlisted key", "gone, nothing valid"):
        async with store(redis_server.url, GONE_KEY) as other:  # no kill switch: all on the candidate
            await other.set_flag("support", {"weights": {SAFE: 0, CAND: 100}}, "mallory", "the other key's")
        if case == "gone, nothing valid":
            await raw.delete(FLAG)
    else:
        async with store(redis_server.url, NEW_KEY) as product:
            await product.set_flag("support", {"weights": {SAFE: 20, CAND: 80}}, "alice", "mostly the candidate")
        kill = {"raw kill over a valid flag": "1", "unreadable kill": "maybe", "refused, last valid": "0"}[case]
        await raw.hset(FLAG, mapping={"kill": kill, "weights": json.dumps({SAFE: 0, CAND: 100})})
    async with store(redis_server.url, NEW_KEY) as node:
        flag = await node.get_flag("support")
        variants = await decided(node)
        why = node.refusal("support")
    assert why is not None and len(refusals(caplog)) == 1
    if case == "refused, last valid":  # it asks for no kill switch: calls keep the last valid flag
        assert not flag.kill and flag.weights == {SAFE: 20, CAND: 80} and "the last valid flag" in why
        return
    assert flag.kill and variants == {SAFE}, (case, variants)
    assert "calls follow the safe variant safe" in why


async def test_records_are_signed_with_the_first_key_and_any_listed_key_vouches(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    record = {"t": 1000.0, "started": 940.0, "call_id": "a", "variant": SAFE, "epoch": "e", "outcome": "ok"}
    await records.append(raw, "support", record, sign_key=keys_of(f"{NEW_KEY},{OLD_KEY}"))
    await records.append(raw, "support", {**record, "t": 1001.0, "call_id": "b"}, sign_key=keys_of(OLD_KEY))
    await records.append(raw, "support", {**record, "t": 1002.0, "call_id": "c"}, sign_key=keys_of(GONE_KEY))
    [first, *_] = [json.loads(fields["r"]) for _, fields in await raw.xrange(keys.rollout_records("support"))]
    assert first["sig"] == seal.record_sig(NEW_KEY.encode(), first)
    rotating = await records.current(raw, "support", SPEC, keys_of(f"{NEW_KEY},{OLD_KEY}"))
    assert rotating["signed"] and rotating["rejected"] == {"unsigned": 0, "bad signature": 1}  # GONE's alone
    rotated = await records.current(raw, "support", SPEC, keys_of(NEW_KEY))
    assert rotated["rejected"] == {"unsigned": 0, "bad signature": 2}  # OLD's too, once it is dropped
    assert (await records.current(raw, "support", SPEC))["signed"] is False


async def test_serve_says_at_start_how_flags_and_records_are_sealed_never_a_key(
    redis_server: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "support.yaml").write_text(yaml.safe_dump(PLAN))
    await _seal_rollout_flags(Settings(redis_url=redis_server.url, dialplans=plans))
    lines = [r for r in caplog.records if r.getMessage().startswith("rollout ")]
    assert any(r.levelno == logging.WARNING and "outcome records are unsigned" in r.getMessage() for r in lines)
    seen = len(caplog.records)  # (not cleared: the fixture looks for keys in every line)
    await _seal_rollout_flags(Settings(redis_url=redis_server.url, dialplans=plans, rollout_key=f"{NEW_KEY},{OLD_KEY}"))
    said = [r.getMessage() for r in caplog.records[seen:] if r.getMessage().startswith("rollout ")]
    assert "rollout flags: obeyed only with an audit entry signed with rollout_key, any of its 2 keys" in said[0]
    assert "rollout evidence: outcome records signed with rollout_key" in said[1]
    assert not [r for r in caplog.records[seen:] if r.levelno >= logging.WARNING]


async def test_serve_with_new_old_signs_the_served_flags_again_so_dropping_the_old_key_refuses_none(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "support.yaml").write_text(yaml.safe_dump(PLAN))
    async with store(redis_server.url, OLD_KEY) as before:
        await before.set_flag("support", {"weights": {SAFE: 70, CAND: 30}, "kill": True}, "alice", "incident 9")
    for _ in range(2):  # two nodes restarted with new,old: the flag is signed again once
        await _seal_rollout_flags(
            Settings(redis_url=redis_server.url, dialplans=plans, rollout_key=f"{NEW_KEY},{OLD_KEY}")
        )
    resealed = [r.getMessage() for r in caplog.records if "signed again with the first key" in r.getMessage()]
    assert len(resealed) == 1 and resealed[0].startswith("rollout support:"), resealed
    [*_, (entry_id, entry)] = await raw.xrange(keys.ROLLOUT_AUDIT)
    assert entry["who"] == "callbridge serve" and entry["sig"] == seal.entry_sig(NEW_KEY.encode(), entry_id, entry)
    async with store(redis_server.url, NEW_KEY) as node:  # the old key dropped: the flag is obeyed, as it was
        flag = await node.get_flag("support")
        assert flag.kill and flag.weights == {SAFE: 70, CAND: 30} and node.last_source["support"] == "redis"
        assert node.refusal("support") is None
    assert not refusals(caplog)


async def test_a_deployment_gaining_its_first_key_signs_its_flags_from_a_backup_taken_before(
    redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    async with RolloutStore(redis_server.url, specs=SPECS) as unkeyed:
        await unkeyed.set_flag("support", {"weights": {SAFE: 70, CAND: 30}}, "alice", "a canary, before any key")
        before = await backup.export(unkeyed)
    async with store(redis_server.url, NEW_KEY) as node:
        assert (await node.get_flag("support")).kill and node.fail_safe("support")  # unsigned: the safe variant
        done = await backup.restore(node, before, "before.json", who="ops")
    assert done.flags == {"support": "restored"}  # the refused flag counts as none: no --replace needed
    async with store(redis_server.url, NEW_KEY) as node:
        flag = await node.get_flag("support")
        assert not flag.kill and flag.weights == {SAFE: 70, CAND: 30} and node.refusal("support") is None
