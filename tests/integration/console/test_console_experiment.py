"""The rollout card's guarded rollout, through the API with a real Redis holding three plans' signed outcome records,
and as a supervisor sees it in a real Chromium at 800 and 1400 px:

* *canary* (GA against beta, no ``rollout.rollback`` section): 400 calls over 13 h; GA fails far more often and is
  rolled back; its greeting is as fast as beta's. Each guardrail that is on has a chart of its difference and 95 %
  interval over the candidate's calls, with zero and the margin drawn; the failure rate's band lies above zero (worse
  is up), the greeting's straddles it. No rollback-rule text: the window's health is for reference only. Two GA calls
  ran on the fallback model and are marked.
* *fresh*: 6 calls: "too few calls (47 more)" in place of every interval, and two unsigned records left out; a
  probe of its safe variant's model that failed, shown on the verdict.
* *guarded* (its own ``rollout`` section with a ``rollback`` rule): three GA calls for every beta call where the
  weights draw one each: the sample-ratio warning, and the window's rollback rule shown.

Any console error, uncaught exception or CSP violation in the page fails the test."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from _console_helpers import CHROMIUM, OPERATOR_TOKEN, Browser, sign_in
from aiohttp.test_utils import TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout import probes, records
from bridge.rollout.health import CallStats
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.policy import LEGACY_BETA_MODEL, LEGACY_GA_MODEL
from bridge.rollout.store import RolloutStore
from bridge.supervisor.api import create_app

pytestmark = pytest.mark.integration
KEY = (b"rollout-key-for-the-console-test",)
T0 = 1_700_000_000.0
STEP_S = 120.0  # one call ending every two minutes: trend points each hour and as the calls grow
ON = ("failure_rate", "abandon_rate", "greeting_ms", "first_reply_ms")  # the guardrails on by default
HALF = {"ga": 50.0, "beta": 50.0}  # every plan's weights here (canary's and fresh's stored: their own are 0/100)
OFF = ("transfer_rate", "repeat_rate", "handle_time_s", "cost_per_call_usd", "check_fail_rate")


def _plan(name: str, number: str, rollout: dict[str, Any] | None = None) -> Dialplan:
    plan: dict[str, Any] = {"name": name, "match": [number], "dialect": "rollout"}
    if rollout is not None:
        plan["rollout"] = rollout
    return Dialplan.model_validate(plan)


CANARY, FRESH = _plan("canary", "5000"), _plan("fresh", "5001")  # GA against beta (beta safe), no rollback rule
GUARDED = _plan("guarded", "5002", {
    "safe": "beta", "rollback": {"window_s": 600, "min_calls": 10, "failure_rate_threshold": 0.25},
    "variants": [{"name": "ga", "dialect": "ga", "model": LEGACY_GA_MODEL, "weight": 50},
                 {"name": "beta", "dialect": "beta", "model": LEGACY_BETA_MODEL, "weight": 50}],
})  # fmt: skip
PLANS = (CANARY, FRESH, GUARDED)


@pytest.fixture
def redis_url() -> AsyncIterator[str]:
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    with EmbeddedRedis() as server:
        yield server.url


def _record(rng: random.Random, i: int, variant: str, fail_ga: float = 0.3) -> dict[str, Any]:
    t = T0 + STEP_S * i
    failed = rng.random() < (fail_ga if variant == "ga" else 0.02)
    return {"t": t, "started": t - 30, "call_id": f"call-{i}", "caller": f"caller-{i}", "variant": variant,
            "epoch": epoch_of(HALF, False), "shares": {"ga": 0.5, "beta": 0.5},
            "outcome": "connect_failure" if failed else "ok", "transferred": False, "abandoned": False,
            "handle_time_s": 30.0, "greeting_ms": None if failed else 800 * math.exp(0.4 * rng.gauss(0, 1)),
            "first_reply_ms": None, "cost_usd": None, "repeat": False, "disposition": None}  # fmt: skip


async def _fill(client: aioredis.Redis, rollouts: RolloutStore) -> None:
    rng = random.Random(3)
    for plan in ("canary", "fresh"):  # the flag the records were drawn under
        await rollouts.set_flag(plan, {"weights": HALF}, "qa", "half on GA")
    engine = records.engine(CANARY.rollout_spec)
    for i in range(400):  # as a worker does after each call: the record, then the engine's decisions applied
        record = _record(rng, i, "ga" if i % 2 else "beta")
        await records.append(client, "canary", record, sign_key=KEY)
        for decision in engine.feed(record):
            assert await records.apply_decision(rollouts, "canary", CANARY.rollout_spec, decision)
    for i in range(6):
        await records.append(client, "fresh", _record(rng, i, "ga" if i % 2 else "beta"), sign_key=KEY)
    failed = probes.Probe(T0 + 700.0, T0 + 705.0, False, None, "server")  # a probe of beta's model
    await records.append(client, "fresh", probes.entry("p1", "beta", failed), sign_key=KEY)
    for i in range(6, 8):  # written by something without the key: no evidence
        await records.append(client, "fresh", _record(rng, i, "ga", fail_ga=1.0))
    for i in range(240):  # three GA calls for each beta call where the weights draw one each
        await records.append(client, "guarded", _record(rng, i, "beta" if i % 4 == 0 else "ga", 0.0), sign_key=KEY)
    for fell_back in (True, True, False):  # the health window: two calls saved by the fallback, as a worker keeps them
        stats = CallStats()
        stats.fallback = fell_back
        await rollouts.record_call("canary", "ga", stats.record())


def _word(m: dict[str, Any]) -> str:
    """The reading the page gives a guardrail: the engine's, "too few calls" without an interval."""
    return str(m["reading"]) if m["vs_safe"] is not None else "too few calls"


# A chart's geometry, in its own viewBox units: the box, the band's corners, the zero and margin lines' y.
GEOMETRY = """((svg) => {
  const num = (el, name) => Number(el.getAttribute(name));
  const [x, y, w, h] = svg.getAttribute("viewBox").split(/\\s+/).map(Number);
  const band = svg.querySelector("polygon.band").getAttribute("points").trim().split(/\\s+/)
    .map((p) => p.split(",").map(Number));
  const zero = svg.querySelector("line.zero"), margin = svg.querySelector("line.margin");
  const line = svg.querySelector("polyline.line").getAttribute("points").trim().split(/\\s+/).length;
  return {box: [x, y, w, h], band, zero: num(zero, "y1"), margin: margin ? num(margin, "y1") : null, line,
          width: svg.getBoundingClientRect().width};
})"""


async def _geometry(page: Any, card: str, metric: str) -> dict[str, Any]:
    svg = f"{card} .candidate[data-variant=ga] svg.trend[data-metric={metric}]"
    return dict(await page.eval(f"{GEOMETRY}(document.querySelector({json.dumps(svg)}))"))


async def _metrics(page: Any, selector: str) -> list[str]:
    """``data-metric`` of each element ``selector`` finds, in the page's order."""
    return list(await page.eval(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.dataset.metric)"))


async def test_the_rollout_card_shows_each_candidates_verdict_and_guardrail_charts(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    specs = {p.name: p.rollout_spec for p in PLANS}
    rollouts = RolloutStore(client=client, specs=specs, rollout_keys=KEY)  # type: ignore[arg-type]
    await _fill(client, rollouts)
    app = create_app(token=OPERATOR_TOKEN, redis=client, rollouts=rollouts, dialplans=PLANS)
    async with TestServer(app) as server:
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/api/console/rollout"),
                                                             headers=headers) as r:  # fmt: skip
            assert r.status == 200, await r.text()
            panel = await r.json()
        plans = {p["dialplan"]: p for p in panel["dialplans"]}
        canary, fresh, guarded = (plans[n]["experiment"] for n in ("canary", "fresh", "guarded"))

        # -- the API: what the page draws from
        ga = canary["estimates"]["ga"]
        assert ga["calls"] == canary["estimates"]["beta"]["calls"] == 200
        assert ga["failure_rate"]["vs_safe"]["ci95"][0] > 0  # surely worse
        assert ga["greeting_ms"]["vs_safe"]["ci95"][0] < 0 < ga["greeting_ms"]["vs_safe"]["ci95"][1]  # not sure
        assert ga["verdict"]["state"] == "rolled_back" and [d["action"] for d in canary["decisions"]] == ["rollback"]
        assert len(ga["failure_rate"]["trend"]) >= 5 and len(ga["greeting_ms"]["trend"]) >= 5
        assert ga["first_reply_ms"]["trend"] == [] and ga["first_reply_ms"]["too_few"] == 50  # no call had a reply
        assert canary["signed"] and canary["rejected"] == {"unsigned": 0, "bad signature": 0}
        assert fresh["rejected"] == {"unsigned": 2, "bad signature": 0}
        assert fresh["estimates"]["ga"]["failure_rate"]["too_few"] == 47
        probe = fresh["estimates"]["ga"]["verdict"]["probe"]
        assert probe == {"at": "2023-11-14T22:25:00.000Z", "at_unix": T0 + 700.0, "ok": False, "ms": None,
                         "error": "server"}  # fmt: skip
        assert guarded["srm"] is not None and guarded["estimates"]["ga"]["verdict"]["srm"]
        assert (plans["canary"]["rollback_rule"], plans["guarded"]["rollback_rule"]) == (False, True)
        (ga_health,) = [row for row in plans["canary"]["health"]["rows"] if row["variant"] == "ga"]
        assert (ga_health["fallbacks"], ga_health["connect_failures"], ga_health["failed"]) == (2, 2, 0)
        assert (ga_health["failed_rate"], ga_health["failure_rate"]) == (0.0, 0.6667)  # failed no caller; the rule's
        assert [m["key"] for m in panel["metrics"]] == [*ON, *OFF]  # labelled, in the engine's order

        if CHROMIUM is None:
            await client.aclose()
            return
        for width in (800, 1400):
            async with Browser(width=width, height=1000) as browser:
                page = await browser.page()
                await sign_in(page, str(server.make_url("/")), OPERATOR_TOKEN, name="Dana")
                await _check_page(page, canary, guarded, width)
                assert page.problems == [], (width, page.problems)  # no CSP violation, no error
    await client.aclose()


async def _check_page(page: Any, canary: dict[str, Any], guarded_exp: dict[str, Any], width: int) -> None:
    card = "article[data-dialplan=canary]"
    ga = f"{card} .candidate[data-variant=ga]"
    await page.wait_for(f"document.querySelector({json.dumps(ga + ' svg.trend')}) !== null", 20)

    # -- the verdict: state, step, holdout, what comes next, the decision
    assert await page.text(f"{ga} .verdict .state") == "Rolled back"
    assert await page.text(f"{ga} .verdict .step") == "step: 0 % of new calls"  # the flag's, once it is rolled back
    assert await page.text(f"{ga} .verdict .holdout") == "holdout: none before the last step"
    assert (await page.text(f"{ga} .verdict .next")).startswith("Next: none: rolled back")
    assert "failure_rate surely worse" in await page.text(f"{ga} .verdict .decided")
    decided = await page.text(f"{ga} .verdict .decided")  # what the flag took, and when: the audit's
    assert ": decided on calls up to 2023-11-" in decided and " UTC, applied at " in decided, decided
    assert await page.eval(f"document.querySelector({json.dumps(ga + ' .srm-warning')})") is None
    assert await page.eval(f"document.querySelector({json.dumps(ga + ' .verdict .probe')})") is None  # none sent
    fresh = "article[data-dialplan=fresh] .candidate[data-variant=ga] .verdict .probe"
    assert await page.text(fresh) == (
        "Latest probe of beta's model: failed (server) at 2023-11-14 22:25:00 UTC (a shared outage: the breaker waits)."
    )

    # -- a chart per guardrail that is on and has points; "too few calls" for the one without
    estimates = canary["estimates"]["ga"]
    drawn = await _metrics(page, f"{ga} svg.trend")
    assert drawn == [m for m in ON if estimates[m]["trend"]], drawn
    assert await page.text(f"{ga} figure[data-metric=first_reply_ms] .too-few") == "too few calls (50 more)"
    for metric in drawn:
        geo = await _geometry(page, card, metric)
        x, y, w, h = geo["box"]
        assert all(x <= px <= x + w and y <= py <= y + h for px, py in geo["band"]), geo
        assert y <= geo["zero"] <= y + h and geo["margin"] is not None and y <= geo["margin"] <= y + h, geo
        assert geo["line"] == len(estimates[metric]["trend"])  # the difference: one vertex per point
        assert geo["margin"] < geo["zero"]  # the margin (a regression) is above zero: worse is up
        # the charts scale to the card: readable at both widths (text at least 0.85 of its viewBox size)
        assert 0.85 * w <= geo["width"] <= min(width, 40 * 16), (width, geo["width"])
    worse, unsure = await _geometry(page, card, "failure_rate"), await _geometry(page, card, "greeting_ms")
    assert worse["zero"] > max(py for _, py in worse["band"]), worse  # the whole band above zero: surely worse
    ys = [py for _, py in unsure["band"]]
    assert min(ys) < unsure["zero"] < max(ys), unsure  # zero inside the band: not sure either way

    # -- the guardrails first with a word each, the other metrics folded away
    rows = f"{ga} table.guardrails tbody tr"
    keys = await _metrics(page, rows)
    assert keys == list(ON), keys
    for metric in ON:
        m = estimates[metric]
        assert await page.text(f"{rows}[data-metric={metric}] td.word") == _word(m)
    assert await page.text(f"{rows}[data-metric=failure_rate] td.word") == "worse than its margin"
    assert await page.text(f"{rows}[data-metric=first_reply_ms] td.diff") == "too few calls (50 more)"
    diff = await page.text(f"{rows}[data-metric=failure_rate] td.diff")
    assert diff.startswith("+") and diff.count("pp") == 3, diff  # a rate's difference in percentage points
    bar = f"{rows}[data-metric=failure_rate] svg.ci"
    assert await page.eval(f"document.querySelector({json.dumps(bar)}).getAttribute('class')") == "ci worse"
    assert await page.eval(f"Number(document.querySelector({json.dumps(bar + ' rect.ci-range')}).getAttribute('x'))"
                           " > 50")  # fmt: skip  # the interval right of zero (the bar's middle)
    others = f"{ga} details.other-metrics"
    assert await page.eval(f"document.querySelector({json.dumps(others)}).open") is False
    assert await page.text(f"{others} summary") == "other metrics (not guarding)"
    keys = await _metrics(page, f"{others} tbody tr")
    assert keys == list(OFF), keys

    # -- the health window is for reference, no rollback rule on a plan without one; the fallback calls marked
    caption = await page.text(f"{card} .health-note")
    assert caption == ("Variants, and their recent health (last 300 s; shown for reference: the guarded rollout's "
                       "tests decide)")  # fmt: skip
    assert await page.eval(f"document.querySelector({json.dumps(card + ' .rollback-rule')})") is None
    assert await page.text(f"{card} tr[data-variant=ga] td.name .fallback") == "2 on gpt-4o-realtime-preview"
    # recovered on fallback, not failed: the connect failures say so beside them, the failed calls count none, and
    # the model failure rate the rollback rule reads still counts the variant's own model's failures
    row = f"{card} tr[data-variant=ga]"
    assert await page.text(f"{row} td[data-key=connect_failures]") == "2 (2 recovered on fallback)"
    assert await page.text(f"{row} td[data-key=failed_rate]") == "0.0 %"
    assert await page.text(f"{row} td[data-key=failure_rate]") == "66.7 %"
    heads = await page.eval(
        f"[...document.querySelectorAll({json.dumps(card + ' table.variants th')})].map(t => t.textContent)"
    )
    assert {"Failed calls", "Connect failures", "Model failure rate"} <= set(heads), heads
    terms = await page.text(f"{card} .health-terms")
    assert "a call its fallback model took is recovered on fallback, not failed" in terms, terms
    assert await page.eval(f"document.querySelector({json.dumps(card + ' tr[data-variant=beta] .fallback')})") is None

    # -- a plan with few calls: "too few calls (N more)" instead of an interval; unsigned records left out
    fresh = "article[data-dialplan=fresh]"
    assert await page.text(f"{fresh} .candidate[data-variant=ga] figure[data-metric=failure_rate] .too-few") == (
        "too few calls (47 more)"
    )
    assert await page.eval(f"document.querySelector({json.dumps(fresh + ' svg')})") is None
    diff = await page.text(f"{fresh} table.guardrails tr[data-metric=failure_rate] td.diff")
    assert diff == "too few calls (47 more)", diff
    assert await page.text(f"{fresh} .verdict .state") == "Testing"
    assert await page.text(f"{fresh} .verdict .more") == "About 50 more ga calls before the next step."
    assert "failure_rate: too few calls" in await page.text(f"{fresh} .verdict .waiting")
    waits = await page.text(f"{fresh} .verdict .waiting")
    assert "business cycle (" in waits and not re.search(r"(?<![\d:])\d+(\.\d+)? h\b", waits), waits  # h:mm, min
    assert (await page.text(f"{fresh} .rejected")).startswith("2 outcome records left out as evidence (2 unsigned)")
    assert await page.eval("document.querySelector('.unsigned')") is None  # signed with the key

    # -- the split does not match the weights: the warning; this plan's rollback rule is real, so it is shown
    guarded = "article[data-dialplan=guarded]"
    warning = await page.text(f"{guarded} .experiment > .srm-warning")
    assert warning.startswith("Sample-ratio mismatch: the split of calls is not what the weights draw"), warning
    assert guarded_exp["srm"]["reason"] in warning, warning  # the engine's own words: which variant, how far off
    assert (await page.text(f"{guarded} .verdict .next")).startswith("Next: hold: the observed split")
    assert await page.text(f"{guarded} .rollback-rule") == (
        "Rollback rule: to beta at ≥ 10 calls of a variant in the window and a model failure rate over 25 % and above "
        "beta's."
    )
    assert "its rollback rule below acts on it" in await page.text(f"{guarded} .health-note")

    # -- placed by SVG attributes and classes only: the page's CSP refuses style= attributes
    assert await page.eval("document.querySelectorAll('#rollouts [style], #rollouts style').length") == 0

    # -- nothing wider than the window
    assert await page.eval("document.documentElement.scrollWidth <= window.innerWidth"), width

    # -- what the supervisor unfolded stays unfolded when the panel refreshes (a call ending refreshes it)
    await page.eval(f"document.querySelector({json.dumps(others)}).open = true")
    await page.eval(f"document.querySelector({json.dumps(card)}).dataset.before = 'refresh'")
    await page.click("#rollout-refresh")
    await page.wait_for(f"document.querySelector({json.dumps(card)}).dataset.before === undefined")
    assert await page.eval(f"document.querySelector({json.dumps(others)}).open") is True
    assert await page.eval(f"document.querySelector({json.dumps(fresh + ' details.other-metrics')}).open") is False
