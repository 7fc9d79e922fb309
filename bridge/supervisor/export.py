"""One call as a download (pure): JSON (its state, transcript, timeline and latency) or plain text a person reads.

The state leaves out what only the SIP stack uses (``sip_dialog``, ``sip_call_id``). Times in the text are UTC, and
each line's offset is from the call's start (``[mm:ss.s]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.store.ended import said_by, transcript
from bridge.store.read import StreamEntry, after_call
from bridge.supervisor.timeline import latency

FORMATS = ("json", "text")
INTERNAL_FIELDS = frozenset({"sip_dialog", "sip_call_id"})
_HEADER = (
    ("Plan", "dialplan"),
    ("Variant", "variant"),
    ("Caller", "caller"),
    ("Called", "called"),
    ("Model", "model"),
    ("End reason", "end_reason"),
)


def filename(call_id: str, fmt: str) -> str:
    """``call-<id>.json`` or ``.txt``, the id reduced to characters every file system takes."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:80] or "call"
    return f"call-{safe}.{'json' if fmt == 'json' else 'txt'}"


def as_json(state: Mapping[str, str], entries: Sequence[StreamEntry]) -> dict[str, Any]:
    return {
        "call": {k: v for k, v in state.items() if k not in INTERNAL_FIELDS},
        **after_call(state),
        "transcript": transcript(entries),
        "timeline": [e.to_json() for e in entries],
        "latency": latency(entries),
    }


def _utc(value: str | None) -> str:
    try:
        return datetime.fromtimestamp(float(value or ""), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return "-"


def _offset(t: float | None, start: float | None) -> str:
    if t is None or start is None:
        return "[--:--.-]"
    s = max(0.0, t - start)
    return f"[{int(s // 60):02d}:{s % 60:04.1f}]"


def as_text(state: Mapping[str, str], entries: Sequence[StreamEntry]) -> str:
    try:
        start: float | None = float(state.get("started_at") or "")
    except ValueError:
        start = None
    lines = [f"Call {state.get('call_id', '')}"]
    lines += [f"{label}: {state.get(name) or '-'}" for label, name in _HEADER]
    if state.get("original_called"):  # a forwarded call: the number it was first placed to
        lines.append(f"Originally called: {state['original_called']}")
    lines += [f"Started: {_utc(state.get('started_at'))}", f"Ended: {_utc(state.get('ended_at'))}"]
    after = after_call(state)
    post = after["post_call"]
    if post is not None:
        lines.append(f"Disposition: {post['disposition'] or '-'}")
        lines.append(f"Summary: {post['summary'] or '(none: ' + post['status'] + ')'}")
        if post["fields"]:
            lines.append(f"Fields: {json.dumps(post['fields'])}")
    for row in after["checks"]:
        lines.append(f"Check {row.get('name')}: {'passed' if row.get('passed') else 'FAILED'} ({row.get('detail')})")
    lines += ["", "Transcript"]
    said = [(e, who) for e in entries if (who := said_by(e))]
    lines += [f"{_offset(e.t, start)} {who.capitalize()}: {e.summary}" for e, who in said]
    if not said:
        lines.append("(nothing was said)")
    lines += ["", "Timeline"]
    lines += [f"{_offset(e.t, start)} {e.kind}{': ' + e.summary if e.summary else ''}" for e in entries]
    return "\n".join(lines) + "\n"
