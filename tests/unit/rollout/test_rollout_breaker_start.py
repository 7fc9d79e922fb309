"""The breaker counts calls by their start: records come as calls END, so when a candidate dies the calls it began
before keep ending fine for minutes (about 180 in progress at a busy hour). Those never reset its run, and the safe
variant's calls started in the same span are the comparison, so a shared outage with calls in progress trips
nothing either."""

from __future__ import annotations

import heapq
import math
import random
from typing import Any

from bridge.rollout.experiment import Decision, Experiment, ExperimentSpec

SAFE, CAND = "safe", "cand"
RATE_S = 0.6  # calls a second: with handle times of median 180 s (mean about 300 s), about 180 calls in progress
DIES_S = 3600.0  # an hour of calm first


def _busy_hour(
    seed: int, *, cand_dies: bool, safe_dies: bool, share: float = 95.0, fail: float = 0.02
) -> tuple[list[Decision], int]:
    """Calls arriving at ``RATE_S``, each a record when it ends (a failed connect after a few seconds, an answered
    call after its handle time), fed in the order they end; from ``DIES_S`` on, every NEW call of the candidate (and
    of the safe variant when ``safe_dies``) fails; before, and in a variant that does not die, a call fails at
    ``fail``. Returns the decisions and the candidate's failed calls begun
    after the death that had ended by the first decision."""
    rng = random.Random(seed)
    exp = Experiment(ExperimentSpec(promote=False), SAFE, (CAND, SAFE), weights={SAFE: 100 - share, CAND: share})
    ending: list[tuple[float, int, dict[str, Any]]] = []
    out: list[Decision] = []
    t, i, failed_after = 0.0, 0, 0
    while t < DIES_S + 1800.0 and not out:
        t += rng.expovariate(RATE_S)
        while ending and ending[0][0] <= t and not out:
            end, _, record = heapq.heappop(ending)
            out += exp.feed(record)
            failed_after += record["variant"] == CAND and record["started"] >= DIES_S and not out
        variant = CAND if rng.random() < share / 100 else SAFE
        dead = t >= DIES_S and (cand_dies if variant == CAND else safe_dies)
        failed = dead or rng.random() < fail
        end = t + (rng.uniform(2.0, 8.0) if failed else 180.0 * math.exp(rng.gauss(0.0, 1.0)))
        record = {"t": end, "started": t, "variant": variant, "epoch": "e", "call_id": f"c{i}",
                  "outcome": "connect_failure" if failed else "ok", "abandoned": False,
                  "greeting_ms": None if failed else 700.0, "first_reply_ms": None if failed else 900.0}  # fmt: skip
        heapq.heappush(ending, (end, i, record))
        i += 1
    return out, failed_after


def test_a_candidate_dying_with_calls_in_progress_is_rolled_back_within_about_the_breakers_run() -> None:
    counts = []
    for seed in range(6):
        out, failed = _busy_hour(seed, cand_dies=True, safe_dies=False)
        assert out and out[0].action == "rollback" and "breaker" in out[0].evidence, (seed, out)
        assert out[0].t >= DIES_S  # nothing before the death
        # weighed against the calls it began in the span (its rate known): dead, nearly all of them are the run
        # (those begun in the last seconds have not ended yet)
        breaker = out[0].evidence["breaker"]
        assert 0 < 0.5 * breaker["calls_begun_meanwhile"] <= breaker["consecutive_failures"], breaker
        assert "calls it began meanwhile" in out[0].reason
        counts.append(failed)
    # counted as calls end, the calls begun before the death reset the run again and again: about 200 failures on
    # average, most rollbacks left to the harm test. By start, the wait is for one safe call begun after the death
    # to end fine (its handle time: a holdout call begins every 33 s here), then about 20 failures after its start
    assert sum(counts) / len(counts) <= 100, counts


def test_a_shared_outage_with_calls_in_progress_trips_no_breaker() -> None:
    """Both variants fail every new call for the last half hour; the calls begun before end fine in both: the safe
    variant's calls started during the candidate's run failed as well, so nothing is rolled back."""
    for seed in range(6):
        out, _ = _busy_hour(seed, cand_dies=True, safe_dies=True)
        assert out == [], (seed, out)


def test_equal_variants_failing_often_with_calls_in_progress_trip_no_breaker() -> None:
    """Both variants fail 40 % of their calls, the candidate at 95 %: its failed connects end in seconds, its fine
    calls minutes later, so its latest records are a run of failures long before a fine call begun after them ends,
    and a holdout call that ended fine meanwhile is no proof that the candidate is dead. Weighed against the calls
    it began in the span, the run is what 40 % of failures gives: two hours, nothing rolled back."""
    for seed in range(4):
        out, _ = _busy_hour(seed, cand_dies=False, safe_dies=False, fail=0.4)
        assert out == [], (seed, out)
