"""The emulator per model and per rollout variant in a replay: a script's ``emulator.model_settings`` and
``variant_settings``, and ``--emulator-set [SCOPE:]NAME=VALUE``, make the candidate of a rollout slower, costlier or
failing while the safe variant is unchanged (direct replays, virtual time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.errors import ConfigError
from bridge.replay.cli import main
from bridge.replay.compare import DialectRun
from bridge.replay.direct import DirectOptions, run_direct
from bridge.replay.emulation import EmulatorSets, known
from bridge.replay.script import load_script
from bridge.replay.timing import call_timing

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS, DIALPLANS = ROOT / "call_scripts", ROOT / "dialplans"
SAFE, CANDIDATE = "gpt-realtime-2.1", "gpt-realtime-2.1-mini"  # dialplans/support.yaml's variants, both GA
SLOWER = 150 + 4 * 2000  # the response latency 2 s of service time later, at the emulator's speed 4


def _script(tmp_path: Path, emulator: dict[str, Any] | None = None, name: str = "question_answer") -> Path:
    """A copy of a shipped script with ``emulator`` merged into its own, its timing bounds left out (a slower model
    fails them: the comparison, not the bounds, is what is tested here)."""
    target = tmp_path / name
    shutil.copytree(SCRIPTS / name, target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data["emulator"] = {**data.get("emulator", {}), **(emulator or {})}
    for bound in ("max_first_audio_ms", "max_greeting_ms", "max_first_reply_ms", "max_reply_gap_ms"):
        data["expect"].pop(bound, None)
    for turn in data["turns"]:
        turn.pop("max_reply_gap_ms", None)
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    return target


def _replay(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--dialplans", str(DIALPLANS), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _gaps(script: dict[str, Any]) -> dict[str, float]:
    return {name: run["timing"]["turns"][0]["reply_gap_ms"] for name, run in script["runs"].items()}


def test_the_candidate_2_s_slower_on_the_command_line_is_unexpected_the_safe_variant_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(_script(tmp_path))
    code, plain = _replay([path, "--variants", "support"], capsys)
    assert code == 0 and plain["scripts"][0]["status"] == "same"  # both variants alike without the setting
    slow = f"{CANDIDATE}:response_latency_ms={SLOWER}"
    code, data = _replay([path, "--variants", "support", "--emulator-set", slow], capsys)
    [script] = data["scripts"]
    assert code == 1 and script["status"] == "unexpected", script
    gap = f"timing: reply gap after turns[0] {SAFE} 160 ms vs {CANDIDATE} 2140 ms (tolerance 500 ms)"
    assert gap in script["unexpected"], script["unexpected"]
    before, after = _gaps(plain["scripts"][0]), _gaps(script)
    assert after[SAFE] == before[SAFE]  # the safe variant: as without the setting
    assert after[CANDIDATE] - before[CANDIDATE] == pytest.approx(2000, abs=60)
    # what each run was told names the setting (a baseline comparison sees it)
    told = {name: run["config"]["emulator"] for name, run in script["runs"].items()}
    assert "response_latency_ms" not in told[SAFE] and told[CANDIDATE]["response_latency_ms"] == SLOWER


@pytest.mark.parametrize(
    "emulator",
    [
        {"model_settings": {CANDIDATE: {"response_latency_ms": SLOWER}}},
        {"model_settings": {"gpt-realtime-2.1-m*": {"response_latency_ms": SLOWER}}},  # a pattern
        {"variant_settings": {CANDIDATE: {"response_latency_ms": SLOWER}}},
    ],
    ids=["model", "model-pattern", "variant"],
)
def test_a_scripts_settings_per_model_or_variant_slow_only_that_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], emulator: dict[str, Any]
) -> None:
    code, data = _replay([str(_script(tmp_path, emulator)), "--variants", "support"], capsys)
    [script] = data["scripts"]
    assert (code, script["status"]) == (1, "unexpected")
    gaps = _gaps(script)
    assert gaps[SAFE] == 160 and gaps[CANDIDATE] == 2140, gaps


def test_model_settings_apply_to_that_models_dialect_run_only(tmp_path: Path) -> None:
    """A dialect replay (beta on its own model, GA on the support rollout's safe one): a setting for GA's model slows
    GA alone; one for beta's model, beta alone."""
    script = load_script(_script(tmp_path, {"model_settings": {SAFE: {"response_latency_ms": SLOWER}}}), DIALPLANS)
    script = script.on_safe_variant()
    ga, beta = run_direct(script, "ga"), run_direct(script, "beta")
    assert (ga.model, beta.model) == (SAFE, "gpt-4o-realtime-preview")
    assert (_gap(ga), _gap(beta)) == (2140, 160)
    sets = EmulatorSets.parse([f"gpt-4o-realtime-*:response_latency_ms={SLOWER}", "ga:response_latency_ms=150"])
    options = DirectOptions(emulator_sets=sets)  # the command line's over the script's: the other way round
    ga, beta = run_direct(script, "ga", options), run_direct(script, "beta", options)
    assert (_gap(ga), _gap(beta)) == (160, 2140)


def _gap(run: DialectRun) -> float | None:
    """The reply gap after the first turn, the bridge's soft hold left out (as the report has it)."""
    return call_timing(run.caller_spans, run.agent_spans, run.report).turns[0].reply_gap_ms


@pytest.mark.parametrize(
    ("setting", "failure"),
    [
        ("error_mid_response=1", "max_errors: 1 error(s) ['server_error']"),
        ("refuse_models=*", "max_errors: 1 error(s) ['connect']"),  # the upgrade refused (HTTP 503)
    ],
)
def test_a_failing_candidate_fails_that_variant_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, failure: str
) -> None:
    code, data = _replay(
        [str(SCRIPTS / "barge_in"), "--variants", "support", "--emulator-set", f"{CANDIDATE}:{setting}"], capsys
    )
    [script] = data["scripts"]
    assert (code, script["status"]) == (1, "failed")
    assert script["runs"][SAFE]["ok"] and not script["runs"][CANDIDATE]["ok"]
    assert script["failures"] == [f"{CANDIDATE}: {failure}"], script["failures"]


def test_a_costlier_candidate_costs_more_the_safe_variant_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(_script(tmp_path))
    _, plain = _replay([path, "--variants", "support"], capsys)
    longer = f"{CANDIDATE}:min_reply_ms=6000"  # every answer at least 6 s long: more output tokens
    _, data = _replay([path, "--variants", "support", "--emulator-set", longer], capsys)
    before, after = plain["meta"]["cost_usd"], data["meta"]["cost_usd"]
    assert after[SAFE] == before[SAFE] and after[CANDIDATE] > 1.5 * before[CANDIDATE], (before, after)


@pytest.mark.parametrize(
    ("emulator", "field", "message"),
    [
        ({"model_settings": {CANDIDATE: {"latency": 1}}}, "emulator.model_settings", "unknown emulator setting"),
        (
            {"model_settings": {"gpt-realtime-9": {"speed": 1}}},
            "emulator.model_settings.gpt-realtime-9",
            "unknown model",
        ),
        ({"model_settings": {"claude-*": {"speed": 1}}}, "emulator.model_settings.claude-*", "unknown model"),
        ({"variant_settings": {"canary": {"speed": 1}}}, "emulator.variant_settings.canary", "unknown rollout variant"),
        ({"variant_settings": {CANDIDATE: {"speed": "fast"}}}, "emulator.variant_settings", "cannot read 'fast'"),
    ],
)
def test_an_unknown_setting_model_or_variant_names_the_file_and_field(
    tmp_path: Path, emulator: dict[str, Any], field: str, message: str
) -> None:
    path = _script(tmp_path, emulator)
    with pytest.raises(ConfigError) as info:
        load_script(path, DIALPLANS)
    assert (info.value.source, info.value.field) == (str(path / "script.yaml"), field)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("gpt-realtime-9:speed=1", "--emulator-set: gpt-realtime-9:speed=1: unknown model, variant or dialect"),
        (f"{CANDIDATE}:latency=1", f"--emulator-set: {CANDIDATE}:latency=1: unknown emulator setting 'latency'"),
        ("speed", "--emulator-set: speed: expected [MODEL|VARIANT|DIALECT:]NAME=VALUE"),
        (f"{CANDIDATE}:speed=fast", "cannot read 'fast' as float"),
    ],
    ids=["unknown-model", "unknown-setting", "no-value", "bad-value"],
)
def test_a_bad_emulator_set_is_a_usage_error_naming_it(
    option: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(SCRIPTS / "question_answer"), "--variants", "support", "--emulator-set", option]
    assert main([*argv, "--dialplans", str(DIALPLANS)]) == 2
    assert message in capsys.readouterr().err


def test_known_names_come_from_the_dialplans_the_price_table_and_the_dialects() -> None:
    names = known(DIALPLANS)
    assert {SAFE, CANDIDATE, "gpt-4o-realtime-preview", "gpt-live-1"} <= names.models
    assert {SAFE, CANDIDATE} <= names.variants
    assert names.model_ok("gpt-realtime-2025-08-28") and names.model_ok("gpt-realtime-2.1*")
    assert not names.model_ok("gpt-5")


def test_emulator_set_into_a_running_bridge_needs_its_emulator(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        str(SCRIPTS / "question_answer"),
        "--via",
        "sip",
        "--bridge",
        "sip:127.0.0.1:5999",
        "--emulator-set",
        "speed=1",
    ]
    assert main(argv) == 2
    assert "--emulator-set: speed=1: a running bridge's emulator is reached through --emulator-url only" in (
        capsys.readouterr().err
    )
