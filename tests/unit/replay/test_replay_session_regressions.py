"""Regressions for call-session bugs the replay found."""

from __future__ import annotations

from pathlib import Path

from bridge.replay.direct import run_direct
from bridge.replay.script import load_script

SCRIPTS = Path(__file__).resolve().parents[3] / "call_scripts"


def test_end_call_is_reported_as_the_agent_ending_the_call() -> None:
    run = run_direct(load_script(SCRIPTS / "tool_end_call"), "ga")
    assert run.ended_by == "agent"
    assert run.report["end_reason"] == "agent ended the call"
