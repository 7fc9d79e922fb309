"""Latency of one call, measured between the entries of its Redis stream (pure).

Each entry carries the time its call session noted it (``t``, wall clock, millisecond resolution), so the gap between
two notes is a latency of the call as its worker saw it. The segments (``greeting`` and ``turn`` have the meanings of
the ``callbridge_latency_seconds`` segments of the same names, measured up to the moment the agent's audio was queued
for playout rather than handed to RTP, one or two 20 ms frames earlier; the call's greeting and first reply as the
worker measured them are in its hash):

================  =======================================  ==============================================
segment           from                                     to
================  =======================================  ==============================================
session_setup     ``ringing`` (INVITE in)                  ``session_configured`` (``session.updated``)
greeting          ``answered`` (200 OK)                    the first ``phase`` -> SPEAKING, if no caller turn
                                                           ended before it (the agent spoke first)
response          ``speech_stopped`` (caller's turn over)  the next ``response_started`` (``response.created``)
turn              ``speech_stopped``                       the next ``phase`` -> SPEAKING (agent audio)
recovery          ``realtime_closed`` (session lost)       ``recovered``
================  =======================================  ==============================================

A caller turn's ``response`` and ``turn`` count only if the agent answered before the caller spoke again; the first
``turn`` is the call's first reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Any

from bridge import events as ev
from bridge import metrics
from bridge.call.state import Phase
from bridge.store.read import StreamEntry

# (name, label). ``session_setup``, ``greeting`` and ``turn`` are the metrics' segments of the same names
# (:data:`bridge.metrics.SEGMENTS`, :data:`SAME_AS_METRICS`); ``response`` is the stream's own, and ``recovery`` spans
# what the metrics' ``recovery_gap`` does.
SEGMENTS: tuple[tuple[str, str], ...] = (
    ("session_setup", "INVITE -> session configured"),
    ("greeting", "200 OK -> agent audio (greeting)"),
    ("response", "caller stopped -> response started"),
    ("turn", "caller stopped -> agent audio"),
    ("recovery", "session lost -> recovered"),
)
SAME_AS_METRICS = frozenset(name for name, _ in SEGMENTS) & frozenset(metrics.SEGMENTS)


def _speaking(report: ev.Report | None) -> bool:
    return isinstance(report, ev.PhaseChanged) and report.new == Phase.SPEAKING


def _ms(a: StreamEntry, b: StreamEntry) -> float | None:
    if a.t is None or b.t is None:
        return None
    return round(max(0.0, b.t - a.t) * 1000, 1)


def latency(entries: Sequence[StreamEntry]) -> dict[str, Any]:
    """``{"greeting_ms": ms | None, "first_reply_ms": ms | None, "segments": [{"segment", "label", "count",
    "last_ms", "median_ms", "max_ms"}, ...]}`` over the entries given (oldest first)."""
    values: dict[str, list[float]] = {name: [] for name, _ in SEGMENTS}

    def add(name: str, ms: float | None) -> None:
        if ms is not None:
            values[name].append(ms)

    ringing = answered = stopped = lost = None
    turn_measured = response_measured = past_greeting = False
    for e in entries:
        r = e.report
        if isinstance(r, ev.Ringing) and ringing is None:
            ringing = e
        elif isinstance(r, ev.SessionAccepted) and ringing is not None and not values["session_setup"]:
            add("session_setup", _ms(ringing, e))
        elif isinstance(r, ev.Answered) and answered is None:
            answered = e
        elif isinstance(r, ev.CallerSpeechStarted):
            stopped = None
        elif isinstance(r, ev.CallerSpeechStopped):
            stopped, turn_measured, response_measured = e, False, False
            past_greeting = past_greeting or answered is not None
        elif isinstance(r, ev.ResponseBegan) and stopped is not None and not response_measured:
            add("response", _ms(stopped, e))
            response_measured = True
        elif isinstance(r, ev.SessionLost) and lost is None:
            lost = e
        elif isinstance(r, ev.Recovered) and lost is not None:
            add("recovery", _ms(lost, e))
            lost = None
        if _speaking(r):
            if answered is not None and not past_greeting and not values["greeting"]:
                add("greeting", _ms(answered, e))
            past_greeting = past_greeting or answered is not None  # only the first audio may be a greeting
            if stopped is not None and not turn_measured:
                add("turn", _ms(stopped, e))
                turn_measured = True
    segments = [
        {
            "segment": name,
            "label": label,
            "count": len(values[name]),
            "last_ms": values[name][-1] if values[name] else None,
            "median_ms": round(median(values[name]), 1) if values[name] else None,
            "max_ms": max(values[name]) if values[name] else None,
        }
        for name, label in SEGMENTS
    ]
    greeting, turns = values["greeting"], values["turn"]
    return {
        "greeting_ms": greeting[0] if greeting else None,
        "first_reply_ms": turns[0] if turns else None,
        "segments": segments,
    }


def tool_calls(entries: Sequence[StreamEntry]) -> list[dict[str, Any]]:
    """Each business tool call of the entries given (its ``tool_result``), oldest first: ``{"name", "outcome",
    "latency_ms", "longest_silence_ms", "t"}``."""
    return [
        {
            "name": r.name,
            "outcome": str(r.outcome),
            "latency_ms": r.latency_ms,
            "longest_silence_ms": r.longest_silence_ms,
            "t": e.t,
        }
        for e in entries
        if isinstance(r := e.report, ev.ToolFinished)
    ]
