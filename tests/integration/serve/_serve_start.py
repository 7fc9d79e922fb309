"""Starting `callbridge serve` as a deployment would, and waiting until it is ready: its /healthz answers 200 with
every worker ready (and the front alive, with one); a serve that exits first fails with its stderr. Plus one raw
INVITE, to see who a started node refuses."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bridge.config import (
    FILE_SUFFIX,
    SUPERVISOR_READONLY_TOKEN_ENV,
    SUPERVISOR_TOKEN_ENV,
    Settings,
    variables,
)
from bridge.devkit.ports import free_port_block

ROOT = Path(__file__).resolve().parents[3]
# the settings' own variables (and the secrets'): a test's serve takes its settings from what the test gives it only
SETTING_VARIABLES = {v for name in Settings.model_fields for v in variables(name)} | {
    "OPENAI_API_KEY",
    "REDIS_URL",
    SUPERVISOR_TOKEN_ENV,
    SUPERVISOR_READONLY_TOKEN_ENV,
}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any setting in it, this checkout importable, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k.removesuffix(FILE_SUFFIX) not in SETTING_VARIABLES}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CALLBRIDGE_HTTP_HEALTH_DETAIL"] = "open"  # ready() waits on the workers /healthz lists
    return {**env, **extra}


def port_block(count: int, hosts: Sequence[str] = ("127.0.0.1",)) -> int:
    """``count`` consecutive ports free for UDP and TCP on every one of ``hosts``."""
    for _ in range(50):
        base = free_port_block(count)
        if all(_free(host, base + i) for host in hosts for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports on {', '.join(hosts)}")


def _free(host: str, port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((host, port))
            t.bind((host, port))
        return True
    except OSError:
        return False


class Started:
    """One `callbridge serve` process, its stderr in a file."""

    def __init__(self, tmp: Path, name: str, args: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        self.name = name
        self.stderr_path = tmp / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", *args],
            env=dict(env), cwd=cwd, stdout=subprocess.DEVNULL, stderr=self._stderr,
        )  # fmt: skip

    def stderr(self, chars: int = 4000) -> str:
        return self.stderr_path.read_text(errors="replace")[-chars:]

    async def ready(self, host: str, http_port: int, *, workers: int, within_s: float = 90.0) -> dict[str, Any]:
        """/healthz once it answers 200 with ``workers`` ready workers (and an alive front, if it has one)."""
        url = f"http://{host}:{http_port}/healthz"
        deadline = time.monotonic() + within_s
        last: Any = None
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"serve {self.name} exited with {self.proc.returncode}:\n{self.stderr()}")
                try:
                    async with http.get(url) as r:
                        last = (r.status, await r.json())
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    last = repr(exc)
                if isinstance(last, tuple) and last[0] == 200:
                    health: dict[str, Any] = last[1]
                    front = health.get("front")
                    if len(health["workers"]) == workers and (front is None or front["alive"]):
                        return health
                await asyncio.sleep(0.2)
        raise AssertionError(f"serve {self.name} not ready within {within_s:.0f} s (last: {last!r}):\n{self.stderr()}")

    def stop(self, within_s: float = 30.0) -> int:
        """SIGTERM, SIGKILL after ``within_s``; the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(within_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


def invite_status(host: str, port: int, local_host: str = "127.0.0.1", timeout_s: float = 10.0) -> int | None:
    """The final status of one INVITE without a body (a late offer) sent over UDP from ``local_host``; None if none
    came. Its answer is not acknowledged: only refusals are asked for."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_host, 0))
        local = sock.getsockname()[1]
        tag, call_id, branch = secrets.token_hex(4), secrets.token_hex(8), "z9hG4bK" + secrets.token_hex(6)
        request = (
            f"INVITE sip:2000@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local_host}:{local};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{local_host}>;tag={tag}\r\n"
            f"To: <sip:2000@{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:probe@{local_host}:{local}>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        sock.sendto(request, (host, port))
        sock.settimeout(timeout_s)
        try:
            while True:
                data, _ = sock.recvfrom(65535)
                if data.startswith(b"SIP/2.0 ") and (status := int(data.split(b" ", 2)[1])) >= 200:
                    return status
        except OSError:  # the timeout, or an ICMP refusal
            return None
