"""A node without Redis exports no ``callbridge_redis_up`` (the metric's help says it is absent then), so
``CallbridgeRedisUnreachable`` (``max by (instance) (callbridge_redis_up) == 0``) cannot page for it: a real
``callbridge serve`` (one worker, the emulator, no ``redis_url``), its /metrics read once its node checks have run
(``callbridge_ready`` there)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "metrics-without-redis-token"

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_a_node_without_redis_exports_no_redis_up(tmp_path: Path) -> None:
    env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("OPENAI_API_KEY", None)
    env.pop("CALLBRIDGE_REDIS_URL", None)
    http_port = free_port()
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        with (tmp_path / "serve.log").open("w") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously in finally)
                [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(free_port()),
                 "--realtime-url", emulator.base_url, "--http-port", str(http_port),
                 "--dialplans", str(ROOT / "dialplans"), "--report-file", str(tmp_path / "calls.jsonl")],
                env=env, stdout=out, stderr=out, text=True,
            )  # fmt: skip
        try:
            text = await checked_metrics(f"http://127.0.0.1:{http_port}/metrics", proc, tmp_path / "serve.log")
        finally:
            stop_process(proc)
    assert re.search(r"^callbridge_ready 1\.0$", text, re.M), text[-2000:]
    assert not [line for line in text.splitlines() if line.startswith("callbridge_redis_up")]


async def checked_metrics(url: str, proc: subprocess.Popen[str], log: Path, within_s: float = 60.0) -> str:
    """/metrics once the node's checks found it ready (``callbridge_ready 1``)."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    text = await r.text()
                if re.search(r"^callbridge_ready 1\.0$", text, re.M):
                    return text
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the node never reported ready:\n{log.read_text()[-3000:]}")
