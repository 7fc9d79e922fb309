"""The merged metrics of a multi-process node (``PROMETHEUS_MULTIPROC_DIR``) are read while processes come and go: a
metric file that vanishes between the listing and its read (an exited worker's, or the preloaded parent dropping
those its imports made) or is still empty (a starting worker's) is left out, and /metrics and /healthz still answer
with the rest."""

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
open(os.path.join(sys.argv[1], "counter_999998.db"), "wb").close()  # a process creating its file right now
body, _ = metrics.render()
print(body.decode())
"""


def test_a_metric_file_that_vanishes_or_is_still_empty_while_read_is_left_out(tmp_path: Path) -> None:
    files = tmp_path / "metrics"
    files.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(files), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(files)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "callbridge_front_bans_total 3.0" in run.stdout, run.stdout[-3000:]


NOTE = """
import sys
from bridge import metrics
metrics.observe_latency("turn", "ga", 730)
metrics.exemplar_latency("turn", "ga", 730, {"trace_id": sys.argv[1] * 32, "span_id": "b" * 16})
metrics.exemplar_latency("turn", "ga", 4000, {})  # a call not sampled: no exemplar
metrics.flush_exemplars()
"""

SCRAPE = """
from bridge import metrics
for accept in ("application/openmetrics-text; version=1.0.0", ""):
    body, content_type = metrics.render(accept)
    print(content_type)
    print(body.decode())
"""


def test_the_workers_exemplars_are_on_the_openmetrics_exposition_the_latest_of_each_bucket(tmp_path: Path) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    files = tmp_path / "metrics"
    files.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(files), "PYTHONPATH": str(ROOT)}

    def run(script: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run(NOTE, "a")  # a worker, then another (the later call's trace is the bucket's)
    run(NOTE, "c")
    openmetrics, plain = run(SCRAPE).split("# EOF\n")
    assert openmetrics.startswith("application/openmetrics-text; version=1.0.0")
    families = text_string_to_metric_families(openmetrics.split("\n", 1)[1] + "# EOF\n")  # parses as OpenMetrics
    found = {
        s.labels["le"]: s.exemplar
        for f in families
        if f.name == "callbridge_latency_seconds"
        for s in f.samples
        if s.exemplar is not None
    }
    assert list(found) == ["0.75"]  # 0.73 s: its bucket only
    assert found["0.75"].labels == {"trace_id": "c" * 32, "span_id": "b" * 16} and found["0.75"].value == 0.73
    assert " # {" not in plain and "callbridge_latency_seconds_bucket" in plain  # the text format has none
