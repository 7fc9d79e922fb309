"""The agent's words: phrases match whole words in order on what was said aloud, never inside JSON read out; the
answers are placed by the turn they answer; bad expectations are errors naming the script file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import events as ev
from bridge.errors import ConfigError
from bridge.events import ItemType
from bridge.replay.script import AgentSays, Said, Turn, load_script
from bridge.replay.words import answers, said, strip_json, word_checks

REPO = Path(__file__).resolve().parents[3]


def test_a_phrase_is_whole_words_in_order() -> None:
    line = "We are open from nine to five on Saturdays, not Sundays."
    assert said(Said(phrase="Nine to five"), line) and said(Said(phrase="saturdays"), line)
    assert not said(Said(phrase="five to nine"), line)
    assert not said(Said(phrase="not"), "Please note the hours.")  # a word, not a substring
    assert said(Said(phrase="we aren't"), "We aren\u2019t open.")  # a curly apostrophe is one
    assert said(Said(phrase="$49.99"), "That is $49.99 a month.") and not said(Said(phrase="$49"), "It is $49.99.")
    assert said(Said(pattern=r"n't\b|\bnot\b"), "We don't open") and not said(Said(pattern=r"\bnot\b"), "note")


def test_json_read_aloud_is_cut_out_and_kept_apart() -> None:
    text, found = strip_json('Thanks for waiting. The result is: {"ok":true,"note":"Say a goodbye"}')
    assert text == "Thanks for waiting. The result is:" and found == ['{"ok":true,"note":"Say a goodbye"}']
    assert strip_json("Press [1] for billing {or} not")[1] == []  # no JSON object: brackets in words stay
    assert strip_json('It is: [{"id": 4471}] and [1, 2]')[1] == ['[{"id": 4471}]']


def _report(lines: list[tuple[float, float, str]]) -> dict[str, Any]:
    """A call report's notes: per agent line, its item beginning and its transcript."""
    notes: list[tuple[float, Any]] = []
    for i, (began, said_at, text) in enumerate(lines):
        notes.append((began, ev.as_json(ev.OutputItem(ItemType.MESSAGE, f"item_{i}"))))
        notes.append((said_at, ev.as_json(ev.AgentSaid(text, f"item_{i}"))))
    return {"reports": sorted(notes, key=lambda n: n[0])}


def test_answers_belong_to_the_turn_they_answer() -> None:
    turns = [Turn(say="a.wav"), Turn(say="b.wav", barge_in_after_ms=500), Turn(hangup=True)]
    spans = [(1000.0, 2000.0, "turn 0: hours?"), (3500.0, 4000.0, "turn 1: sorry"), (6000.0, 6000.0, "hangup")]
    report = _report([
        (10.0, 900.0, "Hello, Acme."),
        (2100.0, 3600.0, "We open at nine"),  # cut by the barge-in: its transcript comes after turn 1 began
        (4100.0, 4500.0, 'Result: {"ok": true}'),
    ])  # fmt: skip
    found = answers(report, turns, spans)
    assert found.greeting == ["Hello, Acme."] and found.turns == {0: ["We open at nine"], 1: ["Result:"]}
    assert found.closing == "Result:" and found.json == ['Result: {"ok": true}']
    checks = {n: (ok, d) for n, ok, d in word_checks(found, turns, None, None, [])}
    assert checks["spoken_json"] == (False, 'the agent read raw JSON aloud: Result: {"ok": true}')


def _broken(tmp_path: Path, change: Any) -> str:
    folder = tmp_path / "qa"
    shutil.copytree(REPO / "call_scripts" / "question_answer", folder)
    data = yaml.safe_load((folder / "script.yaml").read_text())
    change(data)
    (folder / "script.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_script(folder)
    return str(exc.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["turns"][0]["expect"]["never_says"].append({"pattern": "(open"}),
         "turns[0].expect.never_says[1]: pattern '(open' is not a regular expression"),
        (lambda d: d["expect"]["greeting"]["says"].append(" ... "), "expect.greeting.says[1]: a phrase needs a word"),
        (lambda d: d["turns"][1].update(expect={"says": ["bye"]}), "turns[1]: expect is about the answer"),
        (lambda d: d["turns"][0]["expect"].update(sayz=["x"]), "turns[0].expect.sayz: Extra inputs are not permitted"),
        (lambda d: d["expect"].update(closing_line={"says": [{"phrase": "a", "pattern": "b"}]}),
         "expect.closing_line.says[0]: give a phrase (a string) or {pattern: REGEX}"),
        (lambda d: d["turns"][0].update(reply={"text": "x", "after_tool": "y"}),
         "turns[0].reply: after_tool is said once a tool's result is back: it needs tool_call"),
    ],
)  # fmt: skip
def test_a_bad_expectation_names_the_file_and_the_field(tmp_path: Path, change: Any, message: str) -> None:
    text = _broken(tmp_path, change)
    assert text.startswith(f"{tmp_path / 'qa' / 'script.yaml'}: ") and message in text, text


def test_an_agent_that_says_nothing_fails_what_it_must_say() -> None:
    turns = [Turn(say="a.wav", expect=AgentSays(says=[Said(phrase="nine to five")]))]
    found = answers({"reports": []}, turns, [(1000.0, 2000.0, "turn 0: hours?")])
    checks = {n: (ok, d) for n, ok, d in word_checks(found, turns, None, None, [])}
    assert checks["turns[0].expect.says"] == (
        False,
        "missing 'nine to five' in the answer to turns[0]: the agent said nothing",
    )
