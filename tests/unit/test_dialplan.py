from __future__ import annotations

import json
import wave
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
    assert route(plans, "999") is None  # no shipped plan answers any number
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
        ("name: x\nmatch: ['1']\nmax_call_s: 0\n", "max_call_s", "greater than 0"),
        ("name: x\nmatch: ['1']\nmax_call_s: 10\n", "max_call_goodbye_s", "less than max_call_s (10)"),
        ("name: x\nmatch: ['1']\necho_guard: {enabled: true, max_delay_ms: 5}\n", "echo_guard.max_delay_ms",
         "greater than or equal to 20"),
        ("name: x\nmatch: ['1']\necho_guard: {enabeld: true}\n", "echo_guard.enabeld", "Extra inputs"),
        ("name: x\nmatch: ['1']\ntransfer: {mode: cold, target: 'sip:a@b'}\n", "transfer.mode", "'blind' or 'warm'"),
        ("name: x\nmatch: ['1']\ntransfer: {mode: warm, target: 'tel:123'}\n", "transfer.target", "pattern"),
        ("name: x\nmatch: ['1']\ntransfer: {target: 'sip:a@b', ring_timeout_s: 0}\n", "transfer.ring_timeout_s",
         "greater than 0"),
        ("name: x\nmatch: ['1']\ntransfer: {target: 'sip:a@b', accept: voice}\n", "transfer.accept",
         "'answer' or 'dtmf'"),
        ("name: x\nmatch: ['1']\ntransfer_target: 'sip:a@b'\ntransfer: {target: 'sip:c@d'}\n", "transfer",
         "differ"),
        ("name: x\nmatch: ['1']\ntransfer: {target: 'sip:a@b', briefing: true}\n", "transfer.briefing",
         "Extra inputs"),
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
    assert main(["check", str(tmp_path), "--json"]) == 2  # a bad file: a configuration error
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


def test_check_warns_about_a_catch_all_and_keeps_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "any.yaml", "name: any\nmatch: ['2000', '*']\n")
    assert check_file(path) == []  # a warning, not an error
    assert main(["check", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"WARNING {path}: match[1]:" in err and "any number a caller dials" in err
    assert main(["check", str(tmp_path), "--json"]) == 0
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert (warning["file"], warning["field"]) == (str(path), "match[1]")


def test_no_shipped_plan_is_a_catch_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "dialplans")]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_check_fails_a_plan_whose_safe_model_is_past_its_shutdown_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _write(tmp_path, "old.yaml", "name: old\nmatch: ['1']\ndialect: rollout\nrollout:\n  safe: a\n  variants:\n"
                 "    - {name: a, dialect: ga, model: gpt-realtime-mini, weight: 1}\n"
                 "    - {name: b, dialect: ga, model: gpt-realtime-2.1}\n")  # fmt: skip
    pinned = _write(tmp_path, "pinned.yaml", "name: pinned\nmatch: ['2']\ndialect: ga\n")  # the GA default model
    _write(tmp_path, "new.yaml", "name: new\nmatch: ['3']\ndialect: ga\nprofile: {model: gpt-realtime-2.1}\n")
    assert main(["check", str(tmp_path), "--today", "2027-01-19"]) == 0  # the day before: fine (serve warns)
    capsys.readouterr()
    assert main(["check", str(tmp_path), "--today", "2027-01-20", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in out["ok"]] == ["new"]
    assert [(e["file"], e["field"]) for e in out["errors"]] == [
        (str(old), "rollout.variants[0].model"), (str(pinned), "profile.model"),
    ]  # fmt: skip
    assert out["errors"][0]["message"].startswith("the safe model gpt-realtime-mini was shut down on 2027-01-20")
    assert main(["check", str(ROOT / "dialplans"), "--today", "2027-06-01"]) == 0  # the shipped plans moved on


def test_transfer_says_how_and_transfer_target_stays_a_blind_transfer(tmp_path: Path) -> None:
    from bridge.dialplan import load_dialplan, plan_warnings

    warm = load_dialplan(
        _write(
            tmp_path,
            "w.yaml",
            "name: w\nmatch: ['1']\nprofile: {tools: [transfer_to_human]}\n"
            "transfer: {mode: warm, target: 'sip:agent@pbx', ring_timeout_s: 8, accept: dtmf}\n",
        )
    )
    assert check_file(Path(warm.source_file)) == []  # transfer.target satisfies the tool's transfer_target
    assert warm.transfer_target == "sip:agent@pbx"  # the blind paths and the console see the same target
    plan = warm.transfer_plan
    assert plan is not None and (plan.mode, plan.ring_timeout_s, plan.accept, plan.brief) == ("warm", 8, "dtmf", True)
    assert plan_warnings(warm) == []
    old = load_dialplan(_write(tmp_path, "b.yaml", "name: b\nmatch: ['1']\ntransfer_target: 'sip:agent@pbx'\n"))
    blind = old.transfer_plan
    assert blind is not None and (blind.mode, blind.target) == ("blind", "sip:agent@pbx")
    assert load_dialplan(_write(tmp_path, "n.yaml", "name: n\nmatch: ['1']\n")).transfer_plan is None
    unbriefed = load_dialplan(
        _write(
            tmp_path, "v.yaml", "name: v\nmatch: ['1']\ntransfer: {mode: warm, target: 'sip:agent@pbx', brief: false}\n"
        )
    )
    assert unbriefed.transfer_plan is not None and not unbriefed.transfer_plan.brief
    assert plan_warnings(unbriefed) == []


def test_the_echo_guard_is_on_unless_a_plan_turns_it_off(tmp_path: Path) -> None:
    """Every shipped plan has the guard, whatever its audio format; ``enabled: false`` is the way out."""
    assert all(p.echo_guard.enabled for p in load_dialplans(ROOT / "dialplans"))
    (tmp_path / "quiet.yaml").write_text("name: quiet\nmatch: ['1']\necho_guard: {enabled: false}\n")
    (tmp_path / "g711.yaml").write_text("name: g711\nmatch: ['2']\nprofile: {audio_format: g711_ulaw}\n")
    plans = {p.name: p for p in load_dialplans(tmp_path)}
    assert not plans["quiet"].echo_guard.enabled and plans["g711"].echo_guard.enabled


def test_a_recorded_plan_needs_a_consent_wav_the_bridge_can_play(tmp_path: Path) -> None:
    """The consent prompt is the bridge's own audio: a recorded plan without one, or with a file that is missing,
    not a WAV, the wrong rate or empty, is refused at load, naming the file and the field."""
    from bridge.audio.wav import write_wav

    def errors(recording: str) -> list[str]:
        path = _write(tmp_path, "rec.yaml", f"name: x\nmatch: ['1']\nrecording: {recording}\n")
        return [f"{e.field}: {e.message}" for e in check_file(path) if e.source == str(path)]

    assert errors("{enabled: true, consent_prompt: 'This call is recorded.'}") == [
        "recording.consent_audio: required when recording is enabled (the WAV the bridge plays first)"
    ]
    missing = tmp_path / "gone.wav"
    assert errors(f"{{enabled: true, consent_audio: '{missing}'}}") == [
        f"recording.consent_audio: no such file: {missing}"
    ]
    text = tmp_path / "notes.wav"
    text.write_text("This call is recorded.")
    (found,) = errors(f"{{enabled: true, consent_audio: '{text}'}}")
    assert found.startswith("recording.consent_audio: not a playable 8 kHz mono WAV") and str(text) in found
    wide = tmp_path / "wide.wav"
    with wave.open(str(wide), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(3200))
    (found,) = errors(f"{{enabled: true, consent_audio: '{wide}'}}")
    assert "not a playable 8 kHz mono WAV" in found and str(wide) in found
    empty = tmp_path / "empty.wav"
    write_wav(empty, b"")
    assert errors(f"{{enabled: true, consent_audio: '{empty}'}}") == [f"recording.consent_audio: no audio in {empty}"]
    good = tmp_path / "consent.wav"
    write_wav(good, bytes(1600))
    assert errors(f"{{enabled: true, consent_audio: '{good}'}}") == []
    assert errors(f"{{enabled: false, consent_audio: '{missing}'}}") == []  # nothing is played: nothing checked


def test_check_refuses_a_dialect_openais_service_no_longer_takes_only_when_the_plans_reach_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLBRIDGE_REALTIME_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    shipped = str(ROOT / "dialplans")
    assert main(["check", shipped]) == 0  # the emulator keeps every shape
    assert main(["check", shipped, "--realtime-url", "ws://127.0.0.1:8765/v1"]) == 0
    capsys.readouterr()
    openai = ["--realtime-url", "wss://api.openai.com/v1", "--json"]
    assert main(["check", shipped, *openai, "--today", "2026-02-26"]) == 0  # the day before its end
    capsys.readouterr()
    assert main(["check", shipped, *openai]) == 2
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert [(Path(e["file"]).name, e["field"]) for e in errors] == [("billing-beta.yaml", "dialect")]
    assert "refused the beta interface since 2026-02-27" in errors[0]["message"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # with a key and no URL, serve reaches OpenAI's service
    assert main(["check", shipped]) == 2
    assert "billing-beta.yaml: dialect" in capsys.readouterr().err
