"""The rollout card as a rollout owner follows a guarded rollout step by step, through the API with a real Redis
holding signed outcome records and in a real Chromium at 800 and 1400 px:

* *steps*: three variants (base safe, ga, mini), ``auto_promote`` 10, 25, 60, 95 and the default holdout (the last
  step capped at ``100 - holdout``). mini fails a third of its calls and is rolled back; ga is promoted to 25, 60, then
  the last step, each decision taken on the flag as a worker takes it (``records.apply_decision``). The last
  promotion's record is the last one: the flag is at the last step and no call under it has ended. The card shows the
  flag's step and waits for the first calls under it; once one has ended, the engine's verdict at the last step. Each
  chart ends on the estimate its table row shows, and marks the steps and the rollback where they happened (at the
  candidate's calls then), their labels inside the chart and apart.
* *busy*: 300 calls in one hour: the charts have points (by calls) before any second hour.
* *slow*: a call an hour: the verdict says how long the calls it needs take at that traffic.

The value columns say what they are (each variant's over all its calls) beside the difference (within the same
weights and hour), and each guardrail has the engine's reading. Any console error, uncaught exception or CSP
violation in the page fails the test."""

from __future__ import annotations

import base64
import itertools
import json
import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _console_helpers import CHROMIUM, OPERATOR_TOKEN, Browser, sign_in
from aiohttp.test_utils import TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout import records
from bridge.rollout.experiment import Decision, shares_of
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.store import RolloutStore
from bridge.serve.experiment_cli import how_long, show_experiment
from bridge.supervisor.api import create_app

pytestmark = pytest.mark.integration
KEY = (b"rollout-key-for-the-steps-test",)
T0 = 1_700_002_800.0  # the start of an hour (the engine's strata are hours)
GUARDED = ("failure_rate", "greeting_ms")  # the guardrails on in these plans

STEPS = Dialplan.model_validate({"name": "steps", "match": ["5003"], "dialect": "rollout", "rollout": {
    "safe": "base",
    "variants": [{"name": "base", "dialect": "ga", "model": "gpt-realtime-2.1", "weight": 80},
                 {"name": "ga", "dialect": "ga", "model": "gpt-realtime-2.1-mini", "weight": 10},
                 {"name": "mini", "dialect": "ga", "model": "gpt-realtime", "weight": 10}],
    "experiment": {"auto_promote": [10, 25, 60, 95], "min_calls": 20, "step_min_s": 900, "cycle_s": 3600,
                   "guardrails": {"failure_rate": {"margin": 1.0, "floor": 0.05}, "abandon_rate": {"on": False},
                                  "first_reply_ms": {"on": False}}},
}})  # fmt: skip
assert STEPS.rollout_spec is not None
HOLDOUT = STEPS.rollout_spec.experiment.holdout  # the default: base's share at ga's last step
LAST = 100 - HOLDOUT  # ga's last step: the plan's 95 capped at 100 - holdout
HELD, TOP = f"{HOLDOUT:g}", f"{LAST:g}"  # as the card and rollout show print them


def _pair(name: str, number: str) -> Dialplan:
    return Dialplan.model_validate({"name": name, "match": [number], "dialect": "rollout", "rollout": {
        "safe": "beta",
        "variants": [{"name": "ga", "dialect": "ga", "model": "gpt-realtime-2.1", "weight": 50},
                     {"name": "beta", "dialect": "ga", "model": "gpt-realtime-2.1-mini", "weight": 50}],
        "experiment": {"guardrails": {"abandon_rate": {"on": False}, "first_reply_ms": {"on": False}}},
    }})  # fmt: skip


BUSY, SLOW = _pair("busy", "5004"), _pair("slow", "5005")
PLANS = (STEPS, BUSY, SLOW)
FAILS = {"base": 0.03, "ga": 0.03, "mini": 0.35, "beta": 0.03}


@pytest.fixture
def redis_url() -> AsyncIterator[str]:
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    with EmbeddedRedis() as server:
        yield server.url


def _record(
    rng: random.Random, n: int, t: float, weights: dict[str, float], variant: str | None = None
) -> dict[str, Any]:
    """One call's outcome record, its variant drawn with ``weights`` unless given."""
    shares = shares_of(weights)
    variant = variant or rng.choices(list(shares), list(shares.values()))[0]
    failed = rng.random() < FAILS[variant]
    return {"t": t, "started": t - 30, "call_id": f"call-{n}", "caller": f"caller-{rng.randrange(10**9)}",
            "variant": variant, "epoch": epoch_of(weights, False), "shares": shares,
            "outcome": "connect_failure" if failed else "ok", "transferred": False, "abandoned": False,
            "handle_time_s": 30.0, "greeting_ms": None if failed else 800 * math.exp(0.3 * rng.gauss(0, 1)),
            "first_reply_ms": None, "cost_usd": None, "repeat": False, "disposition": None}  # fmt: skip


async def _steps(client: aioredis.Redis, rollouts: RolloutStore) -> tuple[list[Decision], float]:
    """The steps plan as the workers run it: each record written, the engine fed it, its decisions taken on the flag;
    up to the record whose decision promotes ga to its last step. Returns the decisions and the last record's t."""
    spec = STEPS.rollout_spec
    engine, rng = records.engine(spec), random.Random(5)
    weights, decided, t, n = dict(spec.default_flag().weights), [], T0, 0
    while not any(d.variant == "ga" and (d.weights or {}).get("ga", 0) >= LAST for d in decided):
        t, n = t + 6.0, n + 1  # a call ending every 6 s
        record = _record(rng, n, t, weights)
        await records.append(client, "steps", record, sign_key=KEY)
        for d in engine.feed(record):
            decided.append(d)
            assert await records.apply_decision(rollouts, "steps", spec, d)
            weights = d.weights or weights
    return decided, t


async def _fill(client: aioredis.Redis, rollouts: RolloutStore) -> tuple[list[Decision], float]:
    rng = random.Random(7)
    half = {"ga": 50.0, "beta": 50.0}
    for i in range(300):  # every call of the busy plan within its first hour
        await records.append(client, "busy", _record(rng, i, T0 + 10.0 * i, half, "ga" if i % 2 else "beta"),
                             sign_key=KEY)  # fmt: skip
    for i in range(40):  # the slow plan: a call an hour
        await records.append(client, "slow", _record(rng, i, T0 + 3600.0 * i, half, "ga" if i % 2 else "beta"),
                             sign_key=KEY)  # fmt: skip
    return await _steps(client, rollouts)


async def _panel(server: TestServer) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/api/console/rollout"),
                                                         headers=headers) as r:  # fmt: skip
        assert r.status == 200, await r.text()
        return dict(await r.json())


# A chart's drawing, in its own viewBox units: the difference's vertices, each mark (its action, calls and line's x),
# and the box of every text (the marks' labels apart).
CHART = """((svg) => {
  const vb = svg.viewBox.baseVal;
  const box = (t) => { const b = t.getBBox(); return [b.x, b.y, b.width, b.height, t.textContent]; };
  const vertices = svg.querySelector("polyline.line").getAttribute("points").trim().split(/\\s+/)
    .map((p) => p.split(",").map(Number));
  const marks = [...svg.querySelectorAll("g.step-mark")].map((g) => ({action: g.dataset.action,
    calls: Number(g.dataset.calls), x: Number(g.querySelector("line.step-line").getAttribute("x1")),
    title: g.querySelector("title").textContent}));
  const now = svg.querySelector("circle.now");
  return {box: [vb.x, vb.y, vb.width, vb.height], vertices, marks,
          now: [Number(now.getAttribute("cx")), Number(now.getAttribute("cy"))],
          labels: [...svg.querySelectorAll("text.step-label")].map(box),
          texts: [...svg.querySelectorAll("text:not(.step-label)")].map(box),
          label: svg.getAttribute("aria-label")};
})"""


async def _shot(page: Any, selector: str, path: Path) -> None:
    """A picture of one element (kept with the test's files, for a person to look at)."""
    rect = f"document.querySelector({json.dumps(selector)}).getBoundingClientRect()"
    clip = await page.eval(f"(() => {{ const r = {rect};"
                           " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height, scale: 1};"
                           " })()")  # fmt: skip
    shot = await page.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def _apart(a: list[Any], b: list[Any]) -> bool:
    """Two boxes ``[x, y, w, h, text]`` that do not overlap."""
    return a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


async def _chart(page: Any, card: str, variant: str, metric: str) -> dict[str, Any]:
    svg = f"article[data-dialplan={card}] .candidate[data-variant={variant}] svg.trend[data-metric={metric}]"
    return dict(await page.eval(f"{CHART}(document.querySelector({json.dumps(svg)}))"))


async def test_the_rollout_card_follows_the_flag_and_its_charts_show_the_tables_estimate_and_the_steps(
    redis_url: str, tmp_path: Path
) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    specs = {p.name: p.rollout_spec for p in PLANS}
    rollouts = RolloutStore(client=client, specs=specs, rollout_keys=KEY)  # type: ignore[arg-type]
    decided, t_last = await _fill(client, rollouts)
    assert [(d.variant, d.action, (d.weights or {}).get(d.variant)) for d in decided] == [
        ("mini", "rollback", 0.0), ("ga", "promote", 25.0), ("ga", "promote", 60.0), ("ga", "promote", LAST),
    ]  # fmt: skip
    app = create_app(token=OPERATOR_TOKEN, redis=client, rollouts=rollouts, dialplans=PLANS)
    async with TestServer(app) as server:
        panel = await _panel(server)
        plans = {p["dialplan"]: p for p in panel["dialplans"]}
        steps, busy, slow = (plans[n]["experiment"] for n in ("steps", "busy", "slow"))

        # -- the API: the flag moved to the last step with the last record; the verdicts follow it
        flag = await rollouts.stored_flag("steps")
        assert flag is not None and flag.weights == {"base": HOLDOUT, "ga": LAST, "mini": 0.0}
        assert steps["epoch"] != epoch_of(flag.weights, False) == steps["flag_epoch"]
        assert steps["pending"] == {"epoch": steps["flag_epoch"], "kill": False,
                                    "shares": {"base": HOLDOUT, "ga": LAST, "mini": 0.0}}  # fmt: skip
        ga, mini = steps["estimates"]["ga"]["verdict"], steps["estimates"]["mini"]["verdict"]
        assert (ga["share"], ga["holdout"], ga["more_calls"], ga["more_time_s"]) == (LAST, HOLDOUT, None, None)
        assert ga["next"].startswith(f"wait: no call at {TOP} % has ended yet") and ga["pending"] is True
        assert ga["waiting_for"] == ["the first calls under the new weights"]
        assert mini["state"] == "rolled_back" and mini["next"].startswith("none: rolled back") and mini["share"] == 0
        # each candidate's marks: where each step and decision happened, at its calls of each guardrail
        assert [(m["action"], m.get("share")) for m in ga["marks"]] == [("promote", 25.0), ("promote", 60.0),
                                                                        ("promote", LAST)]  # fmt: skip
        assert [m["action"] for m in mini["marks"]] == ["rollback"]
        ga_calls = [m["calls"]["failure_rate"] for m in ga["marks"]]
        assert ga_calls == sorted(ga_calls) and ga_calls[-1] == steps["estimates"]["ga"]["calls"]
        # the chart's last point is the estimate the table shows, for every guardrail that has one
        for plan in (steps, busy, slow):
            for row in plan["estimates"].values():
                for metric in GUARDED:
                    m = row[metric]
                    if "verdict" in row and m["vs_safe"] is not None:
                        last = m["trend"][-1]
                        assert [last["diff"], [last["lo"], last["hi"]]] == [m["vs_safe"]["diff"], m["vs_safe"]["ci95"]]
        # a busy first hour has points (as the calls grow) though no second hour has begun
        assert len({math.floor((T0 + 10.0 * i) / 3600) for i in range(300)}) == 1
        busy_trend = busy["estimates"]["ga"]["failure_rate"]["trend"]
        assert len(busy_trend) >= 5 and [p["calls"] for p in busy_trend] == sorted(p["calls"] for p in busy_trend)
        # a slow plan: how long the calls it needs take at its traffic
        slow_v = slow["estimates"]["ga"]["verdict"]
        assert slow_v["more_calls"] > 0 and slow_v["more_time_s"] > 2 * 86400, slow_v
        # rollout show says the same
        _, text = await show_experiment(rollouts, "steps", STEPS.rollout_spec, flag)
        assert f"new weights (base {HELD} %, ga {TOP} %, mini 0 %): no call under them has ended yet" in text, text
        _, text = await show_experiment(rollouts, "slow", SLOW.rollout_spec)
        days = how_long(slow_v["more_time_s"])
        assert f"about {slow_v['more_calls']} more candidate calls ({days} at current traffic)" in text, text

        if CHROMIUM is None:
            await client.aclose()
            return
        for width in (800, 1400):
            async with Browser(width=width, height=1000) as browser:
                page = await browser.page()
                await sign_in(page, str(server.make_url("/")), OPERATOR_TOKEN, name="Dana")
                await _check_pending(page)
                await _check_charts(page, steps, busy)
                await _check_tables(page, steps, slow)
                await _shot(page, "article[data-dialplan=steps]", tmp_path / f"steps-{width}.png")
                assert await page.eval("document.documentElement.scrollWidth <= window.innerWidth"), width
                assert page.problems == [], (width, page.problems)

        # -- the first call under the new weights ends: the engine's own verdict at the last step
        rng = random.Random(11)
        await records.append(client, "steps", _record(rng, 10**6, t_last + 6.0, flag.weights, "ga"), sign_key=KEY)
        after = {p["dialplan"]: p for p in (await _panel(server))["dialplans"]}["steps"]["experiment"]
        assert after["pending"] is None and after["epoch"] == after["flag_epoch"]
        ga_after = after["estimates"]["ga"]["verdict"]
        assert ga_after["share"] == LAST and "pending" not in ga_after
        if CHROMIUM is not None:
            async with Browser(width=1400, height=1000) as browser:
                page = await browser.page()
                await sign_in(page, str(server.make_url("/")), OPERATOR_TOKEN, name="Dana")
                ga_card = "article[data-dialplan=steps] .candidate[data-variant=ga]"
                await page.wait_for(f"document.querySelector({json.dumps(ga_card + ' .verdict')}) !== null", 20)
                assert await page.eval("document.querySelector('article[data-dialplan=steps] p.pending')") is None
                assert await page.text(f"{ga_card} .verdict .step") == f"step: {TOP} % of new calls"
                assert not (await page.text(f"{ga_card} .verdict .next")).startswith("Next: wait:")
                assert page.problems == [], page.problems
    await client.aclose()


async def _check_pending(page: Any) -> None:
    card = "article[data-dialplan=steps]"
    ga, mini = f"{card} .candidate[data-variant=ga]", f"{card} .candidate[data-variant=mini]"
    await page.wait_for(f"document.querySelector({json.dumps(ga + ' svg.trend')}) !== null", 20)
    assert await page.text(f"{card} tr[data-variant=ga] td.weight") == TOP
    assert await page.text(f"{ga} .verdict .step") == f"step: {TOP} % of new calls"
    assert await page.text(f"{ga} .verdict .holdout") == f"holdout: {HELD} % kept on base"
    assert (await page.text(f"{ga} .verdict .next")).startswith(f"Next: wait: no call at {TOP} % has ended yet")
    assert await page.text(f"{ga} .verdict .waiting li") == "the first calls under the new weights"
    assert await page.eval(f"document.querySelector({json.dumps(ga + ' .verdict .more')})") is None
    note = await page.text(f"{card} p.pending")
    changed = f"The weights changed: base {HELD} %, ga {TOP} %, mini 0 % of new calls. No call under them"
    assert note.startswith(changed), note
    assert await page.text(f"{mini} .verdict .state") == "Rolled back"
    assert await page.text(f"{mini} .verdict .step") == "step: 0 % of new calls"


async def _check_charts(page: Any, steps: dict[str, Any], busy: dict[str, Any]) -> None:
    for variant, metric in (("ga", "failure_rate"), ("ga", "greeting_ms"), ("mini", "failure_rate")):
        m = steps["estimates"][variant][metric]
        drawn = await _chart(page, "steps", variant, metric)
        # the line ends on the table's estimate: the chart's "now" is the row's difference
        diff = await page.text(f"article[data-dialplan=steps] .candidate[data-variant={variant}] "
                               f"table.guardrails tr[data-metric={metric}] td.diff")  # fmt: skip
        assert f", now {diff}: " in drawn["label"], (drawn["label"], diff)
        assert len(drawn["vertices"]) == len(m["trend"])
        assert all(abs(a - b) < 0.06 for a, b in zip(drawn["now"], drawn["vertices"][-1], strict=True)), drawn["now"]
        # a line for each step and decision, at its calls on the axis: between the points around it
        marks = [(k["action"], k["calls"][metric]) for k in steps["estimates"][variant]["verdict"]["marks"]]
        assert [(k["action"], k["calls"]) for k in drawn["marks"]] == marks, drawn["marks"]
        xs, calls = [x for x, _ in drawn["vertices"]], [p["calls"] for p in m["trend"]]
        for k in drawn["marks"]:
            if k["calls"] <= calls[0]:
                assert k["x"] <= xs[0] + 0.1, (k, xs[0])
                continue
            i = max(j for j, c in enumerate(calls) if c <= k["calls"])
            assert xs[i] - 0.1 <= k["x"] <= (xs[i + 1] if i + 1 < len(xs) else xs[i]) + 0.1, (k, xs, calls)
            assert f"at {k['calls']} candidate calls" in k["title"]
        # the labels inside the chart, apart from each other and from every other text
        x0, y0, w, _ = drawn["box"]
        assert drawn["labels"], drawn
        for label in drawn["labels"]:
            assert x0 <= label[0] and label[0] + label[2] <= x0 + w and y0 <= label[1], label
            assert all(_apart(label, other) for other in drawn["texts"]), (label, drawn["texts"])
        for a, b in itertools.combinations(drawn["labels"], 2):
            assert _apart(a, b), (a, b)
    ga_labels = [b[4] for b in (await _chart(page, "steps", "ga", "failure_rate"))["labels"]]
    assert set(ga_labels) <= {"→ 25 %", "→ 60 %", f"→ {TOP} %"} and f"→ {TOP} %" in ga_labels, ga_labels
    assert [b[4] for b in (await _chart(page, "steps", "mini", "failure_rate"))["labels"]] == ["rollback"]
    # the busy plan's first hour: a line of several points, no "no point yet"
    drawn = await _chart(page, "busy", "ga", "failure_rate")
    assert len(drawn["vertices"]) == len(busy["estimates"]["ga"]["failure_rate"]["trend"]) >= 5
    assert await page.eval("document.querySelector('article[data-dialplan=busy] .too-few')") is None


async def _check_tables(page: Any, steps: dict[str, Any], slow: dict[str, Any]) -> None:
    ga = "article[data-dialplan=steps] .candidate[data-variant=ga]"
    head = await page.eval(f"[...document.querySelectorAll({json.dumps(ga + ' table.guardrails th[data-col]')})]"
                           ".map((th) => [th.dataset.col, th.textContent, th.title])")  # fmt: skip
    assert [(c, t) for c, t, _ in head] == [
        ("safe-value", "base (safe), all calls"), ("value", "ga, all calls"),
        ("diff", "Difference, same weights and hour (95 %)"),
    ]  # fmt: skip
    assert "over all its calls" in head[0][2] and "same weights and in the same hour" in head[2][2], head
    note = await page.text(f"{ga} .value-note")
    assert "over all its calls" in note and "same weights and in the same hour" in note, note
    assert (await page.eval(f"[...document.querySelectorAll({json.dumps(ga + ' table.guardrails thead th')})]"
                            ".map((th) => th.textContent)"))[-1] == "Reading"  # fmt: skip
    for metric in GUARDED:
        m = steps["estimates"]["ga"][metric]
        word = await page.text(f"{ga} table.guardrails tr[data-metric={metric}] td.word")
        assert word == m["reading"], (metric, word, m)
        assert await page.text(f"{ga} figure[data-metric={metric}] .reading") == m["reading"]
    v = slow["estimates"]["ga"]["verdict"]
    more = await page.text("article[data-dialplan=slow] .candidate[data-variant=ga] .verdict .more")
    assert more == f"About {v['more_calls']} more ga calls before the next step: {how_long(v['more_time_s'])} at " \
        "current traffic.", more  # fmt: skip
    assert more.endswith("days at current traffic."), more


async def test_a_decision_the_flag_refused_is_never_shown_as_applied(redis_url: str) -> None:
    """Two workers, each with its engine fed the same records in order, reach the same first decision (mini rolled
    back); between the decision and its apply a person moves the flag, so neither worker's apply changes it. The
    card's decisions, the charts' marks and ``rollout show`` hold no such decision, and mini is not called rolled
    back while the flag still gives it calls."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    spec = STEPS.rollout_spec
    assert spec is not None
    rollouts = RolloutStore(client=client, specs={"steps": spec}, rollout_keys=KEY)
    workers, rng = (records.engine(spec), records.engine(spec)), random.Random(5)
    weights, t, n, refused = dict(spec.default_flag().weights), T0, 0, None
    while refused is None:
        t, n = t + 6.0, n + 1
        record = _record(rng, n, t, weights)
        await records.append(client, "steps", record, sign_key=KEY)
        decided = [w.feed(record) for w in workers]
        if decided[0]:
            refused = decided[0][0]
    assert (refused.variant, refused.action) == ("mini", "rollback")
    moved = {"base": 75.0, "ga": 15.0, "mini": 10.0}  # a person, before either worker applies it
    await rollouts.set_flag("steps", {"weights": moved}, "ada", "more on ga by hand")
    for d in decided:  # both workers try: the flag is off the epoch decided on
        assert not await records.apply_decision(rollouts, "steps", spec, d[0])
    app = create_app(token=OPERATOR_TOKEN, redis=client, rollouts=rollouts, dialplans=(STEPS,))
    async with TestServer(app) as server:
        steps = {p["dialplan"]: p for p in (await _panel(server))["dialplans"]}["steps"]["experiment"]
    assert steps["decisions"] == [] and steps["refused_decisions"] == 1
    mini = steps["estimates"]["mini"]["verdict"]
    assert mini["state"] != "rolled_back" and mini["marks"] == [], mini
    flag = await rollouts.stored_flag("steps")
    assert flag is not None and flag.weights == moved
    shown, text = await show_experiment(rollouts, "steps", spec, flag)
    assert "decided:" not in text and "1 computed decision(s) the flag refused" in text, text
    assert shown["decisions"] == []
    await client.aclose()
