"""``bench echo --sip``'s seeded turns and its figures: the same seed gives the same calls, each a loadable echo
script whose line and turns are drawn within the bench's ranges; the barge-in delay's distribution and share."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.echo_sip import BARGE_AFTER_MS, DELAY_MS, ECHO_DB, NOISE_DBFS, delays, variants
from bridge.replay.script import load_script

ECHO_SET = Path(__file__).resolve().parents[3] / "call_scripts" / "echo"  # the checkout's (the wheel has no scripts)


def test_the_same_seed_draws_the_same_calls_within_the_ranges(tmp_path: Path) -> None:
    first = [load_script(p) for p in variants(83, 12, 6, tmp_path / "a", ECHO_SET)]
    again = [load_script(p) for p in variants(83, 12, 6, tmp_path / "b", ECHO_SET)]
    other = [load_script(p) for p in variants(84, 12, 6, tmp_path / "c", ECHO_SET)]
    assert [s.model.model_dump() for s in first] == [s.model.model_dump() for s in again]
    assert [s.model.line for s in first] != [s.model.line for s in other]
    barges = 0
    for script in first:
        line = script.model.line
        assert line is not None and ECHO_DB[0] <= line.echo_db <= ECHO_DB[1]
        assert DELAY_MS[0] <= line.echo_delay_ms <= DELAY_MS[1] and line.noise_dbfs in NOISE_DBFS
        *said, last = script.model.turns
        assert len(said) == 6 and all(t.say and t.reply for t in said) and last.hangup
        for turn in said:
            if turn.barge_in_after_ms is not None:
                barges += 1
                assert BARGE_AFTER_MS[0] <= turn.barge_in_after_ms <= BARGE_AFTER_MS[1]
        # the set's caller audio, read from its own directory
        assert len(script.caller_audio) == 6
    assert 0 < barges < 72
    assert {s.model.line.noise_dbfs for s in first if s.model.line} - {None}  # some calls with line noise


def test_the_delay_distribution_and_its_share_within_the_goal() -> None:
    got = delays([100.0] * 98 + [240.0, 400.0])
    assert got["p50_ms"] == 100.0 and got["within_goal"] == pytest.approx(0.99)
    assert got["p99_ms"] is not None and 240.0 <= got["p99_ms"] <= 400.0
    assert delays([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None, "within_goal": None}
