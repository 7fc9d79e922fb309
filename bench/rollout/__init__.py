"""``callbridge bench rollout [--quick] [--reps N] [--only TEXT] [--table] [--json]``: seeded guarded rollouts through
the product's engine.

Each rollout is a closed loop (:mod:`bench.rollout.sim`): calls arrive at ``RATE`` an hour (evenly, or with a day's
profile: about 2.15 times the mean at 14:00 and 0.29 times at 02:00), each drawn onto a variant with the share the
engine's last decision set (``bridge.rollout.experiment.Experiment``, fed record by record exactly as the workers
and ``rollout evaluate`` feed it), each call's outcome drawn from its variant's truth, and each record fed when the
call ENDS: a failed connect 2-8 s after it began, any other call after its handle time (log-normal, median 180 s,
sigma 1: about 80 calls in progress at 1,000 an hour, 180 at the busiest hour). Defaults everywhere: the ramp
``auto_promote: [5, 25, 50, 100]`` with its 10 % holdout (its last step 90 %). The truth of the safe variant:
failures 2 %, abandonment 8 %, greeting median 700 ms and first reply 900 ms (log-normal, sigma 0.6). Every goal
(:mod:`bench.rollout.goals`) prints its figure beside its target, a rate with its Wilson 95 % interval:

* **the ramp**: equal candidates reach the last step within 50,000 calls and are not rolled back (also with a
  daily swing of both variants' failures 4 -> 40 -> 4 %); 1.5x failures or abandonment, or a regression exactly at
  a margin, do not reach the last step;
* **deaths**: a candidate failing every call from the moment it reaches a step is rolled back within 50 of its
  calls (100 at the last step); at the last step with the day's profile, at the busiest hour and at 02:00, within
  100 of its failed calls without probes, within 50 with probes at one a minute (a probe's answer, fine but for the
  safe variant's own failure rate, is fed 0.5-3 s after the record that wanted it);
  failures that double at the last step are rolled back within 20,000 calls;
* **the watch**: started at the last step, failures double 1, 3 and 7 days in: rolled back within 24 h of the
  change; an equal candidate watched for 30 days: rolled back at most 5 %;
* **latency**, **sample ratio** (10 % of the candidate's records lost from 25 and 50 %: flagged within 10,000
  calls; from 5 %: flagged, never promoted past 25 % before the flag nor at all after it), **coverage** of every
  shown interval at every hourly look, **real traffic** (shared outages, callers who call back, tolerable
  regressions, a candidate degrading after 18 h, a heavy handle-time tail, 200 copies of one record);
* **two candidates** against one safe variant (neither leaves the safe variant only the holdout without the last
  step's checks; one at 1.5x failures reaches its last step at most 5 %), and failures 5 % -> 10 % at a fixed 50/50
  split rolled back within 3,000 calls;
* ``--table``: holdout 5, 10 and 20 % by the failure guardrail's last margin 10, 25 and 50 %: the median calls to the
  last step of an equal candidate, the calls to catch a doubling at the last step and one day into the watch, and
  the calls a day held on the old variant.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from bench.rollout.goals import BASE, Goal, goals, has_changed, rolled_back_within_s
from bench.rollout.sim import CALLS, DAY_S, RATE, Scenario, Truth, run
from bridge.rollout.experiment import GUARDRAILS, ExperimentSpec


def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p, z = k / n, 1.96
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, mid - half), min(1.0, mid + half))


def _task(args: tuple[Scenario, int]) -> dict[str, Any]:
    return run(*args)


def _runs(scenarios: list[Scenario], reps: int, seed: int, jobs: int) -> dict[Scenario, list[dict[str, Any]]]:
    tasks = [(sc, seed * 100_003 + k * 7919 + i) for k, sc in enumerate(scenarios) for i in range(reps)]
    tasks.sort(key=lambda task: -task[0].calls)  # the longest first, so that the pool ends together
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_task, tasks))
    by: dict[Scenario, list[dict[str, Any]]] = {}
    for (sc, _), r in zip(tasks, results, strict=True):
        by.setdefault(sc, []).append(r)
    return by


def _row(g: Goal, rs: list[dict[str, Any]]) -> dict[str, Any]:
    rs = [r for r in rs if g.given is None or g.given(r)]
    k = sum(bool(g.hit(r)) for r in rs)
    lo, hi = _wilson(k, len(rs))
    rate = k / len(rs) if rs else 0.0
    met = None
    if g.at_least is not None:
        met = rate >= g.at_least
    elif g.at_most is not None:
        met = rate <= g.at_most
    target = (
        f">= {g.at_least:.0%}" if g.at_least is not None else f"<= {g.at_most:.0%}" if g.at_most is not None else "-"
    )
    return {"goal": g.text, "rate": rate, "ci95": [lo, hi], "reps": len(rs), "target": target, "met": met}


def measure(reps: int, seed: int, quick: bool, jobs: int, only: Sequence[str] = ()) -> dict[str, Any]:
    started = time.perf_counter()
    gs = [g for g in goals(quick) if not only or any(word in g.text for word in only)]
    scenarios = list(dict.fromkeys(g.scenario for g in gs))
    by = _runs(scenarios, reps, seed, jobs)
    rows = [_row(g, by[g.scenario]) for g in gs]
    spread = {}
    for name in ("equal", "callers x5"):
        zs: dict[str, list[float]] = {}
        for r in next((v for sc, v in by.items() if sc.name == name), []):
            for g, z in r["z"].items():
                zs.setdefault(g, []).append(z)
        spread[name] = {g: round(float(np.std(v)), 3) for g, v in zs.items() if len(v) > 1}
    equal = next((v for sc, v in by.items() if sc.name == "equal"), [])
    to_last = [r["last"][0] for r in equal if r["last"] is not None]
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


def table(reps: int, seed: int, quick: bool, jobs: int) -> list[dict[str, Any]]:
    """Holdout 5, 10 and 20 % by the failure guardrail's last margin 10, 25 and 50 % (its margin, the ramp's power rule,
    at its default 50 %): what each costs and what it catches.
    An equal candidate's rollout stops once it reaches the last step; a doubling from the start of the last step runs
    40,000 calls at most (twice the goal's 20,000); a doubling 1 day into the watch runs a day past the change."""
    n = 4000 if quick else CALLS
    per_day = int(RATE * 24)
    wait = 1800.0 if quick else DAY_S
    cells = [(h, m) for h in (5.0, 10.0, 20.0) for m in (0.1, 0.25, 0.5)]
    scenarios: list[Scenario] = []
    for h, m in cells:
        doubled = replace(BASE, fail=0.04)
        scenarios.append(Scenario(f"table equal {h:g}/{m:g}", calls=n, stop_at_last=True, holdout=h, last_margin=m))
        scenarios.append(
            Scenario(
                f"table doubling {h:g}/{m:g}",
                first=100.0 - h,
                cand=doubled,
                calls=min(n, 40_000),
                holdout=h,
                last_margin=m,
            )
        )
        scenarios.append(
            Scenario(
                f"table watch {h:g}/{m:g}",
                first=100.0 - h,
                after=doubled,
                change_after_s=wait,
                calls=int(wait / 3600 * RATE) + (1000 if quick else per_day),
                holdout=h,
                last_margin=m,
            )
        )
    by = _runs(scenarios, reps, seed, jobs)
    out = []
    for k, (h, m) in enumerate(cells):
        equal, doubling, watch = (by[sc] for sc in scenarios[3 * k : 3 * k + 3])
        to_last = [r["last"][0] for r in equal if r["last"] is not None]
        caught = [r["rollback"][0] if r["rollback"] is not None else math.inf for r in doubling]
        late = [r["rollback"][0] - r["changed"][0] for r in watch if r["rollback"] is not None and r["changed"]]
        within = sum(rolled_back_within_s(DAY_S)(r) for r in watch if has_changed(r))
        out.append(
            {
                "holdout": h,
                "last_margin": m,
                "reps": len(equal),
                "equal_reached_last": f"{len(to_last)}/{len(equal)}",
                "median_calls_to_last": float(np.median(to_last)) if to_last else None,
                "equal_rolled_back": f"{sum(r['rollback'] is not None for r in equal)}/{len(equal)}",
                "doubling_at_last_within_20k": f"{sum(c <= 20_000 for c in caught)}/{len(caught)}",
                "median_calls_to_catch_doubling": float(np.median(caught)),
                "watch_doubling_within_24h": f"{within}/{sum(has_changed(r) for r in watch)}",
                "median_calls_to_catch_watch_doubling": float(np.median(late)) if late else None,
                "held_calls_a_day": round(h / 100 * RATE * 24),
            }
        )
    return out


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
    lines.append(f"{'goal':<100} {'rate':>8}  {'95 % interval':>17}  {'target':>7}  {'reps':>4}  met")
    for r in result["goals"]:
        lo, hi = r["ci95"]
        met = "-" if r["met"] is None else "yes" if r["met"] else "NO"
        lines.append(
            f"{r['goal']:<100} {_pct(r['rate'])}  [{_pct(lo)}, {_pct(hi)}]  {r['target']:>7}  {r['reps']:>4}  {met}"
        )
    for name, by_g in result["z_spread"].items():
        if by_g:
            shown = ", ".join(f"{g} {z:.2f}" for g, z in by_g.items())
            lines.append(f"the tests' z spread at the end (goal 0.9-1.1), {name}: {shown}")
    lim = result["limit"]
    lines.append(
        "limit: a fixed-horizon test of the last step's failure margin needs "
        f"{lim['fixed_horizon_calls_per_arm']} calls per arm; the engine's median calls to the last step: "
        f"{lim['median_calls_to_last_step']}"
    )
    for row in result.get("table", []):
        lines.append("table: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    lines.append(f"{result['wall_s']} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbridge bench rollout", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, help="rollouts per scenario (default 40; 3 with --quick)")
    parser.add_argument("--seed", type=int, default=61, help="the simulation's seed (default 61)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    parser.add_argument("--quick", action="store_true", help="short streams, 3 rollouts each by default (a smoke run)")
    parser.add_argument("--only", action="append", default=[], help="only the goals whose text holds this (repeat)")
    parser.add_argument("--table", action="store_true", help="also the holdout-by-margin table")
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    args = parser.parse_args(argv)
    reps = args.reps if args.reps is not None else 3 if args.quick else 40
    if reps < 1:
        parser.error(f"--reps must be at least 1, not {reps}")
    result = measure(reps, args.seed, args.quick, args.jobs, args.only)
    if args.table:
        result["table"] = table(reps, args.seed, args.quick, args.jobs)
    print(json.dumps(result) if args.json else human(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["GUARDRAILS", "Scenario", "Truth", "fixed_horizon", "main", "measure", "run"]
