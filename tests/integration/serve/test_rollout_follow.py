"""``callbridge rollout evaluate PLAN --records - --follow --json`` in a closed loop, as a simulator outside the
product drives it: each next call drawn with the weights the engine's last decision set, its record tagged with that
epoch and written to the command's standard input; every event read from its standard output as it comes."""

from __future__ import annotations

import json
import math
import random
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.rollout.experiment import ExperimentSpec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
PLAN = """\
name: support
match: ['3300']
dialect: rollout
rollout:
  safe: safe
  variants:
    - {name: cand, dialect: ga, model: gpt-realtime-2.1, weight: 5}
    - {name: safe, dialect: ga, model: gpt-realtime, weight: 95}
  experiment: {auto_promote: [5, 25, 50, 100], step_min_s: 600, cycle_s: 3600, guard_s: 3600}
"""
HOLDOUT = ExperimentSpec.model_validate(yaml.safe_load(PLAN)["rollout"]["experiment"]).holdout  # the default
LAST = 100 - HOLDOUT  # the last step, capped at the holdout


def _lines(proc: subprocess.Popen[str], wait_s: float) -> list[dict[str, Any]]:
    """The events the command has written by now (waiting up to ``wait_s`` for the first)."""
    assert proc.stdout is not None
    out = []
    while select.select([proc.stdout], [], [], wait_s)[0]:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(json.loads(line))
        wait_s = 0.0
    return out


def test_a_simulator_drives_the_engine_through_its_ramp_one_event_per_line(tmp_path: Path) -> None:
    (tmp_path / "support.yaml").write_text(PLAN)
    cmd = [sys.executable, "-m", "bridge", "rollout", "evaluate", "support", "--dialplans", str(tmp_path),
           "--records", "-", "--follow", "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdin is not None
    rng = random.Random(61)
    try:
        [start] = _lines(proc, 30.0)  # printed before any record: the simulator needs the weights to begin
        assert start == {"event": "start", "epoch": start["epoch"], "weights": {"cand": 5.0, "safe": 95.0}}
        weights, epoch, events, drawn = start["weights"], start["epoch"], [start], []
        for i in range(60_000):
            t = i * 3.6
            variant = "cand" if rng.random() < weights["cand"] / 100 else "safe"
            failed = rng.random() < 0.1  # equal variants
            record = {"t": t, "started": t, "variant": variant, "epoch": epoch,
                      "outcome": "connect_failure" if failed else "ok", "abandoned": rng.random() < 0.08,
                      "greeting_ms": None if failed else 700 * math.exp(0.6 * rng.gauss(0, 1)),
                      "first_reply_ms": None if failed else 900 * math.exp(0.6 * rng.gauss(0, 1))}  # fmt: skip
            proc.stdin.write(json.dumps(record) + "\n")
            drawn.append(weights["cand"])
            if i % 200 == 199:
                proc.stdin.flush()
                for event in _lines(proc, 0.05):
                    events.append(event)
                    if event["event"] == "decision":
                        weights, epoch = event["weights"], event["epoch"]
            if weights["cand"] >= LAST and any(e.get("action") == "complete" for e in events):
                break
        proc.stdin.close()
        events += _lines(proc, 60.0)
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait(30)
    assert proc.returncode in (0, -9), proc.returncode
    decisions = [e for e in events if e["event"] == "decision"]
    assert all({"t", "variant", "action", "reason", "evidence", "weights", "epoch"} <= set(d) for d in decisions)
    steps = [d["weights"]["cand"] for d in decisions if d["action"] == "promote"]
    assert steps == [25.0, 50.0, LAST], [(d["action"], d["reason"]) for d in decisions]
    assert "rollback" not in [d["action"] for d in decisions]
    assert sorted(set(drawn)) == [5.0, 25.0, 50.0, LAST]  # the simulator drew with each step's weights in turn
    assert events[-1]["event"] == "end" and events[-1]["estimates"]["cand"]["verdict"]["holdout"] == HOLDOUT


def test_a_line_that_is_no_record_is_an_error_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "support.yaml").write_text(PLAN)
    cmd = [sys.executable, "-m", "bridge", "rollout", "evaluate", "support", "--dialplans", str(tmp_path),
           "--records", "-", "--follow", "--json"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, input='{"t": 1, "variant": "safe"}\n[1, 2]\n', capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "<stdin>" in done.stderr and "line 2" in done.stderr, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["event"] == "start"
