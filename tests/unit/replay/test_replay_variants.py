"""``callbridge replay --variants``: every script through each variant of a rollout dialplan (direct, virtual time),
each compared with the safe one, in a report with a column per variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.replay.cli import main
from bridge.replay.script import load_script
from bridge.replay.variants import load_rollouts, replay_variants, variant_plans

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS, DIALPLANS = ROOT / "call_scripts", ROOT / "dialplans"
SAFE, NEW = "gpt-realtime", "gpt-realtime-2.1"
# the shipped support rollout as it was before its move to the current models: an older safe model without the
# preamble against gpt-realtime-2.1 with it, so that the two variants differ
OLD_SUPPORT = """  safe: gpt-realtime
  variants:
    - {name: gpt-realtime, dialect: ga, model: gpt-realtime, weight: 100}
    - {name: gpt-realtime-2.1, dialect: ga, model: gpt-realtime-2.1, fallback_model: gpt-realtime, weight: 0}
"""


@pytest.fixture
def dialplans(tmp_path: Path) -> Path:
    out = tmp_path / "dialplans"
    out.mkdir()
    for plan in DIALPLANS.glob("*.yaml"):
        text = plan.read_text()
        if plan.name == "support.yaml":
            head, _, _ = text.partition("rollout:\n")
            text = head + "rollout:\n" + OLD_SUPPORT
        (out / plan.name).write_text(text)
    return out


def test_each_variant_runs_the_script_on_its_own_model_and_is_compared_with_the_safe_one(dialplans: Path) -> None:
    script = load_script(SCRIPTS / "question_answer", dialplans)
    rollouts = load_rollouts(["support"], dialplans)
    [(_, spec)] = rollouts
    plans = variant_plans(script, spec)
    assert [(v.name, p.dialect, p.profile.model) for v, p in plans] == [(SAFE, "ga", SAFE), (NEW, "ga", NEW)]
    [result] = replay_variants([script], rollouts)
    assert list(result.runs) == [SAFE, NEW]  # the safe one first: the reference
    safe, new = result.runs[SAFE], result.runs[NEW]
    assert (safe.variant, safe.model, new.variant, new.model) == (SAFE, SAFE, NEW, NEW)
    assert safe.ok and new.ok  # the script's expectations hold on both
    # gpt-realtime-2.1 answers with a preamble item first (the emulator answers as that model does): named
    assert new.report["agent_transcript"][1] == "Let me check that for you."
    assert result.verdict == "differs"
    assert f"agent transcript differs at #2: {SAFE} We are open" in " ".join(result.differences)


def test_the_cli_writes_a_report_with_a_column_per_variant(
    tmp_path: Path, dialplans: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = [str(SCRIPTS / name) for name in ("question_answer", "transfer")]
    code = main([*scripts, "--variants", "support", "--dialplans", str(dialplans), "--report", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1, out  # the new model's preamble: a difference nobody declared
    assert "2 script(s) x 2 variant(s): 1 same, 0 by design, 0 expected, 1 unexpected, 0 failed, 0 error(s)" in out
    data = json.loads((tmp_path / "report.json").read_text())
    assert (data["meta"]["variants"], data["meta"]["safe"]) == ([SAFE, NEW], {"support": SAFE})
    assert [list(s["runs"]) for s in data["scripts"]] == [[SAFE, NEW], [SAFE, NEW]]
    page = (tmp_path / "report.html").read_text()
    assert f"<th>{SAFE}</th><th>{NEW}</th>" in page  # the summary's columns
    assert f'data-variant="{NEW}" data-dialect="ga"' in page and "rollout support (safe: gpt-realtime)" in page


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variants", "billing"], "billing: not a rollout dialplan"),
        (["--variants", "nope"], "nope: no dialplan of that name"),
        (["--variants", "support", "--dialects", "ga"], "give either --dialects or --variants"),
        (["--variants", "support", "--via", "sip"], "variants replay direct only"),
    ],
)
def test_variants_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(SCRIPTS / "question_answer"), *argv, "--dialplans", str(DIALPLANS)]) == 2
    assert message in capsys.readouterr().err
