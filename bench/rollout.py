"""``callbridge bench rollout [--quick] [--reps N] [--json]``: seeded guarded rollouts through the product's engine.

Each rollout is a closed loop: calls arrive at ``RATE`` an hour, each drawn onto the candidate with the share the
engine's last decision set (``bridge.rollout.experiment.Experiment``, fed record by record exactly as the workers
and ``rollout evaluate`` feed it), and each call's outcome is drawn from its variant's truth. Defaults everywhere:
the ramp ``auto_promote: [5, 25, 50, 100]`` with its 5 % holdout. The truth of the safe variant: failures 2 %,
abandonment 8 %, greeting median 700 ms and first reply 900 ms (log-normal, sigma 0.6), handle time median 180 s
(log-normal, sigma 1). Every scenario prints its goal beside its figure (a rate with its Wilson 95 % interval):

* **equal**: the candidate reaches the last step within ``CALLS`` calls (goal >= 80 %) and is rolled back
  (goal <= 5 %); also with a daily swing of both variants' failures from 4 % to 40 % and back;
* **worse**: failures or abandonment 1.5 times the safe variant's reach the last step (goal <= 5 %);
* **dies**: a candidate that fails every call from the moment it reaches a step (5, 25, 50 %, the last step) is
  rolled back within 50 of its calls (goal >= 95 %); failures that double once it reaches the last step are rolled
  back within 20,000 calls (goal >= 80 %);
* **slower**: a greeting median 50 % slower is rolled back within 1,500 candidate calls (goal >= 80 %); a
  regression exactly at a margin (failures 1.5x, abandonment 1.25x, greeting median 1.25x) reaches the last step
  (goal <= 5 %); a heavier greeting tail with the same median (sigma 0.6 -> 0.9: outside the goals);
* **srm**: 10 % of the candidate's records lost, ramps from 25 and 50 %: flagged within 10,000 calls
  (goal >= 80 %), promoted after the flag (goal 0);
* **coverage**: every 95 % interval the engine shows (each guardrail's, and handle time's) holds the truth at every
  hourly look (goal >= 95 %); handle time also at a fixed 5 % share, log-normal sigma 1 and 2 (heavy tails).
* **real traffic**, what independent calls do not show: a 10-minute outage failing every call of both variants at
  each step (goal: rolled back <= 5 %); callers drawn from a population, each calling about 5 times over 3 days and
  sticky to their variant (their bucket), with their own propensities to fail, abandon and wait (ICC 1/3): false
  sample-ratio flags (goal <= 2 %) and false rollbacks (<= 5 %), and the spread of the tests' z at the end (goal
  0.9-1.1, beside independent calls'); tolerable regressions (greeting 10 % slower; half the failures and greeting
  15 % slower: rolled back <= 5 %, last step >= 80 % within 60,000 calls); a candidate equal for 18 h whose failures
  then double (promoted to 50 % or beyond 3 h or more after <= 5 %, rolled back within 20,000 calls >= 80 %); 5 % of
  the candidate's calls 10 times longer with handle time on (last step <= 5 %); 200 copies of one signed record
  (counted once);
* **limit**: the calls a fixed-horizon test needs for the last step's non-inferiority on failures, beside the
  engine's median calls to the last step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bridge.rollout.engine import MEAN_CAP
from bridge.rollout.experiment import GUARDRAILS, Experiment, ExperimentSpec, epoch_of
from bridge.rollout.guardrails import DISPLAY_ALPHA

RATE = 1000.0  # calls an hour
CALLS = 50_000  # about two days
STEPS = (5.0, 25.0, 50.0, 100.0)


@dataclass(frozen=True, slots=True)
class Truth:
    fail: float = 0.02
    abandon: float = 0.08
    greeting_ms: float = 700.0
    greeting_sigma: float = 0.6
    reply_ms: float = 900.0
    reply_sigma: float = 0.6
    handle_s: float = 180.0
    handle_sigma: float = 1.0
    tail: float = 0.0  # the share of calls whose handle time is ``tail_x`` times longer
    tail_x: float = 10.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    cand: Truth = Truth()
    safe: Truth = Truth()
    after: Truth | None = None  # the candidate's truth once ``change_at`` is reached
    change_at: float | None = None  # the share (percent) whose step brings ``after``
    swing: bool = False  # both variants' failures 4 % -> 40 % -> 4 % over each day
    lose: float = 0.0  # the share of the candidate's records that are lost
    steps: tuple[float, ...] = STEPS
    fixed: float | None = None  # a fixed share, no promotion
    calls: int = CALLS
    stop_at_rollback: bool = True
    change_after_s: float | None = None  # the candidate's truth becomes ``after`` this long after the start
    outage_at: float | None = None  # a shared outage (every call of both variants fails) once this share is reached
    outage_s: float = 600.0  # ... lasting this long, starting half an hour into the step
    per_caller: float = 0.0  # calls per caller over the rollout (0: every call a new caller)
    icc: float = 0.0  # the callers' propensities' intra-class correlation (abandonment, failures, latencies)
    handle: bool = False  # the handle_time_s guardrail on
    copies: int = 0  # replay this many byte-for-byte copies of one failed candidate record, half an hour in


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * math.exp(sigma * rng.standard_normal()))


@dataclass(frozen=True, slots=True)
class Caller:
    """One caller: their bucket (which variant a share draws them onto) and their own propensities, as odds ratios
    and a log-latency offset (all neutral without an ICC)."""

    bucket: float
    fail_x: float = 1.0
    abandon_x: float = 1.0
    log_offset: float = 0.0
    within: float = 1.0  # the spread of the log-latencies left within a caller, as a share of the whole


def _beta_scale(rng: np.random.Generator, mean: float, icc: float) -> float:
    """A caller's propensity over the mean: a Beta with that mean and intra-class correlation ``icc``."""
    if icc <= 0:
        return 1.0
    total = 1.0 / icc - 1.0
    return float(rng.beta(mean * total, (1 - mean) * total)) / mean


def _caller(rng: np.random.Generator, icc: float) -> Caller:
    if icc <= 0:
        return Caller(float(rng.random()))
    return Caller(
        float(rng.random()),
        _beta_scale(rng, 0.02, icc),
        _beta_scale(rng, 0.08, icc),
        float(rng.standard_normal()) * 0.6 * math.sqrt(icc),
        math.sqrt(1.0 - icc),
    )


def _call(rng: np.random.Generator, truth: Truth, fail: float, who: Caller | None = None) -> dict[str, Any]:
    who = who or Caller(0.0)
    failed = rng.random() < min(1.0, fail * who.fail_x)
    within = who.within
    handle = _lognormal(rng, truth.handle_s, truth.handle_sigma)
    if truth.tail and rng.random() < truth.tail:
        handle *= truth.tail_x
    return {
        "outcome": "connect_failure" if failed else "ok",
        "abandoned": bool(rng.random() < min(1.0, truth.abandon * who.abandon_x)),
        "greeting_ms": None
        if failed
        else _lognormal(rng, truth.greeting_ms, truth.greeting_sigma * within) * math.exp(who.log_offset),
        "first_reply_ms": None
        if failed
        else _lognormal(rng, truth.reply_ms, truth.reply_sigma * within) * math.exp(who.log_offset),
        "handle_time_s": handle,
    }


def _spec(sc: Scenario) -> ExperimentSpec:
    guardrails: dict[str, Any] = {"handle_time_s": {"on": sc.handle}}
    if sc.fixed is not None:
        return ExperimentSpec(promote=False, guardrails=guardrails)
    return ExperimentSpec(auto_promote=sc.steps, guardrails=guardrails)


def run(sc: Scenario, seed: int) -> dict[str, Any]:
    """One rollout of ``sc``: what the engine did, and when (calls of the stream and of the candidate)."""
    rng = np.random.default_rng(seed)
    spec = _spec(sc)
    share = sc.fixed if sc.fixed is not None else sc.steps[0]
    weights = {"safe": 100.0 - share, "cand": share}
    exp = Experiment(spec, "safe", ("safe", "cand"), weights=weights)
    epoch = epoch_of(weights, False)
    truth, changed_at, cand_calls = sc.cand, None, 0
    out: dict[str, Any] = {"rollback": None, "last": None, "srm": None, "promote_after_srm": 0, "breaker": False}
    out |= {"covered": {}, "promotions": [], "outage": None, "counted_copies": None}
    truths = _truth_diffs(sc)
    missed: set[str] = set()
    looked = -1
    callers: list[Caller] = []
    population = max(1, round(sc.calls / sc.per_caller)) if sc.per_caller else 0
    reached: float | None = None  # when the outage's step was reached
    copy: dict[str, Any] | None = None
    for i in range(sc.calls):
        t = i * 3600.0 / RATE
        who: Caller | None = None
        if population:
            k = int(rng.integers(population))
            while len(callers) <= k:
                callers.append(_caller(rng, sc.icc))
            who = callers[k]
            on = who.bucket < weights["cand"] / 100.0
        else:
            on = rng.random() < weights["cand"] / 100.0
        if changed_at is None and (
            (sc.change_at is not None and weights["cand"] >= min(sc.change_at, spec.last_share))
            or (sc.change_after_s is not None and t >= sc.change_after_s)
        ):
            truth, changed_at = (sc.after or sc.cand), (i, cand_calls)
        mine = truth if on else sc.safe
        fail = mine.fail
        if sc.swing:
            fail = 0.04 + 0.36 * (1 - math.cos(2 * math.pi * t / 86400)) / 2
        if sc.outage_at is not None:
            if reached is None and weights["cand"] >= min(sc.outage_at, spec.last_share):
                reached = t
            if reached is not None and reached + 1800.0 <= t < reached + 1800.0 + sc.outage_s:
                fail = 1.0
                if out["outage"] is None:
                    out["outage"] = (i, cand_calls)
        call = _call(rng, mine, fail, who)
        cand_calls += on
        if on and sc.lose and rng.random() < sc.lose:
            continue
        record = {"t": t, "started": t, "variant": "cand" if on else "safe", "epoch": epoch, **call}
        record["call_id"] = f"c{i}"
        if population:
            record["caller"] = f"k{k}"
        entries = [record]
        if sc.copies and on and copy is None and call["outcome"] != "ok" and t >= 1800.0:
            copy = record
            before = exp.calls["cand"]
            entries += [dict(record) for _ in range(sc.copies)]
        for entry in entries:
            for d in exp.feed(entry):
                _note(out, d, i, cand_calls, changed_at, t)
                if d.weights is not None:
                    weights, epoch = d.weights, epoch_of(d.weights, False)
                    if weights["cand"] >= spec.last_share - 1e-9 and out["last"] is None:
                        out["last"] = (i, cand_calls)
        if copy is not None and out["counted_copies"] is None:
            out["counted_copies"] = exp.calls["cand"] - before
        hour = int(t // 3600)
        if hour != looked and truths:
            looked = hour
            missed |= _misses(exp, truths)
        if out["rollback"] is not None and sc.stop_at_rollback:
            break
    out["changed"] = changed_at
    if truths:
        missed |= _misses(exp, truths)
        out["covered"] = {name: name not in missed for name in truths}
    out["z"] = _zs(exp)
    return out


def _note(out: dict[str, Any], d: Any, i: int, cand_calls: int, changed_at: Any, t: float) -> None:
    if d.action == "srm" and out["srm"] is None:
        out["srm"] = i
    if d.action == "promote":
        out["promotions"].append((t, (d.weights or {}).get("cand")))
        if out["srm"] is not None:
            out["promote_after_srm"] += 1
    if d.action == "rollback" and out["rollback"] is None:
        out["rollback"] = (i, cand_calls, changed_at)
        out["breaker"] = "breaker" in d.evidence


def _zs(exp: Experiment) -> dict[str, float]:
    """Each on guardrail's test statistic since arming (candidate minus safe over its standard error)."""
    out = {}
    cand = exp.cands["cand"]
    for g, _, _ in exp.active:
        e = cand.since[g.name].test.estimate()
        if e is not None and e.var > 0 and min(e.calls) >= exp.spec.min_calls:
            out[g.name] = e.diff / math.sqrt(e.var)
    return out


def _truth_diffs(sc: Scenario) -> dict[str, float]:
    """Each shown interval's truth (candidate minus safe, in the unit shown) where the truth stays fixed."""
    if sc.after is not None or sc.swing or sc.lose or sc.per_caller or sc.outage_at or sc.cand.tail:
        return {}
    c, s = sc.cand, sc.safe
    out = {
        "failure_rate": c.fail - s.fail,
        "abandon_rate": c.abandon - s.abandon,
        "handle_time_s": _capped_mean(c.handle_s, c.handle_sigma, s.handle_s)
        - _capped_mean(s.handle_s, s.handle_sigma, s.handle_s),
    }
    if c.greeting_sigma == s.greeting_sigma:  # the log-mean difference of two log-normals of one spread
        out["greeting_ms"] = math.log(c.greeting_ms / s.greeting_ms)
    if c.reply_sigma == s.reply_sigma:
        out["first_reply_ms"] = math.log(c.reply_ms / s.reply_ms)
    return out


_MEANS: dict[tuple[float, float, float], float] = {}


def _capped_mean(median: float, sigma: float, safe_median: float) -> float:
    """E min(x, cap) for a log-normal x, the cap ``MEAN_CAP`` times the safe variant's median (the handle time's
    test scale: the engine winsorises both variants there), by quadrature."""
    key = (median, sigma, safe_median)
    if key not in _MEANS:
        z = np.linspace(-8, 8, 20001)
        w = np.exp(-z * z / 2)
        x = np.minimum(median * np.exp(sigma * z), MEAN_CAP * safe_median)
        _MEANS[key] = float(np.sum(x * w) / np.sum(w))
    return _MEANS[key]


def _misses(exp: Experiment, truths: dict[str, float]) -> set[str]:
    """The guardrails whose shown 95 % interval leaves the truth now (in the test's scale)."""
    out = set()
    cand = exp.cands["cand"]
    for name, truth in truths.items():
        e = cand.since[name].shown.estimate()
        if e is None or min(e.calls) < exp.spec.min_calls:
            continue
        w = e.half_width(exp.spec.tau, DISPLAY_ALPHA)
        if abs(e.diff - truth) > w:
            out.add(name)
    return out


# ------------------------------------------------------------------------------------------------ the goals
def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p, z = k / n, 1.96
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, mid - half), min(1.0, mid + half))


@dataclass(frozen=True, slots=True)
class Goal:
    text: str
    scenario: Scenario
    hit: Callable[[dict[str, Any]], bool]
    at_least: float | None = None  # the rate must be >= this (or <= ``at_most``)
    at_most: float | None = None
    given: Callable[[dict[str, Any]], bool] | None = None  # the rollouts the rate is over (None: all)


def _reached(r: dict[str, Any]) -> bool:
    return r["last"] is not None


def _rolled_back_within(calls: int, of: str) -> Callable[[dict[str, Any]], bool]:
    def hit(r: dict[str, Any]) -> bool:
        back = r["rollback"]
        if back is None:
            return False
        i, cand, changed = back
        start = changed if changed is not None else (0, 0)
        return bool((cand - start[1] if of == "candidate" else i - start[0]) <= calls)

    return hit


def _changed(r: dict[str, Any]) -> bool:
    """The candidate reached the step that changes it (before any rollback)."""
    back = r["rollback"]
    return (back is not None and back[2] is not None) or (back is None and r.get("changed") is not None)


BASE = Truth()


def _covered(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: bool(r["covered"].get(name))


def _held_back(text: str, name: str, n: int, **worse: float) -> Goal:
    """A candidate worse than the base by ``worse``, which should seldom reach the last step."""
    return Goal(
        f"{text}: reaches the last step", Scenario(name, cand=replace(BASE, **worse), calls=n), _reached, at_most=0.05
    )


def _rolled_back_soon(text: str, name: str, n: int, at_least: float | None, **worse: float) -> Goal:
    """A candidate worse than the base by ``worse``, which should be rolled back within 1,500 of its calls."""
    return Goal(
        f"{text}: rolled back within 1,500 candidate calls",
        Scenario(name, cand=replace(BASE, **worse), calls=n),
        _rolled_back_within(1500, "candidate"),
        at_least=at_least,
    )


def goals(quick: bool) -> list[Goal]:
    """Every goal of the issue, each with the scenario that measures it."""
    n = 4000 if quick else CALLS
    return [
        *_ramp_goals(n),
        *_death_goals(n),
        *_latency_goals(n),
        *_split_goals(n),
        *_coverage_goals(n),
        *_traffic_goals(quick),
    ]


DAY_S = 86400.0


def _promoted_late(r: dict[str, Any]) -> bool:
    """Promoted to 50 % or beyond 3 h or more after the candidate's change."""
    if r["changed"] is None:
        return False
    changed_t = r["changed"][0] * 3600.0 / RATE
    return any(share is not None and share >= 50.0 and t >= changed_t + 3 * 3600 for t, share in r["promotions"])


def _traffic_goals(quick: bool) -> list[Goal]:
    """What real traffic brings: shared outages, callers who call back, tolerable regressions, a candidate that
    degrades after a good start, a heavy tail in a mean, replayed records."""
    n = 4000 if quick else CALLS
    rolled_back: Callable[[dict[str, Any]], bool] = lambda r: r["rollback"] is not None  # noqa: E731
    outages = [
        Goal(
            f"shared 10-minute outage at the {s:g} % step: rolled back",
            Scenario(f"outage at {s:g}", outage_at=s, calls=n),
            rolled_back,
            at_most=0.05,
            given=lambda r: r["outage"] is not None,
        )
        for s in STEPS
    ]
    three_days = 4000 if quick else 72_000
    callers = Scenario("callers x5", per_caller=5.0, icc=1 / 3, calls=three_days, stop_at_rollback=False)
    tolerable = Scenario("greeting 1.1x", cand=replace(BASE, greeting_ms=770.0), calls=4000 if quick else 60_000)
    trade = Scenario(
        "half failures, greeting 1.15x",
        cand=replace(BASE, fail=0.01, greeting_ms=805.0),
        calls=4000 if quick else 60_000,
    )
    degrade = Scenario(
        "degrades after 18 h",
        after=replace(BASE, fail=0.04),
        change_after_s=(1 if quick else 18) * 3600.0,
        calls=n if quick else 18_000 + 20_000,
        stop_at_rollback=True,
    )
    tail = Scenario("handle tail", cand=replace(BASE, tail=0.05), handle=True, calls=n)
    copies = Scenario("200 copies", copies=200, calls=min(n, 4000))
    return [
        *outages,
        Goal(
            "callers call 5 times, ICC 1/3, equal: sample-ratio flag",
            callers,
            lambda r: r["srm"] is not None,
            at_most=0.02,
        ),
        Goal("callers call 5 times, ICC 1/3, equal: rolled back", callers, rolled_back, at_most=0.05),
        Goal("greeting 10 % slower (margin 25 %): rolled back", tolerable, rolled_back, at_most=0.05),
        Goal("greeting 10 % slower: reaches the last step within 60,000 calls", tolerable, _reached, at_least=0.8),
        Goal("half the failures, greeting 15 % slower: rolled back", trade, rolled_back, at_most=0.05),
        Goal("half the failures, greeting 15 % slower: reaches the last step", trade, _reached, at_least=0.8),
        Goal(
            "equal 18 h, then failures doubled: promoted to 50 % or beyond 3 h after",
            degrade,
            _promoted_late,
            at_most=0.05,
            given=lambda r: r["changed"] is not None,
        ),
        Goal(
            "equal 18 h, then failures doubled: rolled back within 20,000 calls of the change",
            degrade,
            _rolled_back_within(20_000, "calls"),
            at_least=0.8,
            given=lambda r: r["changed"] is not None,
        ),
        Goal(
            "5 % of the candidate's calls 10x longer, handle time on: reaches the last step",
            tail,
            _reached,
            at_most=0.05,
        ),
        Goal(
            "200 copies of a signed record: counted once",
            copies,
            lambda r: r["counted_copies"] == 1,
            at_least=1.0,
            given=lambda r: r["counted_copies"] is not None,
        ),
    ]


def _ramp_goals(n: int) -> list[Goal]:
    equal, swing = Scenario("equal", calls=n, stop_at_rollback=False), Scenario("swing", swing=True, calls=n)
    rolled_back: Callable[[dict[str, Any]], bool] = lambda r: r["rollback"] is not None  # noqa: E731
    return [
        Goal("equal: reaches the last step", equal, _reached, at_least=0.8),
        Goal("equal: rolled back", equal, rolled_back, at_most=0.05),
        Goal("equal, daily swing 4-40 %: reaches the last step", swing, _reached, at_least=0.8),
        Goal("equal, daily swing 4-40 %: rolled back", swing, rolled_back, at_most=0.05),
        _held_back("failures 1.5x", "fail 1.5x", n, fail=0.03),
        _held_back("abandonment 1.5x", "abandon 1.5x", n, abandon=0.12),
    ]


def _death_goals(n: int) -> list[Goal]:
    dies = [
        Goal(
            f"dies at the {s:g} % step: rolled back within 50 of its calls",
            Scenario(f"dies at {s:g}", after=replace(BASE, fail=1.0), change_at=s, calls=n),
            _rolled_back_within(50, "candidate"),
            at_least=0.95,
            given=_changed,
        )
        for s in STEPS
    ]
    dies[-1] = replace(
        dies[-1],
        text="dies at the last step: rolled back within 100 of its calls",
        hit=_rolled_back_within(100, "candidate"),
    )
    doubles = Goal(
        "failures double at the last step: rolled back within 20,000 calls",
        Scenario("doubles at last", after=replace(BASE, fail=0.04), change_at=100.0, calls=n + 20_000),
        _rolled_back_within(20_000, "calls"),
        at_least=0.8,
        given=_changed,
    )
    return [*dies, doubles]


def _latency_goals(n: int) -> list[Goal]:
    return [
        _rolled_back_soon("greeting median 50 % slower", "greeting 1.5x", n, 0.8, greeting_ms=1050.0),
        _held_back("at the margin, abandonment 1.25x", "abandon 1.25x", n, abandon=0.10),
        _held_back("at the margin, greeting 1.25x", "greeting 1.25x", n, greeting_ms=875.0),
        _rolled_back_soon(
            "greeting tail heavier, same median (sigma 0.9)", "greeting tail", n, None, greeting_sigma=0.9
        ),
    ]


def _split_goals(n: int) -> list[Goal]:
    out = [
        Goal(
            f"10 % of candidate records lost, ramp from {s:g} %: flagged within 10,000 calls",
            Scenario(f"srm {s:g}", lose=0.1, steps=tuple(x for x in STEPS if x >= s), calls=min(n, 10_000)),
            lambda r: r["srm"] is not None,
            at_least=0.8,
        )
        for s in (25.0, 50.0)
    ]
    after = Goal("srm: promoted after the flag", out[0].scenario, lambda r: r["promote_after_srm"] > 0, at_most=0.0)
    return [*out, after]


def _coverage_goals(n: int) -> list[Goal]:
    equal = Scenario("equal", calls=n, stop_at_rollback=False)
    ramp = [
        Goal(f"coverage: {name} interval held at every look (equal ramp)", equal, _covered(name), at_least=0.95)
        for name in ("failure_rate", "abandon_rate", "greeting_ms", "first_reply_ms", "handle_time_s")
    ]
    heavy = [
        Goal(
            f"coverage: handle time (+20 %, sigma {sigma:g}) at a fixed 5 % share",
            Scenario(
                f"handle sigma {sigma:g}",
                cand=replace(BASE, handle_s=216.0, handle_sigma=sigma),
                safe=replace(BASE, handle_sigma=sigma),
                fixed=5.0,
                calls=min(n, 20_000),
                stop_at_rollback=False,
            ),
            _covered("handle_time_s"),
            at_least=0.95,
        )
        for sigma in (1.0, 2.0)
    ]
    return [*ramp, *heavy]


def _task(args: tuple[Scenario, int]) -> dict[str, Any]:
    return run(*args)


def measure(reps: int, seed: int, quick: bool, jobs: int) -> dict[str, Any]:
    started = time.perf_counter()
    gs = goals(quick)
    scenarios = list(dict.fromkeys(g.scenario for g in gs))
    tasks = [(sc, seed * 100_003 + k * 7919 + i) for k, sc in enumerate(scenarios) for i in range(reps)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_task, tasks, chunksize=max(1, reps // 4)))
    by: dict[Scenario, list[dict[str, Any]]] = {}
    for (sc, _), r in zip(tasks, results, strict=True):
        by.setdefault(sc, []).append(r)
    rows = []
    for g in gs:
        rs = [r for r in by[g.scenario] if g.given is None or g.given(r)]
        k = sum(bool(g.hit(r)) for r in rs)
        lo, hi = _wilson(k, len(rs))
        rate = k / len(rs) if rs else 0.0
        met = None
        if g.at_least is not None:
            met = rate >= g.at_least
        elif g.at_most is not None:
            met = rate <= g.at_most
        rows.append(
            {
                "goal": g.text,
                "rate": rate,
                "ci95": [lo, hi],
                "reps": len(rs),
                "target": (">= " + f"{g.at_least:.0%}")
                if g.at_least is not None
                else ("<= " + f"{g.at_most:.0%}")
                if g.at_most is not None
                else "-",
                "met": met,
            }
        )
    equal = by[next(sc for sc in scenarios if sc.name == "equal")]
    to_last = [r["last"][0] for r in equal if r["last"] is not None]
    spread = {}
    for name in ("equal", "callers x5"):
        zs: dict[str, list[float]] = {}
        for r in by[next(sc for sc in scenarios if sc.name == name)]:
            for g, z in r["z"].items():
                zs.setdefault(g, []).append(z)
        spread[name] = {g: round(float(np.std(v)), 3) for g, v in zs.items() if len(v) > 1}
    return {
        "z_spread": spread,
        "seed": seed,
        "reps": reps,
        "calls": CALLS if not quick else 4000,
        "goals": rows,
        "limit": {
            "fixed_horizon_calls_per_arm": fixed_horizon(0.02, 0.5 * 0.02, ExperimentSpec().test_alpha),
            "median_calls_to_last_step": float(np.median(to_last)) if to_last else None,
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }


def fixed_horizon(p: float, margin: float, alpha: float, power: float = 0.8) -> int:
    """Calls per arm a fixed-horizon one-sided test at ``alpha`` and ``power`` needs to show a rate ``p`` within
    ``margin`` (the physical limit a sequential test should stay within about twice of)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(power)
    return math.ceil(z * z * 2 * p * (1 - p) / (margin * margin))


def _pct(x: float) -> str:
    return f"{100 * x:5.1f} %"


def human(result: dict[str, Any]) -> str:
    lines = [f"guarded rollouts: {result['reps']} per scenario, up to {result['calls']} calls, seed {result['seed']}"]
    lines.append(f"{'goal':<86} {'rate':>8}  {'95 % interval':>17}  {'target':>7}  met")
    for r in result["goals"]:
        lo, hi = r["ci95"]
        met = "-" if r["met"] is None else "yes" if r["met"] else "NO"
        lines.append(f"{r['goal']:<86} {_pct(r['rate'])}  [{_pct(lo)}, {_pct(hi)}]  {r['target']:>7}  {met}")
    for name, by_g in result["z_spread"].items():
        shown = ", ".join(f"{g} {z:.2f}" for g, z in by_g.items())
        lines.append(f"the tests' z spread at the end (goal 0.9-1.1), {name}: {shown}")
    lim = result["limit"]
    lines.append(
        "limit: a fixed-horizon test of the last step's failure margin needs "
        f"{lim['fixed_horizon_calls_per_arm']} calls per arm; the engine's median calls to the last step: "
        f"{lim['median_calls_to_last_step']}"
    )
    lines.append(f"{result['wall_s']} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbridge bench rollout", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, help="rollouts per scenario (default 100; 3 with --quick)")
    parser.add_argument("--seed", type=int, default=61, help="the simulation's seed (default 61)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    parser.add_argument("--quick", action="store_true", help="short streams, 3 rollouts each by default (a smoke run)")
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    args = parser.parse_args(argv)
    reps = args.reps if args.reps is not None else 3 if args.quick else 100
    if reps < 1:
        parser.error(f"--reps must be at least 1, not {reps}")
    result = measure(reps, args.seed, args.quick, args.jobs)
    print(json.dumps(result) if args.json else human(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["GUARDRAILS", "Scenario", "Truth", "fixed_horizon", "main", "measure", "run"]
