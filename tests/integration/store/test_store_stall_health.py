"""``/healthz`` while a worker's Redis writes wait: a real ``serve`` (one worker) on a real redis-server that stops
answering (SIGSTOP) says ``redis: degraded`` naming the worker, ``callbridge health`` prints it, and both say ``up``
again once Redis answers and the writes have landed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, within_s: float = 40.0) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what}: not within {within_s} s")


def healthz(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:  # our own serve's loopback address
            return dict(json.load(answer))
    except urllib.error.HTTPError as refused:
        return dict(json.load(refused))
    except OSError:
        return {}


async def test_healthz_says_degraded_while_writes_wait_and_up_once_they_land(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}/healthz"
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REDIS_URL")}
        serve = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server, stopped in finally)
            [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(free_port()),
             "--http-port", str(http_port), "--realtime-url", emulator.base_url, "--redis-url", redis_server.url,
             "--dialplans", str(ROOT / "dialplans")],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.stderr").open("wb"),
        )  # fmt: skip
        assert redis_server.proc is not None
        stopped = False
        try:

            async def state() -> str:
                return str((await asyncio.to_thread(healthz, url)).get("redis", {}).get("state", ""))

            async def up() -> bool:
                return await state() == "up"

            await wait_for(up, "serve ready, redis up")
            redis_server.proc.send_signal(signal.SIGSTOP)
            stopped = True

            async def degraded() -> dict[str, Any] | None:
                body = await asyncio.to_thread(healthz, url)
                return body if body.get("redis", {}).get("state") == "degraded" else None

            body = await wait_for(degraded, "/healthz saying degraded")  # the worker's next heartbeat waits
            assert list(body["redis"]["writes_waiting_s"]) == ["0"], body["redis"]
            assert any("Redis writes waiting on worker(s) 0" in reason for reason in body["degraded"]), body
            health = subprocess.run(  # noqa: ASYNC221 (the CLI, once)
                [sys.executable, "-m", "bridge", "health", "--http-port", str(http_port), "--json"],
                env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert any("Redis writes waiting" in d for d in json.loads(health.stdout)["degraded"]), health.stdout
            redis_server.proc.send_signal(signal.SIGCONT)
            stopped = False
            await wait_for(up, "/healthz saying up again")
        finally:
            if stopped:
                redis_server.proc.send_signal(signal.SIGCONT)
            stop_process(serve, 20)
    log = (tmp_path / "serve.stderr").read_text(errors="replace")
    assert "is back after" in log, log[-2000:]
