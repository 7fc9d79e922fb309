"""The published JSON Schema of the webhook bodies (``docs/webhooks.schema.json``, issue 62 item 11): a valid draft
2020-12 schema with a definition for every event type, which the bodies the code makes fit and broken ones do not;
and the cut of a long string (item 16)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bridge import events as ev
from bridge.call.report import CallReport
from bridge.rollout.engine import Decision
from bridge.webhooks.body import ALL_EVENTS, CUT_MARK, call_data, call_ended_data, cut_long, envelope

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "docs" / "webhooks.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
IDENTITY = {"call_id": "c-1", "sip_call_id": "a84b4c76e66710@pc33.example", "dialplan": "support", "variant": "ga",
            "dialect": "ga", "model": "gpt-realtime", "voice": "alloy", "called": "1000",
            "caller": "••••••••67"}  # fmt: skip


def errors(body: bytes | dict[str, Any]) -> list[str]:
    parsed = json.loads(body) if isinstance(body, bytes) else body
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(parsed)]


def ended_report() -> dict[str, Any]:
    report = CallReport("c-1", "ga", "support")
    for t, r in [(900.0, ev.AgentSaid("Hello.", "a")), (2000.0, ev.CallerSaid("A human.", "b")),
                 (9000.0, ev.CallEnded("hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))]:  # fmt: skip
        report.note(t, r)
    report.end_reason, report.ended_by = "hung up", ev.EndedBy.CALLER
    report.peer_reasons = [{"protocol": "Q.850", "cause": 16, "text": "Normal call clearing"}]
    report.transfer = {"mode": "warm", "target": "sip:agent@pbx", "outcome": "completed", "sip_code": 200, "seconds": 3}
    report.post_call = {"summary": "A call.", "disposition": "resolved", "fields": {"card": "****"}, "status": "ok"}
    report.checks = [{"name": "never_say", "passed": True, "detail": "none said"}]
    return report.to_json() | {"outcome": "completed", "cost_usd": 0.012, "usage": {"input_tokens": 10,
                                                                                     "output_tokens": 20}}  # fmt: skip


def test_the_schema_is_valid_and_names_every_event_type() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert set(SCHEMA["properties"]["type"]["enum"]) == {str(e) for e in ALL_EVENTS}
    assert {str(e) for e in ALL_EVENTS} <= set(SCHEMA["$defs"])


def test_the_bodies_the_code_makes_fit() -> None:
    now = time.time()
    times: dict[str, float | None] = {"started_at": now - 10, "answered_at": now - 9}
    started = call_data(IDENTITY, times) | {"seq": 1}
    moved = started | {"mode": "warm", "target": "sip:agent@pbx", "outcome": "completed", "seq": 2}
    ended = call_ended_data(IDENTITY, times | {"ended_at": now}, ended_report(), recording="/rec/c-1") | {"seq": 3}
    never = call_ended_data(IDENTITY, {"started_at": now, "answered_at": None, "ended_at": now}, {}) | {"seq": 1}
    decision = Decision(now, "mini", "rollback", "worse", {"epoch": 3}, {"ga": 100.0, "mini": 0.0})
    bodies = [
        envelope("call.started", started, now),
        envelope("call.transferred", moved, now),
        envelope("call.ended", ended, now),
        envelope("call.ended", never, now),  # never answered: no report parts at all
        envelope("rollout.decision", {"dialplan": "support", **decision.to_json()}, now),
        envelope("rollout.decision", {"dialplan": "support", **decision.to_json(), "weights": None}, now),
    ]
    assert {i: errors(b) for i, b in enumerate(bodies) if errors(b)} == {}


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda b: b["data"].pop("seq"), "data: 'seq' is a required property"),
        (lambda b: b["data"].pop("sip_call_id"), "data: 'sip_call_id' is a required property"),
        (lambda b: b["data"].update(seq=0), "data/seq"),
        (lambda b: b["data"].update(ended_by="nobody"), "data/ended_by"),
        (lambda b: b["data"]["peer_reasons"][0].pop("protocol"), "data/peer_reasons/0"),
        (lambda b: b["data"]["peer_reasons"][0].update(cause="41"), "data/peer_reasons/0/cause"),
        (lambda b: b["data"]["transcript"].append({"at_s": 1, "speaker": "bot", "text": ""}), "data/transcript/2"),
        (lambda b: b.update(timestamp="yesterday"), "timestamp"),
        (lambda b: b.update(type="call.lost"), "type"),
    ],
)
def test_a_broken_body_does_not_fit(change: Any, where: str) -> None:
    now = time.time()
    times = {"started_at": now - 10, "answered_at": now - 9, "ended_at": now}
    body = json.loads(envelope("call.ended", call_ended_data(IDENTITY, times, ended_report()) | {"seq": 3}, now))
    assert errors(body) == []
    change(body)
    assert any(e.startswith(where) for e in errors(body)), errors(body)


def test_a_long_string_is_cut_with_a_marker_at_any_depth() -> None:
    data = {"transcript": [{"text": "x" * 20_000, "at_s": 1.0}], "summary": "short", "n": 3, "none": None}
    cut = cut_long(data, 4000)
    assert cut["transcript"][0]["text"] == "x" * 4000 + CUT_MARK.format(n=16_000)
    assert cut["transcript"][0]["text"].endswith("…[cut: 16000 more characters]")
    assert (cut["summary"], cut["n"], cut["none"]) == ("short", 3, None)
