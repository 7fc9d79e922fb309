"""The QA gate against a baseline: every change of what the calls were told is named (instructions with a digest
and a diff, voice, emulator settings), red where the emulator cannot judge it unless accepted with a reason, and a
run worse than its baseline beyond the budget is red: the exit code, the text and JUnit say so (a 2 s slowdown on
every dialect, a cost rise)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NOT_JUDGED = "not judged by the emulator: replay against the real model before rollout"


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    suite, plans = tmp_path / "suite", tmp_path / "dialplans"
    shutil.copytree(REPO / "call_scripts" / "question_answer", suite / "answer")
    shutil.copytree(REPO / "dialplans", plans)
    return suite, plans


def _edit(path: Path, change: dict[str, object], where: str = "profile") -> None:
    data = yaml.safe_load(path.read_text())
    data.setdefault(where, {}).update(change)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _replay(suite: Path, plans: Path, out: Path, *extra: str) -> int:
    return main([str(suite), "--dialplans", str(plans), "--dialects", "beta,ga", "--models", "dialect",
                 "--report", str(out), "--junit", str(out / "junit.xml"), *extra])  # fmt: skip


def _junit(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    root = ET.parse(path).getroot()
    props: dict[str, list[str]] = {}
    for prop in root.iter("property"):
        props.setdefault(prop.get("name", ""), []).append(prop.get("value", ""))
    return props, [f.get("message", "") for f in root.iter("failure")]


def test_a_prompt_and_a_voice_change_are_named_and_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, plans = _copy(tmp_path)
    assert _replay(suite, plans, tmp_path / "before") == 0
    _edit(plans / "support.yaml", {"instructions": "You are Acme's support agent. Always offer the premium plan."})
    capsys.readouterr()
    assert _replay(suite, plans, tmp_path / "unjudged", "--baseline", str(tmp_path / "before")) == 1  # red: unjudged
    capsys.readouterr()
    why = "wording reviewed on a real-model replay"
    assert (
        _replay(suite, plans, tmp_path / "prompt", "--baseline", str(tmp_path / "before"), "--accept-unjudged", why)
        == 0
    )
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "prompt" / "report.json").read_text())
    [script] = data["scripts"]
    changed = [s for s in script["since_baseline"] if ": instructions #" in s]
    assert {c.split(":")[0] for c in changed} == {"beta", "GA"} and all(NOT_JUDGED in c for c in changed), changed
    assert "+You are Acme's support agent. Always offer the premium plan." in script["instructions_diff"]["ga"]
    assert "since the baseline: GA: instructions #" in out and "+You are Acme's support agent." in out  # the text
    props, failures = _junit(tmp_path / "prompt" / "junit.xml")
    assert any(": instructions #" in v for v in props["since_baseline.answer"]) and failures == []  # accepted
    _, unjudged = _junit(tmp_path / "unjudged" / "junit.xml")
    assert len(unjudged) == 2 and all(f.startswith("answer: unjudged: ") for f in unjudged), unjudged

    _edit(plans / "support.yaml", {"voice": "verse"})
    assert (
        _replay(suite, plans, tmp_path / "voice", "--baseline", str(tmp_path / "prompt"), "--accept-unjudged", why) == 0
    )
    [script] = json.loads((tmp_path / "voice" / "report.json").read_text())["scripts"]
    assert f"GA: voice alloy -> verse ({NOT_JUDGED})" in script["since_baseline"]
    assert not [s for s in script["since_baseline"] if ": instructions #" in s]  # only what changed this time


def test_a_slowdown_everywhere_and_a_cost_rise_are_red(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, plans = _copy(tmp_path)
    assert _replay(suite, plans, tmp_path / "before") == 0
    script_file = suite / "answer" / "script.yaml"
    data = yaml.safe_load(script_file.read_text())
    data["emulator"]["settings"] = {"response_latency_ms": 150 + 4 * 2000}  # 2 s later on both dialects (speed 4)
    for bound in ("max_first_audio_ms", "max_greeting_ms", "max_reply_gap_ms"):  # the script's own bounds left out
        data["expect"].pop(bound)
    script_file.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert _replay(suite, plans, tmp_path / "slow", "--baseline", str(tmp_path / "before")) == 1  # red
    out = capsys.readouterr().out
    [script] = json.loads((tmp_path / "slow" / "report.json").read_text())["scripts"]
    assert script["status"] in ("same", "by_design")  # the runs agree with each other: only the baseline shows it
    worse = [r for r in script["regressions"] if "median reply gap" in r]
    assert {w.split(":")[0] for w in worse} == {"beta", "GA"}, script["regressions"]
    assert "emulator setting response_latency_ms: - -> 8150" in " ".join(script["since_baseline"])
    assert "✗ worse than the baseline: beta: median reply gap" in out
    _, failures = _junit(tmp_path / "slow" / "junit.xml")
    assert any("worse than the baseline" in f for f in failures), failures
    # the budget is the team's: a 3 s allowance lets the same run through
    wide = (
        "--budget",
        "reply_gap_ms=3000",
        "--budget",
        "reply_gap_p90_ms=3000",
        "--budget",
        "greeting_ms=3000",
        "--budget",
        "cost_rise=0.2",
    )  # a longer call costs more tokens: about 12 % here
    assert _replay(suite, plans, tmp_path / "allowed", "--baseline", str(tmp_path / "before"), *wide) == 0
    assert _replay(suite, plans, tmp_path / "bad", "--budget", "speed=2") == 2  # named: not a budget

    # a cost rise: the plan's safe variant moves from the mini model to the full one (its prices are higher)
    shutil.copy(REPO / "call_scripts" / "question_answer" / "script.yaml", script_file)
    rollout = yaml.safe_load((plans / "support.yaml").read_text())
    rollout["rollout"]["safe"] = "gpt-realtime-2.1-mini"
    (plans / "support.yaml").write_text(yaml.safe_dump(rollout, sort_keys=False))
    ga = ("--dialplans", str(plans), "--dialects", "ga")
    assert main([str(suite), *ga, "--report", str(tmp_path / "mini")]) == 0
    rollout["rollout"]["safe"] = "gpt-realtime-2.1"
    (plans / "support.yaml").write_text(yaml.safe_dump(rollout, sort_keys=False))
    capsys.readouterr()
    assert main([str(suite), *ga, "--report", str(tmp_path / "full"), "--baseline", str(tmp_path / "mini")]) == 1
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "full" / "report.json").read_text())
    [script] = data["scripts"]
    assert "GA: model gpt-realtime-2.1-mini -> gpt-realtime-2.1" in script["since_baseline"]
    assert any(s.startswith("GA: cost of the call $") for s in script["since_baseline"]), script["since_baseline"]
    assert f"cost: GA ${data['meta']['cost_usd']['ga']:.4f} (prices as of " in out  # where the decision is made
    assert "warning: assumed prices for gpt-realtime-2.1 " in out and data["meta"]["prices"]["assumed"]
    assert "assumed rates for gpt-realtime-2.1" in (tmp_path / "full" / "report.html").read_text()
    [dearer] = [r for r in script["regressions"] if "cost of the call" in r]
    assert "budget 10 %" in dearer and int(dearer.split("(+")[1].split(" %")[0]) >= 25, dearer


def test_a_shipped_script_bounds_what_a_caller_would_notice(tmp_path: Path) -> None:
    """Without any baseline, a 2 s slowdown on every dialect fails the shipped script's own bound."""
    suite, plans = _copy(tmp_path)
    script_file = suite / "answer" / "script.yaml"
    data = yaml.safe_load(script_file.read_text())
    assert data["expect"]["max_reply_gap_ms"] <= 2000 and data["expect"]["max_greeting_ms"] <= 1500
    data["emulator"]["settings"] = {"response_latency_ms": 150 + 4 * 2000}
    script_file.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _replay(suite, plans, tmp_path / "slow") == 1
    [script] = json.loads((tmp_path / "slow" / "report.json").read_text())["scripts"]
    assert script["status"] == "failed"
    assert any("max_reply_gap_ms" in f for f in script["failures"]), script["failures"]
