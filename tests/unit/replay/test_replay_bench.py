"""``callbridge bench replay``: the whole set in both dialects, direct, as a multiple of real time. The figure is
measured here, never asserted: its goal is the bench's business."""

from __future__ import annotations

import json
import re

import pytest

from bench import replay


def test_bench_prints_the_multiple_of_real_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.main(["--repeat", "1"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"= ([0-9.]+)x real time \((meets|MISSES) the 50x goal\)", out)
    assert found and float(found.group(1)) > 0, out
    assert "idle_timeout" in out and "failed" not in out


def test_bench_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.main(["--repeat", "1", "--json", str(replay.DEFAULT_SCRIPTS / "question_answer")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["calls"] == 2 and data["x_real_time"] > 0 and data["per_script"][0]["verdict"] == "same"
    for dialect in data["dialects"]:  # the figures are reported, not judged here
        assert data["turn_gap_ms"][dialect]["n"] == 1 and data["turn_gap_ms"][dialect]["p50"] > 0
        slow = data["slow_tool"][dialect]
        assert slow["ok"] and slow["tool_latency_ms"] > 0 and slow["longest_silence_ms"] is not None
