"""``bench calls`` CPU accounting: a process that is gone is left out, not counted as zero CPU; steal is reported."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.calls import _cpu_by_pid, cpu_seconds, machine_busy


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
