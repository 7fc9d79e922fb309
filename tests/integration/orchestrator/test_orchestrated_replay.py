"""``callbridge replay`` of the orchestrated call script (``call_scripts/orchestrated_order``): directly in every
dialect, and as a real SIP call (pjsua2 softphone -> ``callbridge serve`` -> emulator) whose worker asks the
replay's own orchestrator, an aiohttp server serving the script's answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "call_scripts" / "orchestrated_order"


def _runs(report_dir: Path) -> dict[str, dict[str, object]]:
    data = json.loads((report_dir / "report.json").read_text())
    (script,) = data["scripts"]
    assert script["failures"] == [], script["failures"]
    return dict(script["runs"])


def test_the_orchestrated_script_replays_directly_in_beta_ga_and_live(tmp_path: Path) -> None:
    rc = main([str(SCRIPT), "--dialects", "beta,ga,live", "--report", str(tmp_path), "--json"])
    runs = _runs(tmp_path)
    assert rc == 0 and set(runs) == {"beta", "ga", "live"}
    for dialect, run in runs.items():
        report = run["report"]
        assert isinstance(report, dict) and report["dialect"] == dialect
        assert [d["action"] for d in report["decisions"]] == ["say", "nothing", "transfer"]


def test_the_orchestrated_script_replays_over_sip_against_the_replays_orchestrator(tmp_path: Path) -> None:
    rc = main([str(SCRIPT), "--via", "sip", "--dialects", "ga", "--report", str(tmp_path), "--json"])
    runs = _runs(tmp_path)
    assert rc == 0
    run = runs["ga"]
    assert run["via"] == "sip" and run["runner_failures"] == []
    report = run["report"]
    assert isinstance(report, dict)
    # the worker really asked the replay's orchestrator: its decisions, the filler past timeout_ms, the transfer
    assert [d["action"] for d in report["decisions"]] == ["say", "nothing", "transfer"]
    assert report["decisions"][2]["ms"] >= 2000
    assert report["agent_transcript"] == [
        "Your order 4471 ships today.",
        "One moment, please.",
        "Let me put you through.",
    ]
    assert report["end_reason"] == "transferred" and run["ended_by"] == "transfer"
    assert run["agent_spans"], "the softphone heard the agent over RTP"
