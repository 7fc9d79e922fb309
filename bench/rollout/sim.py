"""One seeded rollout through the product's engine: calls arrive, each is drawn onto a variant with the weights the
engine's last decision set, its outcome drawn from its variant's truth, and its record fed when the call ENDS (a
failed connect a few seconds after it began, any other call after its handle time), so calls are in progress when
anything changes, as on a real node."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.rollout import probes
from bridge.rollout.engine import MEAN_CAP
from bridge.rollout.experiment import Experiment, ExperimentSpec, GuardrailSetting, epoch_of
from bridge.rollout.guardrails import DISPLAY_ALPHA

RATE = 1000.0  # calls an hour (the mean, with a daily profile)
CALLS = 50_000  # about two days
STEPS = (5.0, 25.0, 50.0, 100.0)
DAY_S = 86400.0
PEAK_S = 14 * 3600.0  # the busiest hour of a day's profile
I0_1 = 1.2660658777520082  # the modified Bessel function I0(1): the mean of exp(cos x)
CANDS = ("cand", "cand2")


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
    first: float | None = None  # the candidate's share at the start, at most the last step's (None: the first step)
    profile: bool = False  # a day's volume: about 2.15 times the mean at 14:00, 0.29 times at 02:00
    second: Truth | None = None  # a second candidate ("cand2") beside the first, from the same share
    holdout: float | None = None  # the plan's holdout (None: the default)
    fail_margin: float | None = None  # the failure guardrail's margin, everywhere (None: the defaults)
    last_margin: float | None = None  # the failure guardrail's last_margin alone (None: as ``fail_margin``)
    stop_at_srm: bool = False
    probes: float = 0.0  # probes of the safe variant's model a minute at most (0: none; bridge.rollout.probes)
    stop_at_last: bool = False  # stop once the candidate reaches the last step


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
    greeting = _lognormal(rng, truth.greeting_ms, truth.greeting_sigma * within) * math.exp(who.log_offset)
    reply = _lognormal(rng, truth.reply_ms, truth.reply_sigma * within) * math.exp(who.log_offset)
    return {
        "outcome": "connect_failure" if failed else "ok",
        "abandoned": bool(rng.random() < min(1.0, truth.abandon * who.abandon_x)),
        "greeting_ms": None if failed else greeting,
        "first_reply_ms": None if failed else reply,
        "handle_time_s": handle,
    }


def spec_of(sc: Scenario) -> ExperimentSpec:
    guardrails: dict[str, Any] = {"handle_time_s": {"on": sc.handle}}
    if sc.fail_margin is not None:
        setting: dict[str, Any] = {"margin": sc.fail_margin}
        if "last_margin" in GuardrailSetting.model_fields:
            setting["last_margin"] = sc.fail_margin
        guardrails["failure_rate"] = setting
    if sc.last_margin is not None:
        guardrails["failure_rate"] = {**guardrails.get("failure_rate", {}), "last_margin": sc.last_margin}
    extra: dict[str, Any] = {"holdout": sc.holdout} if sc.holdout is not None else {}
    if sc.fixed is not None:
        return ExperimentSpec(promote=False, guardrails=guardrails, **extra)
    return ExperimentSpec(auto_promote=sc.steps, guardrails=guardrails, **extra)


def _gap(sc: Scenario, t: float) -> float:
    """The time to the next call's arrival at ``t`` (evenly spaced at the hour's rate)."""
    if not sc.profile:
        return 3600.0 / RATE
    return 3600.0 / (RATE * math.exp(math.cos(2 * math.pi * (t - PEAK_S) / DAY_S)) / I0_1)


class _Loop:
    """One rollout's state: the engine, the weights it set, the calls in progress, and what it did."""

    def __init__(self, sc: Scenario, seed: int) -> None:
        self.sc, self.rng = sc, np.random.default_rng(seed)
        self.spec = spec_of(sc)
        self.names = CANDS if sc.second is not None else CANDS[:1]
        share = sc.fixed if sc.fixed is not None else sc.first if sc.first is not None else sc.steps[0]
        share = share if sc.fixed is not None else min(share, self.spec.last_share)
        self.weights = {"safe": 100.0 - share * len(self.names), **{n: share for n in self.names}}
        self.exp = Experiment(self.spec, "safe", (*self.names, "safe"), weights=self.weights)
        self.epoch = epoch_of(self.weights, False)
        self.truth, self.i, self.cand_calls = sc.cand, 0, 0
        self.changed: tuple[int, int, float] | None = None  # (the call, the candidate's calls, t) of its change
        self.out: dict[str, Any] = {"rollback": None, "last": None, "srm": None, "promote_after_srm": 0}
        self.out |= {"breaker": False, "covered": {}, "promotions": [], "outage": None, "counted_copies": None}
        self.out |= {"past_25_before_srm": False, "unchecked": False, "last2": None}
        self.ending: list[tuple[float, float, list[dict[str, Any]]]] = []  # calls in progress: (end, i, entries)
        self.probe_at = -math.inf  # the next probe allowed (one per ``60 / probes`` s)
        self.outage: tuple[float, float] | None = None  # a shared outage's span, once known: probes fail in it

    def deliver(self, until: float) -> None:
        """Feed the records of every call that has ended by ``until``, in the order they ended."""
        while self.ending and self.ending[0][0] <= until:
            end, _, entries = heapq.heappop(self.ending)
            before = self.exp.calls["cand"]
            for entry in entries:
                for d in self.exp.feed(entry):
                    self.note(d, end)
            self.probe(end)
            if len(entries) > 1 and self.out["counted_copies"] is None:
                self.out["counted_copies"] = self.exp.calls["cand"] - before

    def probe(self, now: float) -> None:
        """As a worker does after each record it feeds: when the engine wants a probe and the plan's bound allows
        one, probe the safe variant's model; its answer (fine but for the safe variant's own failure rate, failed
        in a shared outage) is a stream entry 0.5-3 s later, the time a session takes to open."""
        if not self.sc.probes or now < self.probe_at or self.exp.probe_wanted() is None:
            return
        self.probe_at = now + 60.0 / self.sc.probes
        end = now + 0.5 + 2.5 * float(self.rng.random())
        down = self.outage is not None and self.outage[0] <= now < self.outage[1]
        ok = bool(self.rng.random() >= self.sc.safe.fail) and not down
        entry = probes.entry(f"{now:.3f}", "safe", probes.Probe(now, end, ok, 1000 * (end - now) if ok else None))
        heapq.heappush(self.ending, (end, self.i + 0.5, [entry]))

    def reached(self, share: float) -> bool:
        """Is the candidate at ``share`` percent or beyond (or at its last step: ``ExperimentSpec.at_last``)?"""
        return self.weights["cand"] >= share or self.spec.at_last(self.weights, "cand", "safe")

    def note(self, d: Any, t: float) -> None:
        out = self.out
        if d.action == "srm" and out["srm"] is None:
            out["srm"] = self.i
        if d.action == "promote":
            share = (d.weights or {}).get(d.variant)
            final = "after a business cycle" in d.reason
            out["promotions"].append((t, share, d.variant))
            if out["srm"] is not None:
                out["promote_after_srm"] += 1
            elif share is not None and d.variant == "cand" and share > 25.0:
                out["past_25_before_srm"] = True
            if d.weights is not None and self.spec.at_last(d.weights, d.variant, "safe") and not final:
                out["unchecked"] = True  # a candidate left the safe variant only the holdout without the checks
        if d.action == "rollback" and d.variant == "cand" and out["rollback"] is None:
            out["rollback"] = (self.i, self.cand_calls, self.changed, t)
            out["breaker"] = "breaker" in d.evidence
        if d.weights is not None:
            self.weights, self.epoch = d.weights, epoch_of(d.weights, False)
            for name, key in (("cand", "last"), ("cand2", "last2")):
                if d.variant == name and out[key] is None and self.spec.at_last(self.weights, name, "safe"):
                    out[key] = (self.i, self.cand_calls)


def run(sc: Scenario, seed: int) -> dict[str, Any]:
    """One rollout of ``sc``: what the engine did, and when (calls of the stream and of the candidate)."""
    loop = _Loop(sc, seed)
    rng, exp, out = loop.rng, loop.exp, loop.out
    truths = _truth_diffs(sc)
    missed: set[str] = set()
    looked = -1
    callers: list[Caller] = []
    population = max(1, round(sc.calls / sc.per_caller)) if sc.per_caller else 0
    reached: float | None = None  # when the outage's step was reached
    copied = False
    t = 0.0
    for i in range(sc.calls):
        t = t + _gap(sc, t) if i else 0.0
        loop.i = i
        loop.deliver(t)
        if (
            (out["rollback"] is not None and sc.stop_at_rollback)
            or (out["srm"] is not None and sc.stop_at_srm)
            or (out["last"] is not None and sc.stop_at_last)
        ):
            break
        weights = loop.weights
        who: Caller | None = None
        if population:
            k = int(rng.integers(population))
            while len(callers) <= k:
                callers.append(_caller(rng, sc.icc))
            who = callers[k]
            u = who.bucket
        else:
            u = float(rng.random())
        variant, edge = "safe", 0.0
        for name in loop.names:
            edge += weights.get(name, 0.0) / 100.0
            if u < edge:
                variant = name
                break
        on = variant == "cand"
        if loop.changed is None and (
            (sc.change_at is not None and loop.reached(sc.change_at))
            or (sc.change_after_s is not None and t >= sc.change_after_s)
        ):
            loop.truth, loop.changed = (sc.after or sc.cand), (i, loop.cand_calls, t)
        mine = loop.truth if on else sc.second if variant == "cand2" and sc.second is not None else sc.safe
        fail = 0.04 + 0.36 * (1 - math.cos(2 * math.pi * t / DAY_S)) / 2 if sc.swing else mine.fail
        if sc.outage_at is not None:
            if reached is None and loop.reached(sc.outage_at):
                reached = t
                loop.outage = (reached + 1800.0, reached + 1800.0 + sc.outage_s)
            if reached is not None and reached + 1800.0 <= t < reached + 1800.0 + sc.outage_s:
                fail = 1.0
                if out["outage"] is None:
                    out["outage"] = (i, loop.cand_calls)
        call = _call(rng, mine, fail, who)
        loop.cand_calls += on
        if on and sc.lose and rng.random() < sc.lose:
            continue
        failed = call["outcome"] != "ok"
        end = t + (2.0 + 6.0 * float(rng.random()) if failed else call["handle_time_s"])
        record = {"t": end, "started": t, "variant": variant, "epoch": loop.epoch, **call, "call_id": f"c{i}"}
        if population:
            record["caller"] = f"k{k}"
        entries = [record]
        if sc.copies and on and not copied and failed and t >= 1800.0:
            copied = True
            entries += [dict(record) for _ in range(sc.copies)]
        heapq.heappush(loop.ending, (end, i, entries))
        hour = int(t // 3600)
        if hour != looked and truths:
            looked = hour
            missed |= _misses(exp, truths)
    out["changed"] = loop.changed
    out["calls"] = loop.i + 1
    if truths:
        missed |= _misses(exp, truths)
        out["covered"] = {name: name not in missed for name in truths}
    out["z"] = _zs(exp)
    return out


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
    if sc.after is not None or sc.swing or sc.lose or sc.per_caller or sc.outage_at or sc.cand.tail or sc.second:
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
