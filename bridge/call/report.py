"""What happened on one call (:class:`CallReport`): the demo prints it, replays compare it, Redis keeps a summary
of it. ``bridge.call.session`` fills it in as the call goes.

Every report the call emitted is kept typed, with its time (:attr:`CallReport.reports`); the timeline people read
(time, kind, summary) is drawn from them. As JSON (:meth:`CallReport.to_json`) a call keeps both: ``timeline`` for
people, ``reports`` (each ``[ms, fields]``, :func:`bridge.events.as_json`) for readers that want the values, which
:func:`noted` types again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge import events as ev


@dataclass
class CallReport:
    """What happened on one call: the demo prints it, replays compare it, Redis keeps a summary of it."""

    call_id: str
    dialect: str
    dialplan: str
    answered: bool = False
    phases: list[str] = field(default_factory=list)
    caller_transcript: list[str] = field(default_factory=list)
    agent_transcript: list[str] = field(default_factory=list)
    agent_audio_ms: int = 0
    first_audio_ms: float | None = None  # the answer -> the agent's first audio, whatever it was (a replay's bound)
    greeting_ms: float | None = None  # the answer -> the agent's first audio, said before the caller's first turn
    first_reply_ms: float | None = None  # the first reply: the caller stops -> the agent's audio answering them
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    barge_ins: int = 0
    truncates: list[dict[str, Any]] = field(default_factory=list)
    echo: dict[str, int] = field(default_factory=dict)  # the echo guard's speech starts: taken, rejected, resumed
    talk_over_ms: list[float] = field(default_factory=list)  # per barge-in on a model that stops itself
    usage: dict[str, float | int] = field(default_factory=dict)  # audio seconds and tokens, all sessions (cost)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    turn_silence_ms: list[float] = field(default_factory=list)  # per answered turn, the silence before its audio
    turn_wait_ms: list[float] = field(default_factory=list)  # per answered turn, its end of speech -> the answer
    decisions: list[dict[str, Any]] = field(default_factory=list)  # an orchestrated call: each decision, in order
    dtmf: list[str] = field(default_factory=list)  # as shown: a run's keys past the plan's visible digits are "*"
    pressed: list[str] = field(default_factory=list)  # the keys themselves: in memory only (the orchestrator's)
    errors: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    rollovers: int = 0
    media: dict[str, Any] = field(default_factory=dict)  # SIP calls: the media port's kind and counters
    transfer: dict[str, Any] | None = None  # a warm transfer's last attempt: target, outcome, sip_code, seconds
    reports: list[tuple[float, ev.Report]] = field(default_factory=list)  # every report emitted: ms of the call
    end_reason: str = ""
    ended_by: ev.EndedBy | None = None  # who ended the call (None: it has not ended)
    # the Reason (RFC 3326) of the caller's side's BYE or CANCEL that ended it: protocol, cause, text (bridge.call.peer)
    peer_reasons: list[dict[str, Any]] = field(default_factory=list)
    # after the call: the model's summary, disposition and fields, with its status (None: the plan asks for none)
    post_call: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)  # the plan's compliance checks: name, passed, detail
    # a recorded call's consent prompt (bridge/call/consent.py): status, played_ms, duration_ms, talked_over, audio
    consent: dict[str, Any] | None = None

    @property
    def longest_silence_ms(self) -> float | None:
        """The call's longest dead air: the longest the caller heard nothing while waiting on the agent, in a turn
        (the end of their speech to the agent's first frame or, for a slow answer, to its soft hold; without that
        hold, the caller-felt turn gap) or while a business tool worked. Hold audio ends it. None: neither."""
        turns = self.turn_silence_ms or self.latency_ms.get("caller_turn", [])
        waits = [*turns, *(t["longest_silence_ms"] for t in self.tool_calls if "longest_silence_ms" in t)]
        return max(waits) if waits else None

    @property
    def longest_wait_ms(self) -> float | None:
        """The longest the caller waited for the agent: the greeting (the answer -> the agent's first audio) or a
        turn (the end of the caller's speech -> the agent's audio answering it), whatever hold audio played
        meanwhile. None: no answer heard yet."""
        waits = [*([] if self.greeting_ms is None else [self.greeting_ms]), *self.turn_wait_ms]
        return max(waits) if waits else None

    @property
    def session_ids(self) -> list[str]:
        """The model's session ids (``sess_...``), in the order the sessions opened (a reconnect, a rollover or a
        fallback opens another)."""
        return list(dict.fromkeys(r.session_id for _, r in self.reports if isinstance(r, ev.SessionOpened)))

    @property
    def outcome(self) -> str | None:
        """How the call ended (:class:`~bridge.events.CallOutcome`; None: it has not ended)."""
        ending = [r for _, r in self.reports if isinstance(r, ev.CallEnded)]
        return str(ending[-1].outcome) if ending else None

    @property
    def timeline(self) -> list[tuple[float, str, str]]:
        """The reports as people read them: (ms of the call, kind, summary)."""
        return [(t, r.kind, r.summary) for t, r in self.reports]

    def note(self, t_ms: float, report: ev.Report) -> None:
        """``report``, emitted ``t_ms`` into the call."""
        self.reports.append((t_ms, report))

    def to_json(self) -> dict[str, Any]:
        shown = {k: v for k, v in self.__dict__.items() if k not in ("pressed", "reports")}
        return shown | {
            "timeline": self.timeline,
            "reports": [(t, ev.as_json(r)) for t, r in self.reports],
            "longest_silence_ms": self.longest_silence_ms,
            "longest_wait_ms": self.longest_wait_ms,
            "outcome": self.outcome,
            "session_ids": self.session_ids,
        }


def noted_all(report: Mapping[str, Any], types: tuple[type[ev.Report], ...] = ()) -> list[tuple[float, ev.Report]]:
    """The reports of a call report as JSON (:meth:`CallReport.to_json`) of one of ``types`` (all of them if none
    is named), typed again (:func:`bridge.events.decode`), with their times, in order. An entry that is no report
    this bridge knows is left out."""
    kinds = {t.kind for t in types}
    out: list[tuple[float, ev.Report]] = []
    for t, entry in report.get("reports", []):
        if kinds and entry.get("kind") not in kinds:
            continue
        try:
            out.append((float(t), ev.decode(entry)))
        except ev.UndecodableEntry:
            continue
    return out


def noted(report: Mapping[str, Any], cls: type[ev.R]) -> list[tuple[float, ev.R]]:
    """The reports of type ``cls`` of a call report as JSON, typed, with their times (:func:`noted_all`)."""
    return [(t, r) for t, r in noted_all(report, (cls,)) if isinstance(r, cls)]


# the reports after which the longest silence or wait may have changed; PlayoutTotals comes last before CallEnded
SILENCE_SOURCES = (ev.Latency, ev.ToolFinished, ev.PlayoutTotals)


def silence_watch(report: CallReport, emit: Callable[[ev.Report], None]) -> Callable[[ev.Report], None]:
    """A call listener that reports :class:`~bridge.events.LongestSilence` and :class:`~bridge.events.LongestWait`
    each time ``report``'s changes: mostly it grows, but a turn's gap counts until its measured silence replaces it
    (the soft hold ended the dead air earlier), so what the call's hash holds is always the report's figure."""
    longest = waited = 0.0

    def listener(r: ev.Report) -> None:
        nonlocal longest, waited
        if not isinstance(r, SILENCE_SOURCES):
            return
        if (ms := report.longest_silence_ms or 0.0) != longest:
            longest = ms
            emit(ev.LongestSilence(ms))
        if (ms := report.longest_wait_ms or 0.0) != waited:
            waited = ms
            emit(ev.LongestWait(ms))

    return listener
