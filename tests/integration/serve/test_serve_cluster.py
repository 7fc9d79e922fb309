"""``serve`` on a real Redis Cluster (six redis-server processes): two nodes (two ``serve`` processes, as two
machines would run them) with a call each, the primary of one call's shard killed mid-call. Its replica takes over,
no call is dropped (each caller hangs up on its own timer), each node sees both calls, the records complete (phase,
end, the stream's last entry, the report line) and the writes resume within the cluster's failover time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_serve_operable import TOKEN, Serve, api, caller_wav, softphone, wait_healthy

from bridge.devkit.ports import free_port
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


def _node(tmp_path: Path, name: str, realtime_url: str, redis_url: str) -> Serve:
    """One node: its own ``serve`` (one worker), state folder and report file, on the shared cluster."""
    sip_port, http_port, reports = free_port(), free_port(), tmp_path / f"{name}.jsonl"
    env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN, "XDG_STATE_HOME": str(tmp_path / name)}
    proc = subprocess.Popen(  # a long-lived server, stopped synchronously by the test
        [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
         "--realtime-url", realtime_url, "--redis-url", redis_url, "--http-port", str(http_port),
         "--report-file", str(reports)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return Serve(proc, sip_port, http_port, reports)


async def test_a_shards_primary_killed_mid_call_loses_no_call_and_no_record(tmp_path: Path) -> None:
    with RedisClusterLab() as cluster:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            nodes = [_node(tmp_path, name, emulator.base_url, cluster.url) for name in ("node-a", "node-b")]
            client = connect(cluster.url)
            try:
                for node in nodes:
                    await wait_healthy(node)
                play = caller_wav(tmp_path / "c.wav")
                phones = [asyncio.create_task(softphone(node, "1000", play, seconds=14.0)) for node in nodes]
                calls = await _live_calls(nodes[0], 2)
                assert await _live_calls(nodes[1], 2) == calls  # each node sees both nodes' calls in the cluster
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
                written = [{r["call_id"] for r in read_reports(node.reports)} for node in nodes]
                assert all(len(ids) == 1 for ids in written) and set.union(*written) == set(calls), written
                assert resumed < 20, resumed  # node timeout 1 s, the election, the writer's retry (cap 5 s)
            finally:
                await client.aclose()
                for node in nodes:
                    node.proc.terminate()
                for node in nodes:
                    node.proc.wait(15)
            assert [node.proc.returncode for node in nodes] == [0, 0]
