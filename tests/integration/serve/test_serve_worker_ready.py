"""A worker that cannot report ready is logged at once with its reason and restarted like a crashed one: the pool
runs a stand-in worker process that first writes garbage on its ready channel (and lives on), then dies before it
is ready, then reports ready. What it prints on stdout is logged, never taken for its report."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.serve.pool import Pool

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration

# Run n (counted in a file beside it) does runs[n]; each first prints a pjlib-like line on stdout.
STAND_IN = """
import argparse, json, os, sys, time
from pathlib import Path
parser = argparse.ArgumentParser()
parser.add_argument("--index", type=int)
parser.add_argument("--settings-fd", type=int)
parser.add_argument("--ready-fd", type=int)
parser.add_argument("--control-fd", type=int)
args = parser.parse_args()
counter = Path(__file__).with_suffix(".runs")
run = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(run + 1))
print(f"09:14:34.030 os_core_unix.c !pjlib 2.15.1 for POSIX initialized (run {run})", flush=True)
what = RUNS[min(run, len(RUNS) - 1)]
if what == "garbage":
    os.write(args.ready_fd, b"09:14:34.031 pjsua_core.c .PJSUA state changed: NULL --> CREATED\\n")
    time.sleep(600)
elif what == "die":
    sys.exit(4)
else:
    os.write(args.ready_fd, json.dumps({"worker": args.index, "sip_port": 5999, "max_calls": 4,
                                        "scheduling": "ordinary"}).encode() + b"\\n")
    os.close(args.ready_fd)
    time.sleep(600)
"""


async def test_garbage_on_the_ready_channel_and_death_before_ready_are_logged_and_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "stand_in.py"
    script.write_text(f"RUNS = {['garbage', 'die', 'ready']!r}\n{STAND_IN}")
    pool = Pool(Settings(workers=1, dialplans=ROOT / "dialplans"))
    pool.worker_command = [sys.executable, str(script)]
    caplog.set_level(logging.INFO)
    slot = pool.slots[0]
    await pool.start()
    try:
        try:
            await asyncio.wait_for(slot.ready.wait(), 60)
        except TimeoutError:
            pytest.fail(f"the worker never became ready:\n{caplog.text}")
        assert (slot.sip_port, slot.max_calls, slot.scheduling) == (5999, 4, "ordinary")
        assert slot.restarts == 2 and pool.health()["workers"][0]["ready"]
    finally:
        await pool.stop()
    errors = [r.getMessage() for r in caplog.records if r.name == "bridge.serve.pool" and r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert "worker 0" in errors[0] and "is not ready: its ready report is not JSON" in errors[0], errors
    assert "PJSUA state changed" in errors[0]  # what came instead, shown
    assert "is not ready: it exited with 4 before it was ready" in errors[1], errors
    restarts = [r.getMessage() for r in caplog.records if "restarting in" in r.getMessage()]
    assert len(restarts) == 2, restarts  # each restarted like a crashed worker, with its backoff
    output = [r.getMessage() for r in caplog.records if r.name == "bridge.serve.output"]
    assert [line.endswith(f"(run {run})") for run, line in enumerate(output)] == [True, True, True], output
    assert json.loads((tmp_path / "stand_in.runs").read_text()) == 3
