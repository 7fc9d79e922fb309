"""Outcome records and the experiment against a real redis-server: a repeat caller adds a signed late outcome of the
earlier call, matched by a keyed hash (the number is nowhere in Redis), the workers' live experiment rolls a worse
candidate back once with its evidence in the audit, and ``callbridge rollout evaluate`` on what ``callbridge rollout
records`` writes takes the live run's decisions, late outcomes included."""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis
from bridge.rollout import records
from bridge.rollout.experiment import Decision
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.policy import RolloutSpec
from bridge.rollout.store import RolloutStore
from bridge.store import keys

pytestmark = pytest.mark.integration

PLAN = """\
name: support
match: ['3300']
dialect: rollout
rollout:
  safe: safe
  variants:
    - {name: cand, dialect: ga, model: gpt-realtime-2.1}
    - {name: safe, dialect: ga, model: gpt-realtime, weight: 100}
"""
ROOT = Path(__file__).resolve().parents[3]


def _spec(tmp_path: Path) -> tuple[Path, RolloutSpec]:
    from bridge.dialplan import load_dialplans

    folder = tmp_path / "dialplans"
    folder.mkdir()
    (folder / "support.yaml").write_text(PLAN)
    [plan] = load_dialplans(folder)
    assert plan.rollout_spec is not None
    return folder, plan.rollout_spec


def _record(rng: random.Random, t: float, variant: str, epoch: str, fail: float) -> dict[str, Any]:
    failed = rng.random() < fail
    return {
        "t": t,
        "started": t - 60,
        "call_id": f"call-{t:.3f}-{variant}",
        "variant": variant,
        "epoch": epoch,
        "outcome": "connect_failure" if failed else "ok",
        "transferred": False,
        "abandoned": rng.random() < 0.05,
        "handle_time_s": 60.0,
        "greeting_ms": None if failed else round(900 * math.exp(0.4 * rng.gauss(0, 1)), 1),
        "first_reply_ms": None if failed else round(700 * math.exp(0.6 * rng.gauss(0, 1)), 1),
        "cost_usd": None,
        "repeat": False,
        "disposition": None,
    }


async def test_a_repeat_caller_adds_a_late_outcome_of_the_earlier_call_and_the_number_stays_out(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    key = records.caller_key(b"k" * 32)
    rng = random.Random(1)
    first = _record(rng, 1000.0, "cand", "e", 0.0)
    await records.append(raw, "support", first, "+1 800 555 0199", key, sign_key=(b"r" * 32,))
    await records.append(raw, "support", _record(rng, 1001.0, "safe", "e", 0.0), "+1 800 555 0100", key)
    await records.append(raw, "support", _record(rng, 1002.0, "safe", "e", 0.0), "sip:+18005550199@pbx", key)
    found = await records.read(raw, "support")
    assert [r.get("late", False) for r in found] == [False, False, False, True]
    assert found[0]["caller"] == found[2]["caller"] != found[1]["caller"]  # the same caller, by a keyed hash
    late = found[3]
    assert (late["call_id"], late["repeat"], late["t"]) == (first["call_id"], True, 1002.0)
    dump = []
    async for name in raw.scan_iter("*"):
        kind = await raw.type(name)
        value = await raw.xrange(name) if kind == "stream" else await raw.get(name) if kind == "string" else kind
        dump.append(f"{name} {value}")
    assert len(dump) == 3 and "5550199" not in " ".join(dump)  # the stream and the two callers' hashes


REPEATS = PLAN.replace(
    "rollout:\n", "rollout:\n  experiment: {min_calls: 30, guardrails: {repeat_rate: {on: true}}, promote: false}\n"
)


async def test_late_repeat_marks_give_the_same_decisions_live_in_rollout_show_and_in_rollout_evaluate(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    """One stream, signed, with callers who call back: the candidate's callers call back far more often. The two
    workers' live engines, ``rollout show``'s and ``rollout evaluate`` on ``rollout records``' output take the same
    decisions at the same entry, a repeat judged when its call's 72 h have passed."""
    folder = tmp_path / "dialplans"
    folder.mkdir()
    (folder / "support.yaml").write_text(REPEATS)
    from bridge.dialplan import load_dialplans

    [plan] = load_dialplans(folder)
    spec = plan.rollout_spec
    assert spec is not None
    rollout_key, hash_key = (b"rollout key of this test, 32 by.",), records.caller_key(b"listen key " * 3)
    workers = [records.LiveExperiment(key=rollout_key), records.LiveExperiment(key=rollout_key)]
    rng, live = random.Random(11), []
    epoch = epoch_of(spec.default_flag().weights, False)
    for i in range(1500):
        variant = "cand" if rng.random() < 0.5 else "safe"
        pool = 60 if variant == "cand" else 5000  # the candidate's callers call back: few numbers, many calls
        number = f"+1800555{rng.randrange(pool):04d}{0 if variant == 'cand' else 1}"
        record = _record(rng, 10_000.0 + i * 600.0, variant, epoch, 0.02)  # a call every 10 minutes: 250 h
        await records.append(raw, "support", record, number, hash_key, sign_key=rollout_key)
        for n, worker in enumerate(workers):
            got = await worker.after_call(raw, "support", spec)
            if n == 0:
                live += got
    assert [d.action for d in live] == ["rollback"] and "repeat_rate" in live[0].reason, live
    entries = await records.read(raw, "support")
    lates = [e for e in entries if e.get("late")]
    assert len(lates) > 300 and all(e.get("sig") for e in lates)  # signed like records
    shown = await records.current(raw, "support", spec, rollout_key)
    assert [(d["t"], d["action"], d["reason"]) for d in shown["decisions"]] == [(live[0].t, "rollback", live[0].reason)]
    est = shown["estimates"]
    assert est["cand"]["repeat_rate"]["value"] > 2 * est["safe"]["repeat_rate"]["value"] > 0
    out = tmp_path / "records.jsonl"
    cli = [sys.executable, "-m", "bridge", "rollout"]
    written = await asyncio.to_thread(
        subprocess.run,
        [*cli, "records", "support", "--redis-url", redis_server.url, "--dialplans", str(folder)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    out.write_text(written.stdout)
    done = await asyncio.to_thread(
        subprocess.run,
        [*cli, "evaluate", "support", "--dialplans", str(folder), "--records", str(out), "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60, env=_no_redis(),
    )  # fmt: skip
    offline = json.loads(done.stdout)["decisions"]
    assert [(d["t"], d["action"], d["reason"]) for d in offline] == [(live[0].t, "rollback", live[0].reason)]


async def test_the_live_experiment_rolls_back_once_and_evaluate_on_the_records_takes_its_decisions(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    folder, spec = _spec(tmp_path)
    store = RolloutStore(redis_server.url, specs={"support": spec})
    workers = [records.LiveExperiment(), records.LiveExperiment()]  # two workers read the same stream
    try:
        await store.set_flag("support", {"weights": {"cand": 50, "safe": 50}}, "test", "start the canary")
        rng, taken, seen = random.Random(7), [], []
        for i in range(4000):
            flag = await store.get_flag("support")
            if flag.weight("cand") <= 0:
                break
            variant = "cand" if rng.random() < 0.5 else "safe"
            record = _record(
                rng, 10_000.0 + i, variant, epoch_of(flag.weights, flag.kill), 0.3 if variant == "cand" else 0.05
            )
            await records.append(raw, "support", record)
            for worker in workers:
                for decision in await worker.after_call(raw, "support", spec):
                    seen.append(decision)
                    if await records.apply_decision(store, "support", spec, decision):
                        taken.append(decision)
        assert [d.action for d in taken] == ["rollback"] and len(seen) == 2  # both decided; one change was made
        flag = await store.get_flag("support")
        assert flag.weight("cand") == 0 and flag.weight("safe") == 100
        [entry] = [e for e in await store.audit("support") if e.who == records.AUTO_DECISION_WHO]
        assert entry.evidence["action"] == "rollback" and "failure_rate" in entry.evidence
        assert entry.evidence["failure_rate"]["since_arming"]["ci"][0] > 0 or "breaker" in entry.evidence
        live: Decision = taken[0]
    finally:
        await store.close()
    out = tmp_path / "records.jsonl"
    cli = [sys.executable, "-m", "bridge", "rollout"]
    written = await asyncio.to_thread(
        subprocess.run,
        [*cli, "records", "support", "--redis-url", redis_server.url, "--dialplans", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out.write_text(written.stdout)
    done = await asyncio.to_thread(
        subprocess.run,
        [*cli, "evaluate", "support", "--dialplans", str(folder), "--records", str(out), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=_no_redis(),
    )
    result = json.loads(done.stdout)
    assert [(d["t"], d["variant"], d["action"], d["reason"]) for d in result["decisions"]] == [
        (live.t, live.variant, live.action, live.reason)
    ]
    cand = result["estimates"]["cand"]
    assert set(cand) >= {
        "calls",
        "failure_rate",
        "transfer_rate",
        "abandon_rate",
        "handle_time_s",
        "greeting_ms",
        "first_reply_ms",
        "cost_per_call_usd",
    }
    lo, hi = cand["failure_rate"]["vs_safe"]["ci95"]
    assert lo <= cand["failure_rate"]["vs_safe"]["diff"] <= hi
    assert "vs_safe" not in result["estimates"]["safe"]["failure_rate"]
    assert await raw.exists(keys.rollout_records("support"))
    shown = await asyncio.to_thread(
        subprocess.run,
        [*cli, "show", "support", "--redis-url", redis_server.url, "--dialplans", str(folder), "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    [plan] = json.loads(shown.stdout)["dialplans"]
    # no call since the rollback yet: the last epoch is the one that decided
    assert [(d["variant"], d["action"]) for d in plan["experiment"]["decisions"]] == [("cand", "rollback")]
    assert plan["experiment"]["estimates"]["cand"]["calls"] == live.evidence["calls"]["cand"]
    text = await asyncio.to_thread(
        subprocess.run, [*cli, "show", "support", "--redis-url", redis_server.url, "--dialplans", str(folder)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert "guarded rollout" in text.stdout and "decided: rollback cand" in text.stdout
    assert "failure_rate" in text.stdout and " diff +" in text.stdout and "[" in text.stdout


def _no_redis() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if "REDIS" not in k}


async def test_calls_ending_together_feed_each_record_to_the_live_experiment_once(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    _, spec = _spec(tmp_path)
    worker, rng = records.LiveExperiment(), random.Random(3)
    for batch in range(5):  # three calls end at once: each writes its record, then their after_calls overlap
        for i in range(3):
            await records.append(raw, "support", _record(rng, 1000.0 + 3 * batch + i, "cand", "e", 0.0))
        await asyncio.gather(*(worker.after_call(raw, "support", spec) for _ in range(3)))
    calls = worker.plans["support"].replay.calls
    assert calls["cand"] == 15 and calls["safe"] == 0  # the 15 records, each once


async def test_with_a_key_forged_records_are_left_out_counted_and_shown(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    _, spec = _spec(tmp_path)
    key = (b"rollout key of this test, 32 by.",)
    rng = random.Random(5)
    for i in range(120):  # the workers' own records: signed
        variant = "cand" if i % 2 else "safe"
        await records.append(raw, "support", _record(rng, 1000.0 + i, variant, "e", 0.0), sign_key=key)
    for i in range(200):  # a Redis writer's: every candidate call failed, unsigned or signed with another key
        forged = _record(rng, 2000.0 + i, "cand", "e", 1.0)
        await records.append(raw, "support", forged, sign_key=(b"another key, not the rollout's!",) if i % 2 else ())
    worker = records.LiveExperiment(key=key)
    assert await worker.after_call(raw, "support", spec) == []  # no rollback on forged evidence
    assert worker.plans["support"].replay.calls == {"cand": 60, "safe": 60}
    from prometheus_client import REGISTRY

    def rejected(reason: str) -> float | None:
        return REGISTRY.get_sample_value(
            "callbridge_rollout_records_rejected_total", {"dialplan": "support", "reason": reason}
        )

    assert (rejected("unsigned"), rejected("bad signature")) == (100.0, 100.0)
    now = await records.current(raw, "support", spec, key)
    assert now["rejected"] == {"unsigned": 100, "bad signature": 100} and now["decisions"] == []
    unkeyed = await records.current(raw, "support", spec)  # without a key every record counts, and it says so
    assert unkeyed["signed"] is False and [d["action"] for d in unkeyed["decisions"]] == ["rollback"]


async def test_rearm_gives_a_rolled_back_candidate_its_first_step_and_a_fresh_test(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    folder, spec = _spec(tmp_path)
    rng = random.Random(9)
    for i in range(400):  # a spike: the candidate failed every call for a while
        variant = "cand" if i % 2 else "safe"
        await records.append(raw, "support", _record(rng, 1000.0 + i, variant, "e", 1.0 if variant == "cand" else 0.0))
    before = await records.current(raw, "support", spec)
    assert [d["action"] for d in before["decisions"]] == ["rollback"]
    cli = [sys.executable, "-m", "bridge", "rollout", "rearm", "support", "cand", "--redis-url", redis_server.url,
           "--dialplans", str(folder), "--share", "10", "--json"]  # fmt: skip
    refused = await asyncio.to_thread(subprocess.run, cli, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--reason is required" in refused.stderr
    done = await asyncio.to_thread(
        subprocess.run, [*cli, "--reason", "the spike was the carrier"], cwd=ROOT, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(done.stdout)["share"] == 10
    store = RolloutStore(redis_server.url, specs={"support": spec})
    try:
        flag = await store.get_flag("support")
        assert (flag.weight("cand"), flag.weight("safe")) == (10, 90)
        [entry] = [e for e in await store.audit("support") if e.reason == "the spike was the carrier"]
        assert entry.new == {"weights": {"cand": 10.0, "safe": 90.0}}
    finally:
        await store.close()
    after = await records.current(raw, "support", spec)
    cand = after["estimates"]["cand"]
    assert cand["verdict"]["state"] == "testing" and cand["calls"] == 200  # its calls so far are still counted,
    assert cand["failure_rate"]["vs_safe"] is None  # but its evidence starts afresh: no interval before new calls


async def test_a_restarted_worker_and_rollout_show_take_up_the_kept_state_of_a_stream_since_trimmed(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weeks-long rollout outlives its capped stream: the signed state kept every ``SNAPSHOT_EVERY`` entries is
    taken up by a restarted worker and by ``rollout show``; a tampered one is refused and the records replayed."""
    monkeypatch.setattr(keys, "SNAPSHOT_EVERY", 100)
    _, spec = _spec(tmp_path)
    key = (b"rollout key of this test, 32 by.",)
    rng, first = random.Random(13), records.LiveExperiment(key=key)
    for i in range(300):
        record = _record(rng, 1000.0 + i, "cand" if i % 2 else "safe", "e", 0.0)
        await records.append(raw, "support", record, sign_key=key)
        await first.after_call(raw, "support", spec)
    assert await raw.hget(keys.rollout_snapshot("support"), "last_id") == first.plans["support"].last_id
    await raw.xtrim(keys.rollout_records("support"), maxlen=50, approximate=False)  # the cap took the older ones
    restarted = records.LiveExperiment(key=key)
    await restarted.after_call(raw, "support", spec)
    assert restarted.plans["support"].replay.calls == {"cand": 150, "safe": 150} == first.plans["support"].replay.calls
    shown = await records.current(raw, "support", spec, key)
    assert shown["estimates"]["cand"]["calls"] == 150
    with monkeypatch.context() as m:  # a release whose engine state has another shape: the records replayed
        m.setattr(records, "state_format", lambda: "another release")
        upgraded = records.LiveExperiment(key=key)
        await upgraded.after_call(raw, "support", spec)
        assert sum(upgraded.plans["support"].replay.calls.values()) == 50
    await raw.hset(keys.rollout_snapshot("support"), "last_id", "1-0")  # tampered: its signature no longer holds
    fresh = records.LiveExperiment(key=key)
    await fresh.after_call(raw, "support", spec)
    assert sum(fresh.plans["support"].replay.calls.values()) == 50  # only what the stream still holds
    await raw.delete(keys.rollout_snapshot("support"))
    unkeyed = records.LiveExperiment()
    for _ in range(2):
        await unkeyed.after_call(raw, "support", spec)
    assert not await raw.exists(keys.rollout_snapshot("support"))  # no key: no state kept
