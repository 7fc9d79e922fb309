"""``callbridge bench calls --front kamailio`` at its smallest step: the bridge's workers called directly and through
Kamailio's one address in the same run, every call up on both paths, Kamailio's CPU and every call's set-up time
measured. It checks the harness, not the capacity (that is measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from _front import ROOT, heavy, long_test, requirements

pytestmark = [*requirements, heavy]  # the xdist group "cpu" also holds the other bench run (they share its log file)
CALLS = 4


@long_test
def test_the_front_path_runs_next_to_the_direct_one() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.calls", "--json", "--steps", str(CALLS), "--seconds", "3", "--only", "bridge",
         "--front", "kamailio", "--no-echo-off"],
        cwd=ROOT, capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    steps = {s["path"]: s for s in lines if s.get("kind") == "step"}  # the last run of each path decides
    assert set(steps) == {"bridge", "front"}, lines
    for path, step in steps.items():
        assert step["answered"] == CALLS and step["unanswered_why"] == {}, (path, step)
        assert step["setup_ms"]["p50"] is not None and step["setup_ms"]["p50"] > 0, (path, step)
        assert step["in_missing"] is not None  # the callers' audio reached the model on both paths
    assert steps["bridge"]["front_cpu_ms_per_call"] is None
    assert steps["front"]["front_cpu_ms_per_call"] > 0  # Kamailio's processes were measured
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["front_max_calls"] in (0, CALLS)
    assert {"front_ratio", "front_cpu_ms_per_call_at_max", "front_added_setup_p50_ms_at_max"} <= set(summary)
