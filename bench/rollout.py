"""``callbridge bench rollout [--quick] [--reps N] [--json]``: simulated rollouts through the decision engine.

Each rollout is a stream of finished calls, each on the candidate with probability ``share`` and otherwise on the
safe variant; a call fails, is abandoned, and has a greeting and a first reply (log-normal; none when it failed)
drawn from its variant's truth. The stream goes through the engine's own statistics
(``bridge.rollout.experiment``: :func:`compare`, :func:`half_width`, :func:`breaker_run`), vectorized over the calls:
what :class:`~bridge.rollout.experiment.Experiment` decides after every call (a unit test checks that both give the
same first decision on the same stream). Reported:

* **A/A** (equal variants) at failure and abandon rates 2-20 % and candidate shares 5-50 %, up to ``AA_CALLS``
  candidate calls each: how often the candidate is rolled back (false rollback; the test and the breaker), how
  often it is promoted and after how many candidate calls (median);
* **A/B**: failures 5 -> 10 %, a median greeting 400 ms slower, and a dead candidate (every call fails): how
  often it is rolled back within ``AB_CALLS`` candidate calls (power), after how many (median), and how often a
  worse candidate is promoted first;
* **coverage**: how often the always-valid 95 % interval of the failure-rate difference and of the greeting
  log-difference held the truth at every look of a rollout (from ``min_calls`` on).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bridge.rollout.experiment import (
    DISPLAY_ALPHA,
    ExperimentSpec,
    Kind,
    breaker_run,
    compare,
    half_width,
)

AA_CALLS = 2000  # candidate calls per A/A rollout
AB_CALLS = 1500  # candidate calls within which a regression must be found
AA_RATES = (0.02, 0.05, 0.10, 0.20)
SHARES = (0.05, 0.20, 0.50)


@dataclass(frozen=True, slots=True)
class Truth:
    """One variant's true rates and latency medians (log-normal spreads are shared)."""

    fail: float = 0.05
    abandon: float = 0.05
    greeting_ms: float = 900.0
    first_reply_ms: float = 700.0


GREETING_SIGMA, REPLY_SIGMA, REPLY_SHARE = 0.4, 0.6, 0.9


def simulate(rng: np.random.Generator, safe: Truth, cand: Truth, share: float, calls: int) -> dict[str, np.ndarray]:
    """One rollout's calls in order: on the candidate or not, and each guardrail's raw value."""
    on = rng.random(calls) < share

    def pick(a: float, b: float) -> np.ndarray:
        return np.where(on, b, a)

    failed = rng.random(calls) < pick(safe.fail, cand.fail)
    abandoned = rng.random(calls) < pick(safe.abandon, cand.abandon)
    greeting = pick(safe.greeting_ms, cand.greeting_ms) * np.exp(GREETING_SIGMA * rng.standard_normal(calls))
    reply = pick(safe.first_reply_ms, cand.first_reply_ms) * np.exp(REPLY_SIGMA * rng.standard_normal(calls))
    replied = ~failed & (rng.random(calls) < REPLY_SHARE)
    return {
        "candidate": on,
        "failure_rate": failed.astype(float),
        "abandon_rate": abandoned.astype(float),
        "greeting_ms": np.where(failed, np.nan, greeting),
        "first_reply_ms": np.where(replied, reply, np.nan),
    }


def records(sim: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """The simulated calls as the engine's outcome records."""
    for i, cand in enumerate(sim["candidate"]):
        g, r = sim["greeting_ms"][i], sim["first_reply_ms"][i]
        yield {
            "t": float(i),
            "variant": "cand" if cand else "safe",
            "outcome": "connect_failure" if sim["failure_rate"][i] else "ok",
            "abandoned": bool(sim["abandon_rate"][i]),
            "greeting_ms": None if math.isnan(g) else float(g),
            "first_reply_ms": None if math.isnan(r) else float(r),
        }


def _arm(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.where(mask, x, 0.0)
    return np.cumsum(mask).astype(float), np.cumsum(v), np.cumsum(v * v)


def _series(spec: ExperimentSpec, sim: dict[str, np.ndarray], name: str, shifted: bool) -> tuple[Any, ...]:
    """At every call: (valid, diff, V, rho) of one guardrail, candidate minus safe (the safe latency shifted or not)."""
    g, margin = next((g, m) for g, m in spec.active if g.name == name)
    raw, cand = sim[name], sim["candidate"]
    present = ~np.isnan(raw)
    x = np.log(np.maximum(np.nan_to_num(raw, nan=1.0), 1.0)) if g.kind is Kind.LATENCY else np.nan_to_num(raw)
    xs = np.log(np.exp(x) + margin) if g.kind is Kind.LATENCY and shifted else x
    arm_c, arm_s = _arm(x, present & cand), _arm(xs, present & ~cand)
    valid = np.minimum(arm_c[0], arm_s[0]) >= spec.min_calls
    with np.errstate(divide="ignore", invalid="ignore"):
        diff, var, rho = compare(g.kind, (arm_c, arm_s), spec.tau)
    return valid, diff, var, rho


def _breaker(spec: ExperimentSpec, sim: dict[str, np.ndarray]) -> np.ndarray:
    """At every call: whether the candidate's run of failures trips the breaker."""
    cand, failed = sim["candidate"], sim["failure_rate"] > 0
    idx = np.arange(len(cand))
    last_ok = np.maximum.accumulate(np.where(cand & ~failed, idx, -1))  # the candidate's last call that went well
    cand_calls = np.cumsum(cand)
    run = cand_calls - np.concatenate(([0], cand_calls))[last_ok + 1]  # candidate calls since then, all failed
    safe = ~cand
    need = breaker_run(np.cumsum(safe & failed), np.cumsum(safe), spec.breaker_min_run, spec.breaker_per_call)
    return np.asarray(run >= need)


@dataclass(frozen=True, slots=True)
class Run:
    """What one simulated rollout came to (indices are calls of the stream; None: never)."""

    rollback: int | None
    breaker: bool
    promote: int | None  # the first call at which promote is decided, if no rollback came first
    first: tuple[int, str] | None  # the engine's first decision: (call, action)
    covered: dict[str, bool]


def _first(flags: np.ndarray) -> int | None:
    hits = np.flatnonzero(flags)
    return int(hits[0]) if hits.size else None


def evaluate(spec: ExperimentSpec, sim: dict[str, np.ndarray], truth: dict[str, float]) -> Run:
    """The engine's decisions over one stream, and whether its 95 % intervals held ``truth`` at every look."""
    alpha = spec.test_alpha
    back = _breaker(spec, sim)
    tripped = back.copy()
    ok = np.ones(len(back), bool)
    covered: dict[str, bool] = {}
    for g, margin in spec.active:
        valid, diff, var, rho = _series(spec, sim, g.name, shifted=True)
        w = np.where(valid, half_width(var, rho, alpha), np.inf)
        back |= valid & (diff - w > 0)
        ok &= valid & (diff + w < (0.0 if g.kind is Kind.LATENCY else margin))
        if g.name in truth:
            valid, diff, var, rho = _series(spec, sim, g.name, shifted=False)
            miss = valid & (np.abs(diff - truth[g.name]) > half_width(var, rho, DISPLAY_ALPHA))
            covered[g.name] = not bool(miss.any())
    rollback, promote = _first(back), _first(ok)
    decided = [(i, a) for i, a in ((rollback, "rollback"), (promote, "promote")) if i is not None]
    first = min(decided, key=lambda d: (d[0], d[1] != "rollback")) if decided else None
    breaker = rollback is not None and bool(tripped[rollback])
    return Run(rollback, breaker, promote if first and first[1] == "promote" else None, first, covered)


def _truths(safe: Truth, cand: Truth) -> dict[str, float]:
    return {
        "failure_rate": cand.fail - safe.fail,
        "greeting_ms": math.log(cand.greeting_ms) - math.log(safe.greeting_ms),
    }


def scenario(
    spec: ExperimentSpec, safe: Truth, cand: Truth, share: float, cand_calls: int, reps: int, rng: np.random.Generator
) -> dict[str, Any]:
    """``reps`` rollouts of one scenario, summed up (calls counted on the candidate)."""
    calls = math.ceil(cand_calls / share)
    runs, backs, ups = [], [], []
    for _ in range(reps):
        sim = simulate(rng, safe, cand, share, calls)
        runs.append(run := evaluate(spec, sim, _truths(safe, cand)))
        on_candidate = np.cumsum(sim["candidate"])  # candidate calls up to each call of the stream
        backs += [int(on_candidate[run.rollback])] if run.rollback is not None else []
        ups += [int(on_candidate[run.promote])] if run.promote is not None else []
    cover = {name: sum(r.covered[name] for r in runs) / reps for name in runs[0].covered}
    return {
        "share": share,
        "reps": reps,
        "candidate_calls": cand_calls,
        "rollback": len(backs) / reps,
        "breaker": sum(r.breaker for r in runs) / reps,
        "rollback_calls_median": float(np.median(backs)) if backs else None,
        "promote": len(ups) / reps,
        "promote_calls_median": float(np.median(ups)) if ups else None,
        "coverage": cover,
    }


def measure(spec: ExperimentSpec, reps: int, seed: int, quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rates, shares = ((0.05, 0.20), (0.05, 0.5)) if quick else (AA_RATES, SHARES)
    started = time.perf_counter()
    aa = [
        {"base": p, **scenario(spec, Truth(p, p), Truth(p, p), s, AA_CALLS, reps, rng)} for p in rates for s in shares
    ]
    base = Truth()
    effects = {
        "failures 5 -> 10 %": replace(base, fail=0.10),
        "greeting median +400 ms": replace(base, greeting_ms=base.greeting_ms + 400),
        "dead candidate": replace(base, fail=1.0),
    }
    ab = [
        {"effect": name, **scenario(spec, base, cand, s, AB_CALLS, reps, rng)}
        for name, cand in effects.items()
        for s in shares
    ]
    return {
        "alpha": spec.alpha,
        "tau": spec.tau,
        "min_calls": spec.min_calls,
        "seed": seed,
        "aa": aa,
        "ab": ab,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _n(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def human(result: dict[str, Any]) -> str:
    lines = [
        f"alpha {result['alpha']} tau {result['tau']} min_calls {result['min_calls']} seed {result['seed']}",
        f"A/A ({AA_CALLS} candidate calls each)",
        "base   share  reps  rollback  (breaker)  promoted  calls to promote  coverage fail  coverage greet",
    ]
    for r in result["aa"]:
        lines.append(
            f"{r['base']:<6.2f} {r['share']:<6.2f} {r['reps']:>4}  {_pct(r['rollback']):>8}  "
            f"{_pct(r['breaker']):>9}  {_pct(r['promote']):>8}  {_n(r['promote_calls_median']):>16}  "
            f"{_pct(r['coverage']['failure_rate']):>13}  {_pct(r['coverage']['greeting_ms']):>14}"
        )
    lines += [
        f"A/B (within {AB_CALLS} candidate calls)",
        "effect                    share  reps  power     calls to rollback  promoted  coverage fail  cov greet",
    ]
    for r in result["ab"]:
        lines.append(
            f"{r['effect']:<25} {r['share']:<6.2f} {r['reps']:>4}  {_pct(r['rollback']):>8}  "
            f"{_n(r['rollback_calls_median']):>17}  {_pct(r['promote']):>8}  "
            f"{_pct(r['coverage']['failure_rate']):>13}  {_pct(r['coverage']['greeting_ms']):>9}"
        )
    lines.append(f"{result['wall_s']} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbridge bench rollout", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=300, help="rollouts per scenario (default 300)")
    parser.add_argument("--seed", type=int, default=56, help="the simulation's seed (default 56)")
    parser.add_argument("--tau", type=float, default=None, help="the mixture spread (default: the engine's)")
    parser.add_argument("--min-calls", type=int, default=None, help="values per variant before a test is checked")
    parser.add_argument("--quick", action="store_true", help="a few scenarios with 10 rollouts each (a smoke run)")
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("tau", args.tau), ("min_calls", args.min_calls)) if v is not None}
    spec = ExperimentSpec(**overrides)
    result = measure(spec, 10 if args.quick else args.reps, args.seed, args.quick)
    print(json.dumps(result) if args.json else human(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
