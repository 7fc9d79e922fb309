"""A card number the model puts in a post-call field of type ``integer`` or ``number`` is masked as it is in a string
(issue 62, item 15): the fields are stored in Redis, written to the report, sent in every webhook and shown to viewers
as :func:`bridge.call.postcall.read_answer` leaves them."""

from __future__ import annotations

import json

import pytest

from bridge.call.postcall import OK, read_answer
from bridge.dialplan import PostCallPlan
from bridge.privacy.masking import HIDDEN, numeral, redact_spoken_digits, redact_value

CARD = 4111111111111111
SCHEMA = {
    "type": "object",
    "properties": {
        "card": {"type": "integer"},
        "amount": {"type": "number"},
        "account": {"type": "number"},
        "count": {"type": "integer"},
        "ids": {"type": "array", "items": {"type": "integer"}},
        "nested": {"type": "object", "properties": {"pan": {"type": "integer"}, "ok": {"type": "boolean"}}},
    },
}


def visible4(text: str) -> str:
    return redact_spoken_digits(text, 4)


def test_a_card_number_in_an_integer_field_is_masked_everywhere_the_fields_go() -> None:
    plan = PostCallPlan.model_validate({"summary": False, "fields": SCHEMA})
    answer = {
        "summary": None,
        "disposition": None,
        "fields": {
            "card": CARD,
            "amount": 12.5,
            "account": 123456789.25,
            "count": 3,
            "ids": [7, 5500005555555559],
            "nested": {"pan": 378282246310005, "ok": True},
        },
    }
    post = read_answer(plan, json.dumps(answer), visible4)
    assert post.status == OK
    assert post.fields == {
        "card": HIDDEN,
        "amount": 12.5,  # short runs stay numbers
        "account": f"{HIDDEN}.25",
        "count": 3,
        "ids": [7, HIDDEN],
        "nested": {"pan": HIDDEN, "ok": True},
    }
    assert str(CARD) not in json.dumps(post.to_json())


def test_a_plan_that_keeps_digits_keeps_the_numbers() -> None:
    plan = PostCallPlan.model_validate({"summary": False, "fields": SCHEMA})
    post = read_answer(plan, json.dumps({"fields": {"card": CARD}}), str)
    assert post.fields == {"card": CARD}


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (CARD, "4111111111111111"),
        (4.111111111111111e16, "41111111111111110"),
        (1e-07, "0.0000001"),
        (12.5, "12.5"),
        (3.0, "3"),
        (-7, "-7"),
    ],
)
def test_a_number_is_written_out_in_full(number: float, text: str) -> None:
    assert numeral(number) == text


def test_every_type_at_any_depth_goes_through_the_masking() -> None:
    value = {"a": [1, [2, {"b": 4111111111111111.0}]], "c": "card 4111 1111 1111 1111", "d": None, "e": False}
    assert redact_value(value, visible4) == {"a": [1, [2, {"b": HIDDEN}]], "c": f"card {HIDDEN}", "d": None, "e": False}
