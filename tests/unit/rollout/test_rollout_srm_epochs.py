"""The sample-ratio test across epochs: one loss parameter per variant shared by every epoch, so what the 5 % step
saw still counts at 25 and 50 %; its e-value's expectation under the weights is what it was (a martingale), and a
caller counts once whatever the epoch."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest

from bridge.rollout import stats
from bridge.rollout.engine import SRM_HOLD
from bridge.rollout.experiment import Decision, Experiment, ExperimentSpec, epoch_of
from bridge.rollout.srm import SampleRatio

SAFE, CAND = "safe", "cand"
GOLDEN = (math.sqrt(5) - 1) / 2


def _ramp(per_step: int, lose: float) -> tuple[list[Decision], list[dict[str, int]]]:
    """``per_step`` calls at each of 5, 25 and 50 %, drawn evenly (a low-discrepancy sequence: the counts are the
    expected ones, no luck either way), every tenth candidate record lost when ``lose``; each epoch's counts."""
    exp = Experiment(ExperimentSpec(promote=False), SAFE, (CAND, SAFE), weights={SAFE: 95.0, CAND: 5.0})
    out: list[Decision] = []
    counts: list[dict[str, int]] = []
    u, lost, i = 0.0, 0.0, 0
    for share in (5.0, 25.0, 50.0):
        weights = {SAFE: 100.0 - share, CAND: share}
        counts.append({SAFE: 0, CAND: 0})
        for _ in range(per_step):
            i += 1
            u = (u + GOLDEN) % 1.0
            variant = CAND if u < share / 100 else SAFE
            if variant == CAND and lose:
                lost += lose
                if lost >= 1.0:
                    lost -= 1.0
                    continue
            counts[-1][variant] += 1
            record: dict[str, Any] = {"t": i * 3.6, "started": i * 3.6, "variant": variant, "call_id": f"c{i}",
                                      "epoch": f"at{share:g}", "weights": weights, "outcome": "ok"}  # fmt: skip
            out += exp.feed(record)
    return out, counts


def test_ten_percent_of_the_candidates_records_lost_across_5_25_50_is_flagged_with_the_evidence_of_every_step() -> None:
    out, counts = _ramp(3000, 0.1)
    [srm] = [d for d in out if d.action == "srm"]
    assert srm.variant == CAND and srm.evidence["epoch"] is not None
    assert 0.8 < srm.evidence["arrival_factor"][CAND] < 1.0  # about a tenth of its callers' records missing
    assert "lost records" in srm.evidence["likely_causes"][0]
    # each step's own Dirichlet-multinomial test, multiplied over the steps, stays below the line on the same
    # counts: every step starts at one and pays its prior again
    shares = ({CAND: s, SAFE: 1 - s} for s in (0.05, 0.25, 0.5))
    alone = sum(stats.log_srm_bf(c, s, 1000.0) for c, s in zip(counts, shares, strict=True))
    assert alone < math.log(1 / ExperimentSpec().srm_alpha) <= srm.evidence["log_e_value"]


def test_records_in_the_weights_shares_raise_no_flag() -> None:
    out, _ = _ramp(3000, 0.0)
    assert [d for d in out if d.action == "srm"] == []


@pytest.mark.parametrize("variants", [(CAND, SAFE), ("a", "b", SAFE)])
def test_the_e_value_is_a_martingale_under_the_weights(variants: tuple[str, ...]) -> None:
    """Whatever came before and whatever the next unit's shares, the expected e-value after it is the e-value now:
    what keeps the level at every look (Ville's inequality)."""
    ratio = SampleRatio(variants, SAFE, 1000.0)
    history = [({v: 1 / len(variants) for v in variants}, variants[0])] * 40 + [({variants[0]: 0.9, SAFE: 0.1}, SAFE)]
    for shares, variant in history * 3:
        ratio.count(variant, shares, None)
        for nxt in ({variants[0]: 0.05, SAFE: 0.95}, {v: 1 / len(variants) for v in variants}):
            expected = 0.0
            for v, s in nxt.items():
                after = copy.deepcopy(ratio)
                after.count(v, nxt, None)
                expected += s * math.exp(after.log_e)
            assert expected == pytest.approx(math.exp(ratio.log_e), rel=1e-9)


def test_a_caller_counts_once_across_epochs() -> None:
    ratio = SampleRatio((CAND, SAFE), SAFE, 1000.0)
    assert ratio.count(CAND, {CAND: 0.05, SAFE: 0.95}, "k1")
    before = ratio.log_e
    assert not ratio.count(CAND, {CAND: 0.25, SAFE: 0.75}, "k1")  # their bucket drew them once
    assert not ratio.count("other", {CAND: 0.25, SAFE: 0.75}, None)  # no share: no ratio
    assert ratio.log_e == before
    assert ratio.count(CAND, {CAND: 0.25, SAFE: 0.75}, None)  # an anonymous call counts alone


def test_a_step_waits_while_the_split_leans_toward_a_mismatch() -> None:
    """Before the flag, a step waits while the sample-ratio test's log e-value stands at ``SRM_HOLD`` of its
    threshold: the candidate's callers short by a fifth at 5 %, the hold comes before the flag and names the test."""
    spec = ExperimentSpec(auto_promote=(5, 25, 50, 100))
    exp = Experiment(spec, SAFE, (CAND, SAFE), weights={SAFE: 95.0, CAND: 5.0})
    epoch, rng, held = epoch_of({SAFE: 95.0, CAND: 5.0}, False), random.Random(8), None
    hold = SRM_HOLD * math.log(1 / spec.srm_alpha)
    for i in range(200_000):
        variant = CAND if rng.random() < 0.04 else SAFE
        exp.feed({"t": i * 0.5, "started": i * 0.5, "call_id": f"c{i}", "variant": variant, "epoch": epoch,
                  "outcome": "ok", "abandoned": False})  # fmt: skip
        if exp.srm_log_bf >= hold and held is None:
            held = exp.blocking(CAND, final=False)
        if exp.srm is not None:
            break
    assert held is not None and exp.srm is not None
    assert any(why.startswith("sample ratio: the split leans toward a mismatch") for why in held), held
