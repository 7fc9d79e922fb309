"""The console's per-plan strip: each dialplan's figures from the call hashes in Redis (pure).

=====================  ==========================================================================================
active                 live calls of the plan (a lost worker's calls included: their callers may still be there)
on_hold                live calls whose caller hears hold audio now (an outage's hold message, a tool's soft hold)
in_outage              live calls whose model is away now (session lost or never opened, not yet back)
ended                  calls of the plan that ended in the window
avg_handle_s           mean of ``ended_at - started_at`` over those (ring to hang-up)
transfer_rate          share of them whose outcome is ``transferred``
resolved_alone         how many ended ``completed`` with no transfer and no supervisor action (and their share,
                       ``resolved_alone_rate``)
greeting_p95_ms        95th percentile, nearest rank, of the greeting (answer -> the agent's first audio, on a
                       plan whose agent speaks first) over those that had one
first_reply_p95_ms     the same of the first reply (the caller stops -> the agent's audio answering them)
had_outage             how many of them had the model away at some point
=====================  ==========================================================================================

The hash fields are :data:`bridge.store.keys.SUMMARY_FIELDS`; a rate or mean over no call is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.events import CallOutcome


def p95(values: Sequence[float]) -> float | None:
    """Nearest rank: the smallest value at or above 95 % of them."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def handle_times(calls: Iterable[Mapping[str, str]]) -> list[float]:
    """Each call's handle time in seconds (``ended_at - started_at``: ring to hang-up), where both are known."""
    return [
        e - s
        for c in calls
        if (s := _float(c.get("started_at"))) is not None and (e := _float(c.get("ended_at"))) is not None
    ]


def _ended(calls: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    handles = handle_times(calls)
    transferred = sum(c.get("outcome") == CallOutcome.TRANSFERRED for c in calls)
    alone = sum(c.get("outcome") == CallOutcome.COMPLETED and c.get("supervised") != "1" for c in calls)
    greetings = [f for c in calls if (f := _float(c.get("greeting_ms"))) is not None]
    replies = [f for c in calls if (f := _float(c.get("first_reply_ms"))) is not None]
    return {
        "ended": len(calls),
        "avg_handle_s": round(sum(handles) / len(handles), 1) if handles else None,
        "transfer_rate": _ratio(transferred, len(calls)),
        "resolved_alone": alone,
        "resolved_alone_rate": _ratio(alone, len(calls)),
        "greeting_p95_ms": p95(greetings),
        "first_reply_p95_ms": p95(replies),
        "had_outage": sum(c.get("had_outage") == "1" for c in calls),
    }


def plan_stats(
    live: Iterable[Mapping[str, Any]], ended: Iterable[Mapping[str, str]], plans: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """One row per plan (every name in ``plans``, and any a call names), in name order. ``live``: the live calls'
    rows (``dialplan``, ``on_hold``, ``in_outage``); ``ended``: the hashes of the calls that ended in the window."""
    lives: dict[str, list[Mapping[str, Any]]] = {name: [] for name in plans}
    endeds: dict[str, list[Mapping[str, str]]] = {name: [] for name in lives}
    for row in live:
        lives.setdefault(str(row.get("dialplan") or ""), []).append(row)
    for call in ended:
        endeds.setdefault(call.get("dialplan") or "", []).append(call)
    out = []
    for name in sorted(set(lives) | set(endeds)):
        now = lives.get(name, [])
        out.append(
            {
                "dialplan": name,
                "active": len(now),
                "on_hold": sum(bool(r.get("on_hold")) for r in now),
                "in_outage": sum(bool(r.get("in_outage")) for r in now),
                **_ended(endeds.get(name, [])),
            }
        )
    return out
