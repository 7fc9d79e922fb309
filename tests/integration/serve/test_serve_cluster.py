"""``serve`` on a real Redis Cluster (six redis-server processes): two calls, the primary of one call's
shard killed mid-call. Its replica takes over, no call is dropped (each caller hangs up on its own timer), the
records complete (phase, end, the stream's last entry, the report line) and the writes resume within the cluster's
failover time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_serve_operable import TOKEN, Serve, api, caller_wav, softphone, wait_healthy

from bridge.devkit.ports import free_port, free_port_block
from bridge.devkit.redis_cluster import RedisClusterLab, cluster_tools
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.connection import connect
from bridge.store.reportfile import read_reports

pytestmark = pytest.mark.skipif(cluster_tools() is not None, reason=f"no Redis Cluster here: {cluster_tools()}")


async def _live_calls(serve: Serve, count: int) -> list[str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body = await api("/api/calls", serve)
        live = [c for c in body.get("calls", []) if c["phase"] in {"SPEAKING", "LISTENING", "THINKING"}]
        if status == 200 and len(live) == count:
            return sorted(str(c["call_id"]) for c in live)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{count} calls never showed up live")


async def test_a_shards_primary_killed_mid_call_loses_no_call_and_no_record(tmp_path: Path) -> None:
    reports = tmp_path / "calls.jsonl"
    with RedisClusterLab() as cluster:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port, http_port = free_port_block(2), free_port()  # a SIP port per worker
            env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
            proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously below)
                [sys.executable, "-m", "bridge", "serve", "--workers", "2", "--sip-port", str(sip_port),
                 "--realtime-url", emulator.base_url, "--redis-url", cluster.url, "--http-port", str(http_port),
                 "--report-file", str(reports)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            serve = Serve(proc, sip_port, http_port, reports)
            client = connect(cluster.url)
            try:
                await wait_healthy(serve)
                play = caller_wav(tmp_path / "c.wav")
                phones = [asyncio.create_task(softphone(serve, "1000", play, seconds=14.0)) for _ in range(2)]
                calls = await _live_calls(serve, 2)
                primary = cluster.primary_of(keys.call(calls[0]))
                await asyncio.to_thread(cluster.kill, primary)  # mid-call
                killed = time.monotonic()

                async def progress_written() -> float:  # the writer's ticks reach the promoted replica again
                    while True:
                        try:
                            before = await client.hget(keys.call(calls[0]), "last_activity")
                            await asyncio.sleep(1.5)
                            if await client.hget(keys.call(calls[0]), "last_activity") != before:
                                return time.monotonic() - killed
                        except Exception:
                            await asyncio.sleep(0.2)

                resumed = await asyncio.wait_for(progress_written(), 30)
                assert cluster.primary_of(keys.call(calls[0])) != primary  # its replica took over
                for phone in await asyncio.gather(*phones):
                    assert phone["answered"] and phone["hangup_by"] == "local", phone  # the caller's own timer
                for call_id in calls:
                    deadline = time.monotonic() + 15
                    while (state := await client.hgetall(keys.call(call_id))).get("phase") != "ENDED":
                        assert time.monotonic() < deadline, state
                        await asyncio.sleep(0.2)
                    assert state["ended_by"] == "caller" and state["end_reason"] != "worker died", state
                    last = await client.xrevrange(keys.call_events(call_id), count=1)
                    assert last and last[0][1]["kind"] == "ended", last
                lines = {r["call_id"]: r for r in read_reports(reports)}
                assert set(calls) <= set(lines)
                assert resumed < 20, resumed  # node timeout 1 s, the election, the writer's retry (cap 5 s)
            finally:
                await client.aclose()
                proc.terminate()
                proc.wait(15)
            assert proc.returncode == 0
