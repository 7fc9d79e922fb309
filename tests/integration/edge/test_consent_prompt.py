"""Consent that is really given (issue 70, item 15), against a real ``callbridge serve`` (one worker, a private Redis,
the emulator, a webhook endpoint) called by the project's pjsua2 softphone: the bridge plays the plan's consent WAV
(a 1 kHz tone here) itself at the answer, the caller hears all of it first and the model's greeting (the emulator's
600 Hz tone) after it, the recording starts at the prompt's end (nothing the caller said over the prompt is in it),
and the report line, the recording's header and the ``call.ended`` webhook say ``played``; a caller who hangs up
during the prompt leaves ``caller_hung_up`` and no recording at all."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _edge import serve_node, softphone_call, wait_report
from _ending import PROFILE, ended_hooks, webhook_env
from _webhooks import Receiver

from bridge.call.recorder import read_recording
from bridge.devkit.redis_server import redis_server_binary
from bridge.webhooks.signing import new_secret

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
    pytest.mark.xdist_group("cpu"),  # it measures audio to the frame
]
RATE = 8000
NUMBER = "7300"
PROMPT_S = 1.5
PROMPT_HZ, GREETING_HZ, OVER_HZ = 1000.0, 600.0, 450.0


def _wav(path: Path, samples: np.ndarray[Any, np.dtype[np.float64]]) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def _tone(hz: float, seconds: float, dbfs: float = -16.0) -> np.ndarray[Any, np.dtype[np.float64]]:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.sin(2 * np.pi * hz * t) * 10 ** (dbfs / 20)


def _pcm(path: Path) -> np.ndarray[Any, np.dtype[np.float64]]:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0


def _runs(x: np.ndarray[Any, np.dtype[np.float64]], floor_dbfs: float = -40.0) -> list[tuple[float, float, float]]:
    """The stretches of one tone in ``x``: 20 ms frames above ``floor_dbfs``, each frame's dominant frequency (to
    50 Hz), runs of one frequency (gaps under 100 ms bridged), each as (start s, length s, frequency Hz)."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    loud = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9) > floor_dbfs
    bins = np.fft.rfftfreq(160, 1 / RATE)
    runs: list[tuple[int, int, float]] = []
    for i in np.flatnonzero(loud):
        hz = float(bins[np.abs(np.fft.rfft(frames[i] * np.hanning(160))).argmax()])
        if runs and i - runs[-1][1] <= 5 and runs[-1][2] == hz:
            runs[-1] = (runs[-1][0], int(i), hz)
        else:
            runs.append((int(i), int(i), hz))
    return [(first * 0.02, (last - first + 1) * 0.02, hz) for first, last, hz in runs if last > first]


def _plan(prompt: Path) -> dict[str, Any]:
    recording = {"enabled": True, "consent_audio": str(prompt), "consent_prompt": "This call is recorded."}
    return {"name": "consent", "match": [NUMBER], "dialect": "ga", "greeting": "Greet the caller.",
            "recording": recording, "profile": PROFILE}  # fmt: skip


@pytest.mark.timeout(240)
async def test_the_bridge_plays_the_consent_prompt_first_and_records_only_after_it(tmp_path: Path) -> None:
    prompt = _wav(tmp_path / "consent.wav", _tone(PROMPT_HZ, PROMPT_S))
    # the caller talks over the first second of the prompt (450 Hz), then is silent
    over = _wav(tmp_path / "over.wav", np.concatenate([_tone(OVER_HZ, 1.0), np.zeros(int(6.0 * RATE))]))
    heard = tmp_path / "heard.wav"
    hook = await Receiver(new_secret()).start()
    try:
        async with serve_node(tmp_path / "node", [_plan(prompt)], webhook_env(tmp_path, hook)) as node:
            node.emulator.queue_next(settings={"speed": 1.0, "tone_hz": GREETING_HZ})
            phone = await softphone_call(
                node.sip_port, NUMBER, "--play", str(over), "--record", str(heard), "--no-plc", "--hangup-after", "5"
            )
            report = await wait_report(node, phone["call_id"])
            gone = await softphone_call(node.sip_port, NUMBER, "--hangup-after", "0.6")
            left = await wait_report(node, gone["call_id"])
            await hook.wait_for(lambda r: sum(x.body["type"] == "call.ended" for x in r) >= 2, 30)
    finally:
        await hook.stop()  # and every body fits docs/webhooks.schema.json
    recordings = tmp_path / "node" / "state" / "callbridge" / "recordings"
    assert phone["answered"] and gone["answered"], (phone, gone)

    # the caller hears the whole prompt first, though they talked over it, then the model's greeting
    runs = _runs(_pcm(heard))
    assert len(runs) >= 2, runs
    (start, length, hz), (after, _, greeting_hz) = runs[0], runs[1]
    assert hz == pytest.approx(PROMPT_HZ, abs=15) and length == pytest.approx(PROMPT_S, abs=0.1), runs
    assert start < 0.5, runs  # the call's first audio
    assert greeting_hz == pytest.approx(GREETING_HZ, abs=15) and after >= start + length, runs

    # what became of it, said alike by the report line, the recording's header and the webhook
    said = {"status": "played", "played_ms": 1500, "duration_ms": 1500, "talked_over": True, "audio": "consent.wav"}
    assert report["consent"] == said, report["consent"]
    caller, agent, header, notes = read_recording(recordings / report["call_id"])
    assert header["consent"] == said, header
    (ended,) = ended_hooks(hook, phone["call_id"])
    assert ended["consent"] == said and ended["recording"] == str(recordings / report["call_id"]), ended

    # the recording starts at the prompt's end: none of the prompt, none of what the caller said over it
    recorded_s = len(caller) / 2 / RATE
    assert recorded_s == pytest.approx(phone["duration_s"] - PROMPT_S, abs=0.25), (recorded_s, phone)
    agent_runs = _runs(np.frombuffer(agent, "<i2").astype(np.float64) / 32768.0)
    assert agent_runs and all(abs(f - PROMPT_HZ) > 50 for _, _, f in agent_runs), agent_runs
    assert agent_runs[0][2] == pytest.approx(GREETING_HZ, abs=15), agent_runs
    assert _runs(np.frombuffer(caller, "<i2").astype(np.float64) / 32768.0) == []  # the caller was silent by then
    consent_notes = [n for n in notes if n["kind"] == "consent"]
    assert len(consent_notes) == 1 and abs(consent_notes[0]["t_ms"]) <= 40, consent_notes

    # a caller gone during the prompt: said so, and nothing recorded
    hung_up = {"status": "caller_hung_up", "duration_ms": 1500, "talked_over": False, "audio": "consent.wav"}
    assert {k: v for k, v in left["consent"].items() if k != "played_ms"} == hung_up, left["consent"]
    assert 0 < left["consent"]["played_ms"] < 1500, left["consent"]
    assert not (recordings / left["call_id"]).exists()
    (ended,) = ended_hooks(hook, gone["call_id"])
    assert ended["consent"] == left["consent"] and ended["recording"] is None, ended


def test_a_recorded_plan_without_a_playable_prompt_is_refused_at_load(tmp_path: Path) -> None:
    """``callbridge dialplan check`` names the file and the field of a recorded plan's missing consent WAV."""
    plans = tmp_path / "plans"
    plans.mkdir()
    missing = tmp_path / "nowhere" / "consent.wav"
    (plans / "a.yaml").write_text(f"name: a\nmatch: ['1']\nrecording: {{enabled: true, consent_audio: '{missing}'}}\n")
    run = subprocess.run(
        [sys.executable, "-m", "bridge", "dialplan", "check", str(plans)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert f"{plans / 'a.yaml'}: recording.consent_audio: no such file: {missing}" in run.stdout + run.stderr
