"""``callbridge replay`` checks the plan's compliance checks in every run: a row per check per run in the report
(JSON, text and HTML), and a check one run newly fails (the first run passed it) is an unexpected difference, so
``--fail-on unexpected`` fails the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHECKS = {
    "disclosure": {"text": "Acme support", "within_s": 5},
    "never_say": ["let me check"],
    "max_dead_air_s": 10,
}


def _script(tmp_path: Path, name: str, checks: dict[str, Any], ga_settings: dict[str, Any]) -> Path:
    """question_answer with ``checks`` in its plan, in both dialects, and ``ga_settings`` for GA's emulator."""
    target = tmp_path / name
    shutil.copytree(REPO / "call_scripts" / "question_answer", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data["name"] = name
    data["dialect_overrides"] = {"beta": {"checks": checks}, "ga": {"checks": checks}}
    data["emulator"] = {**data["emulator"], "dialect_settings": {"ga": ga_settings}}
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    return target


def test_a_check_newly_failed_by_one_run_fails_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GA's model says a preamble before its answer ("Let me check that for you."), as gpt-realtime-2 and later do
    preamble = {"preamble_models": "*"}
    script = _script(tmp_path, "preamble_checked", CHECKS, preamble)
    report = tmp_path / "report"
    assert main([str(script), "--json", "--report", str(report)]) == 1
    [result] = json.loads(capsys.readouterr().out)["scripts"]
    assert result["status"] == "unexpected"
    assert result["unexpected"] == [
        "GA: compliance check never_say newly failed: the agent said 'let me check' (beta passed it)"
    ]
    rows = {(r["check"], r["run"]): r["passed"] for r in result["compliance"]}
    assert rows == {
        ("disclosure", "beta"): True,
        ("never_say", "beta"): True,
        ("max_dead_air", "beta"): True,
        ("disclosure", "ga"): True,
        ("never_say", "ga"): False,
        ("max_dead_air", "ga"): True,
    }
    html = (report / "report.html").read_text()
    assert 'data-check="never_say" data-run="ga" data-passed="0"' in html
    assert 'data-check="never_say" data-run="beta" data-passed="1"' in html
    assert main([str(script)]) == 1
    assert "check never_say on GA: FAIL (the agent said 'let me check')" in capsys.readouterr().out
    # the same runs without that check: the preamble alone is a difference by design, and the gate passes
    same = _script(tmp_path, "preamble_unchecked", {k: v for k, v in CHECKS.items() if k != "never_say"}, preamble)
    assert main([str(same), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["scripts"]
    assert result["unexpected"] == [] and len(result["compliance"]) == 4


def test_a_check_both_runs_fail_is_shown_but_is_no_new_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script(tmp_path, "both_fail", {"never_say": ["nine to five"]}, {})
    assert main([str(script), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["scripts"]
    assert [(r["run"], r["passed"]) for r in result["compliance"]] == [("beta", False), ("ga", False)]
    assert result["unexpected"] == []
