"""The guarded rollout where the candidate serves most traffic (pure, seeded): each arm's variance from its own rate,
the final step's checks whatever step leaves only the holdout, margins of its own for the last step, the watch that
never ends, and a verdict that says when a candidate is stuck at its margin."""

from __future__ import annotations

import math

from bridge.rollout import stats


# ------------------------------------------------------------------------------------------------ variance
def test_at_a_95_5_split_a_doublings_z_is_the_per_arm_formulas() -> None:
    """Failures 4 % on the candidate's 95 %, 2 % on the 5 % holdout: the variance is each arm's own
    ``p (1 - p) / n`` summed, not the holdout charged with the pooled (candidate's) rate, 1.8 times larger."""
    strata = stats.Strata(True)
    for hour in range(20):
        for i in range(950):
            strata.add(hour, True, float(i < 38))
        for i in range(50):
            strata.add(hour, False, float(i < 1))
    e = strata.estimate()
    assert e is not None and e.calls == (19_000, 1000)
    per_arm = 0.04 * 0.96 / 19_000 + 0.02 * 0.98 / 1000
    assert math.isclose(e.diff, 0.02)
    assert math.isclose(e.var, per_arm, rel_tol=0.08), e.var / per_arm
    assert math.isclose(e.diff / math.sqrt(e.var), 0.02 / math.sqrt(per_arm), rel_tol=0.04)


def test_an_hour_both_arms_fail_together_still_widens_the_variance() -> None:
    """A shared outage (both arms at 50 % for one hour) is as uncertain as it is: its own rates, not the calm ones."""
    calm, outage = stats.Strata(True), stats.Strata(True)
    for strata, bad in ((calm, 0), (outage, 1)):
        for hour in range(10):
            rate = 0.5 if bad and hour == 5 else 0.02
            for i in range(500):
                strata.add(hour, True, float(i < rate * 500))
                strata.add(hour, False, float(i < rate * 500))
    a, b = calm.estimate(), outage.estimate()
    assert a is not None and b is not None and b.var > 1.5 * a.var
