"""The rollout as a sequential experiment: roll back and promote on evidence that holds at any number of looks. Pure.

The data are the outcome records of one **epoch** (the calls of a plan since its weights last changed; one JSON
object per finished call, ``docs/operating.md``). Every candidate variant is compared with the safe variant on each
**guardrail** (:data:`GUARDRAILS`), a metric where higher is worse:

=====================  =============  ========================================================  ==============
guardrail              kind           one call's value                                          default margin
=====================  =============  ========================================================  ==============
``failure_rate``       proportion     ``outcome`` is ``connect_failure`` or ``dropped``         0.02 (on)
``abandon_rate``       proportion     ``abandoned``                                             0.02 (on)
``greeting_ms``        latency        ``log(greeting_ms)`` (calls that had a greeting)          300 ms (on)
``first_reply_ms``     latency        ``log(first_reply_ms)`` (calls that had a reply)          300 ms (on)
``transfer_rate``      proportion     ``transferred``                                           0.03 (off)
``repeat_rate``        proportion     ``repeat``                                                0.03 (off)
``handle_time_s``      mean           ``handle_time_s``                                         30 s (off)
``cost_per_call_usd``  mean           ``cost_usd`` (calls with a price)                         0.02 (off)
``check_fail_rate``    proportion     ``failed_checks`` names a compliance check (plans with any)  0.02 (off)
=====================  =============  ========================================================  ==============

**The test** (mSPRT: Robbins 1970; Johari, Pekelis, Walsh 2017). For a guardrail, ``diff`` is the candidate's mean
minus the safe variant's, ``V = s_c^2/n_c + s_s^2/n_s`` its variance (a proportion's ``s^2`` is ``p(1-p)`` with
``p = (x + 0.5)/(n + 1)``, and never below the pooled ``p(1-p)`` of both variants: at a 5 % share a candidate with
no failure in its first 60 calls must not look surely better), ``z = diff / sqrt(V)`` and ``rho = n_eff * tau^2`` with
``n_eff = 1/(1/n_c + 1/n_s)``: ``tau`` is the spread of the normal mixture on the *standardized* effect (the
difference over one call's standard deviation), so one ``tau`` serves rates, latencies and costs. The mixture
likelihood ratio is ``L = sqrt(1/(1 + rho)) * exp(z^2 rho / (2 (1 + rho)))`` (:func:`log_mixture_lr`); under
"no difference", ``L`` reaches ``1/alpha`` with probability at most ``alpha`` however often it is looked at.
Inverting it gives a **confidence sequence** (:func:`half_width`): the interval ``diff +- sqrt(V (1 + rho)/rho
(2 log(1/alpha) + log(1 + rho)))`` holds the true difference at every look at once with probability ``1 - alpha``.

**Latency** is compared on the log scale (its tail is heavy; a mean of logs estimates the log of the median). A
median slower by more than the margin (300 ms) is a regression: the candidate's ``log(ms)`` is compared with the
safe variant's ``log(ms + margin)``, whose median is exactly the log of the safe median plus the margin. So the
shifted difference is above zero when the candidate's median is more than ``margin`` above the safe one's.

**Decisions** (:meth:`Experiment.add`, after every call):

* ``rollback`` of a candidate when on any guardrail the interval at level ``alpha / k`` (Bonferroni over the ``k``
  guardrails that are on, so the family-wise error of all of them together is at most ``alpha``) lies above zero:
  a proportion or mean surely higher than the safe variant's, a median surely slower by more than its margin. The
  intervals are checked only once both variants have ``min_calls`` values of the metric (the normal approximation
  needs some calls); checking at every call after that is what the test is built for.
* ``rollback`` by the **breaker**: the candidate's last ``N`` calls all failed while the safe variant is fine (its
  epoch failure rate below one half), where ``N`` is the smallest run that equal variants produce with probability
  at most ``breaker_per_call`` at a call: ``N = max(breaker_min_run, ceil(log(breaker_per_call) / log(p)))`` with
  ``p`` an upper bound of the safe variant's failure rate (``q = (x + 1)/(n + 2)`` plus two standard errors
  ``sqrt(q (1 - q)/(n + 2))``, at most one half). A dead candidate is rolled back after ``N`` calls (5 at a 5 %
  base rate, 10 at 20 %), long before the test can say anything.
* ``promote`` of a candidate when on every guardrail that is on the upper end of its interval (level ``alpha / k``)
  is below the guardrail's margin (non-inferiority; a latency's shifted difference below zero).

Estimates (:meth:`Experiment.estimates`, every metric of the table, on or off) are each variant's value per metric
(a latency's is the median estimated as ``exp`` of the mean log) and the candidate's difference from the safe
variant with its always-valid 95 % interval (level 0.05 alone, not split: it is what an operator reads). A latency's
difference and interval are in ms: ``median_s * (exp(d) - 1)`` for the log-difference ``d`` and its ends. A
guardrail that is on also says about how many more candidate calls its test needs (``more_calls``: the interval
narrows as ``1/sqrt(calls)``).

The core statistics (:func:`log_mixture_lr`, :func:`half_width`, :func:`moments`, :func:`breaker_run`) take
floats or numpy arrays alike, so ``bench/rollout.py`` runs thousands of simulated rollouts through the same formulas
vectorized; a unit test checks that its decisions equal :class:`Experiment`'s call by call.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Kind(enum.StrEnum):
    """How a guardrail's values are compared (the table above)."""

    PROPORTION = "proportion"
    LATENCY = "latency"
    MEAN = "mean"


Action = Literal["rollback", "promote"]
FAILED_OUTCOMES = frozenset({"connect_failure", "dropped"})
DISPLAY_ALPHA = 0.05  # the estimates' intervals: always-valid 95 %


def _flag(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    def value(record: Mapping[str, Any]) -> float | None:
        v = record.get(key)
        return None if v is None else float(bool(v))

    return value


def _positive(key: str, log: bool) -> Callable[[Mapping[str, Any]], float | None]:
    def value(record: Mapping[str, Any]) -> float | None:
        v = record.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            return None
        return math.log(max(float(v), 1.0)) if log else float(v)

    return value


def _failed(record: Mapping[str, Any]) -> float | None:
    return float(record.get("outcome") in FAILED_OUTCOMES)


@dataclass(frozen=True, slots=True)
class Guardrail:
    """One metric (higher is worse): how a record gives its value, and its defaults."""

    name: str
    kind: Kind
    value: Callable[[Mapping[str, Any]], float | None] = field(repr=False)
    margin: float  # non-inferiority margin (a latency's: the regression threshold, in ms)
    on: bool  # on by default


GUARDRAILS: dict[str, Guardrail] = {
    g.name: g
    for g in (
        Guardrail("failure_rate", Kind.PROPORTION, _failed, 0.02, True),
        Guardrail("abandon_rate", Kind.PROPORTION, _flag("abandoned"), 0.02, True),
        Guardrail("greeting_ms", Kind.LATENCY, _positive("greeting_ms", log=True), 300.0, True),
        Guardrail("first_reply_ms", Kind.LATENCY, _positive("first_reply_ms", log=True), 300.0, True),
        Guardrail("transfer_rate", Kind.PROPORTION, _flag("transferred"), 0.03, False),
        Guardrail("repeat_rate", Kind.PROPORTION, _flag("repeat"), 0.03, False),
        Guardrail("handle_time_s", Kind.MEAN, _positive("handle_time_s", log=False), 30.0, False),
        Guardrail("cost_per_call_usd", Kind.MEAN, _positive("cost_usd", log=False), 0.02, False),
        Guardrail("check_fail_rate", Kind.PROPORTION, _flag("failed_checks"), 0.02, False),
    )
}


class GuardrailSetting(BaseModel):
    """A dialplan's setting of one guardrail: on or off, and its margin (None: the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: bool = True
    margin: float | None = Field(None, gt=0)


class ExperimentSpec(BaseModel):
    """The ``experiment`` section of a dialplan's ``rollout``: the test's settings and the guardrails' (each
    documented in docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.05, gt=0, lt=0.5)  # family-wise error over all guardrails that are on
    tau: float = Field(0.2, gt=0, le=10)  # mixture spread on the standardized effect
    min_calls: int = Field(50, ge=10)  # values of a metric per variant before its test is checked
    breaker_min_run: int = Field(5, ge=2)
    breaker_per_call: float = Field(1e-6, gt=0, lt=0.01)
    promote: bool = True  # decide "promote" when the candidate is non-inferior on every guardrail
    auto_promote: tuple[float, ...] = ()  # candidate weight steps in percent, e.g. (5, 25, 50, 100)
    guardrails: dict[str, GuardrailSetting] = Field(default_factory=dict)  # name -> setting; missing: the default

    @model_validator(mode="after")
    def _known(self) -> ExperimentSpec:
        unknown = sorted(set(self.guardrails) - set(GUARDRAILS))
        if unknown:
            raise ValueError(f"guardrails: unknown {unknown}; known: {sorted(GUARDRAILS)}")
        steps = self.auto_promote
        if any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"auto_promote: increasing percentages in (0, 100] (got {list(steps)})")
        if not self.active:
            raise ValueError("guardrails: at least one must be on")
        return self

    @property
    def active(self) -> tuple[tuple[Guardrail, float], ...]:
        """The guardrails that are on, each with its margin."""
        out = []
        for name, g in GUARDRAILS.items():
            setting = self.guardrails.get(name)
            if setting is None and g.on:
                out.append((g, g.margin))
            elif setting is not None and setting.on:
                out.append((g, g.margin if setting.margin is None else setting.margin))
        return tuple(out)

    @property
    def test_alpha(self) -> float:
        """Each guardrail's share of ``alpha`` (Bonferroni)."""
        return self.alpha / len(self.active)


# ------------------------------------------------------------------------------------------------ the statistics
def log_mixture_lr(z: Any, rho: Any) -> Any:
    """``log L`` of the normal-mixture SPRT for ``z = diff / sqrt(V)`` and ``rho = I tau^2``."""
    return -0.5 * np.log1p(rho) + z * z * rho / (2.0 * (1.0 + rho))


def half_width(var: Any, rho: Any, alpha: float) -> Any:
    """Half the width of the always-valid ``1 - alpha`` interval around ``diff`` (where ``L = 1/alpha``)."""
    return np.sqrt(var * (1.0 + rho) / rho * (2.0 * math.log(1.0 / alpha) + np.log1p(rho)))


def moments(kind: Kind, n: Any, total: Any, squares: Any) -> tuple[Any, Any]:
    """An arm's mean and one value's variance from its count, sum and sum of squares (``n >= 2``)."""
    mean = total / n
    if kind is Kind.PROPORTION:
        p = (total + 0.5) / (n + 1.0)
        return mean, p * (1.0 - p)
    return mean, np.maximum((squares - n * mean * mean) / (n - 1.0), 1e-12)


def compare(kind: Kind, arms: tuple[tuple[Any, Any, Any], tuple[Any, Any, Any]], tau: float) -> tuple[Any, ...]:
    """``(diff, V, rho)`` of the candidate minus the safe variant; ``arms`` = ((n, sum, squares) of each)."""
    (n_c, s_c, q_c), (n_s, s_s, q_s) = arms
    mean_c, var_c = moments(kind, n_c, s_c, q_c)
    mean_s, var_s = moments(kind, n_s, s_s, q_s)
    if kind is Kind.PROPORTION:  # neither arm's variance below the pooled one's: a few calls with no event say little
        pooled = (s_c + s_s + 1.0) / (n_c + n_s + 2.0)
        var_c, var_s = np.maximum(var_c, pooled * (1 - pooled)), np.maximum(var_s, pooled * (1 - pooled))
    n_eff = 1.0 / (1.0 / n_c + 1.0 / n_s)
    return mean_c - mean_s, var_c / n_c + var_s / n_s, n_eff * tau * tau


def breaker_run(safe_failures: Any, safe_calls: Any, min_run: int, per_call: float) -> Any:
    """Consecutive candidate failures that trip the breaker; ``inf`` while the safe variant is not fine."""
    p = (safe_failures + 1.0) / (safe_calls + 2.0)
    high = np.minimum(p + 2.0 * np.sqrt(p * (1.0 - p) / (safe_calls + 2.0)), 0.5)  # the rate's upper bound
    run = np.maximum(min_run, np.ceil(math.log(per_call) / np.log(high)))
    return np.where(p < 0.5, run, np.inf)


# ------------------------------------------------------------------------------------------------ the engine
@dataclass(slots=True)
class _Sums:
    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.squares += x * x

    @property
    def arm(self) -> tuple[float, float, float]:
        return float(self.n), self.total, self.squares


@dataclass(slots=True)
class _Arm:
    calls: int = 0
    failures: int = 0
    run: int = 0  # consecutive failures up to the last call
    sums: dict[str, _Sums] = field(default_factory=lambda: {name: _Sums() for name in GUARDRAILS})
    shifted: dict[str, _Sums] = field(default_factory=dict)  # a latency's log(ms + margin), the safe variant's


@dataclass(frozen=True, slots=True)
class Decision:
    t: float
    variant: str
    action: Action
    reason: str
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """``t``, ``variant``, ``action``, ``reason`` and ``evidence``, as ``rollout evaluate --json`` prints them."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Bounds:
    """One guardrail of one candidate at one look (in the test's scale: a latency's shifted log-difference)."""

    diff: float
    lo: float
    hi: float
    log_lr: float
    calls: tuple[int, int]


class Experiment:
    """The calls of one epoch of a plan, fed one record at a time (:meth:`add`), and what they decide."""

    def __init__(self, spec: ExperimentSpec, safe: str, variants: Iterable[str], *, epoch: str | None = None) -> None:
        self.spec = spec
        self.safe = safe
        self.epoch = epoch  # the weights' fingerprint (bridge.rollout.outcomes): named in each decision's evidence
        self.arms = {name: _Arm() for name in variants}
        self.arms.setdefault(safe, _Arm())
        self.decided: dict[str, Decision] = {}

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(n for n in self.arms if n != self.safe)

    def add(self, record: Mapping[str, Any]) -> list[Decision]:
        """Count one finished call; the decisions it brings (each candidate is decided at most once)."""
        variant = str(record.get("variant"))
        arm = self.arms.get(variant)
        if arm is None:
            return []
        self._count(arm, record)
        t = float(record.get("t") or 0.0)
        todo = self.candidates if variant == self.safe else (variant,)
        out = [d for name in todo if name not in self.decided and (d := self._decide(name, t)) is not None]
        self.decided.update((d.variant, d) for d in out)
        return out

    def _count(self, arm: _Arm, record: Mapping[str, Any]) -> None:
        arm.calls += 1
        failed = bool(_failed(record))
        arm.failures += failed
        arm.run = arm.run + 1 if failed else 0
        margins = dict((g.name, m) for g, m in self.spec.active)
        for g in GUARDRAILS.values():
            x = g.value(record)
            if x is None:
                continue
            arm.sums[g.name].add(x)
            if g.kind is Kind.LATENCY and g.name in margins:
                arm.shifted.setdefault(g.name, _Sums()).add(math.log(math.exp(x) + margins[g.name]))

    def bounds(self, candidate: str, g: Guardrail, alpha: float) -> Bounds | None:
        """The test's interval of ``g`` for ``candidate`` at level ``alpha``; None before ``min_calls`` each."""
        mine, safe = self.arms[candidate].sums[g.name], self.arms[self.safe]
        theirs = safe.shifted.get(g.name, _Sums()) if g.kind is Kind.LATENCY else safe.sums[g.name]
        if min(mine.n, theirs.n) < self.spec.min_calls:
            return None
        diff, var, rho = compare(g.kind, (mine.arm, theirs.arm), self.spec.tau)
        w = float(half_width(var, rho, alpha))
        lr = float(log_mixture_lr(diff / math.sqrt(var), rho))
        return Bounds(float(diff), float(diff) - w, float(diff) + w, lr, (mine.n, theirs.n))

    def _decide(self, candidate: str, t: float) -> Decision | None:
        arm, safe, spec = self.arms[candidate], self.arms[self.safe], self.spec
        need = float(breaker_run(safe.failures, safe.calls, spec.breaker_min_run, spec.breaker_per_call))
        if arm.run >= need:
            evidence = {
                "epoch": self.epoch,
                "breaker": {
                    "consecutive_failures": arm.run,
                    "trip_at": int(need),
                    "safe_failures": safe.failures,
                    "safe_calls": safe.calls,
                },
            }
            return Decision(
                t,
                candidate,
                "rollback",
                f"{candidate}: {arm.run} calls failed in a row while the "
                f"safe variant failed {safe.failures} of {safe.calls}",
                evidence,
            )
        alpha, found, clear = spec.test_alpha, [], True
        for g, margin in spec.active:
            b = self.bounds(candidate, g, alpha)
            if b is None:
                clear = False
                continue
            if b.lo > 0:
                found.append((g, margin, b))
            limit = 0.0 if g.kind is Kind.LATENCY else margin
            clear = clear and b.hi < limit
        if found:
            why = "; ".join(_worse(g, m, b) for g, m, b in found)
            return Decision(t, candidate, "rollback", f"{candidate}: {why}", self._evidence(candidate, alpha))
        if clear and spec.promote:
            return Decision(
                t,
                candidate,
                "promote",
                f"{candidate}: not worse than {self.safe} by its margin on "
                + ", ".join(g.name for g, _ in spec.active),
                self._evidence(candidate, alpha),
            )
        return None

    def _evidence(self, candidate: str, alpha: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "alpha": alpha,
            "tau": self.spec.tau,
            "calls": {candidate: self.arms[candidate].calls, self.safe: self.arms[self.safe].calls},
        }
        for g, margin in self.spec.active:
            b = self.bounds(candidate, g, alpha)
            if b is not None:
                out[g.name] = {
                    "diff": round(b.diff, 6),
                    "ci": [round(b.lo, 6), round(b.hi, 6)],
                    "log_lr": round(b.log_lr, 3),
                    "threshold_log_lr": round(math.log(1 / alpha), 3),
                    "margin": margin,
                    "calls": list(b.calls),
                    "scale": "log(ms) - log(safe ms + margin)" if g.kind is Kind.LATENCY else "difference",
                }
        return out

    def estimates(self) -> dict[str, Any]:
        """Each variant's calls and metrics; a candidate's difference from the safe variant with its 95 % interval."""
        return {name: self._estimate(name) for name in self.arms}

    def _estimate(self, name: str) -> dict[str, Any]:
        arm, safe = self.arms[name], self.arms[self.safe]
        out: dict[str, Any] = {"calls": arm.calls}
        active = {g.name for g, _ in self.spec.active}
        for g in GUARDRAILS.values():
            metric: dict[str, Any] = {"value": _value(g, arm.sums[g.name])}
            out[g.name] = metric
            if name == self.safe:
                continue
            mine, theirs = arm.sums[g.name], safe.sums[g.name]
            if min(mine.n, theirs.n) < 2:
                metric["vs_safe"] = None
                continue
            diff, var, rho = compare(g.kind, (mine.arm, theirs.arm), self.spec.tau)
            w = float(half_width(var, rho, DISPLAY_ALPHA))
            lo, d, hi = float(diff) - w, float(diff), float(diff) + w
            if g.kind is Kind.LATENCY:
                base = math.exp(theirs.total / theirs.n)
                lo, d, hi = (base * math.expm1(x) for x in (lo, d, hi))
            metric["vs_safe"] = {"diff": _round(d), "ci95": [_round(lo), _round(hi)]}
            if g.name in active:
                metric["more_calls"] = self._more_calls(name, g)
        return out

    def _more_calls(self, name: str, g: Guardrail) -> int | None:
        """About how many more candidate calls (at today's share and rates) the guardrail needs to decide: its
        interval above zero (worse) or below its limit (not worse by the margin), whichever is nearer. 0: decided;
        None: no difference to find either way (the estimate sits on the limit)."""
        b = self.bounds(name, g, self.spec.test_alpha)
        if b is None:
            have = min(self.arms[name].sums[g.name].n, self.arms[self.safe].sums[g.name].n)
            return max(0, self.spec.min_calls - have)
        limit = 0.0 if g.kind is Kind.LATENCY else dict((x.name, m) for x, m in self.spec.active)[g.name]
        if b.lo > 0 or b.hi < limit:
            return 0
        gap = max(b.diff, limit - b.diff)  # to the nearer decision: the estimate's distance from its line
        if gap <= 0:
            return None
        # The half width shrinks about as 1/sqrt(calls): k times the calls so far bring it down to the gap.
        k = ((b.hi - b.lo) / 2 / gap) ** 2
        return math.ceil(self.arms[name].sums[g.name].n * (k - 1)) if k > 1 else 0


def _round(x: float) -> float:
    return round(x, 6)


def _value(g: Guardrail, s: _Sums) -> float | None:
    if s.n == 0:
        return None
    mean = s.total / s.n
    return _round(math.exp(mean) if g.kind is Kind.LATENCY else mean)


def _worse(g: Guardrail, margin: float, b: Bounds) -> str:
    if g.kind is Kind.LATENCY:
        return (
            f"{g.name}: median more than {margin:g} ms slower than the safe variant's "
            f"(log-difference beyond the margin {b.diff:+.3f}, interval [{b.lo:+.3f}, {b.hi:+.3f}])"
        )
    return (
        f"{g.name}: {b.diff:+.4g} above the safe variant's (always-valid interval [{b.lo:+.4g}, {b.hi:+.4g}], "
        f"{b.calls[0]} vs {b.calls[1]} calls)"
    )


def replay(
    spec: ExperimentSpec, safe: str, variants: Iterable[str], records: Iterable[Mapping[str, Any]]
) -> tuple[list[Decision], Experiment]:
    """Feed ``records`` in time order; every decision and the experiment at the end."""
    exp = Experiment(spec, safe, variants)
    decisions: list[Decision] = []
    for record in sorted(records, key=lambda r: float(r.get("t") or 0.0)):
        decisions += exp.add(record)
    return decisions, exp
