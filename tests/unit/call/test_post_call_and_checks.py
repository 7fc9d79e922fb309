"""The pure halves of after-the-call: the plan's ``post_call`` and ``checks`` sections (errors name the file and the
field), reading the model's answer (nothing made up: a misfit leaves summary and disposition null, saying why), and
the compliance checks evaluated on a call's report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge import events as ev
from bridge.call.checks import evaluate, failed, says
from bridge.call.postcall import OK, read_answer
from bridge.call.report import CallReport
from bridge.dialplan import Checks, PostCallPlan, check_file

PLAN = PostCallPlan(
    dispositions=("resolved", "follow_up"),
    fields={
        "type": "object",
        "properties": {"order": {"type": "string", "pattern": "^[0-9]{4}$"}},
        "required": ["order"],
    },
)


def _plan_file(tmp_path: Path, **sections: object) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps({"name": "p", "match": ["1"], **sections}))
    return path


@pytest.mark.parametrize(
    ("sections", "field", "words"),
    [
        ({"post_call": {"summary": False}}, "post_call", "asks for nothing"),
        ({"post_call": {"dispositions": ["a", "a"]}}, "post_call.dispositions", "unique"),
        ({"post_call": {"fields": {"type": "string"}}}, "post_call.fields", "type: object"),
        ({"post_call": {"fields": {"type": "object", "properties": 3}}}, "post_call.fields", "not a valid JSON Schema"),
        ({"post_call": {"tone": "warm"}}, "post_call.tone", "Extra inputs"),
        ({"checks": {"disclosure": {"within_s": 5}}}, "checks.disclosure", "exactly one of text or pattern"),
        (
            {"checks": {"disclosure": {"pattern": "(", "within_s": 5}}},
            "checks.disclosure.pattern",
            "regular expression",
        ),
        ({"checks": {"max_dead_air_s": 0}}, "checks.max_dead_air_s", "greater than 0"),
        (
            {"checks": {"verify_before": {"tool": "read_account", "after": "end_call"}}},
            "checks.verify_before.tool",
            "not a tool",
        ),
    ],
)
def test_a_bad_section_names_the_file_and_the_field(
    tmp_path: Path, sections: dict[str, object], field: str, words: str
) -> None:
    path = _plan_file(tmp_path, profile={"tools": ["end_call"]}, **sections)
    errors = check_file(path)
    assert [(e.source, e.field) for e in errors] == [(str(path), field)], errors
    assert words in str(errors[0])


def test_a_good_section_is_taken(tmp_path: Path) -> None:
    path = _plan_file(
        tmp_path,
        profile={"tools": ["end_call", "transfer_to_human"]},
        transfer_target="sip:agent@pbx",
        post_call={"dispositions": ["resolved"], "fields": PLAN.fields},
        checks={
            "disclosure": {"text": "recorded"},
            "verify_before": {"tool": "transfer_to_human", "after": "end_call"},
        },
    )
    assert check_file(path) == []


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ("Sure! The caller wanted a refund.", "answer does not fit the schema: (answer): not JSON"),
        ('["resolved"]', "answer does not fit the schema: (answer): not a JSON object"),
        (
            {"summary": "", "disposition": "resolved", "fields": {"order": "1234"}},
            "answer does not fit the schema: summary",
        ),
        (
            {"summary": "ok", "disposition": "closed", "fields": {"order": "1234"}},
            "answer does not fit the schema: disposition",
        ),
        ({"summary": "ok", "disposition": "resolved", "fields": None}, "answer does not fit the schema: fields"),
        (
            {"summary": "ok", "disposition": "resolved", "fields": {"order": "12"}},
            "answer does not fit the schema: fields.order",
        ),
        ({"summary": "ok", "disposition": "resolved", "fields": {}}, "answer does not fit the schema: fields"),
    ],
)
def test_an_answer_that_does_not_fit_leaves_everything_null(answer: object, status: str) -> None:
    read = read_answer(PLAN, answer if isinstance(answer, str) else json.dumps(answer))
    assert (read.summary, read.disposition, read.fields, read.status) == (None, None, None, status)


def test_an_answer_that_fits_is_taken_through_the_plans_privacy() -> None:
    answer = {"summary": "Card 4111 1111 1111 1111 declined.", "disposition": "follow_up", "fields": {"order": "4417"}}
    read = read_answer(PLAN, "```json\n" + json.dumps(answer) + "\n```", redact=lambda t: t.replace("1111", "****"))
    assert read.status == OK
    assert read.summary == "Card 4111 **** **** **** declined."
    assert (read.disposition, read.fields) == ("follow_up", {"order": "4417"})


def _report(
    lines: list[tuple[float, str]], tools: list[tuple[float, ev.Report]] | None = None, silence: float | None = None
) -> CallReport:
    r = CallReport("c1", "ga", "p")
    r.note(100.0, ev.Answered())
    for t, text in lines:
        r.note(t, ev.AgentSaid(text, "item"))
        r.agent_transcript.append(text)
    for t, report in tools or []:
        r.note(t, report)
    if silence is not None:
        r.turn_silence_ms.append(silence)
    return r


def test_the_checks_each_give_a_row_that_says_why() -> None:
    checks = Checks.model_validate(
        {
            "disclosure": {"text": "This call may be recorded", "within_s": 10},
            "never_say": ["guaranteed", "no problem at all"],
            "verify_before": {"tool": "read_account", "after": "verify_identity"},
            "max_dead_air_s": 3,
        }
    )
    verified = ev.ToolFinished("verify_identity", "c1", "{}", '{"verified": true}', ev.ToolCallOutcome.OK, 30.0)
    read = ev.ToolStarted("read_account", "c2", "{}")
    good = _report([(2100.0, "Hello, this call may be recorded."), (9000.0, "Your balance is 12 dollars.")],
                   [(5000.0, verified), (6000.0, read)], silence=1200.0)  # fmt: skip
    assert [r["passed"] for r in evaluate(checks, good)] == [True, True, True, True]
    assert evaluate(checks, good)[0]["detail"] == "said 2.0 s after the answer (within 10 s)"
    late = _report([(12_100.0, "By the way, this call may be recorded!"), (13_000.0, "It is guaranteed.")],
                   [(6000.0, read), (7000.0, verified)], silence=4500.0)  # fmt: skip
    rows = evaluate(checks, late)
    assert failed(rows) == ["disclosure", "never_say", "verify_before", "max_dead_air"]
    assert [r["detail"] for r in rows] == [
        "not said within 10 s of the answer; said only 12.0 s after the answer",
        "the agent said 'guaranteed'",
        "read_account was called 6.0 s in, before verify_identity succeeded",
        "longest dead air 4.5 s (over 3 s)",
    ]
    refused = ev.ToolFinished("verify_identity", "c1", "{}", '{"verified": false}', ev.ToolCallOutcome.OK, 30.0)
    assert failed(evaluate(checks, _report([], [(5000.0, refused), (6000.0, read)]))) == ["disclosure", "verify_before"]


def test_phrases_match_whole_words_only() -> None:
    assert says("I can't promise that.", "can't promise")
    assert not says("That is unguaranteed.", "guaranteed")
    assert says("GUARANTEED, yes", "guaranteed")


def test_a_plan_without_checks_has_no_rows() -> None:
    assert evaluate(Checks(), _report([(200.0, "hi")])) == []


def test_post_call_on_a_dialect_that_cannot_answer_it_is_a_warning(tmp_path: Path) -> None:
    from bridge.dialplan import load_dialplan, plan_warnings

    live = load_dialplan(_plan_file(tmp_path, dialect="live", post_call={"dispositions": ["resolved"]}))
    (warning,) = plan_warnings(live)
    assert warning.field == "post_call" and "the live dialect cannot answer out of band" in str(warning)
    ga = load_dialplan(_plan_file(tmp_path, dialect="ga", post_call={"dispositions": ["resolved"]}))
    assert plan_warnings(ga) == []
