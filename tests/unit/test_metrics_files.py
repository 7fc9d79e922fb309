"""The merged metrics of a multi-process node (``PROMETHEUS_MULTIPROC_DIR``) are read while processes come and go: a
metric file that vanishes between the listing and its read (an exited worker's, or the preloaded parent dropping
those its imports made) is left out, and /metrics and /healthz still answer with the rest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys
from bridge import metrics
metrics.FRONT_BANS.inc(3)
os.symlink(os.path.join(sys.argv[1], "gone"), os.path.join(sys.argv[1], "counter_999999.db"))
body, _ = metrics.render()
print(body.decode())
"""


def test_a_metric_file_that_vanishes_while_read_is_left_out(tmp_path: Path) -> None:
    files = tmp_path / "metrics"
    files.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(files), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(files)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "callbridge_front_bans_total 3.0" in run.stdout, run.stdout[-3000:]
