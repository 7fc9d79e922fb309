"""A worker killed mid-call on a recorded rollout plan: the pool closes the call's record (end reason "worker died"
in Redis, a report line, the recording finished and playable up to the kill, a failure in the variant's rollout
window and in /metrics), the caller gets a BYE built from the dialog kept in Redis (no silent line left open), and
the pool restarts the worker on the same port. The dialog is kept sealed under the node's listen_key (set here, so
that the test can open it too: bridge/store/dialogseal.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml
from test_serve_operable import ROOT, TOKEN, Serve, _get, _metric, api, caller_wav, softphone, wait_healthy

from bridge.audio.wav import write_wav
from bridge.call.recorder import AUDIO_FILE, read_recording
from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.dialogseal import VERSION, DialogSeal
from bridge.store.reportfile import read_reports

SAFE = "gpt-realtime-2.1"  # the shipped support plan's safe variant (dialplans/support.yaml)
LISTEN_KEY = "worker-death-listen-key"

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")


async def test_killed_worker_is_restarted_and_its_call_marked_ended(tmp_path: Path) -> None:
    plans = tmp_path / "dialplans"
    plans.mkdir()
    support = yaml.safe_load((ROOT / "dialplans" / "support.yaml").read_text())
    write_wav(plans / "consent.wav", bytes(1600))  # the consent prompt (0.1 s): the recording starts at its end
    support["recording"] = {"enabled": True, "consent_audio": str(plans / "consent.wav")}
    (plans / "support.yaml").write_text(yaml.safe_dump(support))
    reports = tmp_path / "calls.jsonl"
    recordings = tmp_path / "state" / "callbridge" / "recordings"
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port, http_port = free_port(), free_port()
            env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
            env["CALLBRIDGE_LISTEN_KEY"] = LISTEN_KEY  # the node's key: the test opens the stored dialog with it
            proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously below)
                [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
                 "--realtime-url", emulator.base_url, "--redis-url", redis.url, "--http-port", str(http_port),
                 "--dialplans", str(plans), "--report-file", str(reports)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            serve = Serve(proc, sip_port, http_port, reports)
            client = aioredis.from_url(redis.url, decode_responses=True)
            try:
                await wait_healthy(serve)
                _, health = await api("/healthz", serve)
                old_pid = health["workers"][0]["pid"]
                play = caller_wav(tmp_path / "c.wav")
                call = asyncio.create_task(softphone(serve, "1000", play, seconds=25.0))
                call_id = await _live_call(serve)
                dialog = await _stored_dialog(client, call_id)
                assert dialog["call_id"] == await client.hget(keys.call(call_id), "sip_call_id")
                assert ";tag=" in dialog["local"] and ";tag=" in dialog["remote"]
                await _recorded_s(recordings / call_id, at_least=3.0)  # on disk as the call goes
                os.kill(old_pid, signal.SIGKILL)  # mid-call
                phone = await call
                # the caller did not wait for its own 25 s timer: the restarted worker hung up for the dead one
                assert phone["answered"] and phone["hangup_by"] == "remote", phone

                # the pool restarts the worker on the same port
                deadline = time.monotonic() + 30
                while True:
                    _, health = await api("/healthz", serve)
                    (w,) = health["workers"]
                    if w["alive"] and w["pid"] != old_pid and w["sip_port"] == sip_port:
                        break
                    assert time.monotonic() < deadline, health
                    await asyncio.sleep(0.2)
                assert w["restarts"] == 1

                # the dead run's call is marked ended in Redis and no longer live
                state: dict[str, str] = {}
                while time.monotonic() < deadline:
                    state = await client.hgetall(keys.call(call_id))
                    if state.get("ended_at"):
                        break
                    await asyncio.sleep(0.2)
                assert state.get("end_reason") == "worker died" and state.get("worker_exit") == "SIGKILL", state
                _, live = await api("/api/calls", serve)
                assert call_id not in json.dumps(live)

                # the call's report line, its recording finished (it plays up to at most 2 s before the kill: the
                # phone's call lasted until the BYE, which came right after), a failure in its variant's window
                (line,) = [r for r in read_reports(reports) if r["call_id"] == call_id]
                assert line["end_reason"] == "worker died" and line["worker_died"] and line["variant"] == SAFE
                caller, agent, _, notes = read_recording(recordings / call_id)
                assert len(caller) == len(agent) and len(caller) / 2 / 8000 >= phone["duration_s"] - 2.5, phone
                assert notes[-1]["kind"] == "ended" and notes[-1]["summary"] == "worker died", notes[-1]
                window = [json.loads(m) for m in await client.zrange(keys.variant_calls("support", SAFE), 0, -1)]
                assert [w["outcome"] for w in window if w.get("worker_died")] == ["dropped"], window
                text = await _get(f"{serve.http}/metrics")
                variant = {"dialplan": "support", "variant": SAFE}
                assert _metric(text, "callbridge_calls_lost_to_worker_death_total", **variant) == 1
                assert _metric(text, "callbridge_variant_calls_total", outcome="dropped", **variant) == 1

                # and the restarted worker takes calls again
                phone = await softphone(serve, "1000", play, seconds=3.0)
                assert phone["answered"] and phone["sip_status"] == 200
            finally:
                await client.aclose()
                proc.terminate()
                proc.wait(15)
            assert proc.returncode == 0


async def _recorded_s(directory: Path, at_least: float) -> float:
    """Seconds of audio the call's recording holds on disk, once it holds ``at_least``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, EOFError, wave.Error):
            with wave.open(str(directory / AUDIO_FILE), "rb") as w:
                seconds = w.getnframes() / w.getframerate()
            if seconds >= at_least:
                return seconds
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the recording in {directory} never reached {at_least} s on disk")


async def _stored_dialog(client: aioredis.Redis, call_id: str) -> dict[str, str]:
    """The call's dialog as Redis keeps it, opened with the node's listen_key."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = await client.hget(keys.call(call_id), "sip_dialog")
        if text:
            assert text.startswith(VERSION) and "sip:" not in text and "tag=" not in text, text
            opened = DialogSeal.under(LISTEN_KEY).open(call_id, text)
            assert opened is not None, text
            return dict(json.loads(opened))
        await asyncio.sleep(0.1)
    raise TimeoutError("the call's SIP dialog never reached Redis")


async def _live_call(serve: Serve) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = await api("/api/calls", serve)
        if status == 200 and body["calls"] and body["calls"][0]["phase"] in {"SPEAKING", "LISTENING", "THINKING"}:
            return str(body["calls"][0]["call_id"])
        await asyncio.sleep(0.1)
    raise TimeoutError("the call never showed up live")
