"""The gate's smaller parts: ``--quiet`` leaves the report alone on the screen, Live's calls are said unpriced in the
verdict, an emulator setting a script's annotation overrides is refused, a history is bounded by default, and the
scripts run from a copy anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.replay.cli import build_parser, main
from bridge.replay.history import record_run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CALLBRIDGE = [sys.executable, "-m", "bridge"]


def _replay(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*CALLBRIDGE, "replay", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_quiet_leaves_only_the_report(tmp_path: Path) -> None:
    loud = _replay(str(REPO / "call_scripts" / "question_answer"))
    quiet = _replay(str(REPO / "call_scripts" / "question_answer"), "--quiet")
    assert loud.returncode == quiet.returncode == 0
    assert " INFO " in loud.stderr and "replay: question_answer: " in loud.stderr
    assert quiet.stderr == "" and quiet.stdout.splitlines()[0] == loud.stdout.splitlines()[0]
    assert quiet.stdout.splitlines()[-1] == "gate: green"


def test_live_is_said_unpriced_in_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(REPO / "call_scripts" / "question_answer"), "--dialects", "live"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "gate: green (cost not judged: no price for gpt-live-1)"


def test_a_setting_the_annotation_overrides_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(REPO / "call_scripts" / "question_answer"), "--emulator-set", "greeting=We are closed."]) == 2
    err = capsys.readouterr().err
    assert "--emulator-set: greeting=We are closed.: greeting: not applied: the annotation of question_answer" in err


def test_a_history_is_bounded_by_default(tmp_path: Path) -> None:
    keep = build_parser().parse_args(["x"]).keep
    assert keep == 30
    history = tmp_path / "history"
    data = {"meta": {"created": "now", "dialects": ["ga"]}, "scripts": []}
    runs = []
    for i in range(keep + 2):
        run = history / f"run-{i:02d}"
        run.mkdir(parents=True)
        (run / "report.json").write_text(json.dumps(data))
        runs.append(run)
        record_run(history, data, run, 0, keep=keep, accept=i == 0)  # the first run: the baseline
    assert runs[0].is_dir()  # the baseline is kept whatever its age
    assert not runs[1].exists() and all(r.is_dir() for r in runs[2:])
    assert len(json.loads((history / "index.json").read_text())) == keep + 2  # every run's figures


def test_the_scripts_run_from_a_copy_anywhere(tmp_path: Path) -> None:
    shutil.copytree(REPO / "call_scripts", tmp_path / "copy" / "call_scripts")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _replay("../copy/call_scripts/echo/quiet", "--dialects", "ga", "--quiet", cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
