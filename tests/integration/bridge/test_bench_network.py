"""``callbridge bench network`` at its smallest: one lossy, jittery call on the anchor and on the G.711 path,
real processes (softphones, a bridge worker, the emulator) through the impairment relay.

It checks the harness, not the audio's quality (that is measured, not asserted): every call is answered through
the relay's SIP forwarding, its media ran through the relay both ways and was impaired there, both ends recorded
the other's speech where PESQ could find it (a score, whatever it is), and the summary names the goals. Run with
``CALLBRIDGE_PORT_RANGE`` set (issue 62, item 23): every port its processes listen on (the softphones' SIP and RTP,
the relay's, the worker's, the emulator's) is in that range.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _listening import outside, run_in_range, worker_range

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(400)
def test_one_lossy_call_per_path_is_scored_both_ways() -> None:
    pytest.importorskip("pesq", reason="the pesq package (the test extra) measures the bench's audio")
    low, high = worker_range()
    done, sockets = run_in_range(["bench.network", "--loss", "3", "--paths", "anchor,g711", "--json"], ROOT, 360)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert not outside(sockets.seen, low, high), outside(sockets.seen, low, high)
    listeners = {s.command.split()[2] for s in sockets.seen if s.command.count(" ") >= 2}  # python -m MODULE
    assert {"bench.network", "bridge.serve.worker", "bridge.devkit.softphone"} <= listeners, sockets.seen
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    rows = {row["path"]: row for row in lines if row.get("kind") == "row"}
    assert set(rows) == {"anchor", "g711"}, lines
    for path, row in rows.items():
        assert row["errors"] == [] and row["loss_pct"] == 3.0, row
        for way in ("up", "down"):
            line = row["line"][way]
            assert line["packets"] > 200 and 0 < line["lost"] < line["packets"] // 5, (path, way, line)
            assert line["delay_ms_mean"] > 20.0, (path, way, line)  # 20 ms + 0..40 ms of jitter
        # Both recordings held the other side's speech: PESQ found it and scored it (its value is the bench's).
        assert isinstance(row["caller_pesq"], float) and isinstance(row["model_pesq"], float), row
        assert row["turns"] is not None and row["turns"] >= 1, row  # the caller's turn was heard
    summary = lines[-1]
    assert summary["kind"] == "summary" and set(summary["goals"]) == {"anchor", "g711"}
    assert summary["goals"]["g711"]["heard_at_3pct"]["goal"] == 3.5
