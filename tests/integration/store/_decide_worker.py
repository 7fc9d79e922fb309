"""One worker process of ``test_rollout_decide_once.py``: its own Redis clients, ``RolloutStore``, ``Outcomes``
(the live experiment), webhook outbox, metrics and log, on one rollout plan that other such processes feed at the
same time, as the workers of several nodes do.

Each round is a call: draw a variant on the flag as it is, write the call's outcome record, run the experiment on the
records so far and apply each decision it brings with ``bridge.serve.outcome._apply`` (what a worker runs after a
call: take the decision, then count, log and send it if this worker took it). The candidate is better than the safe
variant until it reaches the last step, where all its calls fail, so the rollout ends promoted step by step and then
rolled back. A record's time is a shared counter's (a minute per call), so the engine's clocks run fast and every
worker's records are one sequence.

``python _decide_worker.py URL INDEX WORKERS`` prints a JSON line: the decisions this worker's experiment made and
this process's ``callbridge_rollout_decisions_total`` and ``callbridge_rollout_rollbacks_total``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
from typing import Any

from prometheus_client import REGISTRY

from bridge.rollout import records
from bridge.rollout.experiment import ExperimentSpec, epoch_of, shares_of
from bridge.rollout.policy import RolloutSpec, Variant
from bridge.rollout.store import RolloutStore
from bridge.serve import outcome
from bridge.serve.outcome import Outcomes
from bridge.store.connection import connect
from bridge.webhooks import outbox as webhooks
from bridge.webhooks.endpoints import Endpoint

PLAN, SAFE, CAND = "support", "safe", "cand"
START = {CAND: 25.0, SAFE: 75.0}
READY = "test:decide-once:ready"  # the workers start together
CLOCK = "test:decide-once:clock"  # the calls' shared sequence
MAX_CALLS = 3000  # the rollout ends well before (about 200 calls)
HOOK = Endpoint("hook", "http://127.0.0.1:9/never-delivered")  # queued in Redis; no deliverer runs


def spec() -> RolloutSpec:
    """Steps 25, 50, 75, 100 (the last capped at ``100 - holdout``), on the failure rate alone, with the clocks at
    zero."""
    off = {"on": False}
    experiment = ExperimentSpec.model_validate(
        {
            "auto_promote": (25, 50, 75, 100),
            "step_min_s": 0,
            "cycle_s": 0,
            "guard_s": 10**9,
            "min_calls": 10,
            "tau": 1.0,
            "guardrails": {
                "abandon_rate": off,
                "greeting_ms": off,
                "first_reply_ms": off,
                "failure_rate": {"margin": 1},
            },
        }
    )
    return RolloutSpec(
        safe=SAFE,
        variants=(
            Variant(name=CAND, dialect="ga", model="gpt-realtime-2.1"),
            Variant(name=SAFE, dialect="ga", model="gpt-realtime", weight=100),
        ),
        experiment=experiment,
    )


LAST = spec().experiment.last_share  # the candidate's share at the last step, where all its calls fail


def _record(rng: random.Random, n: int, weights: dict[str, float]) -> dict[str, Any]:
    variant = CAND if rng.random() * sum(weights.values()) < weights.get(CAND, 0.0) else SAFE
    fail = (1.0 if weights.get(CAND, 0.0) >= LAST - 1e-9 else 0.1) if variant == CAND else 0.3
    failed = rng.random() < fail
    t = 1_000_000.0 + 60.0 * n
    return {
        "t": t,
        "started": t - 30.0,
        "variant": variant,
        "epoch": epoch_of(weights, False),
        "shares": {k: round(v, 6) for k, v in shares_of(weights).items()},
        "outcome": "connect_failure" if failed else "ok",
        "transferred": False,
        "abandoned": False,
        "handle_time_s": 30.0,
        "greeting_ms": None if failed else 700.0,
        "first_reply_ms": None if failed else 900.0,
        "cost_usd": None,
        "repeat": False,
        "disposition": None,
    }


async def run(url: str, index: int, workers: int) -> dict[str, Any]:
    plan = spec()
    store = RolloutStore(url, specs={PLAN: plan})
    box = webhooks.Outbox(connect(url), lambda: {HOOK.name: HOOK})
    webhooks.install(box)
    worker = Outcomes(None)
    rng = random.Random(index)
    seen: list[dict[str, Any]] = []

    async def after_call() -> None:
        for decision in await worker.experiments.after_call(store.client, PLAN, plan):
            seen.append(decision.to_json())
            await outcome._apply(store, PLAN, plan, decision)

    try:
        await store.client.incr(READY)
        while True:  # until every worker is up: they start together
            if int(await store.client.get(READY) or 0) >= workers:
                break
            await asyncio.sleep(0.01)
        while True:
            flag = await store.get_flag(PLAN)
            if flag.weight(CAND) <= 0:
                break
            n = int(await store.client.incr(CLOCK))
            if n > MAX_CALLS:
                break
            await records.append(store.client, PLAN, _record(rng, n, dict(flag.weights)))
            await after_call()
        await after_call()  # the records up to the rollback, if another worker's call brought it
    finally:
        await box.close()  # the events it holds go to Redis
        await store.close()

    def counted(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, {"dialplan": PLAN, **labels}) or 0.0

    return {
        "decisions": seen,
        "counted": {
            action: counted("callbridge_rollout_decisions_total", {"variant": CAND, "action": action})
            for action in ("promote", "rollback", "srm", "complete")
        },
        "rollbacks": counted("callbridge_rollout_rollbacks_total", {"variant": CAND}),
    }


def main() -> None:
    url, index, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    print(json.dumps(asyncio.run(run(url, index, workers)), default=str), flush=True)


if __name__ == "__main__":
    main()
