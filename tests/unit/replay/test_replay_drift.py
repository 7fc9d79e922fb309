"""Answer drift: a similarity that keeps paraphrases close, and the changes that flip meaning named."""

from __future__ import annotations

import pytest

from bridge.meaning.reading import flips, similarity
from bridge.replay.drift import SIMILAR, drift

HOURS = "We are open from nine to five on Saturdays."


@pytest.mark.parametrize(
    ("after", "named"),
    [
        ("We are not open from nine to five on Saturdays.", ["a negation added"]),
        ("We aren't open from nine to five on Saturdays.", ["a negation added"]),
        ("We are open from ten to four on Saturdays.", ["a number changed: nine five -> ten four"]),
        ("We are open from nine to five on Sundays.", ["a date changed: saturdays -> sundays"]),
        ("We are open from 9:00 to 5:00 on Saturdays.", ["a number changed: nine five -> -",
                                                         "a time changed: - -> 9:00 5:00"]),
        ("We are open from nine to five on Saturdays at Globex.", ["a name changed: - -> Globex"]),
    ],
)  # fmt: skip
def test_a_flip_is_named(after: str, named: list[str]) -> None:
    assert flips(HOURS, after) == named


def test_a_price_is_a_price() -> None:
    assert flips("Your plan is $49 a month.", "Your plan is $59 a month.") == ["a price changed: $49 -> $59"]
    assert flips("It costs forty nine dollars.", "It costs fifty nine dollars.") == [
        "a price changed: forty nine -> fifty nine"
    ]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (HOURS, "On Saturdays, we're open from nine to five."),
        ("Thank you for calling Acme support. How can I help you today?", "Hi, Acme support here. What can I do?"),
        ("Thank you for calling Acme. Goodbye!", "Goodbye, and thanks for calling Acme!"),
        ("Your order shipped yesterday and arrives on Friday.", "It shipped yesterday, and it arrives on Friday."),
    ],
)
def test_a_paraphrase_stays_close_and_flips_nothing(before: str, after: str) -> None:
    assert similarity(before, after) >= SIMILAR and flips(before, after) == []


def test_a_pinned_change_is_red_unless_declared() -> None:
    then = {"runs": {"ga": {"answers": {"turns[0]": HOURS, "turns[1]": "Bye."}}}}
    answers = {"turns[0]": "We are not open on Saturdays.", "turns[1]": "See you."}
    now = {"script": "qa", "pinned": {"turns[0]": ""}, "runs": {"ga": {"answers": answers}}}
    found, red, _ = drift(now, then)
    assert [(f["answer"], f["changed"], f["pinned"]) for f in found] == [("turns[0]", True, True),
                                                                         ("turns[1]", True, False)]  # fmt: skip
    assert len(red) == 1 and red[0].startswith("answer: GA turns[0], pinned, changed: a negation added; a number")
    assert drift(now, then, ["qa:turns[0]"])[1:] == ([], [{"kind": "answer", "name": "qa/ga/turns[0]",
                                                             "by": "--accept qa:turns[0]"}])  # fmt: skip
    now["pinned"] = {"turns[0]": "closed on Saturdays from May"}
    assert drift(now, then)[2][0]["reason"] == "closed on Saturdays from May"
    assert drift(now, {"runs": {"ga": {}}})[0] == []  # a baseline without answers: nothing compared
