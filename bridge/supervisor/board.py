"""The wallboard's tiles: what a room reads from across the floor, from the live calls' rows, the hashes of the
calls that ended in the last hour and the refused INVITEs of the last quarter hour (pure).

==============  =====================================================================================  ==========
tile            value                                                                                  red when
==============  =====================================================================================  ==========
calls_now       live calls (a lost worker's included), beside the node's capacity (its ready workers'   at/above
                calls)
refused         INVITEs the workers refused with 486 (busy) or 503 (no room) in the last 15 minutes:    at/above
                the callers who never got through (every plan: a refusal comes before a plan)
containment     share of the last hour's answered calls that ended without a transfer                    at/below
waiting         live calls whose warm transfer is ringing, briefing or waiting for a human to accept    at/above
longest_wait_s  the longest of those waits so far (from the transfer's first step)                       at/above
abandonment     share of the last hour's callers who hung up before the answer                          at/above
handle_s        mean ring-to-hang-up of the last hour's calls                                            at/above
trouble         live calls in trouble now: the model away, the caller on hold, or the worker lost       at/above
==============  =====================================================================================  ==========

A tile's threshold comes from the plan's ``wallboard`` (:class:`bridge.dialplan.WallboardThresholds`) when the board
shows one plan, and from the console's own settings (the browser's) over it; the page turns a tile red and says so
in words. A share or mean over no call is ``None`` (shown as a dash, never red).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from bridge.events import CallOutcome, TransferStep
from bridge.supervisor.plan_stats import handle_times

WINDOW_S: Final = 3600  # the rates and the handle time: the calls that ended in the last hour
REFUSED_WINDOW_S: Final = 900  # refused callers: the last quarter hour
WAITING: Final = frozenset(str(step) for step in TransferStep)  # a warm transfer before its outcome
NOT_ANSWERED: Final = frozenset({CallOutcome.ABANDONED, CallOutcome.COMPLETED_ELSEWHERE})


@dataclass(frozen=True, slots=True)
class Tile:
    name: str
    label: str
    unit: Literal["count", "share", "seconds"]
    red_when: Literal["above", "below"]  # at or above the threshold, or at or below it
    explain: str


TILES: Final = (
    Tile("calls_now", "Calls now", "count", "above", "live calls, of the node's capacity"),
    Tile("refused", "Refused, 15 min", "count", "above", "callers refused (busy or no room) in the last 15 minutes"),
    Tile("containment", "Contained", "share", "below", "answered calls of the last hour that ended without a transfer"),
    Tile("waiting", "Waiting for a human", "count", "above", "warm transfers ringing or briefing a human now"),
    Tile("longest_wait_s", "Longest wait", "seconds", "above", "the longest wait for a human now"),
    Tile("abandonment", "Abandoned", "share", "above", "callers of the last hour who hung up before the answer"),
    Tile("handle_s", "Handle time", "seconds", "above", "mean ring to hang-up, last hour"),
    Tile("trouble", "In trouble now", "count", "above", "live calls with the model away, on hold, or a lost worker"),
)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def figures(
    live: Sequence[Mapping[str, Any]], ended: Sequence[Mapping[str, str]], refused: int, now: float
) -> dict[str, float | int | None]:
    """Each tile's value. ``live``: the live calls' rows (:class:`bridge.store.read.CallSummary` as JSON);
    ``ended``: the hashes of the calls that ended in the window; ``refused``: the refused INVITEs of its window."""
    waits = [now - float(r["transfer_at"]) for r in live if r.get("transfer") in WAITING and r.get("transfer_at")]
    answered = [c for c in ended if c.get("outcome") not in NOT_ANSWERED]
    counted = [c for c in ended if c.get("outcome") != CallOutcome.COMPLETED_ELSEWHERE]  # a ring answered elsewhere
    handles = handle_times(ended)
    trouble = [r for r in live if r.get("in_outage") or r.get("on_hold") or r.get("worker_alive") is False]
    return {
        "calls_now": len(live),
        "refused": refused,
        "containment": _share(sum(c.get("outcome") != CallOutcome.TRANSFERRED for c in answered), len(answered)),
        "waiting": sum(r.get("transfer") in WAITING for r in live),
        "longest_wait_s": round(max(waits), 1) if waits else None,
        "abandonment": _share(sum(c.get("outcome") == CallOutcome.ABANDONED for c in counted), len(counted)),
        "handle_s": round(sum(handles) / len(handles), 1) if handles else None,
        "trouble": len(trouble),
    }


def board(
    live: Iterable[Mapping[str, Any]],
    ended: Iterable[Mapping[str, str]],
    *,
    refused: int,
    capacity: int,
    thresholds: Mapping[str, float | None],
    now: float,
    plan: str = "",
) -> dict[str, Any]:
    """The wallboard as the page reads it: each tile with its value and the plan's threshold, the capacity, the
    windows. ``plan``: only that plan's calls ("" every plan)."""
    rows = [r for r in live if not plan or r.get("dialplan") == plan]
    calls = [c for c in ended if not plan or c.get("dialplan") == plan]
    values = figures(rows, calls, refused, now)
    tiles = [
        {
            "name": t.name,
            "label": t.label,
            "unit": t.unit,
            "red_when": t.red_when,
            "explain": t.explain,
            "value": values[t.name],
            "threshold": thresholds.get(t.name),
        }
        for t in TILES
    ]
    return {
        "plan": plan,
        "tiles": tiles,
        "capacity": capacity,
        "window_s": WINDOW_S,
        "refused_window_s": REFUSED_WINDOW_S,
        "at": now,
    }
