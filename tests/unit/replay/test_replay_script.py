"""The call-script format: the bundled scripts load, and a malformed script gets an error naming file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bridge.audio.vad import EnergyVad
from bridge.audio.wav import read_wav, write_wav
from bridge.errors import ConfigError
from bridge.replay.script import G711_TAGS, find_scripts, g711_tag, load_script

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"
COVERED = {
    "question_answer",
    "barge_in",
    "dtmf_menu",
    "transfer",
    "idle_timeout",
    "hangup_mid_response",
    "tool_end_call",
    "network_drop",
}


def test_bundled_scripts_load_and_cover_the_required_cases() -> None:
    scripts = [load_script(p) for p in find_scripts([SCRIPTS])]
    names = {s.name for s in scripts}
    assert len(scripts) >= 8
    assert names >= COVERED
    for script in scripts:
        assert {"beta", "ga"} <= set(script.plans)
        assert script.model.description, script.name


def test_caller_audio_is_small_g711_speech_heard_as_one_turn_each() -> None:
    wavs = sorted(SCRIPTS.glob("*/*.wav"))
    assert len(wavs) >= 10
    for wav in wavs:
        assert g711_tag(wav) in G711_TAGS, wav
        assert wav.stat().st_size < 64_000, f"{wav}: keep caller turns to a few seconds"
        pcm = read_wav(wav)
        seconds = len(pcm) / 2 / 8000
        assert 1.0 < seconds < 8.0, wav
        vad = EnergyVad(8000)  # the emulator's default server_vad knobs
        kinds = [e.kind for e in vad.feed(pcm + bytes(16000))]
        assert kinds == ["start", "stop"], f"{wav}: the VAD hears {kinds}, not one turn"


def test_annotations_follow_the_spoken_turns() -> None:
    script = load_script(SCRIPTS / "barge_in")
    notes = script.annotations_json()
    assert notes["greeting"] == {"text": "Thank you for calling Acme support. How can I help you today?"}
    assert [t["hears"] for t in notes["turns"]] == [
        "Can you explain your return policy?",
        "Sorry to interrupt, do you ship to Canada?",
    ]
    assert notes["turns"][0]["reply"]["duration_ms"] == 8000
    assert script.turns[1].wait == "agent_start"  # implied by barge_in_after_ms
    annotations = script.annotations()
    assert len(annotations.turns) == 2


def test_faults_hit_the_first_connection_only() -> None:
    script = load_script(SCRIPTS / "network_drop")
    first, second = script.emulator_settings(0), script.emulator_settings(1)
    assert first["drop_mid_response"] == 2 and first["fault_after_deltas"] == 4
    assert "drop_mid_response" not in second
    assert first["seed"] != second["seed"]


def test_dialect_overrides_apply_to_one_dialect() -> None:
    script = load_script(SCRIPTS / "idle_timeout")
    ga_td, beta_td = script.plan("ga").profile.turn_detection, script.plan("beta").profile.turn_detection
    assert ga_td is not None and getattr(ga_td, "idle_timeout_ms", None) == 6000
    assert beta_td is not None and getattr(beta_td, "idle_timeout_ms", None) is None
    assert script.expect("ga").agent_keywords[-1] == "still there"
    assert "still there" not in script.expect("beta").agent_keywords


def _broken(tmp_path: Path, mutate: dict[str, object] | None = None, turn: dict[str, object] | None = None) -> Path:
    target = tmp_path / "transfer"
    shutil.copytree(SCRIPTS / "transfer", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data.update(mutate or {})
    if turn is not None:
        data["turns"].append(turn)
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    return target


@pytest.mark.parametrize(
    ("turn", "field", "message"),
    [
        ({"barge_in_after_ms": 0, "say": "q1_human.wav"}, "turns[1].barge_in_after_ms", "greater than 0"),
        ({"wait": "soon", "hangup": True}, "turns[1].wait", "'agent_start', 'agent_done' or 'none'"),
        ({"pause_ms": 100}, "turns[1]", "a turn needs at least one of say, dtmf, hangup"),
        ({"dtmf": "12x"}, "turns[1].dtmf", "String should match pattern"),
        ({"say": "missing.wav"}, "turns[1].say", "no such file"),
        ({"hangup": True, "hears": "hello"}, "turns[1]", "they need say"),
        ({"wait": "agent_done", "barge_in_after_ms": 300, "say": "q1_human.wav"}, "turns[1]", "agent_start"),
        ({"hangup": True, "colour": "red"}, "turns[1].colour", "Extra inputs are not permitted"),
    ],
)
def test_malformed_turns_name_file_and_field(tmp_path: Path, turn: dict[str, object], field: str, message: str) -> None:
    target = _broken(tmp_path, turn=turn)
    with pytest.raises(ConfigError) as err:
        load_script(target)
    assert err.value.source == str(target / "script.yaml")
    assert err.value.field == field
    assert message in err.value.message
    assert str(err.value).startswith(f"{target / 'script.yaml'}: {field}: ")


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        ({"dialplan": "nonexistent"}, "dialplan", "no dialplan named 'nonexistent'"),
        ({"expect": {"barge_ins": -1}}, "expect.barge_ins", "greater than or equal to 0"),
        ({"expect": {"phases_visited": ["DANCING"]}}, "expect.phases_visited[0]", "Input should be"),
        ({"emulator": {"settings": {"warp": 9}}}, "emulator.settings", "unknown emulator setting 'warp'"),
        ({"compare": {"verdict": "same", "reasons": ["x"]}}, "compare", "need verdict: differs"),
        ({"dialect_overrides": {"beta": {"profile": {"turn_detection": {"idle_timeout_ms": 6000}}}}},
         "dialect_overrides.beta.profile.turn_detection.idle_timeout_ms", "(dialect beta)"),
        ({"dialplan": {"match": ["1"], "profile": {"voice": 3}}}, "dialplan.profile.voice", "valid string"),
    ],
)  # fmt: skip
def test_malformed_fields_name_file_and_field(
    tmp_path: Path, mutate: dict[str, object], field: str, message: str
) -> None:
    target = _broken(tmp_path, mutate=mutate)
    with pytest.raises(ConfigError) as err:
        load_script(target)
    assert (err.value.field, err.value.source) == (field, str(target / "script.yaml"))
    assert message in err.value.message


def test_caller_audio_must_be_g711(tmp_path: Path) -> None:
    target = _broken(tmp_path)
    write_wav(target / "q1_human.wav", read_wav(target / "q1_human.wav"))  # rewritten as PCM16
    with pytest.raises(ConfigError) as err:
        load_script(target)
    assert err.value.field == "turns[0].say"
    assert "format tag 1, expected G.711" in err.value.message


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    target = _broken(tmp_path)
    (target / "script.yaml").write_text("turns: [\n  - wait: none\n")
    with pytest.raises(ConfigError) as err:
        load_script(target)
    assert err.value.field.startswith("line ")


def test_find_scripts_accepts_dirs_files_and_parents(tmp_path: Path) -> None:
    one = SCRIPTS / "transfer"
    assert find_scripts([one]) == [one.resolve()]
    assert find_scripts([one / "script.yaml", one]) == [one.resolve()]
    assert len(find_scripts([SCRIPTS])) >= 8
    with pytest.raises(ConfigError):
        find_scripts([tmp_path / "nope"])


# -- an orchestrated plan: the scripted orchestrator's answers --------------------------------------------------


def _orchestrated(tmp_path: Path, answers: object) -> Path:
    target = tmp_path / "orchestrated_order"
    shutil.copytree(SCRIPTS / "orchestrated_order", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    if answers is None:
        del data["orchestrator"]
    else:
        data["orchestrator"] = {"answers": answers}
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    return target


def test_the_orchestrated_script_loads_its_answers_as_decisions() -> None:
    script = load_script(SCRIPTS / "orchestrated_order")
    assert script.model.orchestrator is not None
    answers = script.model.orchestrator.answers
    assert [a.decision().action for a in answers] == ["say", "nothing", "transfer"]
    assert answers[0].decision().text == "Your order 4471 ships today."
    assert (answers[1].expect_event, answers[2].delay_ms) == ("dtmf", 2000)
    assert all(plan.orchestrator is not None for plan in script.plans.values())


@pytest.mark.parametrize(
    ("answers", "field", "message"),
    [
        ([{"action": "say"}], "orchestrator.answers[0]", "action 'say' needs 'text'"),
        ([{"action": "dance"}], "orchestrator.answers[0].action", "Input should be 'say'"),
        ([{"action": "send_dtmf", "digits": "12x"}], "orchestrator.answers[0]", "digits: String should match"),
        ([{"action": "nothing", "delay_ms": -1}], "orchestrator.answers[0].delay_ms", "greater than or equal to 0"),
        ([{"action": "nothing", "expect_event": "key"}], "orchestrator.answers[0].expect_event", "'turn' or 'dtmf'"),
        ([{"action": "nothing", "colour": "red"}], "orchestrator.answers[0].colour", "Extra inputs"),
        ([], "orchestrator.answers", "at least 1 item"),
        (None, "orchestrator", "required: the dialplan is orchestrated"),
    ],
)
def test_malformed_orchestrator_answers_name_file_and_field(
    tmp_path: Path, answers: object, field: str, message: str
) -> None:
    target = _orchestrated(tmp_path, answers)
    with pytest.raises(ConfigError) as err:
        load_script(target)
    assert (err.value.source, err.value.field) == (str(target / "script.yaml"), field)
    assert message in err.value.message, err.value.message


def test_answers_for_a_plan_without_an_orchestrator_are_refused(tmp_path: Path) -> None:
    target = _broken(tmp_path, mutate={"orchestrator": {"answers": [{"action": "nothing"}]}})
    with pytest.raises(ConfigError) as err:
        load_script(target)
    assert err.value.field == "orchestrator" and "no orchestrator section" in err.value.message
