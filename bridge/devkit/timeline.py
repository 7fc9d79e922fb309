"""A call's timeline as the caller's side prints it (``callbridge demo``, ``callbridge call --timeline``): pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def timeline_line(t_ms: float, kind: str, text: str) -> str:
    """One line of a call's timeline, as ``callbridge demo`` and ``callbridge call --timeline`` print it."""
    return f"  {t_ms / 1000:7.2f}s  {kind:<18} {text}"


def call_timeline(summary: dict[str, Any], dtmf: Sequence[tuple[str, float]] = ()) -> list[tuple[float, str, str]]:
    """What the caller's side of a call went through, in time order after the answer: the answer, each stretch of
    sound heard (with its level), the digits sent, the end and who ended it."""
    if not summary.get("answered"):
        return [(0.0, "not answered", f"SIP {summary.get('sip_status')} {summary.get('reason', '')}".strip())]
    rows: list[tuple[float, str, str]] = [(0.0, "answered", f"SIP {summary.get('sip_status')}")]
    for start, end, level in summary.get("heard_spans", []):
        rows.append((float(start), "heard", f"{(end - start) / 1000:.2f} s of sound at {level} dBFS"))
    for digits, at in dtmf:
        if at * 1000 <= summary["duration_s"] * 1000:
            rows.append((at * 1000, "sent DTMF", digits))
    by = {"local": "this phone hung up", "remote": "the called side hung up"}.get(summary.get("hangup_by") or "")
    rows.append((summary["duration_s"] * 1000, "ended", by or "still up when the phone stopped"))
    return sorted(rows, key=lambda row: row[0])
