"""``--via sip``: scripts as real phone calls (pjsua2 softphone -> ``callbridge serve`` -> emulator), both dialects.

The bridge is started by the replay itself (a worker pool with one copy of each script's dialplan per dialect, the
emulator, a private redis-server), as ``callbridge demo`` does. The two scripts cover what only real SIP exercises:
a barge-in timed against agent audio that really went over RTP, and a caller's BYE in the middle of an answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"


def test_two_scripts_replay_through_a_running_bridge_in_both_dialects(tmp_path: Path) -> None:
    # --models dialect: each dialect's own model, so that the barge-in lands in the same answer item in both (the
    # support rollout's safe gpt-realtime-2.1 would say a preamble first on GA)
    rc = main(
        [str(SCRIPTS / "barge_in"), str(SCRIPTS / "hangup_mid_response"), "--via", "sip", "--dialects", "beta,ga",
         "--models", "dialect", "--report", str(tmp_path), "--json"]
    )  # fmt: skip
    data = json.loads((tmp_path / "report.json").read_text())
    failures = {s["script"]: s["failures"] for s in data["scripts"] if s["failures"]}
    assert failures == {}
    assert rc == 0
    assert data["meta"]["via"] == "sip"
    for script in data["scripts"]:
        assert set(script["runs"]) == {"beta", "ga"}
        assert script["verdict"] == "same", (script["script"], script["reasons"])
        for dialect, run in script["runs"].items():
            assert run["via"] == "sip"
            report = run["report"]
            assert report["dialect"] == dialect  # the worker really ran this dialect
            assert report["call_id"] and run["agent_spans"], "the softphone heard the agent over RTP"
    runs = {s["script"]: s["runs"] for s in data["scripts"]}
    for run in runs["barge_in"].values():
        [truncate] = run["report"]["truncates"]
        assert 1300 <= truncate["audio_end_ms"] <= 2200  # ~1.5 s into the answer, over real RTP
    for run in runs["hangup_mid_response"].values():
        assert run["ended_by"] == "caller" and run["report"]["end_reason"].startswith("caller hung up")
        assert run["report"]["phases"][-2:] == ["SPEAKING", "ENDED"]  # the BYE came mid-answer


def test_a_setting_for_one_model_slows_that_models_calls_alone(tmp_path: Path) -> None:
    """``--emulator-set MODEL:NAME=VALUE`` through real calls: the started emulator tells the dialects' sessions
    apart by their model (GA on the support rollout's safe gpt-realtime-2.1, beta on gpt-4o-realtime-preview)."""
    slow = "gpt-realtime-2.1:response_latency_ms=8150"  # 2 s of service time later at the emulator's speed 4
    rc = main(
        [str(SCRIPTS / "question_answer"), "--via", "sip", "--dialects", "beta,ga", "--emulator-set", slow,
         "--report", str(tmp_path), "--json"]
    )  # fmt: skip
    data = json.loads((tmp_path / "report.json").read_text())
    [script] = data["scripts"]
    assert rc == 1 and script["status"] == "failed", script
    assert [f for f in script["failures"] if not f.startswith("GA: ")] == []  # beta holds its bounds
    runs = script["runs"]
    assert runs["ga"]["config"]["emulator"]["response_latency_ms"] == 8150
    assert "response_latency_ms" not in runs["beta"]["config"]["emulator"]
    # the greeting (no soft hold plays before it): about 2 s later on GA, over real RTP
    greetings = {d: run["timing"]["greeting_ms"] for d, run in runs.items()}
    assert greetings["ga"] - greetings["beta"] >= 1500, greetings
    assert any(u.startswith("timing: greeting beta") for u in script["unexpected"]), script
