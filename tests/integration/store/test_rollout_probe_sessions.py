"""Active probes through real parts: the emulator as the model service, a real redis-server holding the flag, the
records and the probe mark, and the worker's own outcome code (``bridge.serve.outcome``) feeding its experiment.

A candidate at the last step (95/5) fails every call and no holdout call has ended since: the breaker has no safe
call to compare with. Once its run reaches ``breaker_min_run`` the worker probes the safe variant's model (a real
session on the emulator); when the session opens, the candidate's failures begun after it roll it back, the audit's
reason and evidence naming the probe, and a second probe within the plan's bound is not sent. When the emulator
refuses both models (a shared outage) the probe fails and nothing is rolled back; a plan with probes off sends
none."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from bridge.devkit.redis_server import EmbeddedRedis
from bridge.dialplan import Dialplan, load_dialplans
from bridge.emulator.server import EmulatorServer
from bridge.realtime.credentials import Sources
from bridge.rollout import records
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.store import RolloutStore
from bridge.serve import outcome
from bridge.serve.probe import Prober
from bridge.store import keys

pytestmark = pytest.mark.integration

SAFE_MODEL, CAND_MODEL = "gpt-realtime", "gpt-realtime-2.1"
LAST = {"cand": 95.0, "safe": 5.0}
PLAN = """\
name: {name}
match: ['{number}']
dialect: rollout
rollout:
  safe: safe
  experiment: {{promote: false}}
  probes: {{enabled: {enabled}}}
  variants:
    - {{name: cand, dialect: ga, model: gpt-realtime-2.1}}
    - {{name: safe, dialect: ga, model: gpt-realtime, weight: 100}}
"""


def _plan(tmp_path: Path, enabled: bool = True) -> Dialplan:
    folder = tmp_path / "dialplans"
    folder.mkdir()
    name = "support" if enabled else "quiet"
    (folder / f"{name}.yaml").write_text(PLAN.format(name=name, number="3300", enabled=str(enabled).lower()))
    [plan] = load_dialplans(folder)
    return plan


def _failed(i: int, started: float) -> dict[str, Any]:
    return {"t": started + 3.0, "started": started, "call_id": f"c{i}", "variant": "cand",
            "epoch": epoch_of(LAST, False), "outcome": "connect_failure", "transferred": False, "abandoned": False,
            "handle_time_s": 0.0, "greeting_ms": None, "first_reply_ms": None, "cost_usd": None, "repeat": False,
            "disposition": None}  # fmt: skip


def _probes(plan: str, result: str) -> float:
    return REGISTRY.get_sample_value("callbridge_rollout_probes_total", {"dialplan": plan, "variant": "safe",
                                     "result": result}) or 0.0  # fmt: skip


class _Worker:
    """The worker's part: its outcome code with a prober on the emulator, after each call's record."""

    def __init__(self, store: RolloutStore, plan: Dialplan, emulator: EmulatorServer) -> None:
        sources = Sources.from_environment(emulator.base_url, "sk-test", env={})
        self.store, self.plan = store, plan
        self.outcomes = outcome.Outcomes(None, (), Prober(sources, emulator.base_url, "test"))

    async def calls(self, first: int, n: int, started: float) -> None:
        """``n`` failed calls of the candidate begun one a second from ``started``, each then fed as a worker does
        after a call (its decisions applied, a probe sent when wanted)."""
        spec = self.plan.rollout_spec
        assert spec is not None
        for i in range(first, first + n):
            await records.append(self.store.client, self.plan.name, _failed(i, started + i - first))
            for decision in await self.outcomes.experiments.after_call(self.store.client, self.plan.name, spec):
                await outcome._apply(self.store, self.plan.name, spec, decision)

    async def probe(self) -> bool:
        return await self.outcomes.probe(self.store, self.plan)


@pytest.fixture
async def last_step(
    tmp_path: Path, redis_server: EmbeddedRedis, emulator: EmulatorServer, request: pytest.FixtureRequest
) -> AsyncIterator[_Worker]:
    plan = _plan(tmp_path, enabled=getattr(request, "param", True))
    assert plan.rollout_spec is not None
    async with RolloutStore(redis_server.url, specs={plan.name: plan.rollout_spec}) as store:
        await store.set_flag(plan.name, {"weights": LAST}, "qa", "the last step")
        yield _Worker(store, plan, emulator)


async def test_a_dead_candidate_with_the_safe_model_up_is_rolled_back_on_a_probe_named_in_the_audit(
    last_step: _Worker, emulator: EmulatorServer, raw: aioredis.Redis
) -> None:
    emulator.set_defaults({"refuse_models": CAND_MODEL})  # the candidate's model is down, the safe one is not
    before = _probes("support", "ok")
    await last_step.calls(0, 6, time.time() - 60)  # a run of 6: no safe call to compare with, no rollback
    assert (await last_step.store.get_flag("support")).weights == LAST
    assert await last_step.probe()
    assert [s["model"] for s in emulator.summaries()] == [SAFE_MODEL]  # one real session, on the safe model
    assert _probes("support", "ok") == before + 1
    assert await raw.pttl(keys.rollout_probe("support")) > 50_000  # the next one waits a minute
    assert not await last_step.probe()  # within the bound: none sent
    await last_step.calls(6, 20, time.time() + 0.5)  # failures begun after the probe
    assert (await last_step.store.get_flag("support")).weights == {"cand": 0.0, "safe": 100.0}
    [entry] = [e for e in await last_step.store.audit("support") if e.who == records.AUTO_DECISION_WHO]
    [shown] = entry.evidence["breaker"]["probes"]
    assert shown["ok"] is True and shown["ms"] > 0
    assert "1 probe of the safe variant's model" in entry.reason and "opened in" in entry.reason
    written = await records.read(raw, "support")
    assert [r["ok"] for r in written if r.get("probe")] == [True]


async def test_a_shared_outage_fails_the_probe_and_rolls_nothing_back(
    last_step: _Worker, emulator: EmulatorServer
) -> None:
    emulator.set_defaults({"refuse_models": f"{SAFE_MODEL},{CAND_MODEL}"})  # both models down
    before = _probes("support", "failed")
    await last_step.calls(0, 6, time.time() - 60)
    assert await last_step.probe()
    assert _probes("support", "failed") == before + 1
    assert [r["model"] for r in emulator.refused] == [SAFE_MODEL]
    await last_step.calls(6, 60, time.time() + 0.5)
    assert (await last_step.store.get_flag("support")).weights == LAST
    assert not [e for e in await last_step.store.audit("support") if e.who == records.AUTO_DECISION_WHO]
    state = last_step.outcomes.experiments.plans["support"].replay
    assert [p.ok for p in state.probes] == [False] and state.probe_wanted() == "cand"


@pytest.mark.parametrize("last_step", [False], indirect=True)
async def test_a_plan_with_probes_off_sends_none(last_step: _Worker, emulator: EmulatorServer) -> None:
    emulator.set_defaults({"refuse_models": CAND_MODEL})
    await last_step.calls(0, 10, time.time() - 60)
    assert last_step.outcomes.experiments.plans["quiet"].replay.probe_wanted() == "cand"
    assert not await last_step.probe()
    assert emulator.summaries() == [] and emulator.refused == []
