"""The orchestrator protocol's models: what a decision must carry, how a bad answer is named, and the schema file
drawn from them (docs/orchestrator.schema.json) kept current; the dialplan option's errors name file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.dialplan import check_file
from bridge.orchestrator import models
from bridge.orchestrator.models import Decision, TurnRequest, parse_decision

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "docs" / "orchestrator.schema.json"


def test_the_schema_file_is_current() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == models.render(), (
        "stale: python -m bridge.orchestrator.models --write docs/orchestrator.schema.json"
    )


def test_the_schema_names_both_messages_and_every_action() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert set(schema["$defs"]) >= {"TurnRequest", "Decision", "Line", "Heard"}
    action = schema["$defs"]["Decision"]["properties"]["action"]
    assert action["enum"] == ["say", "respond", "transfer", "hangup", "send_dtmf", "nothing"]
    assert schema["$defs"]["TurnRequest"]["properties"]["version"]["const"] == "1"


def test_a_say_reads_and_a_request_round_trips() -> None:
    d = parse_decision(b'{"action": "say", "text": "Your order 4471 ships today."}')
    assert (d.version, d.action, d.text) == ("1", "say", "Your order 4471 ships today.")
    req = TurnRequest(
        call_id="c1", caller="+1555", called="3000", dialplan="orders", variant="ga", dialect="ga",
        turn="Where is my order?", transcript=[{"role": "caller", "text": "Where is my order?"}], sequence=1,
    )  # fmt: skip
    assert TurnRequest.model_validate_json(req.model_dump_json()) == req


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"action": "say"}', "invalid answer: (body): Value error, action 'say' needs 'text'"),
        (b'{"action": "send_dtmf", "digits": "12x"}', "invalid answer: digits: String should match pattern"),
        (b'{"action": "dance"}', "invalid answer: action: Input should be 'say'"),
        (b'{"action": "nothing", "version": "2"}', "invalid answer: version: Input should be '1'"),
        (b'["say"]', "invalid answer: (body): Input should be a valid dictionary"),
    ],
)
def test_a_bad_answer_is_named(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_decision(body)


def test_every_action_reads() -> None:
    for body in (
        {"action": "respond"},
        {"action": "respond", "instructions": "Offer a refund."},
        {"action": "transfer", "target": "sip:desk@example.com"},
        {"action": "hangup", "text": "Goodbye."},
        {"action": "send_dtmf", "digits": "12#"},
        {"action": "nothing"},
    ):
        assert Decision.model_validate(body).action == body["action"]


@pytest.mark.parametrize(
    ("orchestrator", "field", "words"),
    [
        ("{timeout_ms: 500}", "orchestrator.url", "Field required"),
        ("{url: 'ftp://x/turn'}", "orchestrator.url", "String should match pattern"),
        ("{url: 'http://x/turn', timeout_ms: 2000, give_up_ms: 1000}", "orchestrator.give_up_ms", "more than"),
        ("{url: 'http://x/turn', on_error: shrug}", "orchestrator.on_error", "'respond' or 'failover'"),
        ("{url: 'http://x/turn', colour: red}", "orchestrator.colour", "Extra inputs"),
    ],
)
def test_the_dialplan_option_names_file_and_field(tmp_path: Path, orchestrator: str, field: str, words: str) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text(f"name: orders\nmatch: ['3000']\norchestrator: {orchestrator}\n")
    (error,) = check_file(path)
    assert (error.source, error.field) == (str(path), field)
    assert words in error.message
