from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.dialplan import check_file, load_dialplans, main, route
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_dialplans_are_valid_and_route() -> None:
    plans = load_dialplans(ROOT / "dialplans")
    assert {p.name for p in plans} == {"support", "billing", "live", "support-ga-to-live", "orders"}
    orders = route(plans, "3000")
    assert orders is not None and orders.name == "orders" and orders.orchestrator is not None
    assert route(plans, "1001").dialect == "live"  # type: ignore[union-attr]  # None would fail on the attribute
    ga_to_live = route(plans, "1002")
    assert ga_to_live is not None and ga_to_live.rollout_spec is not None
    assert [(v.name, v.dialect, v.weight) for v in ga_to_live.rollout_spec.variants] == [
        ("ga", "ga", 95),
        ("live", "live", 5),
    ]
    assert ga_to_live.rollout_spec.safe == "ga"
    # the GA variant carries its own voice detection; the Live variant keeps the default, which Live leaves unset
    ga, live = (ga_to_live.variant_profile(v) for v in ga_to_live.rollout_spec.variants)
    assert ga.turn_detection is not None and ga.turn_detection.silence_duration_ms == 600
    assert (live.model, live.audio_format) == ("gpt-live-1", "pcm16_16k")
    assert route(plans, "1000").name == "support"  # type: ignore[union-attr]  # asserted not None by the name
    assert route(plans, "+18005551234").name == "support"  # type: ignore[union-attr]  # same
    assert route(plans, "2000").name == "billing"  # type: ignore[union-attr]  # same
    assert route(plans, "999").name == "billing"  # type: ignore[union-attr]  # the catch-all
    support = next(p for p in plans if p.name == "support")
    assert support.tool_names == {"transfer_to_human", "end_call"}
    assert support.profile.tools[0].parameters["required"] == ["reason"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("name: x\nmatch: ['1']\nprofile: {turn_detection: {type: server_vad, threshold: 7}}\n",
         "profile.turn_detection.server_vad.threshold", "less than or equal"),
        ("name: x\nmatch: ['1']\nprofile: {voice: alloy, colour: red}\n", "profile.colour", "Extra inputs"),
        ("name: x\nmatch: []\n", "match", "at least 1"),
        ("name: x\nmatch: ['1']\ndialect: gamma\n", "dialect", "'beta', 'ga', 'live' or 'rollout'"),
        ("name: x\nmatch: ['1']\nprofile: {tools: [teleport]}\n", "profile", "unknown built-in tool 'teleport'"),
        ("name: x\nmatch: ['1']\nprofile: {tools: [transfer_to_human]}\n", "transfer_target", "required"),
        ("name: x\nmatch: ['1']\ndialect: ga\nprofile: {temperature: 0.8}\n", "profile.temperature", "GA"),
        ("name: x\nmatch: ['1']\ndialect: beta\nprofile: {turn_detection: {type: server_vad, idle_timeout_ms: 6000}}\n",
         "profile.turn_detection.idle_timeout_ms", "beta"),
        ("name: x\nmatch: ['1'\n", "line 3", "invalid YAML"),
        ("- just\n- a list\n", "(file)", "mapping"),
        ("name: x\nmatch: ['1']\nallowed_sources: ['10.0.0.300']\n", "allowed_sources", "10.0.0.300"),
    ],
)  # fmt: skip
def test_errors_name_file_and_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    errors = check_file(path)
    assert errors, "expected an error"
    assert any(e.source == str(path) and e.field == field and words in e.message for e in errors), [
        str(e) for e in errors
    ]


def test_rollout_plan_must_build_for_both_dialects(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.yaml", "name: r\nmatch: ['1']\ndialect: rollout\nprofile: {temperature: 0.8}\n")
    (err,) = check_file(path)
    assert err.field == "profile.temperature" and "dialect ga" in err.message


def test_a_realtime_setting_that_would_reach_a_live_variant_is_refused_by_name(tmp_path: Path) -> None:
    # the shipped GA-to-Live plan with the GA variant's voice detection moved up to the plan's profile
    text = (ROOT / "dialplans" / "support-ga-to-live.yaml").read_text()
    text = text.replace("  tools: [transfer_to_human, end_call]", "  tools: [transfer_to_human, end_call]\n"
                        "  turn_detection: {type: server_vad, silence_duration_ms: 800}", 1)  # fmt: skip
    (err,) = check_file(_write(tmp_path, "ga-to-live.yaml", text))
    assert err.field == "rollout.variants[1].profile.turn_detection" and "Live has no turn_detection" in err.message


def test_check_command_reports_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, "a.yaml", "name: a\nmatch: ['1']\n")
    bad = _write(tmp_path, "b.yaml", "name: b\nmatch: ['2']\nanswer_timeout_s: -1\n")
    assert main(["check", str(tmp_path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in out["ok"]] == ["a"]
    assert out["errors"] == [
        {"file": str(bad), "field": "answer_timeout_s", "message": "Input should be greater than 0"}
    ]


def test_duplicate_names_refused(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "name: same\nmatch: ['1']\n")
    _write(tmp_path, "b.yaml", "name: same\nmatch: ['2']\n")
    with pytest.raises(ConfigError, match="duplicate dialplan name"):
        load_dialplans(tmp_path)
