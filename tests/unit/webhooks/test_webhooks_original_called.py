"""The original called number of a forwarded call in the webhooks (pure, the outbox a fake): every call event
carries ``original_called`` (null for a call that was not forwarded), given to the outbox in each form an endpoint
may ask for (as the caller is); a dead worker's ``call.ended`` takes it from the call's hash, as stored; the bodies
fit the published schema, which refuses a number that is not a string."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jsonschema import Draft202012Validator

from bridge import events as ev
from bridge.call.report import CallReport
from bridge.dialplan import Dialplan
from bridge.rollout.policy import Decision
from bridge.serve.webhooks import CallHooks, lost_ended
from bridge.webhooks.body import envelope

SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).resolve().parents[3] / "docs" / "webhooks.schema.json").read_text())
)
PLAN = Dialplan.model_validate({"name": "support", "match": ["1000"], "privacy": {"caller_visible_digits": 4}})


class _Box:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def emit(self, event_type: str, data: dict[str, Any], **kw: Any) -> str:
        self.emitted.append((event_type, data, kw))
        return f"msg_{len(self.emitted)}"


def _errors(kind: str, data: dict[str, Any], form: str, kw: dict[str, Any]) -> list[str]:
    """Where the body one endpoint (whose caller setting is ``form``) would get departs from the schema."""
    shown = data | {"caller": kw["callers"][form]}
    if kw.get("originals") is not None:
        shown["original_called"] = kw["originals"][form]
    return [e.message for e in SCHEMA.iter_errors(json.loads(envelope(kind, shown, 1e9)))]


def _call(hooks: CallHooks, original: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    call = SimpleNamespace(call_id="c-1", caller="+15551234567", called="1000", original_called=original,
                           sip_call_id="a84b@pbx")  # fmt: skip
    listen = hooks.listener(call, PLAN, Decision("ga", "ga", "gpt-x", "alloy", "r"), "ga")
    report = CallReport("c-1", "ga", "support")
    for t, r in [(5.0, ev.Answered()), (900.0, ev.CallEnded("hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))]:
        report.note(t, r)
        listen(r)
    hooks.ended("c-1", report, {"variant": "ga", "model": "gpt-x"})
    box = hooks.outbox
    assert isinstance(box, _Box)
    return box.emitted


def test_each_call_event_carries_the_original_called_number_in_each_form(tmp_path: Path) -> None:
    emitted = _call(CallHooks(_Box(), tmp_path), "+15550001111")  # type: ignore[arg-type]  # the outbox's emit
    assert [kind for kind, _, _ in emitted] == ["call.started", "call.ended"]
    for kind, data, kw in emitted:
        assert kw["originals"] == {"viewer": "•" * 10 + "11", "masked": "+*******1111", "full": "+15550001111"}
        assert kw["callers"]["masked"] == "+*******4567"
        assert "original_called" in data and data["called"] == "1000"
        for form in ("viewer", "masked", "full"):
            assert _errors(kind, data, form, kw) == [], form


def test_a_call_not_forwarded_has_a_null_original_called_number(tmp_path: Path) -> None:
    emitted = _call(CallHooks(_Box(), tmp_path), "")  # type: ignore[arg-type]  # the outbox's emit
    for kind, data, kw in emitted:
        assert data["original_called"] is None and kw["originals"] is None
        assert _errors(kind, data, "viewer", kw) == []


def test_a_dead_workers_call_ended_takes_it_from_the_hash_as_stored(tmp_path: Path) -> None:
    state = {"call_id": "c-1", "sip_call_id": "a84b@pbx", "dialplan": "support", "variant": "ga", "dialect": "ga",
             "model": "gpt-realtime", "voice": "alloy", "caller": "+*******4567", "called": "1000",
             "original_called": "+*******1111", "started_at": "1000.000", "answered_at": "1001.500",
             "webhook_seq": "1"}  # fmt: skip
    box = _Box()
    lost_ended(box, "c-1", state, tmp_path)  # type: ignore[arg-type]  # the outbox's emit
    ((kind, data, kw),) = box.emitted
    assert kw["originals"] == {"viewer": "•" * 10 + "11", "masked": "+*******1111", "full": "+*******1111"}
    assert data["original_called"] is None  # each endpoint's copy gets its form (Outbox.emit)
    assert _errors(kind, data, "full", kw) == []
    lost_ended(box, "c-2", {k: v for k, v in state.items() if k != "original_called"}, tmp_path)  # type: ignore[arg-type]
    assert box.emitted[-1][2]["originals"] is None


def test_the_schema_refuses_an_original_called_number_that_is_not_a_string(tmp_path: Path) -> None:
    ((kind, data, _), _) = _call(CallHooks(_Box(), tmp_path), "+15550001111")  # type: ignore[arg-type]
    body = json.loads(envelope(kind, data | {"caller": "x", "original_called": 15550001111}, 1e9))
    assert any("original_called" in "/".join(map(str, e.absolute_path)) for e in SCHEMA.iter_errors(body))
