"""A guardrail chart's y axis is fitted to the recent intervals and the margin, in a real Chromium over the API with a
real Redis holding a guarded rollout's signed outcome records: GA against beta, both failing 5 % of 4,000 calls, so
the first points' 95 % intervals are many times wider than the current one. The current interval and the margin line
are visibly apart (in the page's pixels), and the earlier, wider bands are clipped at the plot's edge with a mark
there. Any console error, uncaught exception or CSP violation in the page fails the test."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _console_helpers import CHROMIUM, OPERATOR_TOKEN, Browser, sign_in
from aiohttp.test_utils import TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout import records
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.store import RolloutStore
from bridge.supervisor.api import create_app

pytestmark = [pytest.mark.integration, pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium")]
KEY = (b"rollout-key-for-the-axis-test-00",)
T0 = 1_700_002_800.0
CALLS = 4000
HALF = {"ga": 50.0, "beta": 50.0}
AXIS = Dialplan.model_validate({"name": "axis", "match": ["5006"], "dialect": "rollout", "rollout": {
    "safe": "beta",
    "variants": [{"name": "ga", "dialect": "ga", "model": "gpt-realtime-2.1", "weight": 50},
                 {"name": "beta", "dialect": "ga", "model": "gpt-realtime-2.1-mini", "weight": 50}],
    "experiment": {"guardrails": {"failure_rate": {"margin": 0.5, "floor": 0.05}, "abandon_rate": {"on": False},
                                  "greeting_ms": {"on": False}, "first_reply_ms": {"on": False}}},
}})  # fmt: skip
CHART = "article[data-dialplan=axis] .candidate[data-variant=ga] svg.trend[data-metric=failure_rate]"

# In the page's pixels: the plot's box, the margin and zero lines' y, the band's edges at the last point, and the clip
# marks (their tips' y and their points' calls).
PIXELS = """((svg) => {
  const box = svg.getBoundingClientRect(), [, , , vh] = svg.getAttribute("viewBox").split(/\\s+/).map(Number);
  const k = box.height / vh, y = (v) => box.top + v * k;
  const plot = svg.querySelector("rect.plot").getBoundingClientRect();
  const band = svg.querySelector("polygon.band").getAttribute("points").trim().split(/\\s+/)
    .map((p) => p.split(",").map(Number));
  const n = band.length / 2, hi = band[n - 1][1], lo = band[n][1];  // upper edge, then the lower one reversed
  const marks = [...svg.querySelectorAll("g.clipped polygon.clip-mark")].map((m) => ({
    side: m.classList.contains("top") ? "top" : "bottom", calls: Number(m.dataset.calls),
    tip: y(m.getAttribute("points").trim().split(/\\s+/)[2].split(",").map(Number)[1]) }));
  return {top: plot.top, bottom: plot.bottom, margin: svg.querySelector("line.margin").getBoundingClientRect().top,
          zero: svg.querySelector("line.zero").getBoundingClientRect().top, hi: y(hi), lo: y(lo), marks};
})"""


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    with EmbeddedRedis() as server:
        yield server.url


async def _fill(client: aioredis.Redis, rollouts: RolloutStore) -> None:
    await rollouts.set_flag("axis", {"weights": HALF}, "qa", "half on GA")
    rng = random.Random(5)
    for i in range(CALLS):  # one call ending every 30 s
        t, variant = T0 + 30 * i, ("ga" if i % 2 else "beta")
        record = {"t": t, "started": t - 30, "call_id": f"call-{i}", "caller": f"caller-{i}", "variant": variant,
                  "epoch": epoch_of(HALF, False), "shares": {"ga": 0.5, "beta": 0.5},
                  "outcome": "connect_failure" if rng.random() < 0.05 else "ok", "transferred": False,
                  "abandoned": False, "handle_time_s": 30.0, "greeting_ms": 800.0, "first_reply_ms": None,
                  "cost_usd": None, "repeat": False, "disposition": None}  # fmt: skip
        await records.append(client, "axis", record, sign_key=KEY)


async def test_the_charts_y_axis_fits_the_recent_intervals_and_clips_the_earlier_wider_ones(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    rollouts = RolloutStore(client=client, specs={"axis": AXIS.rollout_spec}, rollout_keys=KEY)  # type: ignore[arg-type]
    await _fill(client, rollouts)
    app = create_app(token=OPERATOR_TOKEN, redis=client, rollouts=rollouts, dialplans=(AXIS,))
    try:
        async with TestServer(app) as server, Browser(width=1400, height=1000) as browser:
            page = await browser.page()
            await sign_in(page, str(server.make_url("/")), OPERATOR_TOKEN, name="Dana")
            await page.wait_for(f"document.querySelector({json.dumps(CHART)}) !== null", 30)
            px: dict[str, Any] = await page.eval(f"{PIXELS}(document.querySelector({json.dumps(CHART)}))")
            assert page.problems == [], page.problems
    finally:
        await client.aclose()
    height = px["bottom"] - px["top"]
    # the current interval is drawn tall, below the margin line (worse is up) and well apart from it
    assert px["lo"] - px["hi"] >= 0.25 * height, px
    assert px["hi"] - px["margin"] >= 0.15 * height and px["hi"] - px["margin"] >= 12, px
    assert px["zero"] - px["margin"] >= 0.25 * height, px  # zero and the margin: not one flat line
    # the first points' wider bands go past the axis: clipped at the plot's edge, a mark there
    assert px["marks"], px
    assert {m["side"] for m in px["marks"]} == {"top", "bottom"}, px["marks"]
    for m in px["marks"]:
        edge = px["top"] if m["side"] == "top" else px["bottom"]
        assert abs(m["tip"] - edge) <= 1.5, (m, px)
    assert min(m["calls"] for m in px["marks"]) < CALLS / 8  # the early ones, not the recent ones
