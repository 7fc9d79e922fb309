"""The rollout card's experiment, through the API with a real Redis holding a plan's outcome records, and as a
supervisor sees it in a real Chromium: each metric per variant, the candidate's difference from the safe variant
with its 95 % interval drawn as a bar, coloured only when the interval excludes zero, and the calls still needed."""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from _console_helpers import CHROMIUM, OPERATOR_TOKEN, Browser, sign_in
from aiohttp.test_utils import TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout import records
from bridge.rollout.store import RolloutStore
from bridge.supervisor.api import create_app

pytestmark = pytest.mark.integration
CANARY = Dialplan.model_validate({"name": "canary", "match": ["5000"], "dialect": "rollout"})  # ga | beta (safe)


@pytest.fixture
def redis_url() -> AsyncIterator[str]:
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    with EmbeddedRedis() as server:
        yield server.url


def _record(rng: random.Random, t: float, variant: str) -> dict[str, Any]:
    failed = rng.random() < (0.3 if variant == "ga" else 0.02)  # ga fails far more often than beta
    return {"t": t, "started": t - 30, "variant": variant, "epoch": "e1",
            "outcome": "connect_failure" if failed else "ok", "transferred": False, "abandoned": False,
            "handle_time_s": 30.0, "greeting_ms": None if failed else 800 * math.exp(0.4 * rng.gauss(0, 1)),
            "first_reply_ms": None, "cost_usd": None, "repeat": False, "disposition": None}  # fmt: skip


async def test_the_rollout_card_shows_each_metrics_interval_and_colours_only_a_sure_difference(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    rng = random.Random(3)
    for i in range(160):
        await records.append(client, "canary", _record(rng, 1000.0 + i, "ga" if i % 2 else "beta"))
    rollouts = RolloutStore(client=client, specs={"canary": CANARY.rollout_spec})  # type: ignore[dict-item]
    app = create_app(token=OPERATOR_TOKEN, redis=client, rollouts=rollouts, dialplans=[CANARY])
    async with TestServer(app) as server:
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/api/console/rollout"),
                                                             headers=headers) as r:  # fmt: skip
            assert r.status == 200, await r.text()
            panel = await r.json()
        (canary,) = [p for p in panel["dialplans"] if p["dialplan"] == "canary"]
        estimates = canary["experiment"]["estimates"]
        assert estimates["ga"]["calls"] == estimates["beta"]["calls"] == 80
        fail = estimates["ga"]["failure_rate"]["vs_safe"]
        assert fail["ci95"][0] > 0, fail  # surely worse
        greet = estimates["ga"]["greeting_ms"]["vs_safe"]
        assert greet["ci95"][0] < 0 < greet["ci95"][1], greet  # the same model speed: not sure either way
        if CHROMIUM is None:
            return
        async with Browser() as browser:
            page = await browser.page()
            await sign_in(page, str(server.make_url("/")), OPERATOR_TOKEN, name="Dana")
            row = "article[data-dialplan=canary] .experiment tr[data-variant=ga][data-metric={m}]"
            await page.wait_for(f"document.querySelector({json.dumps(row.format(m='failure_rate'))}) !== null", 20)
            worse = await page.eval(f"document.querySelector({json.dumps(row.format(m='failure_rate') + ' .ci')})"
                                    ".className")  # fmt: skip
            unsure = await page.eval(f"document.querySelector({json.dumps(row.format(m='greeting_ms') + ' .ci')})"
                                     ".className")  # fmt: skip
            assert (worse, unsure) == ("ci worse", "ci unsure")
            assert "%" in await page.text(row.format(m="failure_rate") + " td.diff")
            more = estimates["ga"]["abandon_rate"]["more_calls"]  # equal rates: the margin is still to be shown
            assert more > 0 and await page.text(row.format(m="abandon_rate") + " td.more") == (
                f"about {more} more candidate calls to decide"
            )
    await client.aclose()
