"""Record, then replay, as call_scripts/README.md tells it: a real call into ``callbridge serve`` with recording on
(the pjsua2 softphone, ``callbridge call``), ``callbridge scripts from-recording`` on its recording, then
``callbridge replay`` of the new script against the emulator. Every step is the CLI a user runs, in a subprocess.
"""

from __future__ import annotations

import contextlib
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

from bridge.audio.wav import write_wav
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


def _recording_plans(directory: Path, plan_file: str = "billing-beta.yaml") -> Path:
    """The shipped dialplans, one line recorded (by default billing, 2000): as an operator turns recording on."""
    shutil.copytree(REPO / "dialplans", directory)
    recorded = directory / plan_file
    plan = yaml.safe_load(recorded.read_text())
    write_wav(directory / "consent.wav", bytes(1600))  # the consent prompt (0.1 s), played before recording starts
    plan["recording"] = {"enabled": True, "consent_audio": str(directory / "consent.wav")}
    recorded.write_text(yaml.safe_dump(plan, sort_keys=False))
    return directory


def _wait_for(what: str, probe: Path, within_s: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if probe.exists():
            return
        assert proc.poll() is None, f"serve exited {proc.returncode} before {what}"
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {within_s} s")


@contextlib.contextmanager
def _record_call(
    tmp_path: Path, called: str, play: Path, hangup_after_s: int, plan_file: str = "billing-beta.yaml",
    emulator_args: tuple[str, ...] = (),
) -> Iterator[tuple[Path, Path]]:  # fmt: skip
    """(the call's recording directory, the dialplans folder): `serve` with recording on for ``plan_file``, one real
    softphone call to ``called`` playing ``play``."""
    plans = _recording_plans(tmp_path / "dialplans", plan_file)
    recordings, reports = tmp_path / "recordings", tmp_path / "calls.jsonl"
    sip_port, emulator_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with (tmp_path / "emulator.log").open("w") as elog, (tmp_path / "serve.log").open("w") as slog:
        emulator = subprocess.Popen(
            [sys.executable, "-m", "bridge", "emulator", "--port", str(emulator_port), "--speed", "4", *emulator_args],
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
            "call", f"sip:{called}@127.0.0.1:{sip_port}", "--play", str(play), "--hangup-after", str(hangup_after_s),
            "--json", "--timeout", "40", cwd=tmp_path,
        )  # fmt: skip
        assert call.returncode == 0, call.stderr[-2000:]
        assert json.loads(call.stdout)["answered"], call.stdout
        _wait_for("the call's report line", reports, 30, serve)
        (recording,) = [d for d in recordings.iterdir() if d.is_dir()]
        yield recording, plans
    finally:
        stop_process(serve)
        stop_process(emulator)


@pytest.fixture
def recorded_call(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The billing line (2000, beta, no greeting), the caller speaking at once (over the consent prompt)."""
    with _record_call(tmp_path, "2000", CALLER, 12) as recorded:
        yield recorded


def _keyword_checks(row: dict[str, object], expect: dict[str, list[str]]) -> None:
    """Each run found every keyword the script expects (caller's and agent's)."""
    runs = row["runs"]
    assert isinstance(runs, dict)
    for dialect, run in runs.items():
        checks = {c["name"]: c for c in run["checks"]}
        for key, words in expect.items():
            assert checks[key]["ok"] and checks[key]["detail"] == f"found {words}", (dialect, checks[key])


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
    # the bridge played the consent prompt before the recording began, and the plan has no greeting: the script
    # starts with the caller's words (what they said over the prompt went nowhere), no line of the model's before
    assert header["consent"]["status"] == "played", header["consent"]
    assert "greeting" not in script.get("emulator", {}) and "say" in script["turns"][0], script


def test_a_recorded_answer_after_a_preamble_replays_its_own_keywords(tmp_path: Path) -> None:
    """The support line (1000: GA on the rollout's safe gpt-realtime-2.1, which answers with a preamble, then the
    answer, as two message items), the caller waiting for the greeting and the emulator told what it hears (real
    words, not a placeholder): the script written from the recording replays green on its own keywords."""
    import wave

    caller = tmp_path / "caller_after_greeting.wav"
    with wave.open(str(CALLER)) as src, wave.open(str(caller), "wb") as dst:
        dst.setparams(src.getparams())  # 3 s of silence (the greeting plays out), then the question
        dst.writeframes(bytes(src.getsampwidth() * src.getframerate() * 3) + src.readframes(src.getnframes()))
    hears = tmp_path / "annotations.json"
    hears.write_text(json.dumps([{"hears": "What are your opening hours?"}]))
    with _record_call(tmp_path, "1000", caller, 14, "support.yaml", ("--annotations", str(hears))) as recorded:
        recording, plans = recorded
    out = tmp_path / "call_scripts" / "recorded_support"
    made = _cli("scripts", "from-recording", str(recording), "--out", str(out), "--dialplans", str(plans), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    script = yaml.safe_load((out / "script.yaml").read_text())
    expect = {k: script["expect"].get(k) for k in ("caller_keywords", "agent_keywords")}
    assert expect["caller_keywords"] and expect["agent_keywords"], script["expect"]
    replayed = _cli("replay", str(out), "--dialplans", str(plans), "--json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-2000:]
    (row,) = json.loads(replayed.stdout)["scripts"]
    assert set(row["runs"]) == {"beta", "ga"} and all(run["ok"] for run in row["runs"].values()), row
    _keyword_checks(row, expect)
    said = [turn for turn in script["turns"] if "say" in turn]
    assert said and said[0]["hears"] == "What are your opening hours?"
    assert said[0]["reply"]["text"] != "Let me check that for you."  # the answer, not the recorded preamble
    assert any("opening" in w.lower() for w in expect["agent_keywords"]), expect  # the answer's own words
