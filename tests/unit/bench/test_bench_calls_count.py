"""``bench calls --count-calls``: the workers' counts over the window, per call's beat, against the goal."""

from __future__ import annotations

import json
from pathlib import Path

from bench.calls.report import Step, calls_line, summarize, summary_lines
from bench.calls.score import score_call_counts


def _write(path: Path, lines: list[tuple[float, list[int], list[int]]]) -> None:
    zero = [0, 0, 0, 0]
    path.write_text("".join(json.dumps({"t": t, "deltas": d, "some": zero, "none": n}) + "\n" for t, d, n in lines))


def test_the_workers_counts_over_the_window_are_summed_and_divided_by_the_calls_beats(tmp_path: Path) -> None:
    # two workers; each wrote its totals once a second; the window is 10.5 .. 12.5
    zero = [0, 0, 0, 0]
    _write(tmp_path / "calls-1.jsonl", [(10.0, zero, zero), (12.0, [10, 40, 1000, 500], [5, 20, 300, 100])])
    _write(tmp_path / "calls-2.jsonl", [(10.2, [1, 4, 90, 40], zero), (12.2, [11, 44, 1090, 540], [5, 20, 400, 100])])
    step = Step("bridge", 8, 2)
    score_call_counts(step, tmp_path, 10.5, 12.5)
    assert step.calls_per_beat == {
        "deltas": {"python": 25.0, "builtin": 12.5, "beats": 80},
        "some": {"python": None, "builtin": None, "beats": 0},
        "none": {"python": 17.5, "builtin": 5.0, "beats": 40},
    }
    line = calls_line(step.calls_per_beat)
    assert "while deltas arrive 25.0 Python + 12.5 builtin (80 beats) (goal <= 15 Python)" in line
    assert "when none do 17.5 Python + 5.0 builtin (40 beats)" in line
    summary = summarize([step], 8)
    assert summary["calls_step"] == 8 and summary["goal_calls_per_beat_met"] is False
    assert any("loop calls per beat per call" in text and "NOT met" in text for text in summary_lines(summary))


def test_a_run_that_did_not_count_has_no_calls_line() -> None:
    summary = summarize([Step("bridge", 4, 1)], 4)
    assert "calls_step" not in summary
