"""Active probes in the engine (bridge/rollout/probes.py): a probe of the safe variant's model is one safe call begun
when it began, for the breaker alone; one that opened lets a dead candidate's run trip the breaker where the
holdout's calls have not ended yet (the decision names it), one that failed holds it like a shared outage. The plan's
setting and its bound."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bridge.rollout import probes
from bridge.rollout.experiment import Experiment, ExperimentSpec
from bridge.rollout.outcomes import evaluate
from bridge.rollout.policy import RolloutSpec

SAFE, CAND = "safe", "cand"
LAST = {SAFE: 5.0, CAND: 95.0}
DIES = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def _failed(i: int, started: float) -> dict[str, Any]:
    return {"t": started + 3.0, "started": started, "variant": CAND, "epoch": "e", "call_id": f"c{i}",
            "outcome": "connect_failure", "abandoned": False, "greeting_ms": None, "first_reply_ms": None}  # fmt: skip


def _probe(ok: bool, started: float) -> dict[str, Any]:
    answer = probes.Probe(started, started + 0.4, ok, 400.0 if ok else None, None if ok else "server")
    return probes.entry(f"p{started}", SAFE, answer)


def _dead(probe_ok: bool | None, failures: int = 60) -> tuple[Experiment, list[dict[str, Any]]]:
    """A candidate at the last step failing every call (one every 2 s), no holdout call ended since its death; a
    probe sent once its run reaches ``breaker_min_run`` (None: none)."""
    exp = Experiment(ExperimentSpec(promote=False), SAFE, (CAND, SAFE), weights=LAST)
    fed: list[dict[str, Any]] = []
    for i in range(failures):
        fed.append(_failed(i, DIES + 2.0 * i))
        if exp.feed(fed[-1]):
            break
        if probe_ok is not None and i == 5:
            assert exp.probe_wanted() == CAND
            fed.append(_probe(probe_ok, DIES + 2.0 * i + 1.0))
            assert not exp.feed(fed[-1])
    return exp, fed


def test_a_probe_that_opened_lets_the_breaker_roll_a_dead_candidate_back_and_the_reason_names_it() -> None:
    exp, fed = _dead(probe_ok=True)
    [decision] = exp.decisions
    assert decision.action == "rollback" and decision.variant == CAND
    breaker = decision.evidence["breaker"]
    # the probe began after the 6th failure: the run it needs (20 after one fine safe call) counts failures begun
    # after it
    assert breaker["safe_calls_meanwhile"] == 1 and breaker["safe_failures_meanwhile"] == 0
    assert breaker["consecutive_failures"] == breaker["trip_at"] == 20
    [shown] = breaker["probes"]
    assert shown["ok"] is True and shown["ms"] == 400.0 and shown["at"] == "2027-01-15T08:00:11.000Z"
    assert "probe of the safe variant's model" in decision.reason and "08:00:11 UTC opened in 400 ms" in decision.reason
    assert len(fed) == 6 + 1 + 20  # rolled back at the 20th failure after the probe
    # the stream replayed (rollout evaluate) takes the same decision at the same entry
    replayed = evaluate(ExperimentSpec(promote=False), SAFE, (CAND, SAFE), fed, weights=LAST)
    assert [d["reason"] for d in replayed["decisions"]] == [decision.reason]
    assert exp.probe_wanted() is None  # rolled back: nothing left to probe for


def test_without_a_probe_or_with_a_failed_one_the_breaker_waits() -> None:
    for probe_ok in (None, False):
        exp, _ = _dead(probe_ok=probe_ok)
        assert exp.decisions == [], probe_ok
        assert exp.probe_wanted() == CAND  # still wanted: a later probe may find the safe model back
        assert exp.calls == {CAND: 60, SAFE: 0}  # a probe is no call of the split or the tests


def test_a_probe_is_counted_once_and_only_of_the_safe_variant() -> None:
    exp, _ = _dead(probe_ok=None, failures=8)
    entry = _probe(True, DIES + 20.0)
    assert not exp.feed(entry) and not exp.feed(dict(entry))
    assert exp.refused["duplicate"] == 1 and len(exp.probes) == 1
    other = {**_probe(True, DIES + 21.0), "variant": CAND}
    exp.feed(other)
    assert len(exp.probes) == 1  # a probe names the safe variant's model, or it is no evidence


def test_the_setting_its_default_and_its_bound() -> None:
    spec = RolloutSpec.model_validate({"safe": "a", "variants": [{"name": "a", "dialect": "ga", "model": "m"}]})
    assert spec.probes == probes.ProbeSpec(enabled=True, per_minute=1.0, timeout_s=5.0)
    assert probes.gap_ms(spec.probes) == 60_000
    assert probes.gap_ms(probes.ProbeSpec(per_minute=4)) == 15_000
    assert probes.gap_ms(probes.ProbeSpec(per_minute=0.5)) == 120_000  # one every two minutes
    for bad in ({"per_minute": 0}, {"per_minute": 61}, {"timeout_s": 0}, {"every": 1}):
        with pytest.raises(ValidationError):
            probes.ProbeSpec.model_validate(bad)


def test_the_start_up_line_says_whether_probes_are_open_and_their_bound() -> None:
    on = probes.probe_line(probes.ProbeSpec(per_minute=2), "support")
    assert on.startswith("rollout support: rollout.probes is on: at most 2 session(s) a minute"), on
    off = probes.probe_line(probes.ProbeSpec(enabled=False), "support")
    assert off == "rollout support: rollout.probes is off: the breaker waits for the safe variant's own calls"
