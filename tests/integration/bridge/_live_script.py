"""The emulator's script for the Live call tests over both SIP peers (the pjsua2 softphone and SIPp): a greeting,
one question heard, one answer, each a tone of its own so the caller's recording tells them apart."""

from __future__ import annotations

import json
from typing import Any

from _bridge_helpers import timeline

from bridge.emulator.session import SessionRecord

GREETING_HZ, REPLY_HZ, LINE_HZ, CALLER_HZ, PEAK_DBFS = 400.0, 600.0, 500.0, 1020.0, -12.0
GREETING_MS, REPLY_MS = 1000, 1200
HEARS = "What are your opening hours?"


def greet_and_answer() -> dict[str, Any]:
    """``queue_next`` arguments: the greeting, then the answer to :data:`HEARS`."""
    return {
        "settings": {"tone_dbfs": PEAK_DBFS},
        "annotations": {
            "greeting": {"text": "Welcome.", "tone_hz": GREETING_HZ, "duration_ms": GREETING_MS},
            "turns": [{"hears": HEARS, "reply": {"text": "From nine.", "tone_hz": REPLY_HZ, "duration_ms": REPLY_MS}}],
        },
    }


def long_greeting() -> dict[str, Any]:
    """``queue_next`` arguments: a 6 s greeting for the caller to speak over."""
    return {
        "settings": {"tone_dbfs": PEAK_DBFS, "delta_ms": 100},
        "annotations": {"greeting": {"text": "A long welcome.", "tone_hz": GREETING_HZ, "duration_ms": 6000}},
    }


def assert_live_transfer(report: dict[str, Any], record: SessionRecord, target: str) -> None:
    """A Live call the model transferred to ``target`` with ``transfer_to_human``: the call's report, and the
    delegation's call answered on the wire with ``response.item.create``, then one ``response.create``."""
    assert report["dialect"] == "live" and report["end_reason"] == "transferred", report["end_reason"]
    assert [c["name"] for c in report["tool_calls"]] == ["transfer_to_human"]
    assert timeline(report, "transfer") and timeline(report, "transfer")[0][1] == target
    outputs = [e["item"] for e in record.received if e.get("type") == "response.item.create"]
    assert len(outputs) == 1 and json.loads(outputs[0]["output"])["ok"] is True
    kinds = [e.get("type") for e in record.received if e.get("type") != "session.input_audio.append"]
    i = kinds.index("response.item.create")
    assert kinds[i : i + 2] == ["response.item.create", "response.create"], kinds
