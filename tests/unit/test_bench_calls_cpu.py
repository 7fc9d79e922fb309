"""``bench calls`` CPU accounting: a process that is gone is left out, not counted as zero CPU."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.calls import _cpu_by_pid, cpu_seconds


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
