"""Forged Redis entries of the rollout are data, never a crash: a real ``callbridge serve`` (one worker, its own
redis-server, the emulator) with ``rollout_key`` set and a flag set with ``callbridge rollout set``; then someone with
the Redis password adds an audit entry of the plan whose ``sig`` is no ASCII text, another whose fields are not
UTF-8, and an outcome record whose ``sig`` is no ASCII text. A worker started again (the old one killed) comes up,
the plan's calls are answered on the signed flag, ``rollout show`` and ``GET /api/rollout`` answer, and the kill
switch is set and lifted. The forged record is counted as refused."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from _edge import TOKEN, Node, api, serve_node
from test_rollout_flag_sealed import KEY, PLAN, one_call

from bridge.serve import rollout_cli
from bridge.store import keys

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def workers(node: Node) -> list[dict[str, object]]:
    """``/healthz``'s workers (answered 503 while one is not ready)."""
    async with aiohttp.ClientSession() as http, http.get(f"{node.http}/healthz") as r:
        return list((await r.json())["workers"])


async def restarted(node: Node, old_pid: int, within_s: float = 30.0) -> int:
    """Wait for the worker that replaces ``old_pid`` to be ready; its pid."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        [worker] = await workers(node)
        if worker["pid"] not in (None, old_pid) and worker["ready"] and worker["sip_port"]:
            return int(str(worker["pid"]))
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no worker came back after {old_pid}:\n{node.log.read_text()[-3000:]}")


REJECTED = re.compile(
    r'^callbridge_rollout_records_rejected_total\{dialplan="edge-rollout",reason="bad signature"\} (\S+)$', re.M
)


async def rejected(node: Node, within_s: float = 10.0) -> float:
    """The plan's records refused for their signature, once any are counted (the worker counts after a call)."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{node.http}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                found = REJECTED.search(await r.text())
            if found or time.monotonic() > deadline:
                return float(found.group(1)) if found else 0.0
            await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_forged_signatures_in_redis_are_refused_and_calls_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "rollout_key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("CALLBRIDGE_ROLLOUT_KEY_FILE", str(key_file))
    monkeypatch.delenv("CALLBRIDGE_ROLLOUT_KEY", raising=False)
    async with serve_node(tmp_path / "node", [PLAN]) as node:
        common = ["--dialplans", str(tmp_path / "node" / "dialplans"), "--redis-url", node.redis.url]
        argv = ["set", "edge-rollout", "--weights", "safe=100,new=0", "--reason", "GA only", *common]
        assert await asyncio.to_thread(rollout_cli.main, argv) == 0
        assert (await one_call(node))["variant"] == "safe"

        client = aioredis.from_url(node.redis.url)  # bytes: the forger writes what it likes
        try:
            [(_, signed)] = await client.xrange(keys.ROLLOUT_AUDIT) or []
            assert signed is not None
            flag = json.loads(signed[b"flag"])
            forged = {**signed, b"flag": json.dumps({**flag, "weights": '{"new": 100, "safe": 0}'}).encode()}
            await client.xadd(keys.ROLLOUT_AUDIT, {**forged, b"sig": "é".encode() * 64})
            await client.xadd(keys.ROLLOUT_AUDIT, {**forged, b"who": b"\xff\xfe", b"sig": b"\xc3" * 64})
            record = {"call_id": "forged", "variant": "new", "ended_at": time.time(), "sig": "ü" * 64}
            await client.xadd(keys.rollout_records("edge-rollout"), {"r": json.dumps(record)})
        finally:
            await client.aclose()

        old = int(str((await workers(node))[0]["pid"]))
        os.kill(old, signal.SIGKILL)  # a worker started afresh reads every entry above
        await restarted(node, old)
        reports = [await one_call(node), await one_call(node)]
        assert [r["variant"] for r in reports] == ["safe", "safe"]  # the signed flag, not the forged entries'

        show = ["show", "edge-rollout", "--json", *common]
        assert await asyncio.to_thread(rollout_cli.main, show) == 0
        listed = await api(node, "/api/rollout")
        assert "edge-rollout" in json.dumps(listed)
        for lever in ("--kill", "--unkill"):
            change = ["set", "edge-rollout", lever, "--reason", f"drill {lever}", *common]
            assert await asyncio.to_thread(rollout_cli.main, change) == 0
        assert (await one_call(node))["variant"] == "safe"
        assert await rejected(node) >= 1  # the forged record, left out of the plan's tests and counted
        assert "Traceback" not in node.log.read_text()
