"""What a caller feels of a replayed call, in time: per spoken turn the reply gap (the end of the caller's speech to
the first agent audio heard after it, the bridge's soft hold left out) and, where the caller spoke over the agent,
the barge-in cut (the caller's first word to the last agent audio heard); per call the console's figures
(``docs/operating.md``, *what each figure means*, measured by the call itself: ``bridge/call/latency.py``): the
**greeting** (the answer to the agent's first audio, on a plan whose agent speaks first), the **first reply** (the
caller stops to the agent's audio answering them) and the longest silence; and the first audio after the answer,
whatever it was (a greeting or a first reply: ``max_first_audio_ms`` bounds it).

The turn figures come from what the caller's phone heard (a run's ``caller_spans`` and ``agent_spans``), so a
direct run and a SIP run are measured alike. :func:`timing_differences` names each figure that two runs of a script
put further apart than the tolerance; :func:`timing_checks` holds a run to a script's bounds (``max_reply_gap_ms``).

Pure: values in, values out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from bridge import events as ev
from bridge.call.report import noted

DEFAULT_TOLERANCE_MS: Final = 500.0  # figures closer than this are alike (a script or --timing-tolerance-ms: other)
_TURN: Final = re.compile(r"^turn (\d+):")

Span = tuple[float, float, str]


@dataclass(frozen=True)
class TurnTiming:
    """One spoken turn of the caller, as the caller felt the agent's answer."""

    turn: int  # the script's turn index
    reply_gap_ms: float | None  # None: no agent audio after it
    barge_in_cut_ms: float | None  # the caller spoke over the agent: how long the agent went on


@dataclass(frozen=True)
class CallTiming:
    first_audio_ms: float | None
    longest_silence_ms: float | None
    turns: list[TurnTiming] = field(default_factory=list)
    greeting_ms: float | None = None  # None: the agent did not speak first
    first_reply_ms: float | None = None  # None: no caller turn was answered

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reply_gaps(self) -> list[float]:
        return [t.reply_gap_ms for t in self.turns if t.reply_gap_ms is not None]

    @property
    def median_reply_gap_ms(self) -> float | None:
        return median(self.reply_gaps)


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def call_timing(
    caller_spans: Sequence[Span], agent_spans: Sequence[tuple[float, float]], report: Mapping[str, Any]
) -> CallTiming:
    """The figures of one run (see the module docstring)."""
    holds = _holds(report)
    agent_spans = [(a, b) for a, b in agent_spans if not any(on <= a and b <= off for on, off in holds)]
    turns: list[TurnTiming] = []
    speech = [(s, e, w) for s, e, w in caller_spans if w != "hangup" and not w.startswith("DTMF")]
    for rank, (start, end, what) in enumerate(speech):
        match = _TURN.match(what)
        index = int(match.group(1)) if match else rank
        after = [a for a, b in agent_spans if b > end]
        gap = round(max(0.0, after[0] - end), 1) if after else None
        over = [b for a, b in agent_spans if a <= start < b]
        cut = round(over[0] - start, 1) if over else None
        turns.append(TurnTiming(index, gap, cut))
    return CallTiming(
        _float(report.get("first_audio_ms")),
        _float(report.get("longest_silence_ms")),
        turns,
        greeting_ms=_float(report.get("greeting_ms")),
        first_reply_ms=_float(report.get("first_reply_ms")),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _holds(report: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The soft-hold windows of a call (``wait_hold`` on .. off in its timeline): the hold sound is not an answer."""
    out: list[tuple[float, float]] = []
    since: float | None = None
    for t, hold in noted(report, ev.WaitHold):
        if hold.on:
            since = t
        elif since is not None:
            out.append((since, t))
            since = None
    if since is not None:
        out.append((since, float("inf")))
    return out


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f} ms"


def timing_differences(
    a: CallTiming,
    b: CallTiming,
    la: str,
    lb: str,
    tolerance_ms: float,
    *,
    skip: frozenset[str] = frozenset(),
    reply_allowance_ms: float = 0.0,
) -> list[str]:
    """Each figure further apart than ``tolerance_ms`` (or there in one run only), named with both values. ``skip``:
    figures a declared protocol difference leaves out (``greeting``, ``first_reply``, ``reply_gap``,
    ``barge_in_cut``, ``longest_silence``); ``reply_allowance_ms``: how much later one side's answers may come by
    design, over the tolerance (the reply gaps and the first reply)."""
    out: list[str] = []

    def far(x: float | None, y: float | None, allowance: float = 0.0) -> bool:
        if x is None or y is None:
            return (x is None) != (y is None)
        return abs(x - y) > tolerance_ms + allowance

    tol = f"(tolerance {tolerance_ms:g} ms)"
    if "greeting" not in skip and far(a.greeting_ms, b.greeting_ms):
        out.append(f"timing: greeting {la} {_ms(a.greeting_ms)} vs {lb} {_ms(b.greeting_ms)} {tol}")
    if "first_reply" not in skip and far(a.first_reply_ms, b.first_reply_ms, reply_allowance_ms):
        out.append(f"timing: first reply {la} {_ms(a.first_reply_ms)} vs {lb} {_ms(b.first_reply_ms)} {tol}")
    by_turn = {t.turn: t for t in b.turns}
    for ta in a.turns:
        tb = by_turn.get(ta.turn)
        if tb is None:
            continue
        if "reply_gap" not in skip and far(ta.reply_gap_ms, tb.reply_gap_ms, reply_allowance_ms):
            out.append(f"timing: reply gap after turns[{ta.turn}] {la} {_ms(ta.reply_gap_ms)} vs {lb} "
                       f"{_ms(tb.reply_gap_ms)} {tol}")  # fmt: skip
        if "barge_in_cut" not in skip and far(ta.barge_in_cut_ms, tb.barge_in_cut_ms):
            out.append(f"timing: barge-in cut at turns[{ta.turn}] {la} {_ms(ta.barge_in_cut_ms)} vs {lb} "
                       f"{_ms(tb.barge_in_cut_ms)} {tol}")  # fmt: skip
    if "longest_silence" not in skip and far(a.longest_silence_ms, b.longest_silence_ms):
        out.append(f"timing: longest silence {la} {_ms(a.longest_silence_ms)} vs {lb} "
                   f"{_ms(b.longest_silence_ms)} {tol}")  # fmt: skip
    return out


def timing_checks(
    timing: CallTiming, bound_all: float | None, bounds: Mapping[int, float]
) -> list[tuple[str, bool, str]]:
    """(name, ok, detail) per reply-gap bound: ``bound_all`` for every spoken turn, ``bounds`` per turn index (which
    wins for its turn). A bounded turn the agent never answered fails."""
    out: list[tuple[str, bool, str]] = []
    for t in timing.turns:
        bound = bounds.get(t.turn, bound_all)
        if bound is None:
            continue
        ok = t.reply_gap_ms is not None and t.reply_gap_ms <= bound
        name = f"turns[{t.turn}].max_reply_gap_ms" if t.turn in bounds else "max_reply_gap_ms"
        out.append((name, ok, f"reply gap after turns[{t.turn}] {_ms(t.reply_gap_ms)} (max {bound:g} ms)"))
    return out
