"""``callbridge replay call_scripts/echo --dialects beta,ga,live``: the echo set through every dialect. On GPT-Live the
bridge pauses the agent over a voice it judges, as on beta and GA, and keeps the sound from the model meanwhile (the
model stops itself at any voice it hears): a cough is no barge-in there either, and true barge-ins still cut."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

ECHO = Path(__file__).resolve().parents[3] / "call_scripts" / "echo"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run's report.json, by script (and its exit status under ``_rc``)."""
    out = tmp_path_factory.mktemp("echo-live")
    rc = main([str(ECHO), "--dialects", "beta,ga,live", "--report", str(out)])
    scripts: dict[str, Any] = {s["script"]: s for s in json.loads((out / "report.json").read_text())["scripts"]}
    return {**scripts, "_rc": rc}


@pytest.mark.parametrize("name", ["quiet", "loud_noisy", "faint_short", "barge_in", "barge_in_loud", "cough"])
def test_the_echo_script_passes_through_live(report: dict[str, Any], name: str) -> None:
    script = report[name]
    assert script["status"] in {"same", "by_design"}, (script["failures"], script["unexpected"])
    assert script["runs"]["live"]["ok"], script["runs"]["live"]["checks"]


def test_live_the_cough_is_no_barge_in_and_the_answer_is_heard_whole(report: dict[str, Any]) -> None:
    live = report["cough"]["runs"]["live"]["report"]
    assert live["barge_ins"] == 0 and "CANCELLING" not in live["phases"]
    echo = live["echo"]  # the agent's own echo may be rejected too; the cough is paused, then resumed
    assert (echo.get("paused"), echo.get("resumed"), echo.get("taken")) == (1, 1, None), echo
    assert "Nine to five on Saturdays." in live["agent_transcript"]
    # declared by the script: the model never heard the cough (withheld while the paused agent was judged)
    assert any("never hears the cough" in d for d in report["cough"]["by_design"])


def test_live_the_echo_is_not_cleared_by_design(report: dict[str, Any]) -> None:
    """Live has no input buffer: what beta clears of the echo (InputCleared), Live's model hears tempered."""
    script = report["barge_in"]
    assert not any("InputCleared" in u for u in script["unexpected"])
    assert any("no input buffer" in d for d in script["by_design"])


def test_live_a_barge_in_under_a_loud_echo_cuts_the_agent_as_soon_as_on_beta(report: dict[str, Any]) -> None:
    """-10 dB of echo: tempering may attenuate the caller's first syllables as possible echo, so the bridge's own
    voice detection would hear them late; the frames the guard passes whole get the window judged at once."""
    script = report["barge_in_loud"]
    cuts = {
        name: [t["barge_in_cut_ms"] for t in run["timing"]["turns"] if t["barge_in_cut_ms"] is not None]
        for name, run in script["runs"].items()
    }
    assert len(cuts["live"]) == 1 and cuts["live"][0] <= 300.0, cuts
    assert script["runs"]["live"]["report"]["echo"].get("paused") == 1


def test_the_whole_echo_set_passes_through_beta_ga_and_live(report: dict[str, Any]) -> None:
    assert report["_rc"] == 0
    assert {name: s["status"] for name, s in report.items() if name != "_rc"} == dict.fromkeys(
        ["barge_in", "barge_in_loud", "cough", "faint_short", "loud_noisy", "quiet"], "by_design"
    )
