"""``callbridge replay``'s defaults: a script that names a rollout plan runs, in the dialect of the plan's safe
variant, that variant's model, voice and profile overrides (the calls production falls back on); the other dialects
keep their own model, and ``--models dialect`` gives every dialect its default model. The model's own turn shape
(gpt-realtime-2.1's preamble) is a by-design difference between dialects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.emulator.session import EmulatorSession
from bridge.replay import direct
from bridge.replay.cli import main
from bridge.replay.script import load_script

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = ROOT / "call_scripts"


@pytest.fixture
def emulators(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[EmulatorSession]]:
    """Every emulator session the direct runner opens, by dialect: what it was asked to be is what it answers as."""
    seen: dict[str, list[EmulatorSession]] = {}

    class Observed(EmulatorSession):
        def __init__(self, dialect: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(dialect, *args, **kwargs)
            seen.setdefault(dialect.name, []).append(self)

    monkeypatch.setattr(direct, "EmulatorSession", Observed)
    return seen


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_script_naming_a_rollout_plan_replays_its_safe_variants_model_by_default(
    emulators: dict[str, list[EmulatorSession]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = _run([str(SCRIPTS / "question_answer")], capsys)
    assert code == 0
    [script] = data["scripts"]
    # dialplans/support.yaml: safe gpt-realtime-2.1 on GA; beta has no variant and keeps its own model
    assert [s.view.model for s in emulators["ga"]] == ["gpt-realtime-2.1"]
    assert [s.view.model for s in emulators["beta"]] == ["gpt-4o-realtime-preview"]
    runs = script["runs"]
    assert (runs["ga"]["model"], runs["beta"]["model"]) == ("gpt-realtime-2.1", "gpt-4o-realtime-preview")
    # the emulator answered as that model does: the preamble, then the answer, on GA only
    assert runs["ga"]["report"]["agent_transcript"][1:] == ["Let me check that for you.",
                                                           "We are open from nine to five on Saturdays."]  # fmt: skip
    assert "Let me check that for you." not in runs["beta"]["report"]["agent_transcript"]
    # a difference of the models, declared once: by design, not unexpected
    assert script["status"] == "by_design" and script["unexpected"] == []
    assert any("the model's turn shape: gpt-realtime-2.1 answers" in r for r in script["by_design"])
    assert data["meta"]["models"] == "safe"


def test_models_dialect_gives_each_dialect_its_default_model(
    emulators: dict[str, list[EmulatorSession]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = _run([str(SCRIPTS / "question_answer"), "--models", "dialect"], capsys)
    assert code == 0
    assert [s.view.model for s in emulators["ga"]] == ["gpt-realtime"]
    [script] = data["scripts"]
    assert script["status"] == "same" and script["by_design"] == []


def test_a_script_on_an_inline_or_pinned_plan_is_left_as_it_is(
    emulators: dict[str, list[EmulatorSession]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run([str(SCRIPTS / "dtmf_menu"), "--dialects", "ga"], capsys)
    assert code == 0
    assert [s.view.model for s in emulators["ga"]] == ["gpt-realtime"]  # its inline plan names no model


def test_the_safe_variant_brings_its_voice_and_profile_overrides(tmp_path: Path) -> None:
    target = tmp_path / "on_live_rollout"
    shutil.copytree(SCRIPTS / "question_answer", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data["name"], data["dialplan"] = "on_live_rollout", "support-ga-to-live"
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    script = load_script(target)
    before = script.plan("ga").profile
    after = script.on_safe_variant().plan("ga").profile
    # dialplans/support-ga-to-live.yaml: safe "ga", gpt-realtime-2.1 with its own voice detection
    assert (before.model, after.model) == (None, "gpt-realtime-2.1")
    assert after.voice == "marin" and after.turn_detection is not None
    assert after.turn_detection.silence_duration_ms == 600 != before.turn_detection.silence_duration_ms
    assert script.on_safe_variant().plan("beta") == script.plan("beta")  # the other dialects as they are
