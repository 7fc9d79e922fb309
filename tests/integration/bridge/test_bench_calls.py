"""``callbridge bench calls`` end to end at its smallest step: both paths, real processes, real calls.

It checks the harness, not the machine's capacity (that is measured, not asserted): the load callers boot, report
ready, place their calls together when told, every call is up when the window opens, the bridge path's appends
reach the emulator through the window, and the ceiling path's loopback apps answer and are measured. With
``--srtp``, the srtp path's calls (``sips:`` over TLS, SDES keys offered) are all up and all run SRTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# In the xdist group of the CPU-heavy tests (tests/conftest.py), with the other bench run: they share bench's log file.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

ROOT = Path(__file__).resolve().parents[3]
CALLS = 4
WINDOW_S = 3.0


def _bench(*args: str) -> list[dict[str, Any]]:
    """``bench calls --json`` at the smallest step: its JSON lines (steps, then the summary)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.calls", "--json", "--steps", str(CALLS), "--seconds", str(WINDOW_S), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def smallest_step() -> list[dict[str, Any]]:
    """One run at the smallest step with ``--srtp``: the bridge path, with the echo guard off, with SRTP, and the
    ceiling (the plain bridge path is both the SRTP path's comparison and the first test's, run once for both)."""
    return _bench("--srtp")


@pytest.mark.timeout(300)  # its bench run (four paths) may take up to 240 s on a loaded machine
def test_the_smallest_step_runs_both_paths_with_every_call_up(smallest_step: list[dict[str, Any]]) -> None:
    lines = smallest_step
    steps = {s["path"]: s for s in lines if s.get("kind") == "step"}  # the last run of each path decides
    # echo_off: the guard's cost beside it; srtp: the next test's
    assert set(steps) == {"bridge", "echo_off", "srtp", "ceiling"}, lines
    expected = round(WINDOW_S * 50) * CALLS
    for path, step in steps.items():
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


@pytest.mark.timeout(300)  # as above (the run is the first test's)
def test_srtp_runs_every_call_of_its_path_as_sips_over_tls_with_srtp(smallest_step: list[dict[str, Any]]) -> None:
    lines = smallest_step
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


@pytest.mark.timeout(300)  # as above; about 15 s on an idle machine (one path, one step)
def test_the_stream_ceiling_sends_every_calls_audio_to_its_sink() -> None:
    lines = _bench("--only", "ceiling", "--ceiling", "stream")
    step = [s for s in lines if s.get("kind") == "step"][-1]  # the last run decides
    # Every call up for the whole window, looped back, and its audio streamed to the sink: fewer bytes than 90 % of
    # the window's appends would be an error of the step.
    assert step["path"] == "ceiling" and step["answered"] == CALLS and step["errors"] == [], step
    assert step["cpu_per_call_pct"] > 0 and step["out_late_or_missing"] < round(WINDOW_S * 50) * CALLS // 4, step
    assert lines[-1]["kind"] == "summary" and lines[-1]["ceiling"] == "stream", lines[-1]


@pytest.mark.timeout(300)  # as above; about 15 s on an idle machine (one path, one step)
def test_the_duplex_ceiling_streams_every_call_up_and_every_caller_hears_the_sinks_tone() -> None:
    lines = _bench("--only", "ceiling", "--ceiling", "duplex")
    step = [s for s in lines if s.get("kind") == "step"][-1]  # the last run decides
    # Every call up for the whole window; its audio reached the sink (fewer bytes than 90 % of the window's appends
    # would be an error), and its caller recorded the sink's 440 Hz deltas, played from C, with no dead air between
    # the first and the last it heard (else an error naming the call).
    assert step["path"] == "ceiling" and step["ceiling"] == "duplex", step
    assert step["answered"] == CALLS and step["errors"] == [], step
    assert step["cpu_per_call_pct"] > 0, step
    assert lines[-1]["kind"] == "summary" and lines[-1]["ceiling"] == "duplex", lines[-1]
