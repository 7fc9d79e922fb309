"""``bench calls`` CPU accounting: a process that is gone is left out, not counted as zero CPU; steal is reported."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.calls import _cpu_by_pid, cpu_seconds, machine_busy


@pytest.mark.slow  # a real process burns real CPU time
def test_cpu_of_a_process_that_exited_is_absent_not_zero() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ninput()\n"
    proc = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(proc.pid) < 0.3:  # it burns 0.3 s of CPU, then waits for a line
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        alive = _cpu_by_pid([proc.pid])
        assert alive[proc.pid] >= 0.3
    finally:
        proc.communicate(b"\n", timeout=10)
    # Gone: absent from the sample (the old accounting read 0 and turned the window's CPU negative).
    assert _cpu_by_pid([proc.pid]) == {}
    assert cpu_seconds(proc.pid) == 0.0


def test_machine_busy_counts_steal_as_busy_and_reports_it() -> None:
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 0 50 800 30 0 5 15 0 0\ncpu0 1 2 3 4\n"
    busy, steal, total = machine_busy(stat)
    assert (busy, steal, total) == (170.0, 15.0, 1000.0)  # idle and iowait are the only time not busy
    busy, steal, total = machine_busy("cpu  100 0 50 800\n")  # an old kernel: no steal column
    assert (busy, steal, total) == (150.0, 0.0, 950.0)
    busy, steal, total = machine_busy()  # this machine's own counters
    assert 0 <= steal <= busy <= total


def test_unanswered_calls_are_scored_as_missing_and_say_why() -> None:
    """A call not up at the caller costs its whole window, and the step says what was missing (a set-up failure
    and a media stall look alike in the late count)."""
    from bench.calls import FRAMES_PER_S, Bench, Step

    step = Step("bridge", calls=3, processes=1, window_s=12.0)
    up = {"uri": "sip:4000@127.0.0.1:5070", "answered": True, "status": 200, "why": ""}
    up |= {"jb_lost": 3, "jb_empty": 1, "jb_discard": 0}
    rows = [
        up,
        {"uri": "sip:4000@127.0.0.1:5070", "answered": False, "status": None, "why": "not answered"},
        {"uri": "sip:4000@127.0.0.1:5070", "answered": False, "status": 200, "why": "no audio stream yet"},
    ]
    Bench._score_callers(step, rows)
    per_call = round(12.0 * FRAMES_PER_S)
    assert step.answered == 1
    assert step.out_late_or_missing == 2 + 2 * per_call  # (3 lost + 1 empty) / 2, then two whole windows
    assert step.unanswered_why == {"None: not answered": 1, "200: no audio stream yet": 1}
    assert step.late_by_target == {"5070": 2}
