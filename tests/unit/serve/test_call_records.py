"""Every record of a call says the same fields in the same time format (issue 70 item 8): the worker's report line,
the line ``serve``'s pool writes for a call whose worker died, and the ``call.ended`` webhook, each checked against
its published JSON Schema (docs/report.schema.json, docs/webhooks.schema.json) with ``jsonschema``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bridge import events as ev
from bridge.call.report import CallReport
from bridge.dialplan import load_dialplans
from bridge.serve.lost import lost_line
from bridge.serve.worker import report_line
from bridge.store.record import RECORD_FIELDS, CallTimes, iso, stored_record
from bridge.webhooks.body import call_ended_data

ROOT = Path(__file__).resolve().parents[3]
REPORT = Draft202012Validator(json.loads((ROOT / "docs" / "report.schema.json").read_text()))
WEBHOOK = Draft202012Validator(json.loads((ROOT / "docs" / "webhooks.schema.json").read_text()))
ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
T0 = 1795739969.6


def errors(validator: Draft202012Validator, record: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(record)]


@dataclass
class Incoming:
    """What the report line reads of an incoming call (``bridge.sip.gateway.IncomingCall``)."""

    call_id: str = "c-1"
    sip_call_id: str = "a84b4c76e66710@pc33.example"
    caller: str = "+15550001234"
    called: str = "4000"
    original_called: str = ""


@dataclass
class Variant:
    """What the report line reads of the call's variant (``bridge.serve.variant.VariantCall``)."""

    def report_fields(self) -> dict[str, Any]:
        return {"variant": "ga", "dialect": "ga", "model": "gpt-realtime", "voice": "alloy", "decision": "weights",
                "fallback": False, "refused": [], "usage": {"input_tokens": 10, "output_tokens": 20},
                "cost_usd": 0.012}  # fmt: skip


def a_call() -> CallReport:
    report = CallReport("c-1", "ga", "support")
    for t, r in [(0.0, ev.Answered()), (300.0, ev.SessionOpened("sess_A1")), (900.0, ev.AgentSaid("Hi.", "a")),
                 (2000.0, ev.SessionOpened("sess_B2")), (2100.0, ev.SessionOpened("sess_A1")),
                 (9000.0, ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))]:  # fmt: skip
        report.note(t, r)
    report.answered, report.end_reason, report.ended_by = True, "caller hung up", ev.EndedBy.CALLER
    return report


def test_one_time_format_to_the_millisecond() -> None:
    assert iso(T0) == "2026-11-27T00:39:29.600Z"
    assert iso(0.0) == "1970-01-01T00:00:00.000Z"


def test_the_report_names_the_models_sessions_in_the_order_they_opened_and_how_it_ended() -> None:
    shown = a_call().to_json()
    assert (shown["session_ids"], shown["outcome"]) == (["sess_A1", "sess_B2"], "completed")


def test_a_workers_report_line_has_the_whole_record_masked_and_fits_its_schema() -> None:
    plan = next(p for p in load_dialplans(ROOT / "dialplans") if p.name == "support")
    assert plan.privacy.caller_visible_digits == 4
    times = CallTimes(started_at=T0, answered_at=T0 + 0.25, ended_at=T0 + 9.1)
    call = Incoming(original_called="+15550009876")
    made = report_line(0, call, plan, Variant(), a_call(), times)  # type: ignore[arg-type]  # the parts it reads
    line = json.loads(json.dumps(made, default=str))  # as the report file has it (bridge.store.reportfile)
    assert errors(REPORT, line) == []
    assert set(RECORD_FIELDS) <= set(line)
    assert (line["caller"], line["original_called"]) == ("+*******1234", "+*******9876")  # as logs and Redis keep it
    assert (line["started_at"], line["answered_at"], line["ended_at"], line["duration_s"]) == (
        "2026-11-27T00:39:29.600Z", "2026-11-27T00:39:29.850Z", "2026-11-27T00:39:38.700Z", 8.85,
    )  # fmt: skip
    assert (line["sip_call_id"], line["called"], line["variant"], line["model"], line["outcome"]) == (
        "a84b4c76e66710@pc33.example", "4000", "ga", "gpt-realtime", "completed",
    )  # fmt: skip
    assert line["session_ids"] == ["sess_A1", "sess_B2"]


def dead_workers_hash() -> dict[str, str]:
    """A call's hash in Redis as ``serve``'s pool holds it once marked ended (everything a string)."""
    return {
        "call_id": "c-2", "worker": "127.0.0.1:5070", "caller": "+1555000****", "called": "4000",
        "dialplan": "support", "variant": "ga", "dialect": "ga", "model": "gpt-realtime", "voice": "alloy",
        "started_at": f"{T0:.3f}", "answered_at": f"{T0 + 1:.3f}", "ended_at": f"{T0 + 31.25:.3f}",
        "session_id": "sess_Z9", "sip_call_id": "x@y", "end_reason": "worker died", "ended_by": "fault",
        "outcome": "failed", "webhook_seq": "1",
    }  # fmt: skip


def test_a_dead_workers_line_is_typed_as_the_schema_says() -> None:
    line = lost_line(0, "c-2", dead_workers_hash(), "SIGKILL")
    assert errors(REPORT, line) == []
    assert (line["started_at"], line["ended_at"], line["duration_s"]) == (
        "2026-11-27T00:39:29.600Z", "2026-11-27T00:40:00.850Z", 30.25,
    )  # fmt: skip
    assert (line["answered"], line["worker_died"], line["worker_exit"], line["outcome"]) == (
        True, True, "SIGKILL", "failed",
    )  # fmt: skip
    assert (line["caller"], line["original_called"], line["session_ids"]) == ("+1555000****", None, ["sess_Z9"])


@pytest.mark.parametrize(
    "broken",
    [
        {"started_at": "1795739969.600"},  # a Unix time as a string
        {"ended_at": ""},
        {"answered_at": 1795739970.6},
        {"session_ids": "sess_Z9"},
        {"caller": None},
    ],
)
def test_the_schema_refuses_a_record_typed_otherwise(broken: dict[str, Any]) -> None:
    line = lost_line(0, "c-2", dead_workers_hash(), "SIGKILL") | broken
    assert errors(REPORT, line)


def test_the_webhook_and_the_records_say_the_same_fields_alike() -> None:
    state = dead_workers_hash()
    stored = stored_record(state)
    identity = {k: stored[k] for k in ("call_id", "sip_call_id", "dialplan", "variant", "dialect", "model", "voice")}
    identity |= {"caller": stored["caller"], "called": "4000", "original_called": None}
    times = {"started_at": T0, "answered_at": T0 + 1, "ended_at": T0 + 31.25}
    report = {"end_reason": "worker died", "ended_by": "fault", "outcome": "failed", "session_ids": ["sess_Z9"]}
    data = call_ended_data(identity, times, report) | {"seq": 2}
    body = {"type": "call.ended", "version": 1, "timestamp": iso(T0 + 32), "data": data}
    assert errors(WEBHOOK, body) == []
    assert {k: data[k] for k in RECORD_FIELDS} == stored
