"""SIPp against a started `callbridge serve` (``_serve_start.Started``), and what the tests read back: report lines,
/metrics samples, the worker's live set in Redis."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from _serve_start import ROOT

from bridge.devkit.ports import free_port
from bridge.store.calls import FLUSH_INTERVAL_S
from bridge.store.reportfile import read_reports

SCENARIOS = ROOT / "tests" / "integration" / "sip" / "scenarios"
SIPP = shutil.which("sipp")
PCAP_DIRS = [Path("/usr/share/sip-tester"), Path("/usr/share/doc/sip-tester/examples/pcap")]
PCAP_DIR = next((d for d in PCAP_DIRS if (d / "g711a.pcap").exists()), None)


def sipp_work(tmp: Path) -> Path:
    """SIPp's working directory, holding pcap/ (a scenario plays pcap/g711a.pcap relative to it)."""
    work = tmp / "sipp"
    (work / "pcap").mkdir(parents=True, exist_ok=True)
    if PCAP_DIR is not None:
        shutil.copy(PCAP_DIR / "g711a.pcap", work / "pcap" / "g711a.pcap")
    return work


async def run_sipp(
    scenario: str,
    target: str,
    work: Path,
    *extra: str,
    local_host: str = "127.0.0.1",
    media_host: str | None = None,
    service: str = "1000",
) -> str:
    """One call of ``scenarios/<scenario>`` from ``local_host`` (media from ``media_host``, default the same);
    SIPp's output if it failed (a response it did not expect, a timeout), else ""."""
    assert SIPP is not None
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCENARIOS / scenario, work / scenario)
    errors = work / f"{scenario}.{free_port()}.errors.log"
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(work / scenario), "-m", "1", "-i", local_host, "-mi", media_host or local_host,
        "-p", str(free_port()), "-mp", str(free_port()), "-timeout", "30", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(errors), "-s", service, *extra, target,
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode == 0:
        return ""
    logged = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    return f"sipp rc={proc.returncode}\n{out.decode(errors='replace')[-2000:]}\n{logged}"


async def metrics_text(http_port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/metrics") as r:
        return await r.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The summed value of the samples of ``name`` whose labels include ``labels`` (0 with none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_reports(path: Path, count: int, within_s: float = 20.0) -> list[dict[str, Any]]:
    """The report file's lines once it has ``count`` of them."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if len(lines := read_reports(path)) >= count:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(read_reports(path))} report line(s), expected {count}")


async def ended_state(client: aioredis.Redis, key: str) -> dict[str, str]:
    """A call's hash once the writer has flushed its end (phase ENDED), or as it is after a few flushes."""
    deadline = time.monotonic() + 5 * FLUSH_INTERVAL_S + 1.0
    state: dict[str, str] = await client.hgetall(key)
    while state.get("phase") != "ENDED" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        state = await client.hgetall(key)
    return state


async def left_live_set(client: aioredis.Redis, key: str) -> set[str]:
    """The worker's live set once its calls have left it (the writer flushes every FLUSH_INTERVAL_S), or as it is
    after a few flushes."""
    deadline = time.monotonic() + 5 * FLUSH_INTERVAL_S + 1.0
    live = await client.smembers(key)
    while live and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        live = await client.smembers(key)
    return set(live)
