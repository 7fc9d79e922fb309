"""Each call's RTP port is drawn at random within its worker's range, among the pairs no live call holds: under a
churn of overlapping calls (SIPp, three at a time, in a range of six pairs: a call SIPp has ended may hold its pair
a moment longer while the worker tears it down) pjsua never meets a port in use ("RTP socket bind() ... Address
already in use"), and every call completes."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from _serve_start import ROOT, Started, clean_env, port_block
from _sipp import SIPP

from bridge.devkit.ports import free_port, free_port_block
from bridge.emulator import EmulatorServer

CALLS, AT_ONCE = 24, 3

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian: sip-tester)")


async def test_overlapping_calls_never_draw_a_port_in_use(tmp_path: Path) -> None:
    assert SIPP is not None
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        sip_port, http_port = port_block(1), free_port()
        rtp = free_port_block(16) // 2 * 2 + 2  # even, and 14 free ports from there
        args = [
            "--workers", "1", "--sip-port", str(sip_port), "--realtime-url", emulator.base_url,
            "--http-port", str(http_port), "--dialplans", str(ROOT / "dialplans"),
        ]  # fmt: skip
        env = clean_env(
            OPENAI_API_KEY="sk-test",
            XDG_STATE_HOME=str(tmp_path / "state"),
            CALLBRIDGE_RTP_PORT=str(rtp),
            CALLBRIDGE_RTP_PORTS_PER_WORKER="14",
        )
        serve = Started(tmp_path, "serve", args, env, ROOT)
        try:
            await serve.ready("127.0.0.1", http_port, workers=1)
            proc = await asyncio.create_subprocess_exec(
                SIPP, "-sn", "uac", "-m", str(CALLS), "-l", str(AT_ONCE), "-r", "5", "-d", "1500", "-s", "1000",
                "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port_block(4 * AT_ONCE + 4)),
                "-timeout", "90", "-timeout_error", "-nostdin", f"127.0.0.1:{sip_port}",
                cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out = (await asyncio.wait_for(proc.communicate(), 120))[0].decode(errors="replace")
        finally:
            assert serve.stop() == 0, serve.stderr()
    log = serve.stderr(500_000)
    assert proc.returncode == 0, out[-2000:]
    assert re.search(rf"Successful call\s*\|\s*\d+\s*\|\s*{CALLS}\b", out), out[-2000:]
    assert log.count("incoming call c-") == CALLS
    assert "Address already in use" not in log, [line for line in log.splitlines() if "already in use" in line]
