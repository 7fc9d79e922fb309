"""``callbridge bench rollout --quick`` runs through the command line and prints its tables (no figures asserted:
they are measured, docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_rollout_quick_prints_the_aa_and_ab_tables() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "rollout", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "A/A (" in out and "A/B (" in out
    for row in ("failures 5 -> 10 %", "greeting median +400 ms", "dead candidate"):
        assert row in out
