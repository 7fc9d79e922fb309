"""The sample-ratio test of a guarded rollout (pure): one loss parameter per variant shared by every epoch.

A variant whose records are lost (a crash before the record, a failure that writes none) or that receives calls its
weight did not draw shows a split unlike the weights, and every comparison on it is biased. The model: each variant
``v`` has one factor ``r_v`` by which its records reach the stream (``r_v = 1 - loss``; above 1: misrouted calls),
the same in every epoch. A unit drawn with an epoch's shares ``s`` then arrives as ``v`` with probability
``s_v r_v / sum_u s_u r_u``, so each unit's likelihood ratio against the weights is, when only ``v`` is off,

    ``r ** [unit is v] / (1 + s_v (r - 1))``.

The e-value is the mixture of these ratios over a prior on ``log r`` (normal, as tight as a Dirichlet of
``srm_concentration`` at an even split: sd ``2 / sqrt(concentration + 1)``, on a grid), and over which variant is off
(each candidate; also the safe one when there are several candidates), weighted evenly. The ratios multiply over
every unit of every epoch with that epoch's shares, so what the 5 % step saw is still there at 25 and 50 %: no epoch
starts afresh or pays its own prior.

**Its level under optional stopping.** Under the weights (no loss, no misrouting) a unit counted under shares ``s``
is ``v`` with probability ``s_v``, whatever came before, so each ratio above has expectation
``s_v r + (1 - s_v) = 1 + s_v (r - 1)`` over its denominator: one. Each product of ratios is then a nonnegative
martingale with mean one in the order units arrive, whatever the epochs and whenever the weights change (they are
set by decisions on the past). A mixture of such martingales with fixed weights is one too, and Ville's inequality
bounds the chance it ever reaches ``1 / srm_alpha``: at most ``srm_alpha`` over the whole rollout, at every look.

**The unit** is the caller: each caller counts once, at the first of their calls the rollout counts (an anonymous
call counts alone). A caller's later calls, in this epoch or a later one, follow their first (sticky assignment):
counting them again would count a draw that the past already decided, which is what the ratios' expectation
forbids. Each epoch's counts of first calls and of all calls stay beside it for the operator (:func:`causes`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

GRID = np.linspace(-1.0, 1.0, 201)  # the values of log r the mixture sums over (a loss of up to 63 %)


class SampleRatio:
    """The e-value of "each variant's records arrive in the shares of its weights" over a whole rollout."""

    def __init__(self, variants: Iterable[str], safe: str, concentration: float) -> None:
        names = tuple(variants)
        movers = [v for v in names if v != safe]
        if len(movers) > 1:
            movers.append(safe)  # the safe variant losing records is not one candidate's gain then
        self.movers = tuple(movers)
        sd = 2.0 / math.sqrt(concentration + 1.0)
        prior = np.exp(-0.5 * (GRID / sd) ** 2)
        prior /= prior.sum() * max(1, len(self.movers))
        self.log_w = np.log(np.maximum(prior, 1e-300))[None, :]
        self.units = np.zeros((len(self.movers), 1))  # the counted units of each variant off
        self.spent = np.zeros((len(self.movers), GRID.size))  # sum of log(1 + s_v (r - 1)) over counted units
        self.seen: set[str] = set()  # the callers counted
        self._per_share: dict[tuple[float, ...], npt.NDArray[np.float64]] = {}
        self.log_e = 0.0

    def count(self, variant: str, shares: Mapping[str, float], caller: str | None) -> bool:
        """One call drawn with ``shares``; True when it counted (its caller's first call, or an anonymous one)."""
        if shares.get(variant, 0.0) <= 0.0:
            return False  # a variant the weights did not draw: no ratio (the epoch's counts show it)
        if caller is not None:
            if caller in self.seen:
                return False
            self.seen.add(caller)
        key = tuple(shares.get(v, 0.0) for v in self.movers)
        cost = self._per_share.get(key)
        if cost is None:
            cost = self._per_share[key] = np.log1p(np.array(key)[:, None] * np.expm1(GRID)[None, :])
        self.spent += cost
        if variant in self.movers:
            self.units[self.movers.index(variant), 0] += 1.0
        terms = self.log_w + self.units * GRID[None, :] - self.spent
        top = float(terms.max())
        self.log_e = top + math.log(float(np.exp(terms - top).sum()))
        return True

    def worst(self) -> tuple[str, float]:
        """The variant most likely off and its most likely factor ``r`` (below 1: the share of its records lost)."""
        terms = self.log_w + self.units * GRID[None, :] - self.spent
        k, g = np.unravel_index(int(np.argmax(terms)), terms.shape)
        return self.movers[int(k)], float(math.exp(GRID[int(g)]))


def causes(
    counts: Mapping[str, int], calls: Mapping[str, int], shares: Mapping[str, float], worst: str, r: float
) -> list[str]:
    """The likely causes of a sample-ratio mismatch, from what the counts show."""
    out = []
    if r < 1:
        out.append(
            f"lost records: about {100 * (1 - r):.0f} % of {worst}'s callers write no record (a crash or a failure "
            "before the record)"
        )
    else:
        out.append(f"misrouted calls: more callers reach {worst} than its weight draws (a list, a fallback)")
    per = {v: calls.get(v, 0) / max(1, counts.get(v, 0)) for v in counts if v in shares}
    if per and max(per.values()) > 1.2 * min(per.values()):
        shown = ", ".join(f"{v} {x:.2f}" for v, x in sorted(per.items()))
        out.append(f"calls per caller differ ({shown}): the variant may change who calls back")
    out.append("an assignment that does not follow the weights (a node on other weights or another salt)")
    return out
