"""Call slots per source at a real `callbridge serve`, with real SIP peers on two loopback addresses.

* One source's calls are capped (``sip_calls_per_source``, 2 by default) while another source's call is answered:
  SIPp from 127.0.0.2 opens three calls at once, two are answered and the third gets ``486 Busy Here (too many calls
  from this source)``, counted in ``callbridge_sip_slot_refusals_total{reason="calls_per_source"}``; SIPp from
  127.0.0.3 is answered meanwhile. A source in ``sip_allowed_sources`` is exempt: three at once, three answered.
* An INVITE waiting for its digest challenge holds no slot: a burst of INVITEs without credentials all get ``401``
  (none pjsua's ``486`` of a full process), and a trunk that authenticates is answered right after.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from pathlib import Path

import pytest
from _serve_start import ROOT, Started, clean_env, port_block
from _sipp import SIPP, metrics_text, run_sipp, sample, sipp_work

from bridge.devkit.ports import free_port, free_port_block
from bridge.emulator import EmulatorServer

GREEDY, OTHER = "127.0.0.2", "127.0.0.3"
USER, PASSWORD = "trunk", "trunk-password-123456"

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian: sip-tester)")


async def sipp_calls(target: str, work: Path, host: str, calls: int, hold_ms: int) -> tuple[int, int, str]:
    """``calls`` calls of SIPp's built-in uac from ``host``, all at once, each held ``hold_ms``: (successful,
    failed, SIPp's output)."""
    assert SIPP is not None
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sn", "uac", "-m", str(calls), "-l", str(calls), "-r", "50", "-d", str(hold_ms), "-s", "1000",
        "-i", host, "-mi", host, "-p", str(free_port()), "-mp", str(free_port_block(4 * calls + 4)),
        "-timeout", "60", "-nostdin", "-trace_err", "-error_file", str(work / f"errors-{host}.log"), target,
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await asyncio.wait_for(proc.communicate(), 90))[0].decode(errors="replace")

    def counter(name: str) -> int:
        found = re.search(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", out)
        return int(found.group(1)) if found else -1

    errors = work / f"errors-{host}.log"
    return counter("Successful call"), counter("Failed call"), out + (errors.read_text() if errors.exists() else "")


async def started(tmp: Path, name: str, emulator: EmulatorServer, **settings: str) -> tuple[Started, int, int]:
    sip_port, http_port = port_block(1, (GREEDY, OTHER, "127.0.0.1")), free_port()
    args = [
        "--workers", "1", "--sip-port", str(sip_port), "--realtime-url", emulator.base_url,
        "--http-port", str(http_port), "--dialplans", str(ROOT / "dialplans"),
    ]  # fmt: skip
    env = clean_env(OPENAI_API_KEY="sk-test", XDG_STATE_HOME=str(tmp / "state"), **settings)
    serve = Started(tmp, name, args, env, ROOT)
    await serve.ready("127.0.0.1", http_port, workers=1)
    return serve, sip_port, http_port


async def test_one_sources_calls_are_capped_while_another_source_is_answered(tmp_path: Path) -> None:
    work = sipp_work(tmp_path)
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        serve, sip_port, http_port = await started(tmp_path, "open", emulator, CALLBRIDGE_SIP_ALLOW_ANY_SOURCE="true")
        try:
            target = f"127.0.0.1:{sip_port}"
            greedy = asyncio.create_task(sipp_calls(target, work, GREEDY, calls=3, hold_ms=6000))
            await asyncio.sleep(1.5)  # the greedy source's calls are up (SIPp starts all three at once)
            other = await sipp_calls(target, work, OTHER, calls=1, hold_ms=1000)
            capped = await greedy
            text = await metrics_text(http_port)
        finally:
            assert serve.stop() == 0, serve.stderr()
        log = serve.stderr(300_000)

        assert other[:2] == (1, 0), other[2][-2000:]  # the other source is answered while the first holds two
        assert capped[:2] == (2, 1), capped[2][-2000:]
        assert "486" in capped[2]
        assert f"({GREEDY}:" in log and "486 Busy Here (too many calls from this source)" in log, log[-3000:]
        assert sample(text, "callbridge_sip_slot_refusals_total", reason="calls_per_source") == 1
        assert sample(text, "callbridge_sip_rejected_total", code="486") == 1

        # a source in sip_allowed_sources is exempt
        serve, sip_port, _ = await started(tmp_path, "allowed", emulator, CALLBRIDGE_SIP_ALLOWED_SOURCES=f"{GREEDY}/32")
        try:
            trusted = await sipp_calls(f"127.0.0.1:{sip_port}", work, GREEDY, calls=3, hold_ms=3000)
        finally:
            assert serve.stop() == 0, serve.stderr()
        assert trusted[:2] == (3, 0), trusted[2][-2000:]


def invite_burst(port: int, count: int, within_s: float = 10.0) -> list[int]:
    """``count`` INVITEs without credentials sent at once from one UDP socket (no ACKs): their final statuses."""
    sdp = (
        "v=0\r\no=g 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    finals: dict[str, int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        for _ in range(count):
            call_id, tag, branch = secrets.token_hex(6), secrets.token_hex(3), "z9hG4bK" + secrets.token_hex(5)
            finals[call_id] = 0
            head = (
                f"INVITE sip:1000@127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport\r\nMax-Forwards: 70\r\n"
                f"From: <sip:guess@127.0.0.1>;tag={tag}\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
                f"CSeq: 1 INVITE\r\nContact: <sip:guess@127.0.0.1:{local}>\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(sdp)}\r\n\r\n"
            )
            sock.sendto((head + sdp).encode(), ("127.0.0.1", port))
        sock.settimeout(within_s)
        while not all(finals.values()):
            data = sock.recv(65535).decode(errors="replace")
            status = int(data.split(" ", 2)[1])
            call_id = next(
                (line.split(":", 1)[1].strip() for line in data.split("\r\n") if line.lower().startswith("call-id:")),
                "",
            )
            if status >= 200 and call_id in finals:
                finals[call_id] = status
    return list(finals.values())


async def test_a_challenged_invite_holds_no_slot(tmp_path: Path) -> None:
    work = sipp_work(tmp_path)
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        serve, sip_port, http_port = await started(
            tmp_path, "auth", emulator, CALLBRIDGE_SIP_AUTH_USERS=f'{{"{USER}": "{PASSWORD}"}}'
        )
        try:
            statuses = await asyncio.to_thread(invite_burst, sip_port, 40)
            failed = await run_sipp(
                "uac_digest_auth.xml", f"127.0.0.1:{sip_port}", work, "-au", USER, "-ap", PASSWORD, service="1000"
            )
            text = await metrics_text(http_port)
        finally:
            assert serve.stop() == 0, serve.stderr()
    assert statuses == [401] * 40, statuses  # no 486: none of them took one of pjsua's call slots
    assert not failed, failed  # the trunk's own challenge, then its authenticated call answered
    assert sample(text, "callbridge_sip_rejected_total", code="486") == 0
    assert sample(text, "callbridge_sip_rejected_total", code="401") == 41
