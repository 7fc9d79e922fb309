"""The wallboard's tiles: what a room reads from across the floor, from the live calls' rows, the hashes of the
calls that ended in the last hour and the refused INVITEs of the last quarter hour (pure).

==============  =====================================================================================  ==========
tile            value                                                                                  red when
==============  =====================================================================================  ==========
calls_now       live calls (a lost worker's included), beside the node's capacity (its ready workers'   at/above
                calls)
handled         calls of the last hour answered and ended (every outcome but abandoned and a ring       never
                answered elsewhere)
service_level   share of the last hour's callers (answered or abandoned) answered within the plan's     at/below
                ``service_level_s`` of the ring; red below its target
abandonment     share of the last hour's callers who hung up before the answer (the count beside it)    at/above
longest_wait_s  the longest wait for a human now (a warm transfer, from its first step)                 at/above
waiting         live calls whose warm transfer is ringing, briefing or waiting for a human to accept    at/above
containment     share of the last hour's answered calls that ended without a transfer                    at/below
handle_s        mean ring-to-hang-up of the last hour's calls                                            at/above
refused         INVITEs the workers refused with 486 (busy) or 503 (no room) in the last 15 minutes:    at/above
                the callers who never got through (every plan: a refusal comes before a plan)
trouble         live calls in trouble now: the model away, the caller on hold, or the worker lost (a    at/above
                call on its fallback model is recovered, not in trouble)
==============  =====================================================================================  ==========

The same figures, counted the same way from the report file's lines of the hour, are :func:`figures` over those
lines (a line has the ``outcome``, ``started_at``, ``answered_at`` and ``ended_at`` a hash has).

A tile's threshold comes from the plan's ``wallboard`` (:class:`bridge.dialplan.WallboardThresholds`) when the board
shows one plan, and from the console's own settings (the browser's) over it; the page turns a tile red and says so
in words. A share or mean over no call is ``None`` (shown as a dash, never red).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from bridge.events import CallOutcome, TransferStep
from bridge.store.record import iso

WINDOW_S: Final = 3600  # the rates and the handle time: the calls that ended in the last hour
REFUSED_WINDOW_S: Final = 900  # refused callers: the last quarter hour
SERVICE_LEVEL_S: Final = 20.0  # answered within this many seconds of the ring, unless the plan says otherwise
WAITING: Final = frozenset(str(step) for step in TransferStep)  # a warm transfer before its outcome
NOT_ANSWERED: Final = frozenset({CallOutcome.ABANDONED, CallOutcome.COMPLETED_ELSEWHERE})


@dataclass(frozen=True, slots=True)
class Tile:
    name: str
    label: str
    unit: Literal["count", "share", "seconds"]
    red_when: Literal["above", "below", "never"]  # at or above the threshold, at or below it, or never
    explain: str  # its definition, one line on the page


TILES: Final = (
    Tile("calls_now", "Calls now", "count", "above", "live calls, of the calls the node's ready workers can hold"),
    Tile("handled", "Handled, last hour", "count", "never", "calls answered and ended in the last hour"),
    Tile("service_level", "Service level", "share", "below", "callers of the last hour answered within {s}"),
    Tile("abandonment", "Abandoned", "share", "above", "callers of the last hour who hung up before the answer"),
    Tile("longest_wait_s", "Longest wait", "seconds", "above", "the longest a caller waits for a human now"),
    Tile("waiting", "Waiting for a human", "count", "above", "warm transfers ringing or briefing a human now"),
    Tile("containment", "Contained", "share", "below", "answered calls of the last hour ended without a transfer"),
    Tile("handle_s", "Handle time", "seconds", "above", "mean ring to hang-up, last hour"),
    Tile("refused", "Refused, 15 min", "count", "above", "callers refused (busy or no room), last 15 minutes"),
    Tile("trouble", "In trouble now", "count", "above", "live calls with the model away, on hold, or a lost worker"),
)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def unix(value: Any) -> float | None:
    """A time as a hash keeps it (Unix seconds as text) or a report line does (ISO 8601 UTC); None for none."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def answered_within(call: Mapping[str, Any], seconds: float) -> bool:
    started, answered = unix(call.get("started_at")), unix(call.get("answered_at"))
    return started is not None and answered is not None and answered - started <= seconds


def in_trouble(row: Mapping[str, Any]) -> bool:
    """A live call in trouble now: its model away, its caller on hold, or its worker lost."""
    return bool(row.get("in_outage") or row.get("on_hold") or row.get("worker_alive") is False)


def ended_figures(ended: Sequence[Mapping[str, Any]], service_s: float = SERVICE_LEVEL_S) -> dict[str, Any]:
    """What the ended calls of the window say: the hashes of the calls that ended in it, or the report file's
    lines of the same calls (the same names)."""
    answered = [c for c in ended if c.get("outcome") not in NOT_ANSWERED]
    counted = [c for c in ended if c.get("outcome") != CallOutcome.COMPLETED_ELSEWHERE]  # a ring answered elsewhere
    abandoned = sum(c.get("outcome") == CallOutcome.ABANDONED for c in counted)
    times = [(unix(c.get("started_at")), unix(c.get("ended_at"))) for c in ended]
    handles = [e - s for s, e in times if s is not None and e is not None]
    return {
        "handled": len(answered),
        "service_level": _share(sum(answered_within(c, service_s) for c in answered), len(counted)),
        "abandonment": _share(abandoned, len(counted)),
        "abandoned": abandoned,
        "callers": len(counted),
        "containment": _share(sum(c.get("outcome") != CallOutcome.TRANSFERRED for c in answered), len(answered)),
        "handle_s": round(sum(handles) / len(handles), 1) if handles else None,
    }


def figures(
    live: Sequence[Mapping[str, Any]],
    ended: Sequence[Mapping[str, Any]],
    refused: int,
    now: float,
    service_s: float = SERVICE_LEVEL_S,
) -> dict[str, float | int | None]:
    """Each tile's value. ``live``: the live calls' rows (:class:`bridge.store.read.CallSummary` as JSON);
    ``ended``: the hashes of the calls that ended in the window; ``refused``: the refused INVITEs of its window."""
    waits = [now - float(r["transfer_at"]) for r in live if r.get("transfer") in WAITING and r.get("transfer_at")]
    done = ended_figures(ended, service_s)
    return {
        "calls_now": len(live),
        "handled": done["handled"],
        "service_level": done["service_level"],
        "abandonment": done["abandonment"],
        "longest_wait_s": round(max(waits), 1) if waits else None,
        "waiting": sum(r.get("transfer") in WAITING for r in live),
        "containment": done["containment"],
        "handle_s": done["handle_s"],
        "refused": refused,
        "trouble": sum(in_trouble(r) for r in live),
        "abandoned": done["abandoned"],
        "callers": done["callers"],
    }


def _seconds(s: float) -> str:
    return f"{s:g} s" if s < 60 else f"{s / 60:g} min"


def board(
    live: Iterable[Mapping[str, Any]],
    ended: Iterable[Mapping[str, Any]],
    *,
    refused: int,
    capacity: int,
    thresholds: Mapping[str, float | None],
    now: float,
    plan: str = "",
) -> dict[str, Any]:
    """The wallboard as the page reads it: each tile with its value, its definition and the plan's threshold, the
    capacity, the windows. ``plan``: only that plan's calls ("" every plan); ``thresholds``: the plan's
    ``wallboard`` (its ``service_level_s`` sets the service level's seconds)."""
    rows = [r for r in live if not plan or r.get("dialplan") == plan]
    calls = [c for c in ended if not plan or c.get("dialplan") == plan]
    service_s = float(thresholds.get("service_level_s") or SERVICE_LEVEL_S)
    values = figures(rows, calls, refused, now, service_s)
    details = {
        "calls_now": f"capacity {capacity}",
        "abandonment": f"{values['abandoned']} of {values['callers']} callers",
    }
    tiles = [
        {
            "name": t.name,
            "label": t.label,
            "unit": t.unit,
            "red_when": t.red_when,
            "explain": t.explain.format(s=_seconds(service_s)),
            "value": values[t.name],
            "detail": details.get(t.name, ""),
            "threshold": None if t.red_when == "never" else thresholds.get(t.name),
        }
        for t in TILES
    ]
    return {
        "plan": plan,
        "tiles": tiles,
        "capacity": capacity,
        "service_level_s": service_s,
        "window_s": WINDOW_S,
        "refused_window_s": REFUSED_WINDOW_S,
        "at": iso(now),
        "at_unix": now,
    }
