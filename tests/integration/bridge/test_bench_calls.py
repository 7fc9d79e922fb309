"""``callbridge bench calls`` end to end at its smallest step: both paths, real processes, real calls.

It checks the harness, not the machine's capacity (that is measured, not asserted): the load callers boot, report
ready, place their calls together when told, every call is up when the window opens, the bridge path's appends
reach the emulator through the window, and the ceiling path's loopback apps answer and are measured. With
``--srtp``, the srtp path's calls (``sips:`` over TLS, SDES keys offered) are all up and all run SRTP. One run
(``--ceiling stream,duplex,wss``) has the ceiling loop each call back and stream it to a sink (``stream``), a path
of its own carry the sink's audio back to the callers (``duplex``), and one more do so with a worker's work over
TLS (``wss``: the equal-work floor, the C echo guard on every call and the model's audio at the emulator's pace,
its socket through the native TLS engine both ways).

The run at the smallest step has ``CALLBRIDGE_PORT_RANGE`` set (issue 62, item 23): every port its processes listen
on is in that range, the load callers' and loopback callees' own SIP and RTP ports (``bridge/sip/loadcall.py``)
too, not only the workers', Redis's, the emulators' and the sink's. One load caller's 4 calls a path (the wheel's
cap per process: its RTP block full), with ``--srtp`` (its callers listen on TLS too) and the two ceilings (their
loopback callees, the sinks). That test checks where the processes listened, and that every call of every run came
up with the ports in the range (none "ended" at its caller for want of an RTP pair:
tests/integration/bridge/test_bench_calls_rtp_block.py), not the capacity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _listening import Listening, outside, run_in_range, worker_range

from bench.calls.callers import CALLS_PER_PROCESS

# In the xdist group of the CPU-heavy tests (tests/conftest.py), with the other bench runs: they share bench's log file.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

ROOT = Path(__file__).resolve().parents[3]
CALLS = CALLS_PER_PROCESS  # one load caller a path, its RTP block full
WINDOW_S = 3.0
PATHS = {"bridge", "srtp", "ceiling", "duplex", "wss"}  # the run's: "ceiling" is the stream kind


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@dataclass(frozen=True)
class Run:
    lines: list[dict[str, Any]]  # its JSON lines: steps, then the summary
    seen: set[Listening]  # every socket its process tree listened on
    low: int  # the port range it was given
    high: int


@pytest.fixture(scope="module")
def smallest_step() -> Run:
    """One run at the smallest step with ``--srtp`` and ``--ceiling stream,duplex,wss``, in :func:`worker_range`:
    the bridge path, with SRTP, the stream ceiling and both floors (the plain bridge path is
    both the SRTP path's comparison and the first test's, run once for every test)."""
    low, high = worker_range()
    args = ["bench.calls", "--json", "--steps", str(CALLS), "--seconds", str(WINDOW_S), "--srtp", "--count-calls"]
    args.append("--no-echo-off")  # the guard-off path is the bridge path with one setting: time, not a check
    done, sockets = run_in_range([*args, "--ceiling", "stream,duplex,wss"], ROOT, 420)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    return Run(_lines(done.stdout), sockets.seen, low, high)


@pytest.mark.timeout(480)  # its bench run (six paths) may take up to 420 s on a loaded machine
def test_the_smallest_step_runs_both_paths_with_every_call_up(smallest_step: Run) -> None:
    lines = smallest_step.lines
    steps = {s["path"]: s for s in lines if s.get("kind") == "step"}  # the last run of each path decides
    # srtp, the ceiling's stream kind, duplex and wss: the next tests'
    assert set(steps) == PATHS, lines
    expected = round(WINDOW_S * 50) * CALLS
    for path, step in steps.items():
        if path == "duplex":  # what its callers hear is the sink's: the duplex test's
            continue
        assert step["calls"] == CALLS and step["processes"] == 1, (path, step)
        # Every call was up at its caller when the window opened, for its whole length.
        assert step["answered"] == CALLS and step["unanswered_why"] == {}, (path, step)
        assert step["window_s"] == pytest.approx(WINDOW_S, abs=0.01)
        assert step["expected_frames"] == expected
        assert step["cpu_per_call_pct"] > 0, (path, step)  # the system under test was measured in the window
        # Late frames are the capacity's business (measured, not asserted), but a call that carried no media
        # would show up as a whole window of late frames: far fewer than that.
        assert step["out_late_or_missing"] < expected // 4, (path, step)
    bridge = steps["bridge"]
    # The caller's audio reached the model through the window: 50 appends a second and call, at most a few lost.
    assert bridge["in_missing"] is not None and bridge["in_missing"] < expected // 10, bridge
    assert bridge["latency_samples"]["inbound"] > 0 and bridge["inbound_ms"]["p50"] is not None
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["cores"] >= 1
    assert summary["bridge_max_calls"] in (0, CALLS) and summary["ceiling_max_calls"] in (0, CALLS)


@pytest.mark.timeout(480)  # as above (the run is the first test's)
def test_the_workers_count_their_loops_calls_per_beat_while_the_models_audio_arrives(smallest_step: Run) -> None:
    lines = smallest_step.lines
    bridge = [s for s in lines if s.get("kind") == "step" and s["path"] == "bridge"][-1]
    deltas = bridge["calls_per_beat"]["deltas"]  # the greeting arrives through the whole window
    assert deltas["beats"] > 0 and deltas["python"] > 0 and deltas["builtin"] > 0, bridge["calls_per_beat"]
    summary = lines[-1]
    assert summary["calls_step"] == CALLS and summary["calls_per_beat"] == bridge["calls_per_beat"]
    ceilings = [s for s in lines if s.get("kind") == "step" and s["path"] in ("ceiling", "duplex")]
    assert ceilings and all(s["calls_per_beat"] is None for s in ceilings)  # the ceilings have no loop of ours


def test_srtp_runs_every_call_of_its_path_as_sips_over_tls_with_srtp(smallest_step: Run) -> None:
    lines = smallest_step.lines
    steps = {s["path"]: s for s in lines if s.get("kind") == "step"}
    assert {"bridge", "srtp"} <= set(steps), lines
    srtp = steps["srtp"]
    # Every call was up for the whole window (the workers answered the sips: offers, none refused with 488), and
    # each ran RTP/SAVP at its caller: a call with plain RTP would be an error of the step and not answered.
    assert srtp["answered"] == CALLS and srtp["unanswered_why"] == {}, srtp
    assert srtp["errors"] == [], srtp
    assert srtp["cpu_per_call_pct"] > 0 and srtp["out_late_or_missing"] < round(WINDOW_S * 50) * CALLS // 4, srtp
    assert steps["bridge"]["answered"] == CALLS, steps["bridge"]  # the plain path beside it: UDP, plain RTP
    assert lines[-1]["kind"] == "summary" and "srtp_max_calls" in lines[-1], lines[-1]


@pytest.mark.timeout(480)  # as above (the run is the first test's)
def test_the_stream_ceiling_sends_every_calls_audio_to_its_sink(smallest_step: Run) -> None:
    lines = smallest_step.lines
    step = [s for s in lines if s.get("path") == "ceiling"][-1]  # the last run decides
    # Every call up for the whole window, looped back, and its audio streamed to the sink: fewer bytes than 90 % of
    # the window's appends would be an error of the step.
    assert step["ceiling"] == "stream" and step["answered"] == CALLS and step["errors"] == [], step
    assert step["cpu_per_call_pct"] > 0 and step["out_late_or_missing"] < round(WINDOW_S * 50) * CALLS // 4, step
    assert lines[-1]["kind"] == "summary" and lines[-1]["ceiling"] == "stream,duplex,wss", lines[-1]


@pytest.mark.timeout(480)  # as above (the run is the first test's)
def test_the_duplex_ceiling_streams_every_call_up_and_every_caller_hears_the_sinks_tone(smallest_step: Run) -> None:
    lines = smallest_step.lines
    step = [s for s in lines if s.get("path") == "duplex"][-1]  # the last run decides
    # Every call up for the whole window; its audio reached the sink (fewer bytes than 90 % of the window's appends
    # would be an error), and its caller recorded the sink's 440 Hz deltas, played from C, with no dead air between
    # the first and the last it heard (else an error naming the call).
    assert step["ceiling"] == "duplex", step
    assert step["answered"] == CALLS and step["errors"] == [], step
    assert step["cpu_per_call_pct"] > 0, step


@pytest.mark.timeout(480)  # as above (the run is the first test's)
def test_the_equal_work_floor_over_tls_runs_the_echo_guard_on_every_call_and_plays_the_models_audio(
    smallest_step: Run,
) -> None:
    lines = smallest_step.lines
    step = [s for s in lines if s.get("path") == "wss"][-1]  # the last run decides
    # as the duplex floor (every call up, its audio at the sink through TLS, the sink's tone heard without dead air,
    # opened by the C downlink), none of the model's audio dropped, and the C echo guard of every call tempered each
    # frame it sent: 50 a second and call over the window at least, with its path searches (full or coarse) under way
    assert step["ceiling"] == "wss" and step["answered"] == CALLS and step["errors"] == [], step
    tempered, full, coarse = step["echo_guard"]
    assert tempered >= CALLS * 50 * WINDOW_S and full + coarse > 0, step
    assert lines[-1]["kind"] == "summary" and lines[-1]["ceiling"] == "stream,duplex,wss", lines[-1]


def _role(command: str) -> str:
    """A bench subprocess's role (``--role caller|loopback``), "" for any other process."""
    words = command.split()
    return words[words.index("--role") + 1] if "--role" in words[:-1] else ""


def _sip_and_rtp(sockets: list[Listening]) -> tuple[set[int], set[int]]:
    """One pjsua process's UDP ports, as (SIP, RTP pairs): an even port whose odd neighbour it holds too is an RTP
    port (RTCP the odd one, RFC 3550 §11); what is left is its SIP port (and any pair seen half open)."""
    udp = {s.port for s in sockets if s.proto == "udp"}
    rtp = {p for p in udp if p % 2 == 0 and p + 1 in udp}
    return udp - rtp - {p + 1 for p in rtp}, rtp


@pytest.mark.timeout(480)  # as above (the run is the first test's)
def test_bench_calls_listens_only_in_the_port_range_callers_and_callees_included(smallest_step: Run) -> None:
    lines, seen, low, high = smallest_step.lines, smallest_step.seen, smallest_step.low, smallest_step.high
    steps = {s["path"]: s for s in lines if s.get("kind") == "step"}  # the last run of each path decides
    assert set(steps) == PATHS, lines
    # Every call of every run (a failed step's first run too) was up through its window: their media sockets were
    # open to be seen, and each caller's RTP block held its 4 calls' pairs.
    for step in (s for s in lines if s.get("kind") == "step"):
        assert step["answered"] == CALLS_PER_PROCESS and step["unanswered_why"] == {}, step
    # Nothing any of its processes listened on was outside the range ...
    assert not outside(seen, low, high), "\n".join(f"{s.proto} {s.port} {s.command}" for s in outside(seen, low, high))
    # ... and the sampler saw the load callers' and the loopback callees' own: each one's SIP port and RTP pair.
    by_process: dict[int, list[Listening]] = {}  # by pid: a step's re-run starts a caller of the same command line
    for s in seen:
        by_process.setdefault(s.pid, []).append(s)
    roles: dict[str, list[list[Listening]]] = {}
    for held in by_process.values():
        roles.setdefault(_role(held[0].command), []).append(held)
    # one load caller a path and each ceiling's one loopback app, each run of a step (a failed one is run again)
    assert len(roles.get("caller", [])) >= len(PATHS) and len(roles.get("loopback", [])) >= 3, seen
    for role in ("caller", "loopback"):
        found = [_sip_and_rtp(held) for held in roles[role]]
        # each process: its SIP port (a sample may also catch an RTP pair half open, its RTCP port bound after the
        # RTP one or closed before it, so a process can show more than one unpaired port)
        assert all(sip for sip, _ in found), (role, roles[role])
        assert any(rtp for _, rtp in found), (role, roles[role])  # and its call's RTP pair (a step that passed)
    # the srtp path's caller listened on TLS too (its sips: calls), in the range as checked above
    assert any(any(s.proto == "tcp" for s in held) for held in roles["caller"]), roles["caller"]
    assert {"bench.calls", "bridge.serve.worker"} <= {s.command.split()[2] for s in seen}, seen
