"""``replay --via sip`` keeps every port it listens on inside ``CALLBRIDGE_PORT_RANGE`` (the suite's workers, and
hosts with a firewall, give it one): the workers' SIP and RTP, the emulator, the orchestrator server, Redis and
the softphone's own SIP and RTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

import psutil
import pytest

from bridge.devkit.ports import PORT_RANGE_ENV, port_range

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _bound_ports(root: psutil.Process) -> set[int]:
    """The loopback ports the process tree listens on (TCP) or has bound (UDP, no peer)."""
    found: set[int] = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in conns:
            listening = conn.status == psutil.CONN_LISTEN or (conn.status == psutil.CONN_NONE and not conn.raddr)
            if listening and conn.laddr:
                found.add(int(conn.laddr.port))
    return found


async def test_replay_via_sip_listens_only_in_the_port_range(tmp_path: Path) -> None:
    span = port_range() or (31000, 31999)
    env = {**os.environ, PORT_RANGE_ENV: f"{span[0]}-{span[1]}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "replay", str(REPO / "call_scripts" / "transfer"), "--via", "sip",
        "--dialects", "beta", "--report", str(tmp_path), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(REPO),
    )  # fmt: skip
    root = psutil.Process(proc.pid)
    seen: set[int] = set()
    waiter = asyncio.ensure_future(proc.communicate())
    while not waiter.done():
        with contextlib.suppress(psutil.NoSuchProcess):
            seen |= _bound_ports(root)
        await asyncio.wait([waiter], timeout=0.1)
    _out, err = waiter.result()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    [script] = json.loads((tmp_path / "report.json").read_text())["scripts"]
    assert script["failures"] == [], script  # the transfer reached its agent on the port the replay gave it
    assert len(seen) >= 5, seen  # workers' SIP and RTP, emulator, orchestrators, the caller's and the agent's phones
    outside = sorted(port for port in seen if not span[0] <= port <= span[1])
    assert outside == [], f"listened outside {span}: {outside}"
