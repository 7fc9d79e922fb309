"""One ``callbridge serve`` (a worker, the emulator as its model, no Redis) with its HTTP port, started from a
settings file that ``callbridge reload`` and ``callbridge users unlock`` read too; optionally with a low open-file
limit for its process (soft and hard, so it cannot raise it). ``/healthz``'s detail as by default: for a token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    http_port: int
    config: Path
    log: Path
    metrics_url: str = ""  # with http_metrics_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    async def cli(self, *args: str) -> tuple[int, str]:
        """``python -m bridge ARGS --config <this node's settings>``: its exit status and output."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", *args, "--config", str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(errors="replace")


def _fd_limit(limit: int | None) -> Callable[[], None] | None:
    if limit is None:
        return None

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return set_limit


@contextlib.asynccontextmanager
async def serve_node(
    tmp: Path, settings: Mapping[str, Any], env: Mapping[str, str], fd_limit: int | None = None
) -> AsyncIterator[Node]:
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        sip_port, http_port = free_port(), free_port()
        config = tmp / "settings.yaml"
        config.write_text(
            json.dumps(
                {
                    "control_socket": str(tmp / "serve.ctl"),
                    "sip_port": sip_port,
                    "http_port": http_port,
                    "dialplans": str(ROOT / "dialplans"),
                    "realtime_url": emulator.base_url,
                    **settings,
                }
            )
        )  # fmt: skip  (JSON is YAML)
        full_env = {k: v for k, v in os.environ.items() if k != "CALLBRIDGE_HTTP_HEALTH_DETAIL"} | dict(env)
        full_env.pop("OPENAI_API_KEY", None)
        log = tmp / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously below)
                [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--config", str(config)],
                env=full_env, stdout=out, stderr=out, preexec_fn=_fd_limit(fd_limit),
            )  # fmt: skip
        node = Node(proc, http_port, config, log)
        try:
            await _until_ready(node)
            yield node
        finally:
            stop_process(proc, grace_s=30.0)


async def _until_ready(node: Node, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert node.proc.poll() is None, node.log.read_text()[-3000:]
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{node.url}/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError("serve not ready:\n" + node.log.read_text()[-3000:])
