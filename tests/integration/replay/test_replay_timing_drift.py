"""Timing below the budget is shown: against a baseline, every caller-felt figure that moved further than the
baseline tolerance (150 ms) is listed, said within or beyond its budget; the budget (500 ms on the greeting and the
median reply gap) alone turns the gate red. The two are separate settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SPEED = 4  # the emulator's pace: its response_latency_ms is scaled by it


def _slower(ms: int) -> tuple[str, str]:
    return ("--emulator-set", f"response_latency_ms={150 + SPEED * ms}")  # every dialect this much later


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("drift")
    suite = tmp / "suite"
    shutil.copytree(REPO / "call_scripts" / "question_answer", suite / "question_answer")
    assert main([str(suite), "--report", str(tmp / "base")]) == 0
    return suite, tmp / "base"


def _run(base: tuple[Path, Path], out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    suite, before = base
    code = main([str(suite), "--report", str(out), "--baseline", str(before), *extra])
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return code, data


def _delta(line: str) -> int:
    """The ms a listed figure moved (``(+460 ms; ...``): the emulator's audio comes in 20 ms frames."""
    return int(line.split("(+")[1].split(" ms")[0])


def _timing(data: dict[str, Any]) -> list[str]:
    [script] = data["scripts"]
    return [s for s in script["since_baseline"] if "(+" in s and "tolerance" in s]


def test_450_ms_slower_everywhere_is_listed_within_the_budget(base: tuple[Path, Path], tmp_path: Path) -> None:
    code, data = _run(base, tmp_path / "c", *_slower(450))
    assert code == 0  # within every budget: green, but shown
    moved = _timing(data)
    for who in ("beta", "GA"):
        [greeting] = [m for m in moved if m.startswith(f"{who}: greeting ")]
        assert 440 <= _delta(greeting) <= 480 and "tolerance 150 ms, within the budget 500 ms)" in greeting, greeting
        [gap] = [m for m in moved if m.startswith(f"{who}: reply gap after turns[0] ")]
        assert 440 <= _delta(gap) <= 480, gap
        assert any(m.startswith(f"{who}: median reply gap ") and "within the budget 500 ms" in m for m in moved)
    assert data["meta"]["baseline"]["tolerance_ms"] == 150


def test_just_over_the_budget_is_red_and_under_the_tolerance_is_quiet(base: tuple[Path, Path], tmp_path: Path) -> None:
    code, data = _run(base, tmp_path / "over", *_slower(550))
    assert code == 1
    assert any("greeting" in m and "beyond the budget 500 ms" in m for m in _timing(data)), _timing(data)
    assert any("worse than the baseline" in r and "greeting" in r for r in data["meta"]["gate"]["red"])
    code, data = _run(base, tmp_path / "under", *_slower(100))
    assert code == 0 and _timing(data) == []  # 100 ms: within the tolerance, nothing listed


def test_the_tolerance_is_a_setting_of_its_own(base: tuple[Path, Path], tmp_path: Path) -> None:
    code, data = _run(base, tmp_path / "wide", *_slower(450), "--baseline-tolerance-ms", "500")
    assert code == 0 and _timing(data) == []
    code, data = _run(base, tmp_path / "fine", *_slower(100), "--baseline-tolerance-ms", "50")
    assert any("ms; tolerance 50 ms, within the budget 500 ms)" in m for m in _timing(data)), _timing(data)
    suite, before = base
    assert main([str(suite), "--baseline", str(before), "--baseline-tolerance-ms", "-1"]) == 2
