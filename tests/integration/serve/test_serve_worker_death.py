"""A worker killed mid-call: the pool restarts it on the same port, its call is marked ended in Redis, and the
caller gets a BYE built from the dialog kept in Redis (no silent line left open)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from test_serve_operable import ROOT, TOKEN, Serve, api, caller_wav, softphone, wait_healthy

from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.server import EmbeddedRedis, free_port, redis_server_binary

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")


async def test_killed_worker_is_restarted_and_its_call_marked_ended(tmp_path: Path) -> None:
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port, http_port = free_port(), free_port()
            env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN}
            proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously below)
                [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
                 "--realtime-url", emulator.base_url, "--redis-url", redis.url, "--http-port", str(http_port),
                 "--dialplans", str(ROOT / "dialplans")],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            serve = Serve(proc, sip_port, http_port, tmp_path / "unused.jsonl")
            client = aioredis.from_url(redis.url, decode_responses=True)
            try:
                await wait_healthy(serve)
                _, health = await api("/healthz", serve)
                old_pid = health["workers"][0]["pid"]
                play = caller_wav(tmp_path / "c.wav")
                call = asyncio.create_task(softphone(serve, "1000", play, seconds=25.0))
                call_id = await _live_call(serve)
                dialog = await _stored_dialog(client, call_id)
                assert dialog["call_id"] == call_id and ";tag=" in dialog["local"] and ";tag=" in dialog["remote"]
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
                assert state.get("end_reason") in {"worker restarted", "worker died"}, state
                _, live = await api("/api/calls", serve)
                assert call_id not in json.dumps(live)

                # and the restarted worker takes calls again
                phone = await softphone(serve, "1000", play, seconds=3.0)
                assert phone["answered"] and phone["sip_status"] == 200
            finally:
                await client.aclose()
                proc.terminate()
                proc.wait(15)
            assert proc.returncode == 0


async def _stored_dialog(client: aioredis.Redis, call_id: str) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = await client.hget(keys.call(call_id), "sip_dialog")
        if text:
            return dict(json.loads(text))
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
