"""``callbridge bench calls`` with ``CALLBRIDGE_PORT_RANGE`` set (issue 62, item 23): every port its processes
listen on is in that range, the load callers' and loopback callees' own SIP and RTP ports
(``bridge/sip/loadcall.py``) too, not only the workers', Redis's, the emulators' and the sink's.

One load caller's 4 calls a path (the wheel's cap per process: its RTP block full), with ``--srtp`` (its callers
listen on TLS too) and the ceiling (its loopback callees): the bridge, srtp and ceiling paths. It checks where the
processes listened, and that every call of every run came up with the ports in the range (none "ended" at its
caller for want of an RTP pair: tests/integration/bridge/test_bench_calls_rtp_block.py), not the capacity.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _listening import Listening, outside, run_in_range, worker_range

from bench.calls.callers import CALLS_PER_PROCESS

# In the xdist group of the CPU-heavy tests (tests/conftest.py), with the other bench runs: they share bench's log file.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

ROOT = Path(__file__).resolve().parents[3]
SMALL_RUN = ("--seconds", "2", "--srtp", "--no-echo-off")  # at one step: the bridge, srtp and ceiling paths


def _role(command: str) -> str:
    """A bench subprocess's role (``--role caller|loopback``), "" for any other process."""
    words = command.split()
    return words[words.index("--role") + 1] if "--role" in words[:-1] else ""


def _sip_and_rtp(sockets: list[Listening]) -> tuple[set[int], set[int]]:
    """One pjsua process's UDP ports, as (SIP, RTP pairs): an even port whose odd neighbour it holds too is an RTP
    port (RTCP the odd one, RFC 3550 §11); what is left is its SIP port."""
    udp = {s.port for s in sockets if s.proto == "udp"}
    rtp = {p for p in udp if p % 2 == 0 and p + 1 in udp}
    return udp - rtp - {p + 1 for p in rtp}, rtp


@pytest.mark.timeout(300)  # about a minute on an idle machine (three paths, one step); 240 s on a loaded one
def test_bench_calls_listens_only_in_the_port_range_callers_and_callees_included() -> None:
    low, high = worker_range()
    done, sockets = run_in_range(["bench.calls", "--json", "--steps", str(CALLS_PER_PROCESS), *SMALL_RUN], ROOT, 240)
    stdout = done.stdout
    assert done.returncode == 0, (stdout[-2000:], done.stderr[-2000:])
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    steps = {s["path"]: s for s in lines if s.get("kind") == "step"}  # the last run of each path decides
    assert set(steps) == {"bridge", "srtp", "ceiling"}, lines
    # Every call of every run (a failed step's first run too) was up through its window: their media sockets were
    # open to be seen, and each caller's RTP block held its 4 calls' pairs.
    for step in (s for s in lines if s.get("kind") == "step"):
        assert step["answered"] == CALLS_PER_PROCESS and step["unanswered_why"] == {}, step
    # Nothing any of its processes listened on was outside the range ...
    assert not outside(sockets.seen, low, high), "\n".join(
        f"{s.proto} {s.port} {s.command}" for s in outside(sockets.seen, low, high)
    )
    # ... and the sampler saw the load callers' and the loopback callees' own: each one's SIP port and RTP pair.
    by_process: dict[int, list[Listening]] = {}  # by pid: a step's re-run starts a caller of the same command line
    for s in sockets.seen:
        by_process.setdefault(s.pid, []).append(s)
    roles: dict[str, list[list[Listening]]] = {}
    for held in by_process.values():
        roles.setdefault(_role(held[0].command), []).append(held)
    # one load caller a path and the ceiling's one loopback app, each run of a step (a failed one is run again)
    assert len(roles.get("caller", [])) >= 3 and len(roles.get("loopback", [])) >= 1, sockets.seen
    for role in ("caller", "loopback"):
        found = [_sip_and_rtp(held) for held in roles[role]]
        assert all(len(sip) == 1 for sip, _ in found), (role, roles[role])  # each process: its one SIP port
        assert any(rtp for _, rtp in found), (role, roles[role])  # and its call's RTP pair (a step that passed)
    # the srtp path's caller listened on TLS too (its sips: calls), in the range as checked above
    assert any(any(s.proto == "tcp" for s in held) for held in roles["caller"]), roles["caller"]
    assert {"bench.calls", "bridge.serve.worker"} <= {s.command.split()[2] for s in sockets.seen}, sockets.seen
