"""A dialplan's ``original_called`` patterns: a forwarded call (Diversion, History-Info) goes to the plan that matches
the number it was first placed to, before a plan that matches the called number alone; a plan with them takes no
other call; ``"*"`` beside them is no catch-all."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.dialplan import Dialplan, check_file, plan_warnings, route


def plan(name: str, match: list[str], original: list[str] | None = None) -> Dialplan:
    fields: dict[str, object] = {"name": name, "match": match}
    if original is not None:
        fields["original_called"] = original
    return Dialplan.model_validate(fields)


PLANS = [
    plan("front-desk", ["1000", "*"]),
    plan("sales-forwarded", ["1000"], ["+1555000*"]),
    plan("vip-forwarded", ["1000"], ["+15550001111"]),
    plan("any-forward", ["*"], ["+1666*"]),
]


@pytest.mark.parametrize(
    ("called", "original", "expected"),
    [
        ("1000", "", "front-desk"),  # not forwarded: the called number alone
        ("1000", "+15550002222", "sales-forwarded"),  # forwarded from a sales number
        ("1000", "+15550001111", "vip-forwarded"),  # the exact original number beats the prefix
        ("1000", "+15559999999", "front-desk"),  # forwarded from a number no plan names
        ("2000", "+15550002222", "front-desk"),  # the called number must match too
        ("2000", "+16660001234", "any-forward"),  # "*" beside original_called patterns
        ("2000", "", "front-desk"),
    ],
)
def test_a_forwarded_call_goes_to_the_plan_of_its_original_called_number(
    called: str, original: str, expected: str
) -> None:
    found = route(PLANS, called, original)
    assert found is not None and found.name == expected


def test_a_plan_with_original_called_patterns_takes_no_other_call() -> None:
    only = [plan("forwarded-only", ["1000"], ["+1555*"])]
    assert route(only, "1000") is None
    assert route(only, "1000", "+15550001111") is not None
    assert route(only, "1000", "+16660001111") is None


def test_routing_by_the_called_number_alone_is_as_before() -> None:
    plans = [plan("catch-all", ["*"]), plan("prefix", ["+1800555*"]), plan("exact", ["+18005550100"])]
    found = [route(plans, n) for n in ("+18005550100", "+18005559999", "42")]
    assert [p.name if p else None for p in found] == ["exact", "prefix", "catch-all"]


def test_a_star_beside_original_called_patterns_is_not_warned_as_a_catch_all() -> None:
    assert plan_warnings(plan("x", ["*"], ["+1555*"])) == []
    assert [w.field for w in plan_warnings(plan("y", ["*"]))] == ["match[0]"]


def test_an_empty_pattern_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nmatch: ['1000']\noriginal_called: ['']\n")
    (error,) = check_file(path)
    assert error.field == "original_called[0]" and "at least 1" in error.message, error
