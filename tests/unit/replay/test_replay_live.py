"""Replays on GPT-Live beside the Realtime dialects: a script's plan runs there as the capabilities allow, and the
protocols' differences are declared (compare.BY_DESIGN), reported apart from what differs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bridge.replay.cli import main
from bridge.replay.compare import BY_DESIGN, DialectRun, _cuts, _list_diff, _spoken_alike, by_design, verdict
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
    assert len(result.by_design) == len(BY_DESIGN) and all(r.startswith("GA/Live: ") for r in result.by_design)
    # the events themselves do differ: only the declaration keeps them out of the comparison
    assert runs["ga"].tokens != runs["live"].tokens
    assert runs["ga"].report["caller_transcript"] == runs["live"].report["caller_transcript"]


def test_every_bundled_script_in_three_dialects_differs_only_by_design_or_as_its_script_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main([str(SCRIPTS), "--dialects", "beta,ga,live", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    scripts = {s["script"]: s for s in data["scripts"]}
    assert set(scripts) == {p.name for p in SCRIPTS.iterdir() if (p / "script.yaml").exists()}
    for name, s in scripts.items():
        assert list(s["runs"]) == ["beta", "ga", "live"], name
        assert s["failures"] == [], (name, s["failures"])
        # every difference is declared: by the protocols (BY_DESIGN, reported apart) or by the script itself
        if s["verdict"] == "differs":
            assert s["expected_comparison"] == "differs" and s["because"], (name, s["differences"])
            assert not any("live" in d for d in s["differences"]), (name, s["differences"])
        # each run against the first (beta): Live by every declared difference, reported apart; GA by nothing; and
        # either by its model's turn shape where one model says a preamble and beta's does not, or the reverse (a
        # script on the support rollout runs its safe variant, gpt-realtime-2.1, on GA)
        shape = [r.split(": ", 1)[0] for r in s["by_design"] if "the model's turn shape" in r]
        protocols = [r.split(": ", 1)[0] for r in s["by_design"] if "the model's turn shape" not in r]
        assert protocols == ["beta/Live"] * len(BY_DESIGN), name
        preambles = {d: run["preamble"] for d, run in s["runs"].items()}
        assert shape == [f"beta/{d}" for d in ("GA", "Live") if preambles[d.lower()] != preambles["beta"]], name
    assert [n for n, s in scripts.items() if s["verdict"] == "differs"] == ["idle_timeout"]


@pytest.mark.parametrize(
    ("name", "live_turns"),
    [
        # the agent's turn closes when the model stops itself after the barge-in: the answer after it is its own
        ("barge_in", ["Thank you for", "Of course. You can return any item within", "Yes, we ship to Canada."]),
        # the key the caller pressed closes the menu's turn
        ("dtmf_menu", ["For billing, press one.", "I heard you say: The caller pressed the key 2", "I am sorry"]),
        # the tool call closes the goodbye's turn: the backend's answer (the goodbye) is a new one
        ("tool_end_call", ["Thank you for", "Your order shipped", "Thank you for calling Acme. Goodbye!"]),
        # the lost session's turn closes with it, and the new session resumes the cut answer
        ("network_drop", ["Thank you for", "We are", "Sorry, the line dropped.", "Sorry about that."]),
    ],
)
def test_live_turns_close_where_the_agent_stopped_and_compare_with_ga(name: str, live_turns: list[str]) -> None:
    script = load_script(SCRIPTS / name)
    runs = {"ga": run_direct(script, "ga"), "live": run_direct(script, "live")}
    said = runs["live"].report["agent_transcript"]
    assert len(said) == len(live_turns) and all(s.startswith(w) for s, w in zip(said, live_turns, strict=True)), said
    result = verdict(script.name, runs, script.model.compare)
    assert result.verdict == "same" and result.differences == [], result.differences


def test_cut_answers_are_alike_only_within_the_runs_cuts() -> None:
    def run(agent: list[str], *, barge_ins: int = 0, reconnects: int = 0, phases: tuple[str, ...] = ()) -> DialectRun:
        report = {"agent_transcript": agent, "barge_ins": barge_ins, "reconnects": reconnects, "phases": list(phases)}
        return DialectRun(script="s", dialect="live", report=report)

    full = ["Hello.", "We are open from nine to five.", "Bye."]
    # one barge-in: the interrupted answer stops earlier on one side
    cut = run(["Hello.", "We are open", "Bye."], barge_ins=1)
    assert _spoken_alike(full, cut.report["agent_transcript"], 0, _cuts(cut)) is None
    # one lost session: an answer only one side has (said as far as it went, or never finished)
    extra = run(["Hello.", "We are", "We are open from nine to five.", "Bye."], reconnects=1)
    assert _spoken_alike(full, extra.report["agent_transcript"], 0, _cuts(extra)) is None
    # without a cut to explain it, the same extra answer is a difference, named as usual
    plain = run(extra.report["agent_transcript"])
    a, b = _spoken_alike(full, plain.report["agent_transcript"], 0, _cuts(plain)) or ([], [])
    assert _list_diff("agent transcript", a, b, "GA", "live") == [
        "agent transcript differs at #2: GA We are open from nine to five. vs live We are"
    ]
    # a different answer is never alike, cut or not
    other = run(["Hello.", "We are closed.", "Bye."], barge_ins=1)
    assert _spoken_alike(full, other.report["agent_transcript"], 0, _cuts(other)) is not None
    # the call ended while the agent spoke: its last answer may be only on one side
    assert _cuts(run([], phases=("LISTENING", "SPEAKING", "ENDED"))) == 1


def test_replay_variants_on_the_shipped_ga_to_live_rollout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scripts = [str(SCRIPTS / name) for name in ("question_answer", "barge_in", "transfer")]
    # the shipped plans, with the GA variant on a model that answers without a preamble item (gpt-realtime-2.1 says
    # "Let me check that for you." first, as the emulator answers as that model does): the dialects are compared
    dialplans = tmp_path / "dialplans"
    shutil.copytree(SCRIPTS.parent / "dialplans", dialplans)
    plan = dialplans / "support-ga-to-live.yaml"
    plan.write_text(plan.read_text().replace("model: gpt-realtime-2.1", "model: gpt-realtime", 1))
    code = main([*scripts, "--variants", "support-ga-to-live", "--dialplans", str(dialplans), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["meta"]["variants"] == ["ga", "live"] and data["meta"]["safe"] == {"support-ga-to-live": "ga"}
    for s in data["scripts"]:
        runs = s["runs"]
        assert [(r["variant"], r["dialect"]) for r in runs.values()] == [("ga", "ga"), ("live", "live")]
        assert s["verdict"] == "same" and s["differences"] == [], (s["script"], s["differences"])
        assert [r.split(": ", 1)[0] for r in s["by_design"]] == ["GA/Live"] * len(BY_DESIGN)
