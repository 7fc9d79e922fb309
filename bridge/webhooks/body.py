"""The events a webhook carries and their bodies (Standard Webhooks' payload shape). Pure.

The body is ``{"type": <event type>, "version": 1, "timestamp": <ISO 8601, UTC>, "data": {...}}``: compact JSON, UTF-8,
made once when the event happens and sent byte for byte the same on every attempt (the signature covers it). The data of
the call events (:func:`call_data`, :func:`call_ended_data`) is what a CRM needs to file a call without reading Redis;
each carries ``seq``, the event's place among its call's events (1, 2, ...: a receiver can tell a gap or a repeat). A
string longer than the limit is cut with a marker (:func:`cut_long`). Every event type's data has a JSON Schema
(``docs/webhooks.schema.json``, :func:`bridge.webhooks.schema.schema`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from bridge.store.record import duration_s, session_ids
from bridge.store.record import iso as iso  # the webhooks CLI shows times with it


class EventType(enum.StrEnum):
    CALL_STARTED = "call.started"  # the call was answered
    CALL_TRANSFERRED = "call.transferred"  # a blind transfer's REFER went out, or a warm transfer joined the human
    CALL_ENDED = "call.ended"  # the call is over and its report written
    ROLLOUT_DECISION = "rollout.decision"  # a rollout's weights changed by a decision (bridge.webhooks.outbox.emit)


ALL_EVENTS = tuple(EventType)
CUT_MARK: Final = "…[cut: {n} more characters]"  # the end of a string cut by cut_long
VERSION: Final = 1  # the body's version (docs/webhooks.schema.json): a change a receiver must know of raises it


def cut_long(value: Any, max_chars: int) -> Any:
    """``value`` (an event's data) with every string longer than ``max_chars`` cut there and marked
    (:data:`CUT_MARK`: ``…[cut: 16000 more characters]``), at any depth; everything else as it is."""
    if isinstance(value, str):
        return value if len(value) <= max_chars else value[:max_chars] + CUT_MARK.format(n=len(value) - max_chars)
    if isinstance(value, Mapping):
        return {k: cut_long(v, max_chars) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [cut_long(v, max_chars) for v in value]
    return value


def envelope(event_type: str, data: Mapping[str, Any], at: float) -> bytes:
    """The body of one event, as sent."""
    body = {"type": str(event_type), "version": VERSION, "timestamp": iso(at), "data": dict(data)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def transcript(reports: Iterable[tuple[float, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Both sides' words in the order they were said: ``[{"at_s", "speaker", "text"}]`` from a call report's
    ``reports`` (``[ms, fields]``; already masked as the plan's privacy says)."""
    speakers = {"caller_transcript": "caller", "agent_transcript": "agent"}
    return [
        {"at_s": round(float(t) / 1000.0, 3), "speaker": speakers[entry["kind"]], "text": str(entry.get("text", ""))}
        for t, entry in reports
        if entry.get("kind") in speakers
    ]


def call_data(identity: Mapping[str, Any], times: Mapping[str, float | None]) -> dict[str, Any]:
    """The fields every call event carries: who and where (``identity``: call_id, dialplan, variant, dialect, model,
    voice, caller, called) and the times known so far (Unix times, given as ISO 8601; None stays null)."""
    return {**identity, **{name: None if t is None else iso(t) for name, t in times.items()}}


def call_ended_data(
    identity: Mapping[str, Any],
    times: Mapping[str, float | None],
    report: Mapping[str, Any],
    *,
    recording: str | None = None,
) -> dict[str, Any]:
    """``call.ended``'s data: :func:`call_data`, and from the call's report line (``CallReport.to_json`` with the
    variant's fields: ``cost_usd``, ``usage``) how it ended, who ended it, what the caller's side's BYE or CANCEL
    said of it (``peer_reasons``: its Reason values, protocol, cause and text; ``[]`` for none), the transfer, the
    transcript, the post-call summary, disposition and fields and the compliance checks (when the report has them),
    the recording's directory, the cost and the model's session ids (``session_ids``). ``duration_s``: from the
    answer to the end (0: never answered). The fields every record of a call shares: :mod:`bridge.store.record`."""
    answered, ended = times.get("answered_at"), times.get("ended_at")
    post, usage = _mapping(report.get("post_call")), _mapping(report.get("usage"))
    return call_data(identity, times) | {
        "duration_s": duration_s(answered, ended),
        "end_reason": report.get("end_reason", ""),
        "ended_by": report.get("ended_by"),
        "outcome": report.get("outcome"),
        "peer_reasons": list(report.get("peer_reasons") or ()),
        "session_ids": session_ids(report.get("session_ids") or ()),
        "transfer": report.get("transfer"),
        "transcript": transcript(report.get("reports") or ()),
        "summary": post.get("summary"),
        "disposition": post.get("disposition"),
        "fields": post.get("fields"),
        "post_call_status": post.get("status"),
        "checks": report.get("checks"),
        "recording": recording,
        "consent": report.get("consent"),
        "cost": {
            "usd": report.get("cost_usd"),
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
        },
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one (a report without that part)."""
    return value if isinstance(value, Mapping) else {}
