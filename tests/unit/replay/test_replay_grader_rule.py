"""The emulator's rule grader (bridge/emulator/grader.py), what it can and cannot judge; the grader's reading of a
Responses API answer (bridge/replay/grader.py); ``means``, ``must_not_mean`` and ``rubric`` validated in scripts."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from bridge.emulator.grader import holds, judge, response
from bridge.errors import ConfigError
from bridge.meaning.reading import flips
from bridge.replay.grader import GraderError, verdicts
from bridge.replay.script import load_script

REPO = Path(__file__).resolve().parents[3]
HOURS = "open nine to five on Saturdays"
GREETS = "greets the caller and offers help"


@pytest.mark.parametrize(
    ("statement", "said", "held"),
    [
        (HOURS, "We are open from nine to five on Saturdays.", True),
        (HOURS, "On Saturdays, we're open from nine to five.", True),  # other words, other order
        (HOURS, "We are NOT open from nine to five on Saturdays.", False),  # a negation
        (HOURS, "On Saturdays we aren't open from nine to five.", False),
        (HOURS, "We are open from ten to four on Saturdays.", False),  # another time
        (HOURS, "Hello. We are open nine to five on Saturdays, ten to two on Sundays.", True),  # says more
        (GREETS, "Thank you for calling Acme support. How can I help you today?", True),
        (GREETS, "Hi, Acme support here. What can I do for you?", True),
        (GREETS, "Acme support is closed. Do not call us again today.", False),
        (GREETS, "This is Acme support. Please hold.", False),
        ("says goodbye and thanks the caller", "Goodbye, and thanks for calling Acme!", True),
        ("says goodbye and thanks the caller", 'Thanks for waiting. The result is: {"ok":true}', False),
        ("never promises a refund", "Your order shipped yesterday.", True),  # a negated statement: the positive not
        ("never promises a refund", "I promise you a full refund.", False),
    ],
)
def test_the_rule_judges_words_acts_and_flips(statement: str, said: str, held: bool) -> None:
    assert holds(statement, said)[0] is held, holds(statement, said)


@pytest.mark.parametrize(
    ("statement", "said"),
    [
        ("transferring the caller to a colleague", "I'm transferring you to a person now."),  # no synonyms
        (HOURS, "We are open from 9 to 5 on Saturdays."),  # digits are not number words
    ],
)
def test_what_the_rule_cannot_judge(statement: str, said: str) -> None:
    """The limits the docs name: a model would say these hold."""
    assert holds(statement, said)[0] is False


def test_a_statement_flipped_by_a_word_the_rule_does_not_know_passes() -> None:
    """``closed`` for ``not open``: the rule sees no negation (the docs say so; ``never_says`` is for it)."""
    assert holds("not closed on Saturdays", "We are closed on Saturdays.")[0] is False
    assert holds("not open on Saturdays", "We are closed on Saturdays.")[0] is True


def test_the_rule_judges_the_agents_lines_of_a_call() -> None:
    call = [{"speaker": "agent", "text": "Thank you for calling Acme."}, {"speaker": "caller", "text": "Goodbye."}]
    assert judge({"statements": ["says goodbye"], "call": call})[0]["holds"] is False  # the caller's is not the agent's
    call.append({"speaker": "agent", "text": "Have a good day."})
    found = judge({"statements": ["says goodbye", "says goodbye to Globex"], "call": call})
    assert [v["holds"] for v in found] == [True, False]
    with pytest.raises(ValueError, match="statements"):
        judge({"statements": "x", "answer": "y"})


def test_flips_within_a_longer_answer_name_only_what_the_statement_loses() -> None:
    assert flips(HOURS, "We are open nine to five on Saturdays and ten to two on Sundays.", within=True) == []
    assert flips(HOURS, "We are open ten to five on Saturdays.", within=True) == ["a number changed: nine not said"]
    assert flips("Acme is open", "Globex is not open", within=True) == ["a negation added"]


def _answer(text: str, status: str = "completed") -> dict[str, Any]:
    body = response({"model": "m", "input": "x"}, [], 1)
    body["output"][0]["content"] = [{"type": "output_text", "text": text, "annotations": []}]
    return {**body, "status": status}


def test_verdicts_are_read_in_order_with_the_usage() -> None:
    text = json.dumps({"verdicts": [{"statement": 1, "holds": False, "reason": "b"}, {"statement": 0, "holds": True,
                                                                                          "reason": "a"}]})  # fmt: skip
    found, usage = verdicts(_answer(text), 2, "POST u")
    assert found == [{"holds": True, "reason": "a"}, {"holds": False, "reason": "b"}]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_answer(json.dumps({"verdicts": [{"statement": 0, "holds": True, "reason": ""}]})), "1 verdict(s) for 2"),
        (_answer(json.dumps({"verdicts": [{"statement": 0, "holds": "yes", "reason": ""}] * 2})), "malformed"),
        (_answer(json.dumps({"verdicts": [{"statement": 0, "holds": True, "reason": ""}] * 2})), "malformed"),
        (_answer("{}", status="failed"), "POST u: response failed"),
        ([], "not a JSON object"),
    ],
)
def test_anything_but_the_schemas_verdicts_is_an_error(body: Any, why: str) -> None:
    with pytest.raises(GraderError, match=re.escape(why)):
        verdicts(body, 2, "POST u")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"turns": {0: {"means": ["..."]}}}, "turns[0].expect.means[0]: a statement needs a word, not '...'"),
        ({"turns": {0: {"must_not_mean": [3]}}}, "turns[0].expect.must_not_mean[0]: a statement is a string"),
        ({"rubric": ["ok", "x" * 301]}, "rubric[1]: a statement is at most 300 characters"),
        ({"greeting": {"means": [""]}}, "expect.greeting.means[0]: a statement needs a word"),
    ],
)
def test_a_bad_statement_names_the_file_and_the_field(tmp_path: Path, change: dict[str, Any], error: str) -> None:
    import yaml

    shutil.copytree(REPO / "call_scripts" / "question_answer", tmp_path / "qa")
    path = tmp_path / "qa" / "script.yaml"
    data = yaml.safe_load(path.read_text())
    for i, over in change.get("turns", {}).items():
        data["turns"][i]["expect"].update(over)
    if "rubric" in change:
        data["rubric"] = change["rubric"]
    if "greeting" in change:
        data["expect"]["greeting"].update(change["greeting"])
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_script(tmp_path / "qa", REPO / "dialplans")
    assert str(info.value).startswith(f"{path}: {error}"), str(info.value)


def test_a_rubric_may_be_one_string() -> None:
    script = load_script(REPO / "call_scripts" / "question_answer", REPO / "dialplans")
    model = script.model.model_validate({**script.model.model_dump(), "rubric": "  stays   polite "})
    assert model.rubric == ["stays polite"]
