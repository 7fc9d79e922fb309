"""Ring abandons are quiet (issue 62, item 4): a caller who hangs up while the call rings cancels the worker's
opening of the model's session, wherever the CANCEL lands in it, and nothing is logged at ERROR.

The cause was the Realtime socket's opening (bridge/realtime/ws_fastpath.py ``connect``): cancelled inside the TCP
connect, after the socket's protocol had been made, the abort that follows set an exception on the handshake's
future that nobody awaited any more, and asyncio logged ``Future exception was never retrieved`` with a traceback
when it was collected. The first test cancels the opening at every loop step of it against the emulator (it failed
at steps 4 and 5 before the fix). The second is the carrier's view: eighty SIPp callers against a real ``serve`` on
the shipped GA plan (support: a rollout of two GA variants), each sending its CANCEL 5-20 ms after the INVITE
(tests/integration/sip/scenarios/uac_cancel_at_once.xml). Its window is one loop turn of each opening, so it caught
the fault in about one run of three before the fix; the first test catches it every time.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from _edge import serve_node

from bridge import events as ev
from bridge.devkit.ports import free_port
from bridge.emulator import EmulatorServer
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import get_dialect
from bridge.store.reportfile import read_reports

SIPP = shutil.which("sipp")
SCENARIO = Path(__file__).resolve().parents[1] / "sip" / "scenarios" / "uac_cancel_at_once.xml"
CALLS = 80
STEPS = 30  # loop steps into the opening at which it is cancelled: past its end (the socket is open by then)
NOT_RETRIEVED = "never retrieved"
ROOT = Path(__file__).resolve().parents[3]
# the shipped support line: a rollout of two GA variants, the agent greeting first (dialplans/support.yaml)
PLAN = yaml.safe_load((ROOT / "dialplans" / "support.yaml").read_text())

pytestmark = [pytest.mark.integration]


async def test_an_opening_cancelled_at_any_step_leaves_nothing_unretrieved(emulator: EmulatorServer) -> None:
    loop = asyncio.get_running_loop()
    reported: list[tuple[int, str]] = []
    step = 0
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append((step, str(context.get("message")))))
    try:
        for step in range(STEPS):
            client = RealtimeClient(get_dialect("ga"), emulator.base_url, "sk-test")
            opening = asyncio.ensure_future(client.connect())
            for _ in range(step):
                await asyncio.sleep(0)
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
            if not opening.cancelled() and opening.exception() is None:  # it had finished: a session to close
                await client.close()
            for _ in range(5):  # the abort's connection_lost runs on a later loop turn
                await asyncio.sleep(0)
            del client, opening
            gc.collect()  # a future with an unretrieved exception reports it when collected
    finally:
        loop.set_exception_handler(previous)
    assert reported == [], reported


@pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)")
@pytest.mark.xdist_group("cpu")  # eighty SIPp callers (tests/conftest.py)
@pytest.mark.timeout(180)
async def test_eighty_ring_abandons_on_a_ga_plan_log_no_error(tmp_path: Path) -> None:
    async with serve_node(tmp_path / "node", [PLAN]) as node:
        sipp = await _sipp_abandons(tmp_path, node.sip_port)
        lines = await _reports(node.reports, CALLS)
        log = node.log.read_text(errors="replace")
    assert sipp == "", sipp
    ends = [line["end_reason"] for line in lines]
    # a CANCEL that comes after the 200 OK changes nothing (RFC 3261 §9.2): that caller hangs up with BYE
    assert ends.count(ev.ABANDONED_WHILE_RINGING) >= CALLS // 2, ends
    assert all(line["ended_by"] == "caller" for line in lines), lines
    assert NOT_RETRIEVED not in log, _around(log, NOT_RETRIEVED)
    assert " ERROR " not in log, _around(log, " ERROR ")
    assert "Traceback" not in log, _around(log, "Traceback")


async def _sipp_abandons(tmp: Path, sip_port: int) -> str:
    """``CALLS`` callers at 10 a second, 3 at a time; SIPp's output if one failed, else "". A 100 Trying that lands
    during the scenario's random pause is no reason to abort the call (``-abortunexp`` off)."""
    assert SIPP is not None
    work = tmp / "sipp"
    work.mkdir()
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(SCENARIO), "-m", str(CALLS), "-r", "10", "-l", "3", "-i", "127.0.0.1",
        "-p", str(free_port()), "-mp", str(free_port()), "-timeout", "90", "-timeout_error", "-nostdin",
        "-default_behaviors", "all,-abortunexp", "-trace_err", "-error_file", str(work / "errors.log"),
        "-s", "1000", f"127.0.0.1:{sip_port}",
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode == 0:
        return ""
    errors = work / "errors.log"
    logged = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    return f"sipp rc={proc.returncode}\n{out.decode(errors='replace')[-2000:]}\n{logged}"


async def _reports(path: Path, count: int, within_s: float = 30.0) -> list[dict[str, Any]]:
    """The report file's lines once it has ``count`` of them (a line is written as each call ends)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        if len(lines := read_reports(path)) >= count:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(read_reports(path))} report line(s), expected {count}")


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 1500) : at + 3000]
