"""``callbridge bench rollout --quick`` runs through the command line and prints every goal with its figure and
target (no figure asserted: they are measured, docs/benchmarks.md). One rollout per scenario: the run checks the
command, not the statistics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_rollout_quick_prints_each_goal_with_its_figure_and_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "rollout", "--quick", "--reps", "1", "--jobs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for row in (
        "equal: reaches the last step",
        "equal, daily swing 4-40 %: rolled back",
        "failures 1.5x: reaches the last step",
        "dies at the 50 % step: rolled back within 50 of its calls",
        "failures double at the last step",
        "greeting median 50 % slower",
        "flagged within 10,000 calls",
        "coverage: handle time (+20 %, sigma 2) at a fixed 5 % share",
        "limit: a fixed-horizon test",
    ):
        assert row in out, out
    assert ">= 80%" in out and "<= 5%" in out
