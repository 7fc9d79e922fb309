"""``callbridge bench capacity --quick`` end to end: a real measurement (workers, a private Redis, the emulator, the
front where Kamailio is installed) and the plan printed. The figures are measured, not asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.devkit.redis_server import redis_server_binary

# In the xdist group of the CPU-heavy tests (tests/conftest.py), with the other bench runs.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(300)  # about 30 s on an idle machine: the workers, four callers, one window of 5 s
def test_bench_capacity_quick_measures_a_call_and_prints_the_plan_for_each_size() -> None:
    if redis_server_binary() is None:
        pytest.skip("no redis-server (install it or `pip install callbridge[demo]`)")
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "capacity", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "4 calls for 5 s through serve's workers" in out, out
    assert re.search(r"cost of a call \(steady state\): CPU \d+\.\d+ % of a core, PSS \d+\.\d MB", out), out
    assert "| calls | nodes (bound by) |" in out, out
    for calls in ("1,000", "10,000", "100,000"):
        assert re.search(rf"^\| {calls} \| \d+ \((cpu|memory)\) \|", out, re.M), out
