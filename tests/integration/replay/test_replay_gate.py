"""``callbridge replay`` as a release gate: timing a caller feels is compared, each difference is by design, expected
or unexpected, ``--fail-on`` decides the exit, ``--junit`` writes XML a JUnit reader takes, and a malformed script is
a row of its own while the others run."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"
# GA's model answers every turn 2 s later: the emulator's response latency (150 ms at speed 4: 37.5 ms) raised by
# 2000 ms of service time at that speed, for the GA runs only
SLOW_GA = {"ga": {"response_latency_ms": 150 + 4 * 2000}}


def _copy(tmp_path: Path, name: str, as_name: str, **changes: Any) -> Path:
    target = tmp_path / as_name
    shutil.copytree(SCRIPTS / name, target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data["name"] = as_name
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    return target


def _slow_ga(tmp_path: Path, **changes: Any) -> Path:
    """question_answer with GA 2 s slower to answer; its greeting bound left out (the greeting is slower too)."""
    target = _copy(tmp_path, "question_answer", "slow_ga", emulator={"dialect_settings": SLOW_GA}, **changes)
    data = yaml.safe_load((target / "script.yaml").read_text())
    for bound in ("max_first_audio_ms", "max_greeting_ms", "max_reply_gap_ms"):  # the script's own bounds left out
        data["expect"].pop(bound)
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    return target


def test_a_reply_2_s_slower_in_one_dialect_is_an_unexpected_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = _slow_ga(tmp_path)
    assert main([str(slow), "--json"]) == 1  # --fail-on unexpected is the default
    [script] = json.loads(capsys.readouterr().out)["scripts"]
    assert script["status"] == "unexpected"
    gaps = {name: run["timing"]["turns"][0]["reply_gap_ms"] for name, run in script["runs"].items()}
    assert gaps["ga"] - gaps["beta"] >= 1900, gaps  # the caller waits 2 s longer, the soft hold not counted
    assert any(u.startswith("timing: reply gap after turns[0] beta") for u in script["unexpected"]), script
    assert main([str(slow), "--fail-on", "unexpected"]) == 1
    # a tolerance wider than the slowdown (the command line's; a script's own wins) lets the reply gap pass
    capsys.readouterr()
    main([str(slow), "--json", "--timing-tolerance-ms", "5000"])
    [script] = json.loads(capsys.readouterr().out)["scripts"]
    assert not [u for u in script["unexpected"] if u.startswith("timing: reply gap")], script["unexpected"]


def test_a_reply_gap_bound_fails_the_slow_dialect_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = _slow_ga(tmp_path)
    data = yaml.safe_load((slow / "script.yaml").read_text())
    data["turns"][0]["max_reply_gap_ms"] = 1500
    (slow / "script.yaml").write_text(yaml.safe_dump(data))
    assert main([str(slow)]) == 1
    out = capsys.readouterr().out
    assert "failed     slow_ga" in out
    assert "✗ GA: turns[0].max_reply_gap_ms: reply gap after turns[0] 21" in out
    assert "✗ beta:" not in out


def test_the_shipped_set_passes_the_gate_and_fails_it_only_when_any_difference_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "junit.xml"
    assert main([str(SCRIPTS), "--fail-on", "unexpected", "--json", "--junit", str(junit)]) == 0
    data = json.loads(capsys.readouterr().out)
    summary = data["meta"]["summary"]
    assert (
        summary["status_unexpected"] == 0 and summary["status_failed"] == 0 and summary["unexpected_differences"] == 0
    )
    assert summary["status_expected"] == 1 and summary["expected_differences"] >= 2  # idle_timeout, as it declares
    assert {s["script"]: s["status"] for s in data["scripts"]}["idle_timeout"] == "expected"
    assert main([str(SCRIPTS), "--fail-on", "any"]) == 1
    assert main([str(SCRIPTS), "--fail-on-differs"]) == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == (str(2 * len(data["scripts"])), "0", "0")


def _check_junit_schema(root: ET.Element) -> list[ET.Element]:
    """The attributes and children the Ant JUnit schema (junit-4.xsd, as Jenkins reads it) requires; the cases."""
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for attr in ("name", "tests", "failures", "errors", "time", "timestamp", "hostname"):
        assert suite.get(attr) is not None, attr
    assert suite.find("properties") is not None and suite.find("system-out") is not None
    cases = suite.findall("testcase")
    for case in cases:
        for attr in ("name", "classname", "time"):
            assert case.get(attr) is not None, attr
        float(case.get("time", "x"))
        for bad in (*case.findall("failure"), *case.findall("error")):
            assert bad.get("message") and bad.get("type")
    assert int(suite.get("tests", "-1")) == len(cases)
    assert int(suite.get("failures", "-1")) == sum(1 for c in cases if c.find("failure") is not None)
    assert int(suite.get("errors", "-1")) == sum(1 for c in cases if c.find("error") is not None)
    return cases


def test_a_suite_with_a_malformed_script_runs_the_others_and_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    broken = _copy(suite, "transfer", "broken")
    data = yaml.safe_load((broken / "script.yaml").read_text())
    data["turns"][0]["barge_in_after_ms"] = -5
    (broken / "script.yaml").write_text(yaml.safe_dump(data))
    _copy(suite, "question_answer", "answer")
    _slow_ga(suite)
    report, junit = tmp_path / "report", tmp_path / "junit.xml"
    assert main([str(suite), "--report", str(report), "--junit", str(junit)]) == 2
    captured = capsys.readouterr()
    assert f"{broken / 'script.yaml'}: turns[0].barge_in_after_ms: Input should be greater than 0" in captured.err
    rows = json.loads((report / "report.json").read_text())["scripts"]
    assert [(r["script"], r["status"]) for r in rows] == [
        ("answer", "by_design"),  # GA on the support rollout's safe variant: its preamble
        ("broken", "error"),
        ("slow_ga", "unexpected"),
    ]
    assert "turns[0].barge_in_after_ms" in rows[1]["errors"][0]
    assert 'data-status="error"' in (report / "report.html").read_text()
    cases = _check_junit_schema(ET.parse(junit).getroot())
    by_name = {(c.get("classname"), c.get("name")): c for c in cases}
    assert set(by_name) == {("answer", "beta"), ("answer", "GA"), ("broken", "load"), ("slow_ga", "beta"),
                            ("slow_ga", "GA")}  # fmt: skip
    error = by_name[("broken", "load")].find("error")
    assert error is not None and "turns[0].barge_in_after_ms" in error.get("message", "")
    failure = by_name[("slow_ga", "GA")].find("failure")
    assert failure is not None and "reply gap after turns[0]" in (failure.text or "")
    assert by_name[("slow_ga", "beta")].find("failure") is None  # the reference run itself is fine
    assert by_name[("answer", "GA")].find("failure") is None


def test_junit_is_read_by_a_junit_parser(tmp_path: Path) -> None:
    junitparser = pytest.importorskip("junitparser", reason="junitparser is not installed")
    junit = tmp_path / "junit.xml"
    main([str(_slow_ga(tmp_path)), str(SCRIPTS / "idle_timeout"), "--junit", str(junit)])
    xml = junitparser.JUnitXml.fromfile(str(junit))
    cases = [(case.classname, case.name, [type(r).__name__ for r in case.result]) for suite in xml for case in suite]
    assert ("slow_ga", "GA", ["Failure"]) in cases and ("idle_timeout", "GA", []) in cases
