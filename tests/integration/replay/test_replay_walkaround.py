"""The gate cannot be walked around: a script the baseline ran that is gone is red, a red run never becomes the
baseline (so retrying a red candidate stays red), and a prompt or voice change the emulator cannot judge is red until
a real-model replay of it is given or someone accepts it with a reason. Every accept is in the report and the
history; every red reason is one line in the text, the HTML and the JUnit file."""

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


def _suite(tmp_path: Path, *names: str) -> tuple[Path, Path]:
    suite, plans = tmp_path / "suite", tmp_path / "dialplans"
    for name in names:
        shutil.copytree(REPO / "call_scripts" / name, suite / name)
    shutil.copytree(REPO / "dialplans", plans)
    return suite, plans


def _replay(suite: Path, plans: Path, *extra: str) -> int:
    return main([str(suite), "--dialplans", str(plans), "--dialects", "beta,ga", "--models", "dialect", *extra])


def _report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "report.json").read_text())
    return data


def _junit_failures(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert int(root.get("failures", "0")) == len(list(root.iter("failure")))
    return [f.get("message", "") for f in root.iter("failure")]


def test_a_deleted_script_is_red_unless_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, plans = _suite(tmp_path, "question_answer", "transfer")
    assert _replay(suite, plans, "--report", str(tmp_path / "base")) == 0
    shutil.rmtree(suite / "transfer")  # the failing script and its tool gone together
    capsys.readouterr()
    out_dir = tmp_path / "cand"
    junit = out_dir / "junit.xml"
    assert (
        _replay(suite, plans, "--report", str(out_dir), "--baseline", str(tmp_path / "base"), "--junit", str(junit))
        == 1
    )
    text = capsys.readouterr().out
    line = "transfer: removed: in the baseline, not run now (--accept-removed transfer accepts it)"
    assert f"RED {line}" in text and "gate: red, 1 reason(s)" in text
    gate = {"exit": 1, "red": [line], "accepts": [], "own": [line], "unpriced": []}
    assert _report(out_dir)["meta"]["gate"] == gate
    assert _junit_failures(junit) == [line]  # failures="1": a CI reader shows it
    assert (
        'id="gate"' in (page := (out_dir / "report.html").read_text()) and "transfer: removed: in the baseline" in page
    )

    capsys.readouterr()
    accepted = tmp_path / "accepted"
    assert _replay(suite, plans, "--report", str(accepted), "--baseline", str(tmp_path / "base"),
                   "--accept-removed", "transfer") == 0  # fmt: skip
    assert "accepted (removed): transfer by --accept-removed transfer" in capsys.readouterr().out
    assert _report(accepted)["meta"]["gate"]["accepts"] == [
        {"kind": "removed", "name": "transfer", "by": "--accept-removed transfer"}
    ]


def test_a_dropped_dialect_is_red_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, plans = _suite(tmp_path, "question_answer")
    assert _replay(suite, plans, "--report", str(tmp_path / "base")) == 0
    only_beta = ("--dialplans", str(plans), "--dialects", "beta", "--models", "dialect")
    capsys.readouterr()
    assert main([str(suite), *only_beta, "--baseline", str(tmp_path / "base")]) == 1
    assert "RED question_answer: removed: its GA run is in the baseline only" in capsys.readouterr().out
    assert main([str(suite), *only_beta, "--baseline", str(tmp_path / "base"), "--accept-removed", "ga"]) == 0


def test_retrying_a_red_candidate_stays_red(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, plans = _suite(tmp_path, "question_answer")
    history = tmp_path / "history"
    assert _replay(suite, plans, "--history", str(history)) == 0  # green, but not accepted: no baseline yet
    assert _replay(suite, plans, "--history", str(history), "--accept-baseline") == 0
    slower = ("--emulator-set", "response_latency_ms=8150")  # the candidate 2 s slower everywhere
    assert _replay(suite, plans, "--history", str(history), *slower) == 1
    assert _replay(suite, plans, "--history", str(history), *slower) == 1  # the red run did not become the baseline
    capsys.readouterr()
    assert _replay(suite, plans, "--history", str(history), *slower, "--accept-baseline") == 1
    assert "baseline: not moved: a red run is never a baseline" in capsys.readouterr().out
    assert _replay(suite, plans, "--history", str(history), *slower) == 1  # still against the accepted green run
    entries = json.loads((history / "index.json").read_text())
    assert [(e["exit"], bool(e.get("baseline_accepted"))) for e in entries] == [
        (0, False), (0, True), (1, False), (1, False), (1, False), (1, False)
    ]  # fmt: skip
    assert {e["baseline"] for e in entries[2:]} == {entries[1]["dir"]}
    assert entries[1]["accepts"] == [{"kind": "baseline", "name": entries[1]["dir"], "by": "--accept-baseline"}]
    assert any("worse than the baseline" in r for r in entries[-1]["red"]), entries[-1]["red"]

    # a red report named as the baseline is refused, with the reason
    red_dir = history / entries[-1]["dir"]
    capsys.readouterr()
    assert _replay(suite, plans, "--baseline", str(red_dir)) == 2
    assert "a red run is no baseline (exit 1: question_answer: " in capsys.readouterr().err
    # --keep never prunes the baseline: the next run is still compared with it
    assert _replay(suite, plans, "--history", str(history), "--keep", "1", *slower) == 1
    assert (history / entries[1]["dir"] / "report.json").is_file()


def _prompt(plans: Path, text: str) -> None:
    path = plans / "support.yaml"
    data = yaml.safe_load(path.read_text())
    data["profile"]["instructions"] = text
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_prompt_change_is_unjudged_until_a_real_model_replay_or_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite, plans = _suite(tmp_path, "question_answer")
    history = tmp_path / "history"
    assert _replay(suite, plans, "--history", str(history), "--accept-baseline") == 0
    _prompt(plans, "You are Acme's support agent. Always offer the premium plan.")
    capsys.readouterr()
    cand = tmp_path / "cand"
    assert _replay(suite, plans, "--history", str(history), "--report", str(cand), "--junit", str(cand / "j.xml")) == 1
    out = capsys.readouterr().out
    red = [line for line in out.splitlines() if line.startswith("RED question_answer: unjudged: ")]
    assert len(red) == 2 and all("instructions #" in line and "--accept-unjudged" in line for line in red), out
    assert len(_junit_failures(cand / "j.xml")) == 2

    # a replay against the emulator judges nothing
    assert _replay(suite, plans, "--history", str(history), "--judged-by", str(cand)) == 2
    assert "not a real-model replay (target emulator)" in capsys.readouterr().err
    # a real-model replay of the same instructions does. (No key here: the candidate's report, as a --target openai
    # run of the same plan writes it, its target the real service's.)
    real = tmp_path / "real"
    shutil.copytree(cand, real)
    data = _report(real)
    data["meta"]["target"], data["meta"]["gate"] = "openai", {"exit": 0, "red": [], "accepts": []}
    (real / "report.json").write_text(json.dumps(data))
    assert _replay(suite, plans, "--history", str(history), "--judged-by", str(real)) == 0
    # a reason instead, kept in the report and the history
    why = "wording only; the premium offer was judged in the call review of 2026-11-20"
    assert _replay(suite, plans, "--history", str(history), "--accept-unjudged", why) == 0
    entries = json.loads((history / "index.json").read_text())
    assert [a["kind"] for a in entries[-2]["accepts"]] == ["judged", "judged"]
    assert [(a["kind"], a["reason"]) for a in entries[-1]["accepts"]] == [("unjudged", why)] * 2
    assert _replay(suite, plans, "--accept-unjudged", " ") == 2  # a reason is needed


def test_a_voice_change_is_unjudged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, plans = _suite(tmp_path, "question_answer")
    assert _replay(suite, plans, "--report", str(tmp_path / "base")) == 0
    path = plans / "support.yaml"
    data = yaml.safe_load(path.read_text())
    data["profile"]["voice"] = "verse"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert _replay(suite, plans, "--baseline", str(tmp_path / "base")) == 1
    assert (
        "RED question_answer: unjudged: GA voice alloy -> verse: the emulator cannot judge it"
        in capsys.readouterr().out
    )
