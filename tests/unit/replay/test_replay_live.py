"""Replays on GPT-Live beside the Realtime dialects: a script's plan runs there as the capabilities allow, and the
protocols' differences are declared (compare.BY_DESIGN), reported apart from what differs."""

from __future__ import annotations

from pathlib import Path

from bridge.replay.compare import BY_DESIGN, by_design, verdict
from bridge.replay.direct import run_direct
from bridge.replay.script import load_script

SCRIPTS = Path(__file__).resolve().parents[3] / "call_scripts"


def test_the_declared_differences_apply_only_between_dialects_whose_capabilities_differ() -> None:
    assert by_design("beta", "ga") == [] and by_design("ga", "ga") == []
    assert by_design("ga", "live") == list(BY_DESIGN) == by_design("live", "beta")


def test_a_script_runs_on_live_and_differs_from_ga_only_by_design() -> None:
    script = load_script(SCRIPTS / "question_answer")
    plan = script.plan("live")
    assert plan.profile.model == "gpt-live-1"  # the script's Realtime turn detection is left to the service
    runs = {"ga": run_direct(script, "ga"), "live": run_direct(script, "live")}
    assert all(c.ok for run in runs.values() for c in run.checks), [c for r in runs.values() for c in r.checks]
    result = verdict(script.name, runs, script.model.compare)
    assert result.verdict == "same" and result.differences == []
    assert len(result.by_design) == len(BY_DESIGN) and all(r.startswith("GA/live: ") for r in result.by_design)
    # the events themselves do differ: only the declaration keeps them out of the comparison
    assert runs["ga"].tokens != runs["live"].tokens
    assert runs["ga"].report["caller_transcript"] == runs["live"].report["caller_transcript"]
