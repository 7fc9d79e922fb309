"""The watch that never ends: a change detector on each guardrail's recent evidence, beside the cumulative tests,
from a candidate's first step on; at its last step, for as long as the holdout runs, an alarm rolls it back. Pure.

A cumulative test averages a regression that starts late with every good call before it: after a week of good
calls, a doubling of failures needs weeks to move it. The watch forgets instead.

* **Blocks.** The evidence arrives as the current step's strata (:class:`~bridge.rollout.stats.Strata`: each hour's
  candidate-minus-safe difference and its weight ``w = 1/(1/n_c + 1/n_s)``). At each hour's end the strata closed
  since the last look are gathered into a block, closed once each arm has ``BLOCK_CALLS`` values in it (a busy hour
  is a block; at low traffic a block spans hours). A block's difference ``D = sum w d / sum w`` and variance
  ``V = max(Ac s_c^2 + As s_s^2, P) / W^2`` are the stratified estimate's, each arm's variance from its own rate,
  times the callers' design effect: a swing both variants share cancels inside each hour.
* **The statistic** (Shiryaev and Roberts; in its e-detector form, Shin, Ramdas and Rinaldo 2022). Against the line
  ``m`` (the guardrail's ramp ``margin`` in the test's scale before the step the candidate stays on, its
  ``last_margin`` there: a candidate within it is tolerated) and a change to a clear regression,
  ``delta = clear M - m`` beyond it (``M`` the larger of the two margins: failures doubled at the default margin
  of 50 % and ``clear`` 2, whichever the line), a block's likelihood ratio of "``m + delta``" over "``m``" for
  ``D ~ N(mu, V)`` is ``log L = (delta / V)(D - m - delta / 2)``, and
  ``R_n = (1 + R_(n-1)) L_n`` (``R_0 = 0``; kept as ``log R``).
* **Its false alarms, as an average run length (ARL).** Under any mean at or below the line, ``E[L] <= 1``, so
  ``R_n - n`` is a supermartingale and the first ``n`` with ``R_n >= B`` has ``E[n] >= B`` (optional stopping):
  with ``B`` the ARL target in hours (a block lasts at least an hour), a candidate *exactly at its margin* raises a
  false alarm at most once in that many hours on average; an equal candidate, far below the line, far less often.
  The engine gives each of its ``k`` guardrails of each of ``c`` candidates ``B = 24 watch_arl_days k c``, so the
  plan's false rollbacks by the watch add up to at most one per ``watch_arl_days``. A new step's strata start new
  blocks; the statistic goes on.
* **Fresh evidence.** Before the last step a promotion also waits while ``log R >= HOLD_LOG_R`` (2): the recent
  hours lean toward a change (a hold only delays a step; no error is spent). At a 5 % first step and 1,000 calls an
  hour (failures 2 %, margin 50 %), an equal candidate stands there in about 1 % of its hours; three hours after a
  doubling in about 17 %, six hours after in 40 % (about 60 % after twelve): what a 5 % step's calls can show.
* **Its delay.** A change to ``m + delta`` adds ``delta^2 / (2 V)`` to ``log R`` per block on average: the delay is
  about ``log(B) / (delta^2 / (2 V))`` blocks (at 1,000 calls an hour and the default 10 % holdout, failures 2 % ->
  4 %, the line at the failure rate's floor of 0.5 points, above its ``last_margin`` of 10 % there: ``V`` is about
  ``2.3e-4`` an hour, ``delta`` 1.5 points, the drift 0.5 a block, some 22 hours; with ``holdout: 5`` about 40,
  with ``holdout: 20`` about 14). Another change adds ``(delta / V)(mu - m - delta / 2)`` a block: an equal
  candidate's statistic drifts down by 0.44 an hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bridge.rollout.stats import Strata

BLOCK_CALLS = 20  # values of each arm that close a block (an hour at the least)
HOLD_LOG_R = 2.0  # a step waits while a guardrail's log R stands at this or above


@dataclass(frozen=True, slots=True)
class Sums:
    """A :class:`~bridge.rollout.stats.Strata`'s closed strata as sums: ``w``, ``w d``, ``w^2/n_c``, ``w^2/n_s``,
    the own-variance term, and the values of each arm in them."""

    w: float = 0.0
    d: float = 0.0
    ac: float = 0.0
    as_: float = 0.0
    pv: float = 0.0
    n_c: int = 0
    n_s: int = 0

    def minus(self, other: Sums) -> Sums:
        return Sums(
            self.w - other.w,
            self.d - other.d,
            self.ac - other.ac,
            self.as_ - other.as_,
            self.pv - other.pv,
            self.n_c - other.n_c,
            self.n_s - other.n_s,
        )


def threshold(arl_days: float, detectors: int) -> float:
    """``log B`` for ``detectors`` detectors sharing one false alarm per ``arl_days`` days (looks hourly at most)."""
    return math.log(max(1.0, 24.0 * arl_days * max(1, detectors)))


def log_lr(diff: float, var: float, line: float, delta: float) -> float:
    """A block's log likelihood ratio of a mean ``line + delta`` over ``line`` for ``diff ~ N(mean, var)``."""
    if var <= 0 or not math.isfinite(var) or delta <= 0:
        return 0.0
    return delta / var * (diff - line - delta / 2.0)


@dataclass(slots=True)
class Detector:
    """One guardrail's Shiryaev-Roberts statistic for one candidate, fed its strata's sums at each hour's end."""

    seen: Sums = Sums()  # the sums already looked at (of ``source``)
    source: object | None = field(default=None, repr=False)  # the strata ``seen`` belongs to (a new step: new strata)
    log_r: float = -math.inf  # log R (R_0 = 0)
    blocks: int = 0
    last: tuple[float, float] | None = None  # the last block's difference and its standard error

    def feed(self, strata: Strata, ref: Strata, line: float, delta: float) -> None:
        """Look at ``strata`` (the last step's; ``ref``: the same metric since arming, a longer record of the safe
        variant's variance): one value's variance in each arm as :meth:`Strata.estimate` takes it, and the callers'
        design effect."""
        if strata.arm_c is None or strata.arm_s is None or ref.arm_s is None:
            return
        vs = (ref.arm_s if ref.arm_s.n >= strata.arm_s.n else strata.arm_s).var(strata.proportion)
        vc = max(strata.arm_c.var(strata.proportion), vs)
        if not math.isfinite(vc):
            return
        deff = max(c.deff() for c in strata.clusters) if strata.clusters is not None else 1.0
        now = Sums(strata.w, strata.d, strata.ac, strata.as_, strata.pv, strata.closed_c, strata.closed_s)
        self.look(strata, now, vc, vs, deff, line, delta)

    def look(
        self, source: object, now: Sums, var_c: float, var_s: float, deff: float, line: float, delta: float
    ) -> None:
        """Take the strata closed since the last look; a block once each arm has ``BLOCK_CALLS`` values in it.
        ``var_c``, ``var_s``: one value's variance in each arm (a rate's own-variance term is in ``now.pv``)."""
        if source is not self.source:
            self.source, self.seen = source, Sums()
        block = now.minus(self.seen)
        if block.w <= 0 or min(block.n_c, block.n_s) < BLOCK_CALLS:
            return
        self.seen = now
        var = max(block.ac * var_c + block.as_ * var_s, block.pv) * max(deff, 1.0) / (block.w * block.w)
        diff = block.d / block.w
        self.last = (diff, math.sqrt(var))
        self.blocks += 1
        self.log_r = _log1p_exp(self.log_r) + log_lr(diff, var, line, delta)

    def state(self, limit: float) -> dict[str, float | int | None]:
        """What the console's card shows: ``log R``, its threshold, the blocks seen and the last one."""
        return {
            "statistic": round(self.log_r, 3) if math.isfinite(self.log_r) else None,
            "threshold": round(limit, 3),
            "blocks": self.blocks,
            "last_diff": round(self.last[0], 6) if self.last is not None else None,
            "last_se": round(self.last[1], 6) if self.last is not None else None,
        }


def _log1p_exp(x: float) -> float:
    """``log(1 + e^x)`` without overflow (``x = -inf``: 0)."""
    if x == -math.inf:
        return 0.0
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


@dataclass(slots=True)
class Watched:
    """One candidate's detectors, one per guardrail (a re-arm is another candidate: new detectors)."""

    cand: object
    detectors: dict[str, Detector] = field(default_factory=dict)

    def alarms(self, limit: float) -> list[tuple[str, Detector]]:
        return [(name, d) for name, d in self.detectors.items() if d.log_r >= limit]


def watched(store: dict[str, Watched], name: str, cand: object) -> Watched:
    """``name``'s detectors in ``store``, new ones when ``cand`` is not theirs (a re-arm)."""
    got = store.get(name)
    if got is None or got.cand is not cand:
        got = store[name] = Watched(cand)
    return got


def describe(alarms: list[tuple[str, Detector]], limit: float, arl_days: float) -> str:
    """A rollback's reason: each guardrail the watch saw change, with its statistic and its last block."""
    return "; ".join(
        f"{name} changed on the last step (the watch: Shiryaev-Roberts log statistic {d.log_r:.2f} >= {limit:.2f}, "
        f"one false alarm in {arl_days:g} days at the margin; last block "
        f"{(d.last or (0.0, 0.0))[0]:+.4g} +- {(d.last or (0.0, 0.0))[1]:.2g})"
        for name, d in alarms
    )
