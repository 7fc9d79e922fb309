"""The orchestrated call script in the direct runner: the replay's scripted orchestrator answers in order, checks
each request against its expectation, and a request or an answer out of place fails the run, naming the field."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml

from bridge.orchestrator.models import TurnRequest
from bridge.replay.direct import run_direct
from bridge.replay.orchestrator import ScriptedOrchestrator
from bridge.replay.script import ScriptedAnswer, load_script

SCRIPTS = Path(__file__).resolve().parents[3] / "call_scripts"
SCRIPT = SCRIPTS / "orchestrated_order"


@pytest.mark.parametrize("dialect", ["beta", "ga", "live"])
def test_the_orchestrated_script_passes_in_every_dialect(dialect: str) -> None:
    run = run_direct(load_script(SCRIPT), dialect)
    assert run.ok, [c for c in run.checks if not c.ok]
    report = run.report
    assert [d.get("action", d.get("error")) for d in report["decisions"]] == ["say", "nothing", "transfer"]
    assert report["decisions"][2]["ms"] == pytest.approx(2000, abs=1)  # the scripted delay, in virtual time
    kinds = [k for _, k, _ in report["timeline"]]
    assert kinds.count("orchestrator_filler") == 1 and kinds.index("orchestrator_filler") < kinds.index("transfer")
    assert report["end_reason"] == "transferred"


def _edited(tmp_path: Path, edit: dict[int, dict[str, object] | None]) -> Path:
    target = tmp_path / "orchestrated_order"
    shutil.copytree(SCRIPT, target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    answers = data["orchestrator"]["answers"]
    for i, change in sorted(edit.items(), reverse=True):
        if change is None:
            del answers[i]
        else:
            answers[i].update(change)
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    return target


def test_a_request_about_another_turn_fails_the_run_naming_the_answer(tmp_path: Path) -> None:
    run = run_direct(load_script(_edited(tmp_path, {0: {"expect_turn": "Where is my parcel?"}})), "ga")
    assert not run.ok
    assert run.runner_failures == [
        "orchestrator.answers[0].expect_turn: expected 'Where is my parcel?', got 'Where is my order?'"
    ]


def test_a_request_past_the_last_answer_and_an_answer_never_asked_for_fail_the_run(tmp_path: Path) -> None:
    short = run_direct(load_script(_edited(tmp_path / "short", {2: None})), "ga")
    assert any(
        f.startswith("orchestrator: request 3 (turn 'Can I talk to a person about it?')") for f in short.runner_failures
    )
    extra = _edited(tmp_path / "long", {})
    data = yaml.safe_load((extra / "script.yaml").read_text())
    data["orchestrator"]["answers"].append({"action": "nothing"})
    (extra / "script.yaml").write_text(yaml.safe_dump(data))
    long = run_direct(load_script(extra), "ga")
    assert long.runner_failures == ["orchestrator.answers[3]: never asked for (1 answer(s) left unused)"]
    assert not short.ok and not long.ok


def test_the_scripted_orchestrator_answers_through_the_wire_form() -> None:
    orchestrator = ScriptedOrchestrator([ScriptedAnswer(action="say", text="Hello.", expect_event="dtmf")])
    request = TurnRequest(call_id="c", caller="1", called="2", dialplan="d", variant="ga", dialect="ga", turn="hi",
                          transcript=[], sequence=1)  # fmt: skip
    decision = asyncio.run(orchestrator.ask("http://x/turn", request, 1.0))
    assert (decision.action, decision.text) == ("say", "Hello.")
    assert orchestrator.finish() == ["orchestrator.answers[0].expect_event: expected 'dtmf', got 'turn'"]


def test_a_late_answer_has_its_filler_then_soft_hold_never_silence(tmp_path: Path) -> None:
    run = run_direct(load_script(_edited(tmp_path, {2: {"delay_ms": 5000}})), "ga")  # give_up_ms is 6000
    assert run.ok, [c for c in run.checks if not c.ok]
    timeline = run.report["timeline"]
    late = next(t for t, k, _ in timeline if k == "orchestrator_filler")
    decided = next(t for t, k, s in timeline if k == "orchestrator_decision" and t > late)
    holds = [(t, s) for t, k, s in timeline if k == "wait_hold"]
    assert [s for t, s in holds if late <= t <= decided] == ["soft hold on", "soft hold off"]
    gaps, at = [], late
    for a, b in sorted(run.agent_spans):
        if late <= a < decided:
            gaps.append(a - at)
        at = max(at, b) if a < decided else at
    assert gaps and max(gaps) <= 1500, (late, decided, run.agent_spans)  # the filler, then the hold: no dead air
