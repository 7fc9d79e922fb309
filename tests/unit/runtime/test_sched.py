"""bridge.runtime.sched: a worker takes SCHED_RR when asked and permitted, its later threads inherit it, and a missing
privilege leaves it ordinary with a line that says why. Each case runs in a child process, so the test runner's
own scheduling is never touched."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bridge.runtime.sched import MAX_PRIORITY, describe, use_realtime


def _child(code: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _permitted(priority: int) -> bool:
    code = f"import os; os.sched_setscheduler(0, os.SCHED_RR, os.sched_param({priority}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


_REPORT = """
import json, os, resource, threading
from bridge.runtime.sched import describe, use_realtime
{prelude}
said = use_realtime({priority})
seen = []
t = threading.Thread(target=lambda: seen.append(describe()))
t.start(); t.join()
print(json.dumps({{"said": said, "thread": seen[0], "policy": os.sched_getscheduler(0)}}))
"""


@pytest.mark.parametrize("bad", [-1, MAX_PRIORITY + 1])
def test_a_priority_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=f"0..{MAX_PRIORITY}"):
        use_realtime(bad)


def test_zero_leaves_the_thread_ordinary() -> None:
    got = _child(_REPORT.format(priority=0, prelude=""))
    assert got == {"said": "ordinary", "thread": "ordinary", "policy": 0}
    assert describe() == "ordinary"  # and the runner is ordinary itself


def test_permitted_the_thread_and_the_threads_it_starts_run_sched_rr() -> None:
    if not _permitted(5):
        pytest.skip("this machine does not allow SCHED_RR (needs root, CAP_SYS_NICE or an rtprio limit)")
    got = _child(_REPORT.format(priority=5, prelude=""))
    assert got["said"] == "SCHED_RR 5" and got["thread"] == "SCHED_RR 5", got


def test_not_permitted_it_stays_ordinary_and_says_why() -> None:
    # Take the privilege away first: root drops to nobody, anyone else lowers its rtprio limit to 0.
    drop = "resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))\nif os.geteuid() == 0:\n    os.setuid(65534)"
    got = _child(_REPORT.format(priority=5, prelude=drop))
    assert str(got["said"]).startswith("ordinary (realtime priority 5 asked for: not permitted"), got
    assert got["thread"] == "ordinary" and got["policy"] == 0, got
