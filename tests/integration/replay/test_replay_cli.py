"""``callbridge replay`` end to end, in process: every bundled script in both dialects, the report in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from bridge.replay.cli import main, scripts_main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def replay_all(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("out")
    rc = main([str(SCRIPTS), "--dialects", "beta,ga", "--via", "direct", "--report", str(out)])
    return rc, out


def test_every_expectation_of_the_bundled_scripts_passes(replay_all: tuple[int, Path]) -> None:
    rc, out = replay_all
    data = json.loads((out / "report.json").read_text())
    failed = {s["script"]: s["failures"] for s in data["scripts"] if s["verdict"] == "failed"}
    assert failed == {}
    assert rc == 0
    assert data["meta"]["dialects"] == ["beta", "ga"] and data["meta"]["scripts"] >= 8
    for script in data["scripts"]:
        assert set(script["runs"]) == {"beta", "ga"}
        for run in script["runs"].values():
            assert run["ok"] and all(c["ok"] for c in run["checks"]), (script["script"], run["dialect"])
    verdicts = {s["script"]: s["verdict"] for s in data["scripts"]}
    assert verdicts["idle_timeout"] == "differs"  # declared: GA's idle timeout
    assert all(v == "same" for k, v in verdicts.items() if k != "idle_timeout"), verdicts


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_html_report_opens_in_headless_chromium(replay_all: tuple[int, Path]) -> None:
    assert CHROMIUM is not None
    _, out = replay_all
    page = (out / "report.html").resolve()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90, check=True
        ).stdout
        shot = out / "report.png"
        subprocess.run(
            [*args, "--window-size=1400,1800", f"--screenshot={shot}", page.as_uri()],
            capture_output=True,
            timeout=90,
            check=True,
        )
    data = json.loads((out / "report.json").read_text())
    assert "callbridge replay report" in dom
    for script in data["scripts"]:
        section = dom.split(f'id="script-{script["script"]}"', 1)[1].split("</section>", 1)[0]
        assert 'data-dialect="beta"' in section and 'data-dialect="ga"' in section, script["script"]
        assert section.count("<svg") == 4  # timeline and latency, per dialect
        assert f'data-verdict="{script["verdict"]}"' in dom
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_json_on_stdout_and_one_progress_line_per_script(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([str(SCRIPTS / "question_answer"), str(SCRIPTS / "dtmf_menu"), "--dialects", "ga", "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    data = json.loads(captured.out)
    assert [s["script"] for s in data["scripts"]] == ["question_answer", "dtmf_menu"]  # in the order given
    assert all(s["verdict"] == "same" and s["comparison"] == "n/a" for s in data["scripts"])
    progress = [x for x in captured.err.splitlines() if x.startswith("replay: ")]
    assert [p.split(" (GA ok ")[0] for p in progress] == ["replay: question_answer: same", "replay: dtmf_menu: same"]
    assert "\r[" not in captured.err  # no progress bar when stderr is not a terminal


def test_a_failed_expectation_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "strict"
    shutil.copytree(SCRIPTS / "question_answer", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data["expect"]["agent_keywords"] = ["we are closed"]
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    assert main([str(target)]) == 1
    out = capsys.readouterr().out
    assert "failed     strict" in out  # the name is the directory's unless script.yaml names it
    assert "✗ beta: agent_keywords: missing ['we are closed'] in agent_transcript" in out
    assert "✗ GA: agent_keywords: missing ['we are closed'] in agent_transcript" in out


def test_differs_exits_0_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    idle = str(SCRIPTS / "idle_timeout")
    assert main([idle]) == 0
    assert main([idle, "--fail-on-differs"]) == 1


def test_a_malformed_script_exits_2_naming_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "transfer"
    shutil.copytree(SCRIPTS / "transfer", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data["turns"] += [{"say": "q1_human.wav"}, {"barge_in_after_ms": 0, "say": "q1_human.wav"}]
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    assert main([str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{target / 'script.yaml'}: turns[2].barge_in_after_ms: Input should be greater than 0" in err
    assert scripts_main(["check", str(target)]) == 2  # a bad file: a configuration error
    assert scripts_main(["check", str(SCRIPTS)]) == 0


def test_openai_target_needs_the_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main([str(SCRIPTS / "question_answer"), "--target", "openai"]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def test_scripts_from_recording_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.replay.direct import DirectOptions, run_direct
    from bridge.replay.script import load_script

    run_direct(load_script(SCRIPTS / "transfer"), "ga", DirectOptions(record_dir=tmp_path))
    out = tmp_path / "call_scripts" / "recorded_transfer"
    assert scripts_main(["from-recording", str(tmp_path / "transfer-ga"), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main([str(out)]) == 0
    assert os.path.exists(out / "turn_01.wav")
