"""`serve` stopped while Redis is away: the call that ended during the outage is not lost. Its worker writes what
Redis did not take to the spool; after Redis returns (empty), the next start of `serve` writes it there: the call's
final state (its real end reason) and every event."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from test_serve_operable import ROOT, TOKEN, Serve, caller_wav, softphone, stop_serve, wait_healthy

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.reportfile import read_reports

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")


def _serve(
    tmp_path: Path,
    redis: EmbeddedRedis,
    emulator: EmulatorServer,
    sip_port: int,
    log: Path,
    extra_env: dict[str, str] | None = None,
    dialplans: Path = ROOT / "dialplans",
) -> Serve:
    env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.update(extra_env or {})
    env.pop("OPENAI_API_KEY", None)
    http_port = free_port()
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
             "--realtime-url", emulator.base_url, "--redis-url", redis.url, "--http-port", str(http_port),
             "--dialplans", str(dialplans), "--report-file", str(tmp_path / "calls.jsonl")],
            env=env, stdout=out, stderr=out, text=True,
        )  # fmt: skip
    return Serve(proc, sip_port, http_port, tmp_path / "calls.jsonl")


async def test_a_stop_during_a_redis_outage_loses_no_final_state(tmp_path: Path) -> None:
    log, spool = tmp_path / "serve.log", tmp_path / "state" / "callbridge" / "spool"
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port = free_port()
            serve = _serve(tmp_path, redis, emulator, sip_port, log)
            try:
                await wait_healthy(serve)
                call = asyncio.create_task(softphone(serve, "1000", caller_wav(tmp_path / "c.wav"), seconds=4.0))
                client = aioredis.from_url(redis.url, decode_responses=True)
                call_id = ""
                deadline = time.monotonic() + 10
                while not call_id:  # the call is in Redis: then Redis goes away, and the call ends meanwhile
                    assert time.monotonic() < deadline, "the call never reached Redis"
                    found = [k async for k in client.scan_iter(keys.call("*"))]
                    call_id = found[0].split("{", 1)[1].rstrip("}") if found else ""
                    await asyncio.sleep(0.1)
                await client.aclose()
                await asyncio.to_thread(redis.stop)
                phone = await call
                assert phone["answered"] and phone["hangup_by"] == "local", phone
                (report,) = read_reports(serve.reports)  # the call is over (its report is written)
            finally:
                stop_serve(serve.proc)  # Redis still away
            assert list(spool.glob("*.spool.json")), log.read_text()[-3000:]
            assert "Redis unreachable at stop" in log.read_text()

            redis.proc = None
            await asyncio.to_thread(redis.start)  # back, EMPTY (no persistence)
            serve = _serve(tmp_path, redis, emulator, sip_port, log)
            client = aioredis.from_url(redis.url, decode_responses=True)
            try:
                await wait_healthy(serve)
                deadline = time.monotonic() + 15
                while not (state := await client.hgetall(keys.call(call_id))).get("ended_at"):
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    await asyncio.sleep(0.1)
                kinds = [f["kind"] for _, f in await client.xrange(keys.call_events(call_id))]
            finally:
                await client.aclose()
                stop_serve(serve.proc)
    assert state["end_reason"] == report["end_reason"] and state["end_reason"].startswith("caller hung up"), state
    assert state["phase"] == "ENDED"
    assert kinds[0] == "ringing" and kinds[-1] == "ended", kinds  # every event, from the first to the last
    assert {"phase", "agent_transcript"} <= set(kinds), kinds
    assert not list(spool.glob("*.spool.json"))
    assert "wrote spooled call state" in log.read_text()
