"""The guarded rollout's statistics: always-valid tests and intervals, a stratified difference, the breaker's run and
the sample-ratio test. Pure: floats in, floats out (numpy arrays too where a function says so).

* **The mixture SPRT** (Robbins 1970; Johari, Pekelis, Walsh 2017). For a difference ``diff`` with variance ``V``,
  ``z = diff / sqrt(V)`` and ``rho = n_eff tau^2`` (``tau``: the spread of a normal mixture on the standardized
  effect, ``n_eff``: the effective calls of the comparison), the two-sided mixture likelihood ratio is
  ``L = sqrt(1/(1 + rho)) exp(z^2 rho / (2 (1 + rho)))`` (:func:`log_mixture_lr`); under "no difference" it reaches
  ``1/alpha`` with probability at most ``alpha`` however often it is looked at. Its inversion is a confidence
  sequence: ``diff +- sqrt(V (1 + rho)/rho (2 log(1/alpha) + log(1 + rho)))`` (:func:`half_width`).
* **One-sided** (:func:`log_one_sided_lr`): a half-normal mixture on the harmful side only,
  ``L+ = 2 Phi(z sqrt(rho/(1 + rho))) L``; a rollback asks "surely worse" and a promotion "surely not worse by the
  margin", each one-sided, so each keeps its whole ``alpha``. Its bound (:func:`one_sided_z`) is where
  ``L+ = 1/alpha``, found by bisection on ``z``.
* **Stratified** (:class:`Strata`): the candidate's difference from the safe variant in each stratum (an epoch's
  hour: both variants at the same weights and the same time of day), combined with weights ``w = n_eff`` of the
  stratum. A swing both variants share cancels inside each stratum, and weights that change between epochs cannot
  make a Simpson's paradox (calls are never pooled across strata).
  A proportion's stratum also carries its own variance, each arm's from its own rate in that stratum (smoothed
  toward the arm's rate over every stratum, ``(x + k p) / (n + k)`` with ``k = PRIOR_CALLS``): an hour in which both
  variants fail together (a shared outage) is as uncertain as it is, not as calm as the rest of the rollout, and a
  small arm is never charged with the other arm's rate (a pooled rate would charge a 5 % holdout with a doubled
  candidate's failures: 1.87 times its variance).
* **Callers as the unit** (:class:`Clusters`): a caller who keeps a variant calls again with the same propensities,
  so a variant's calls are not independent. Each variant's values are grouped by caller, and the variance of its
  mean is the cluster-robust one (the sum over callers of their summed residuals squared, Liang and Zeger 1986), used
  through the design effect: robust over naive, never below 1. A call with no caller is its own cluster.
* **The breaker's run** (:func:`breaker_run`, :func:`breaker_need`): the fewest consecutive candidate failures that
  equal variants reach with probability at most ``per_call`` at a call, from an upper bound ``h`` of the safe
  variant's failure rate *at the same moment* (its calls that ended during the candidate's run). Records come as
  calls end and a failed connect ends in seconds while an answered call lasts minutes, so a run of failures that
  began a minute ago says little by itself: the calls begun since that will end fine have not ended yet. Where the
  candidate's rate of calls is known, the run is weighed against them: the likelihood ratio of "every call it began
  in the span failed" against "its calls fail at ``h``" is ``h**-k * exp(-(1 - h) * n)`` for ``k`` failures among the
  ``n`` calls it began (treating every failure as ended and no fine call as ended, the ratio's smallest value), a
  supermartingale while the candidate fails at ``h`` or less, so by Ville's inequality it passes ``1 / per_call``
  with probability at most ``per_call``, whatever calls are in progress.
* **Sample ratio** (:func:`log_srm_bf`): the Dirichlet-multinomial mixture Bayes factor of observed counts against
  the shares the weights promise (Lindon and Malek 2022); a product over epochs is still an e-process, so the test
  spans the whole rollout.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

Z80 = 0.8416  # the standard normal's 80th percentile: the power a step asks for
PRIOR_CALLS = 2.0  # a stratum's proportion is smoothed toward its arm's overall rate by this many calls


def log_mixture_lr(z: Any, rho: Any) -> Any:
    """``log L`` of the two-sided normal-mixture SPRT for ``z = diff / sqrt(V)`` and ``rho = n_eff tau^2``."""
    return -0.5 * np.log1p(rho) + z * z * rho / (2.0 * (1.0 + rho))


def half_width(var: Any, rho: Any, alpha: float) -> Any:
    """Half the width of the two-sided always-valid ``1 - alpha`` interval around ``diff`` (where ``L = 1/alpha``)."""
    return np.sqrt(var * (1.0 + rho) / rho * (2.0 * math.log(1.0 / alpha) + np.log1p(rho)))


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def log_one_sided_lr(z: float, rho: float) -> float:
    """``log L+`` of the half-normal mixture on positive effects (``z > 0``: the harmful side)."""
    p = _phi(z * math.sqrt(rho / (1.0 + rho)))
    return math.log(2.0 * max(p, 1e-300)) + float(log_mixture_lr(z, rho))


@lru_cache(maxsize=4096)
def _one_sided_z(rho_key: float, alpha: float) -> float:
    lo, hi, target = 0.0, 50.0, math.log(1.0 / alpha)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if log_one_sided_lr(mid, rho_key) < target else (lo, mid)
    return hi


def one_sided_z(rho: float, alpha: float) -> float:
    """The ``z`` at which the one-sided test rejects at level ``alpha`` (``rho`` rounded to 2 significant places
    upward, which only widens the bound: the boundary grows with ``rho`` past ``rho`` of about 1)."""
    if rho <= 0:
        return math.inf
    exp = math.floor(math.log10(rho))
    key = math.ceil(rho / 10 ** (exp - 1)) * 10 ** (exp - 1)
    return _one_sided_z(float(key), alpha)


def breaker_run(safe_failures: Any, safe_calls: Any, min_run: int, per_call: float) -> Any:
    """Consecutive candidate failures that trip the breaker; ``inf`` while the safe variant is not fine (its rate's
    estimate one half or more). ``safe_failures`` of ``safe_calls``: the safe variant's recent calls."""
    p = (safe_failures + 1.0) / (safe_calls + 2.0)
    high = np.minimum(p + 2.0 * np.sqrt(p * (1.0 - p) / (safe_calls + 2.0)), 0.5)  # the rate's upper bound
    run = np.maximum(min_run, np.ceil(math.log(per_call) / np.log(high)))
    return np.where(p < 0.5, run, np.inf)


def breaker_high(safe_failures: int, safe_calls: int) -> float | None:
    """The upper bound of the safe variant's failure rate :func:`breaker_run` takes (None: its estimate one half or
    more, the safe variant not fine)."""
    p = (safe_failures + 1.0) / (safe_calls + 2.0)
    if p >= 0.5:
        return None
    return min(p + 2.0 * math.sqrt(p * (1.0 - p) / (safe_calls + 2.0)), 0.5)


def breaker_need(safe_failures: int, safe_calls: int, min_run: int, per_call: float, began: float = 0.0) -> float:
    """:func:`breaker_run` for one look, in plain floats; with ``began`` (the calls the candidate is estimated to have
    begun in the span), the failures that take the ratio ``h**-k * exp(-(1 - h) * began)`` to ``1 / per_call``."""
    high = breaker_high(safe_failures, safe_calls)
    if high is None:
        return math.inf
    need = (math.log(1.0 / per_call) + (1.0 - high) * began) / math.log(1.0 / high)
    return max(float(min_run), math.ceil(need - 1e-9))


def log_srm_bf(counts: Mapping[str, int], shares: Mapping[str, float], concentration: float) -> float:
    """``log`` of the Dirichlet-multinomial Bayes factor of ``counts`` against the expected ``shares`` (each
    variant's; those with no share are left out), with the Dirichlet's parameters ``concentration * share``."""
    names = [n for n, s in shares.items() if s > 0]
    n = sum(counts.get(v, 0) for v in names)
    if n == 0 or len(names) < 2:
        return 0.0
    out = math.lgamma(concentration) - math.lgamma(concentration + n)
    for v in names:
        a, x = concentration * shares[v], counts.get(v, 0)
        out += math.lgamma(a + x) - math.lgamma(a) - x * math.log(shares[v])
    return out


@dataclass(slots=True)
class Arm:
    """Running count, sum and sum of squares of one variant's values."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.squares += x * x

    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def var(self, proportion: bool) -> float:
        """One value's variance: a proportion's from ``(x + 1)/(n + 2)`` (never zero at a few calls with no event),
        else the sample variance."""
        if proportion:
            p = (self.total + 1.0) / (self.n + 2.0)
            return p * (1.0 - p)
        if self.n < 2:
            return math.inf
        return max((self.squares - self.total * self.total / self.n) / (self.n - 1), 1e-12)


@dataclass(slots=True)
class Callers:
    """The callers a rollout has heard from, each as a small number (its index in every :class:`Clusters`' arrays) with
    the time of their last call: a caller's hash is held once, however many metrics group by it."""

    ids: dict[str, int] = field(default_factory=dict)
    last: array[float] = field(default_factory=lambda: array("d"))

    def id(self, caller: str, t: float) -> int:
        i = self.ids.get(caller)
        if i is None:
            i = self.ids[caller] = len(self.last)
            self.last.append(t)
        else:
            self.last[i] = max(self.last[i], t)
        return i

    def forget(self, before: float) -> list[int] | None:
        """Drop the callers last heard from before ``before``; the new index of each old one (-1: dropped), or None
        when nobody was dropped."""
        keep = [i for i in range(len(self.last)) if self.last[i] >= before]
        if len(keep) == len(self.last):
            return None
        moved = [-1] * len(self.last)
        for new, old in enumerate(keep):
            moved[old] = new
        self.ids = {c: moved[i] for c, i in self.ids.items() if moved[i] >= 0}
        self.last = array("d", (self.last[i] for i in keep))
        return moved


@dataclass(slots=True)
class Clusters:
    """One variant's values of one metric grouped by caller, for the cluster-robust variance of their mean.

    Kept as sums so that a look costs nothing: ``n``, ``total`` and ``squares`` of the values, and over callers the
    sums ``q1 = sum S_g^2``, ``q2 = sum S_g m_g``, ``q3 = sum m_g^2`` (``S_g``: a caller's sum, ``m_g``: their
    calls; both in arrays indexed by the caller's number in ``callers``). The robust sum of squares about the mean
    ``mu`` is ``q1 - 2 mu q2 + mu^2 q3``; the naive one ``squares - n mu^2``. A caller not heard from for a while is
    forgotten (:meth:`remap`): their sums stay in ``q1..q3``, a later call starts a new cluster."""

    callers: Callers = field(default_factory=Callers)
    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    q1: float = 0.0
    q2: float = 0.0
    q3: float = 0.0
    sums: array[float] = field(default_factory=lambda: array("d"))
    counts: array[float] = field(default_factory=lambda: array("d"))

    def add(self, caller: str | None, x: float, t: float) -> None:
        self.n += 1
        self.total += x
        self.squares += x * x
        if caller is None:
            self.q1 += x * x
            self.q2 += x
            self.q3 += 1.0
            return
        i = self.callers.id(caller, t)
        if i >= len(self.sums):
            grow = i + 1 - len(self.sums)
            self.sums.extend([0.0] * grow)
            self.counts.extend([0.0] * grow)
        s, m = self.sums[i], self.counts[i]
        s2, m2 = s + x, m + 1.0
        self.q1 += s2 * s2 - s * s
        self.q2 += s2 * m2 - s * m
        self.q3 += m2 * m2 - m * m
        self.sums[i], self.counts[i] = s2, m2

    def deff(self) -> float:
        """The design effect: the cluster-robust variance of the mean over the naive one (at least 1)."""
        if self.n < 2 or self.q3 == self.n:  # every cluster a single call
            return 1.0
        mu = self.total / self.n
        naive = self.squares - self.n * mu * mu
        if naive <= 1e-12:
            return 1.0
        return max(1.0, (self.q1 - 2.0 * mu * self.q2 + mu * mu * self.q3) / naive)

    def remap(self, moved: list[int]) -> None:
        """Follow :meth:`Callers.forget`: the kept callers' sums to their new places (the dropped ones' stay
        counted)."""
        size = sum(1 for i in moved if i >= 0)
        sums, counts = array("d", [0.0] * size), array("d", [0.0] * size)
        for old, new in enumerate(moved):
            if new >= 0 and old < len(self.sums):
                sums[new], counts[new] = self.sums[old], self.counts[old]
        self.sums, self.counts = sums, counts


@dataclass(frozen=True, slots=True)
class Estimate:
    """A stratified difference (candidate minus safe) at one look."""

    diff: float
    var: float
    n_eff: float
    calls: tuple[int, int]  # values on the candidate and on the safe variant
    var_s: float = 0.0  # the safe variant's part of ``var``

    def relative_to(self, margin: float) -> Estimate:
        """The estimate of ``candidate - (1 + margin) * safe`` plus the line ``margin * safe`` read off the safe
        mean: the same difference, its variance with the safe part times ``(1 + margin)^2``. A line drawn at a share
        of the safe variant's own estimated rate moves with it; tested as known, a small holdout's noise would pass
        for the candidate's harm."""
        return replace(self, var=self.var + ((1.0 + margin) ** 2 - 1.0) * self.var_s)

    def rho(self, tau: float) -> float:
        return self.n_eff * tau * tau

    def half_width(self, tau: float, alpha: float) -> float:
        return float(half_width(self.var, self.rho(tau), alpha))

    def harm(self, tau: float, alpha: float, above: float = 0.0) -> bool:
        """The one-sided test at ``alpha``: surely more than ``above``."""
        se = math.sqrt(self.var)
        if se <= 0 or self.diff - above < 2.0 * se:  # the bound needs z above 2 at any level below 0.05
            return False
        return log_one_sided_lr((self.diff - above) / se, self.rho(tau)) >= math.log(1 / alpha)

    def power_for(self, effect: float, tau: float, alpha: float) -> float:
        """The chance that the one-sided harm test rejects at this information, were the truth ``effect`` worse."""
        se = math.sqrt(self.var)
        if se <= 0 or not math.isfinite(se):
            return 0.0
        return _phi(effect / se - one_sided_z(self.rho(tau), alpha))


@dataclass(slots=True)
class Strata:
    """The stratified difference of one metric, candidate minus safe, fed one value at a time.

    Closed strata are kept as sums (``W = sum w``, ``D = sum w d``, ``Ac = sum w^2/n_c``, ``As = sum w^2/n_s``, and
    for a proportion ``P = sum w^2 (v_c/n_c + v_s/n_s)`` with ``v_c``, ``v_s`` each arm's own variance in the
    stratum, from its smoothed rate there); the open stratum
    as its two arms. A stratum closes when the next one begins and both its arms have a value; safe values with no
    candidate value beside them are dropped (nothing to compare them with), candidate values with no safe value beside
    them run on into the next key. The variance uses each variant's variance over all its values (``arms``):
    ``V = (Ac s_c^2 + As s_s^2) / W^2``, each arm's part times its design effect by caller (``clusters``: the
    candidate's and the safe variant's :class:`Clusters`, when the engine groups by caller); a proportion's is at
    least ``P / W^2`` (times the larger design effect)."""

    proportion: bool
    key: Any = None
    open_c: Arm | None = None
    open_s: Arm | None = None
    w: float = 0.0
    d: float = 0.0
    ac: float = 0.0
    as_: float = 0.0
    pv: float = 0.0
    closed_c: int = 0  # the candidate's and the safe variant's values in the closed strata
    closed_s: int = 0
    arm_c: Arm | None = None
    arm_s: Arm | None = None
    clusters: tuple[Clusters, Clusters] | None = None  # the candidate's and the safe variant's (None: by call)

    def __post_init__(self) -> None:
        self.open_c, self.open_s, self.arm_c, self.arm_s = Arm(), Arm(), Arm(), Arm()

    def add(self, key: Any, candidate: bool, x: float) -> None:
        assert self.open_c is not None and self.open_s is not None and self.arm_c is not None and self.arm_s is not None
        if key != self.key:
            if self.open_c.n and self.open_s.n:
                self._close()
            elif not self.open_c.n:
                self.open_s = Arm()  # safe calls with no candidate call beside them: nothing to compare
            self.key = key  # (candidate calls with no safe call beside them wait for the next stratum's)
        (self.open_c if candidate else self.open_s).add(x)
        (self.arm_c if candidate else self.arm_s).add(x)

    def _open(self) -> tuple[float, float, float, float, float]:
        """The open stratum's ``w``, ``w d``, ``w^2/n_c``, ``w^2/n_s`` and own-variance term (zeros: not both)."""
        assert self.open_c is not None and self.open_s is not None
        nc, ns = self.open_c.n, self.open_s.n
        if not (nc and ns):
            return 0.0, 0.0, 0.0, 0.0, 0.0
        w = 1.0 / (1.0 / nc + 1.0 / ns)
        pv = 0.0
        if self.proportion:
            assert self.arm_c is not None and self.arm_s is not None
            pv = w * w * (_own_var(self.open_c, self.arm_c) / nc + _own_var(self.open_s, self.arm_s) / ns)
        return w, w * (self.open_c.mean() - self.open_s.mean()), w * w / nc, w * w / ns, pv

    def _close(self) -> None:
        w, wd, ac, as_, pv = self._open()
        self.w += w
        self.d += wd
        self.ac += ac
        self.as_ += as_
        self.pv += pv
        assert self.open_c is not None and self.open_s is not None
        self.closed_c += self.open_c.n
        self.closed_s += self.open_s.n
        self.open_c, self.open_s = Arm(), Arm()

    def estimate(self, ref: Strata | None = None) -> Estimate | None:
        """The difference at this look; None before each arm has two values in strata that hold both.

        The safe variant's variance comes from ``ref``'s safe values when given (a longer record of the same
        metric: the last step's holdout is small), and the candidate's is never taken below it (as it is under no
        difference): a few calls with no event must not look surely better, nor a small holdout with none surely
        better than the candidate."""
        assert self.arm_c is not None and self.arm_s is not None
        wo, wdo, aco, aso, pvo = self._open()
        w, d, ac, as_, pv = self.w + wo, self.d + wdo, self.ac + aco, self.as_ + aso, self.pv + pvo
        if w <= 0 or self.arm_c.n < 2 or self.arm_s.n < 2:
            return None
        var_s = (ref if ref is not None and ref.arm_s is not None and ref.arm_s.n >= self.arm_s.n else self).arm_s
        assert var_s is not None
        vs = var_s.var(self.proportion)
        dc, ds = (self.clusters[0].deff(), self.clusters[1].deff()) if self.clusters is not None else (1.0, 1.0)
        safe_part = as_ * vs * ds / (w * w)
        var = ac * max(self.arm_c.var(self.proportion), vs) * dc / (w * w) + safe_part
        if self.proportion:
            var = max(var, pv * max(dc, ds) / (w * w))
        return Estimate(d / w, var, w, (self.arm_c.n, self.arm_s.n), min(safe_part, var))


def _own_var(stratum: Arm, arm: Arm) -> float:
    """One value's variance in a stratum of a proportion: its own rate there, smoothed toward the arm's overall
    rate (itself smoothed, ``(x + 1)/(n + 2)``) by ``PRIOR_CALLS`` calls."""
    prior = (arm.total + 1.0) / (arm.n + 2.0)
    p = (stratum.total + PRIOR_CALLS * prior) / (stratum.n + PRIOR_CALLS)
    return p * (1.0 - p)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; ``values`` not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
