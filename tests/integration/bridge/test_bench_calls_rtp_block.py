"""``bench calls``' load caller with its RTP ports in ``CALLBRIDGE_PORT_RANGE`` (a block of the range, as
``RolePorts.pick`` gives it) gets all of the wheel's 4 calls up, wherever in the block its ports were first drawn.

The failure this keeps away (a call of the first step "ended" at its caller, 3 of 4 worker reports): the endpoint
draws its account's first RTP port at random within the block, and pjsua takes each call's pair from there up to
the block's end, no lower (``pjsua_media.c`` wraps to the account's own port). Drawn at the block's last start (one
draw in seven), only 3 pairs were left for 4 calls, and the 4th ``makeCall`` failed ("Address already in use"), so
the INVITE was never sent. The caller here is the bench's own role (``python -m bench.calls --role caller``) with
that first draw forced, calling a loopback callee (``--role loopback``), both on ports of the range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.calls.callers import CALLS_PER_PROCESS, SETUP_S, RolePorts
from bridge.devkit import ports
from bridge.devkit.ports import PORT_RANGE_ENV, RTP_PORTS_PER_WORKER, free_port_block, port_range

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

ROOT = Path(__file__).resolve().parents[3]
PLAY = ROOT / "bridge" / "assets" / "caller_hours.wav"
WINDOW_S = 1.0
BOOT_TIMEOUT_S = 60.0

# The caller role, its account's first RTP draw forced to the block's last start (bridge/sip/endpoint.py draws it
# with random_rtp_start); every later draw is the real one. It says where that first draw was on stderr.
CALLER = """
import json, sys
import bridge.sip.endpoint as endpoint
real, draws = endpoint.random_rtp_start, []
def last_start_first(first, span, host="", avoid=0):
    draws.append(first + 2 * (span // 2 - 1))
    if len(draws) == 1:
        print(json.dumps({"first_draw": draws[0], "block": first}), file=sys.stderr, flush=True)
        return draws[0]
    return real(first, span, host, avoid)
endpoint.random_rtp_start = last_start_first
from bench.calls import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def ranged(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """The range the roles' ports come from: this pytest worker's own (tests/conftest.py), or one of our own."""
    span = port_range()
    if span is None:
        monkeypatch.setenv(PORT_RANGE_ENV, "42000-42999")
        monkeypatch.setattr(ports, "_cursor", None)
        span = (42000, 42999)
    return span


def _role(*args: str, code: str = "", stdin: bool = False) -> subprocess.Popen[str]:
    """A bench role's process (``--role caller`` is fed its window on stdin; its stderr is read, the callee's not)."""
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "bench.calls", *args]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stdin else subprocess.DEVNULL,
        text=True,
    )


def _first_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The role's first JSON line: it booted (readline returns as soon as it is written)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("{"), (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    found: dict[str, Any] = json.loads(line)
    return found


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(120)
def test_a_load_callers_four_calls_are_all_up_though_its_first_rtp_draw_is_the_blocks_last(
    ranged: tuple[int, int],
) -> None:
    low, high = ranged
    callee_ports, caller_ports = RolePorts.pick(free_port_block(1)), RolePorts.pick()
    callee = _role("--role", "loopback", *callee_ports.args())
    try:
        sip = _first_line(callee)["loopback"]
        uris = ",".join([f"sip:4000@127.0.0.1:{sip}"] * CALLS_PER_PROCESS)
        args = ["--role", "caller", "--uris", uris, "--play", str(PLAY), *caller_ports.args()]
        caller = _role(*args, code=CALLER, stdin=True)
        try:
            assert _first_line(caller) == {"ready": True}
            start_at = time.monotonic() + SETUP_S  # the window, as the bench gives it (CLOCK_MONOTONIC)
            go = json.dumps({"start_at": start_at, "end_at": start_at + WINDOW_S})
            stdout, stderr = caller.communicate(go + "\n", timeout=BOOT_TIMEOUT_S)
        finally:
            _stop(caller)
    finally:
        _stop(callee)
    assert caller.returncode == 0, stderr[-2000:]
    # The scenario is the one that failed: the first draw at the last start of the caller's block.
    drawn = json.loads(next(line for line in stderr.splitlines() if line.startswith('{"first_draw"')))
    assert drawn == {"block": caller_ports.rtp_port, "first_draw": caller_ports.rtp_port + RTP_PORTS_PER_WORKER - 4}
    assert low <= caller_ports.rtp_port and caller_ports.rtp_port + RTP_PORTS_PER_WORKER + 1 <= high
    rows = json.loads(next(line for line in stdout.splitlines() if line.startswith('{"calls"')))["calls"]
    assert len(rows) == CALLS_PER_PROCESS, rows
    for row in rows:
        # Up through the whole window (not "ended" before it), answered by the callee, its audio both ways.
        assert row["answered"] and row["why"] == "" and row["status"] == 200, (row, stderr[-2000:])
        assert row["tx_pkt"] > 0 and row["rx_pkt"] > 0, row
