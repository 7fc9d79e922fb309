"""A 200 OK that is never ACKed (issue 62, item 1): NAT, a wrong Contact or Record-Route on the way back, and the
caller's ACK never reaches the worker, though its media may. RFC 3261 §13.3.1.4: the UAS retransmits the 2xx for
64*T1 (32 s) and then ends the dialog (pjsua sends a BYE, and the call ends with 408).

The call is the bridge's failure, not the caller's hang-up: its own end reason (``no ACK``), ended by the bridge
(``fault``), outcome ``failed``, counted in ``callbridge_sip_bounded_calls_total{reason="no ACK"}``. And it costs
as little of the model as the RFC allows: the caller's audio is not sent to the model before the ACK (the greeting,
asked for at the answer, is all the session does), and the session is closed as soon as the 2xx gives up.

The caller is SIPp (tests/integration/sip/scenarios/uac_no_ack.xml): PCMA media from a pcap after the 200 OK, no ACK,
and a 200 to the bridge's BYE.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _edge import Node, serve_node

from bridge import events as ev
from bridge.call.report import noted
from bridge.devkit.ports import free_port
from bridge.store.reportfile import read_reports

SIPP = shutil.which("sipp")
SCENARIO = Path(__file__).resolve().parents[1] / "sip" / "scenarios" / "uac_no_ack.xml"
PCAP = next((p for p in (Path("/usr/share/sip-tester/g711a.pcap"),) if p.exists()), None)
PROFILE = {
    "instructions": "Answer briefly.",
    "audio_format": "pcm16",
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
}
PLAN = {"name": "no-ack", "match": ["1000"], "dialect": "ga", "greeting": "Greet the caller.", "profile": PROFILE}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
    pytest.mark.skipif(PCAP is None, reason="the sip-tester pcaps are not installed"),
]


async def _no_ack_call(tmp: Path, node: Node) -> tuple[int, str]:
    """SIPp's run of the scenario: its exit status and its output."""
    assert SIPP is not None and PCAP is not None
    work = tmp / "sipp"
    (work / "pcap").mkdir(parents=True)
    shutil.copy(PCAP, work / "pcap" / "g711a.pcap")
    shutil.copy(SCENARIO, work / SCENARIO.name)
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(work / SCENARIO.name), "-m", "1", "-i", "127.0.0.1", "-mi", "127.0.0.1",
        "-p", str(free_port()), "-mp", str(free_port()), "-timeout", "90", "-timeout_error", "-nostdin",
        "-s", "1000", f"127.0.0.1:{node.sip_port}",
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


async def _metric(node: Node, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{node.http}/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _closed_within(node: Node, within_s: float) -> list[Any]:
    """The emulator's sessions once every one is closed (or as they are after ``within_s``)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if all(s.closed for s in node.emulator.sessions):
            break
        await asyncio.sleep(0.05)
    return list(node.emulator.sessions)


@pytest.mark.timeout(180)
async def test_a_200_never_acked_is_the_bridges_failure_and_costs_no_caller_audio(tmp_path: Path) -> None:
    async with serve_node(tmp_path / "node", [PLAN]) as node:
        rc, out = await _no_ack_call(tmp_path, node)
        lines = await _reports(node)
        sessions = await _closed_within(node, 3.0)
        bounded = await _metric(node, "callbridge_sip_bounded_calls_total", reason=ev.NO_ACK)
        failed = await _metric(node, "callbridge_calls_ended_total", dialplan="no-ack", outcome="failed")
        log = node.log.read_text(errors="replace")
    assert rc == 0, out[-3000:]  # the BYE came after the 2xx gave up, and was answered
    (report,) = lines
    assert report["answered"] is True, report
    assert (report["end_reason"], report["ended_by"]) == (ev.NO_ACK, "fault"), report
    ((_t, ended),) = noted(report, ev.CallEnded)
    assert ended.outcome is ev.CallOutcome.FAILED, ended
    assert bounded == 1 and failed == 1, (bounded, failed)
    assert f"{report['call_id']} ended by fault ({ev.NO_ACK})" in log, log[-3000:]
    # the model: one session, asked for the greeting only, never given the caller's audio, closed at once
    (session,) = sessions
    assert session.closed, "the model's session outlived the call"
    assert session.input_audio == b"", len(session.input_audio)
    assert session.types_received().count("response.create") <= 1, session.types_received()


async def _reports(node: Node, within_s: float = 60.0) -> list[dict[str, Any]]:
    """The report lines once the call has one (the 2xx gives up after 32 s)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if lines := read_reports(node.reports):
            return lines
        await asyncio.sleep(0.2)
    raise AssertionError(f"no report line:\n{node.log.read_text(errors='replace')[-3000:]}")
