"""A call over TCP from a caller whose Contact names no transport (SIPp's uac with ``-t t1``): the worker's answer
carries ``;transport=TCP`` in its Contact, so that the caller's in-dialog requests, and the worker's, stay on TCP. A
UDP call's Contact names no transport, as before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _serve_start import ROOT, Started, clean_env, port_block
from _sipp import SIPP

from bridge.devkit.ports import free_port
from bridge.emulator import EmulatorServer

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian: sip-tester)")


async def answer_contact(target: str, work: Path, transport: str) -> str:
    """SIPp's built-in uac over ``transport`` ("u1", "t1"); the Contact of the 200 OK it received."""
    assert SIPP is not None
    messages = work / f"messages-{transport}.log"
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sn", "uac", "-m", "1", "-t", transport, "-d", "500", "-s", "1000", "-i", "127.0.0.1",
        "-p", str(free_port()), "-mp", str(free_port()), "-timeout", "30", "-timeout_error", "-nostdin",
        "-trace_msg", "-message_file", str(messages), target,
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode(errors="replace")
    assert proc.returncode == 0, out[-2000:]
    answer = messages.read_text(errors="replace").split("SIP/2.0 200 OK", 1)[1]
    return next(line.strip() for line in answer.splitlines() if line.lower().startswith("contact:"))


async def test_a_tcp_callers_answer_has_a_tcp_contact(tmp_path: Path) -> None:
    work = tmp_path / "sipp"
    work.mkdir()
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        sip_port, http_port = port_block(1), free_port()
        args = [
            "--workers", "1", "--sip-port", str(sip_port), "--realtime-url", emulator.base_url,
            "--http-port", str(http_port), "--dialplans", str(ROOT / "dialplans"),
        ]  # fmt: skip
        env = clean_env(OPENAI_API_KEY="sk-test", XDG_STATE_HOME=str(tmp_path / "state"))
        serve = Started(tmp_path, "serve", args, env, ROOT)
        try:
            await serve.ready("127.0.0.1", http_port, workers=1)
            over_tcp = await answer_contact(f"127.0.0.1:{sip_port}", work, "t1")
            over_udp = await answer_contact(f"127.0.0.1:{sip_port}", work, "u1")
        finally:
            assert serve.stop() == 0, serve.stderr()
    assert over_tcp.endswith(f"127.0.0.1:{sip_port};transport=TCP>"), over_tcp
    assert "transport=" not in over_udp.lower(), over_udp
