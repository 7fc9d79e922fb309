"""Record, then replay, as call_scripts/README.md tells it: a real call into ``callbridge serve`` with recording on
(the pjsua2 softphone, ``callbridge call``), ``callbridge scripts from-recording`` on its recording, then
``callbridge replay`` of the new script against the emulator. Every step is the CLI a user runs, in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CALLER = REPO / "bridge" / "assets" / "caller_hours.wav"


def _cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _recording_plans(directory: Path) -> Path:
    """The shipped dialplans, the billing line (2000) recorded: as an operator turns recording on."""
    shutil.copytree(REPO / "dialplans", directory)
    billing = directory / "billing-beta.yaml"
    plan = yaml.safe_load(billing.read_text())
    plan["recording"] = {"enabled": True, "consent_prompt": "This call is recorded."}
    billing.write_text(yaml.safe_dump(plan, sort_keys=False))
    return directory


def _wait_for(what: str, probe: Path, within_s: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if probe.exists():
            return
        assert proc.poll() is None, f"serve exited {proc.returncode} before {what}"
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {within_s} s")


@pytest.fixture
def recorded_call(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the call's recording directory, the dialplans folder): `serve` with recording on, one real softphone call."""
    plans = _recording_plans(tmp_path / "dialplans")
    recordings, reports = tmp_path / "recordings", tmp_path / "calls.jsonl"
    sip_port, emulator_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with (tmp_path / "emulator.log").open("w") as elog, (tmp_path / "serve.log").open("w") as slog:
        emulator = subprocess.Popen(
            [sys.executable, "-m", "bridge", "emulator", "--port", str(emulator_port), "--speed", "4"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=elog, text=True,
        )  # fmt: skip
        serve = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
             "--realtime-url", f"ws://127.0.0.1:{emulator_port}/v1", "--dialplans", str(plans),
             "--report-file", str(reports)],
            env={**env, "CALLBRIDGE_RECORDINGS_DIR": str(recordings)}, cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=slog, text=True,
        )  # fmt: skip
    try:
        call = _cli(
            "call", f"sip:2000@127.0.0.1:{sip_port}", "--play", str(CALLER), "--hangup-after", "12", "--json",
            "--timeout", "40", cwd=tmp_path,
        )  # fmt: skip
        assert call.returncode == 0, call.stderr[-2000:]
        assert json.loads(call.stdout)["answered"], call.stdout
        _wait_for("the call's report line", reports, 30, serve)
        (recording,) = [d for d in recordings.iterdir() if d.is_dir()]
        yield recording, plans
    finally:
        stop_process(serve)
        stop_process(emulator)


def test_a_recorded_call_becomes_a_script_that_replays(recorded_call: tuple[Path, Path], tmp_path: Path) -> None:
    recording, plans = recorded_call
    header = json.loads((recording / "events.jsonl").read_text().splitlines()[0])
    assert header["dialplan"]["version"]  # the recorder's digest of the plan, beside the plan's own fields

    out = tmp_path / "call_scripts" / "recorded_billing"
    made = _cli("scripts", "from-recording", str(recording), "--out", str(out), "--dialplans", str(plans), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"wrote {out / 'script.yaml'}"
    script = yaml.safe_load((out / "script.yaml").read_text())
    assert script["dialplan"] == "billing"  # named, not pasted: the plan's file is in --dialplans
    assert "version" not in json.dumps(script.get("dialect_overrides", {}))
    assert any("say" in turn for turn in script["turns"]) and (out / "turn_01.wav").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["recorded_billing"]  # no draft left beside it

    checked = _cli("scripts", "check", str(out), "--dialplans", str(plans), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    replayed = _cli("replay", str(out), "--dialplans", str(plans), "--json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-2000:]
    (row,) = json.loads(replayed.stdout)["scripts"]
    assert row["script"] == "recorded_billing" and row["verdict"] in {"same", "by design"}, row
    assert set(row["runs"]) == {"beta", "ga"} and all(run["ok"] for run in row["runs"].values()), row
