"""The post-call question on the wire, in virtual time: the bridge's request (``ev.AskText``) is a client event the
SDK's models take, in beta and GA; the emulator answers it out of band, in text, from the session's conversation,
with events the SDK's models take; the bridge reads the answer against the plan; Live refuses the command."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_emulator_session import Driver, check_all, speech, zeros

from bridge import events as ev
from bridge.call.postcall import OK, read_answer, request
from bridge.dialplan import PostCallPlan
from bridge.emulator import postcall
from bridge.realtime.dialects import BETA, GA, LIVE, Dialect, UnsupportedCommand
from bridge.realtime.protocol import RealtimeProtocol

PLAN = PostCallPlan(
    summary=True,
    dispositions=("order_status", "opening hours", "other"),
    fields={
        "type": "object",
        "properties": {
            "reason": {"type": "string", "enum": ["refund", "hours", "complaint"]},
            "order_number": {"type": "string", "pattern": "[0-9]{4}"},
            "callback_hour": {"type": "integer", "minimum": 0, "maximum": 23},
        },
        "required": ["reason"],
    },
)
HEARS = "What are your opening hours? Call me back at 9 about order 5521."
ANSWER = "We open at nine in the morning."


def _called(dialect: Dialect) -> Driver:
    d = Driver(dialect, annotations=[{"hears": HEARS, "reply": {"text": ANSWER}}])
    d.append(speech(2.0) + zeros(1.0))
    d.settle()
    return d


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
def test_the_question_is_answered_out_of_band_in_text_from_the_conversation(dialect: Dialect, oracle: Any) -> None:
    d = _called(dialect)
    n = len(d.events)
    frames = RealtimeProtocol(dialect).encode(request(PLAN))
    for frame in frames:
        sent = json.loads(frame)
        oracle.client_event(dialect.name, sent)  # the bridge's request is one the SDK's models take
        assert sent["response"]["conversation"] == "none"
        d.send(sent)
    d.settle()
    after = d.types()[n:]
    assert "conversation.item.added" not in after and "conversation.item.created" not in after  # out of band
    assert not [t for t in after if "audio" in t]  # text only
    done = d.all("response.done")[-1]["response"]
    assert done["conversation_id"] is None and done["status"] == "completed"
    text = done["output"][0]["content"][0]["text"]
    answer = json.loads(text)
    assert answer["summary"] == f"The caller said: {HEARS} The agent said: {ANSWER}"
    assert answer["disposition"] == "opening hours"  # "order_status": "status" was never said
    assert answer["fields"] == {"reason": "hours", "order_number": "5521", "callback_hour": 9}
    read = read_answer(PLAN, text)
    assert (read.status, read.disposition, read.fields) == (OK, "opening hours", answer["fields"])
    check_all(d, oracle)  # every event the emulator sent, the question's too, validates against the SDK


def test_a_string_field_holds_only_what_was_said_for_it() -> None:
    schema = {
        "type": "object",
        "properties": {
            "callback_time": {"type": "string"},
            "complaint": {"type": "string"},
            "account_manager": {"type": "string"},
        },
    }
    said = [("user", "My order never came. Call me back at 5 pm please."), ("assistant", "Sorry about that.")]
    answer = json.loads(postcall.answer({"fields": schema}, said))
    assert answer["fields"] == {"callback_time": "5 pm"}  # no sentence was about a complaint or a manager
    said = [("user", "I have a complaint about the bill. It is wrong."), ("assistant", "I see.")]
    answer = json.loads(postcall.answer({"fields": schema}, said))
    assert answer["fields"] == {"complaint": "I have a complaint about the bill."}  # no time said: none made up


def test_the_same_call_gives_the_same_answer() -> None:
    answers = []
    for seed in (1, 2):
        d = Driver(GA, annotations=[{"hears": HEARS, "reply": {"text": ANSWER}}], seed=seed)
        d.append(speech(2.0) + zeros(1.0))
        d.settle()
        for frame in RealtimeProtocol(GA).encode(request(PLAN)):
            d.send(json.loads(frame))
        d.settle()
        answers.append(d.all("response.output_text.done")[-1]["text"])
    assert answers[0] == answers[1]


def test_with_nothing_said_the_disposition_is_the_last_and_no_field_is_invented() -> None:
    lines: list[tuple[str, str]] = []
    answer = json.loads(
        postcall.answer({"summary": True, "dispositions": ["resolved", "abandoned"], "fields": PLAN.fields}, lines)
    )
    assert answer == {
        "summary": "The caller said nothing. The agent said nothing.",
        "disposition": "abandoned",
        "fields": {},
    }
    # the bridge does not take fields that miss a required one
    assert read_answer(PLAN, json.dumps({**answer, "disposition": "other"})).status == (
        "answer does not fit the schema: fields"
    )


def test_a_dropped_session_fault_aborts_on_the_question() -> None:
    d = Driver(GA, annotations=[{"hears": HEARS}], drop_on_post_call=True)
    d.append(speech(2.0) + zeros(1.0))
    d.settle()
    d.send({"type": "response.create", "response": {"conversation": "none"}})  # another out-of-band response: no
    d.settle()
    assert not d.s.closed
    for frame in RealtimeProtocol(GA).encode(request(PLAN)):
        d.send(json.loads(frame))
    assert d.s.closed


def test_live_has_no_text_out_of_band() -> None:
    assert not LIVE.capabilities.text_out_of_band and GA.capabilities.text_out_of_band
    with pytest.raises(UnsupportedCommand):
        RealtimeProtocol(LIVE).encode(ev.AskText("summarise"))
