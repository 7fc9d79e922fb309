"""What the console marks on a call, from the call's own stream entries and its hash (pure).

A :class:`CallWatch` is fed a call's stream entries in order (:meth:`CallWatch.feed`) and what its hash says
(:meth:`CallWatch.note`), and says which :class:`Flag` the call has raised (:meth:`CallWatch.marks`): once raised a
flag stays (an ended call keeps its marks), and ``now`` says whether it still holds. Its thresholds are the plan's
``watch`` (:class:`bridge.dialplan.Watch`).

=============  ========  =====================================================================================
flag           severity  raised by
=============  ========  =====================================================================================
on_hold        warn      the caller hears hold audio (``hold_started``; a soft hold, ``wait_hold`` on); ``now``
                         until ``hold_ended`` / ``wait_hold`` off
caller_hold    info      the caller put the call on hold with their phone (``caller_held``); ``now`` until
                         ``caller_resumed``. The time held is no wait for the agent (no ``slow_agent``)
outage         bad       the model is away (``realtime_closed``, ``realtime_unavailable``); ``now`` until
                         ``recovered`` / ``outage_ended``
long_silence   warn      the call's longest dead air (``longest_silence``) passed ``watch.silence_ms``
slow_agent     warn      a reply (caller stops -> agent audio) took longer than ``watch.reply_ms``, or the
                         caller has been waiting that long now
barge_ins      warn      ``watch.barge_ins`` barge-ins or more
fallback       warn      the variant's model failed to connect and the call ran on its fallback model (the hash's
                         ``fallback``, bridge/serve/variant.py): a candidate that looks healthy only thanks to it
recovered      info      a model session came back after it was lost (``recovered``)
error          bad       a service error, a recovery given up, a failover, or a call that ended ``failed``
=============  ========  =====================================================================================

:class:`CallWatch` also names what is going on in words people use (:meth:`CallWatch.activity`: "agent speaking",
"caller speaking", "waiting for the agent", "on hold", ...), and :class:`Steady` holds each word shown for at
least :data:`STEADY_S`, so a row does not flicker through the phases of one turn.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bridge import events as ev
from bridge.call.state import Phase
from bridge.dialplan import Dialplan, Watch
from bridge.store.read import StreamEntry

STEADY_S: Final = 1.0  # a word shown stays at least this long


class Flag(enum.StrEnum):
    ON_HOLD = "on_hold"
    CALLER_HOLD = "caller_hold"
    OUTAGE = "outage"
    LONG_SILENCE = "long_silence"
    SLOW_AGENT = "slow_agent"
    BARGE_INS = "barge_ins"
    FALLBACK = "fallback"
    RECOVERED = "recovered"
    ERROR = "error"


class Severity(enum.StrEnum):
    BAD = "bad"
    WARN = "warn"
    INFO = "info"


# flag -> (label, severity); the order of this table is the order marks are shown in
FLAGS: Final[Mapping[Flag, tuple[str, Severity]]] = {
    Flag.ERROR: ("error", Severity.BAD),
    Flag.OUTAGE: ("outage", Severity.BAD),
    Flag.ON_HOLD: ("on hold", Severity.WARN),
    Flag.SLOW_AGENT: ("slow agent", Severity.WARN),
    Flag.LONG_SILENCE: ("long silence", Severity.WARN),
    Flag.BARGE_INS: ("barge-ins", Severity.WARN),
    Flag.FALLBACK: ("fallback model", Severity.WARN),
    Flag.RECOVERED: ("recovered", Severity.INFO),
    Flag.CALLER_HOLD: ("held by caller", Severity.INFO),
}
SEVERITY_ORDER: Final = (Severity.BAD, Severity.WARN, Severity.INFO)

_HOLD_OFF = (ev.HoldEnded, ev.CallEnded)
_AWAY = (ev.SessionLost, ev.RealtimeUnavailable)
_BACK = (ev.Recovered, ev.OutageEnded, ev.CallEnded)
_ERRORS = (ev.ServiceError, ev.RecoveryFailed, ev.FailedOver)
_TRANSFERRING = frozenset(str(s) for s in ev.TransferStep)


@dataclass
class CallWatch:
    """One call's marks and activity, folded over its stream entries (oldest first)."""

    watch: Watch = field(default_factory=Watch)
    raised: set[Flag] = field(default_factory=set)
    on_hold: bool = False
    caller_held_at: float | None = None  # the caller has the call on hold since (``t``; 0.0 when not known)
    away: bool = False
    taken_over_by: str = ""  # the supervisor who has taken the call over now ("" when nobody has)
    ended: bool = False
    phase: str = ""
    caller_speaking: bool = False
    waiting_since: float | None = None  # the caller stopped at (``t``) and the agent has not answered yet
    barge_ins: int = 0
    after: str = "0-0"  # the last entry fed

    def note(self, state: Mapping[str, Any]) -> None:
        """What the call's hash (or a row read from it) says that no stream entry does: a fallback to the variant's
        fallback model (``fallback``)."""
        if _yes(state.get("fallback")):
            self.raised.add(Flag.FALLBACK)

    def feed(self, entries: Iterable[StreamEntry]) -> None:
        for e in entries:
            self._one(e)
            self.after = e.id

    def _one(self, e: StreamEntry) -> None:
        r = e.report
        if isinstance(r, ev.HoldStarted) or (isinstance(r, ev.WaitHold) and r.on):
            self.on_hold = True
            self.raised.add(Flag.ON_HOLD)
        elif isinstance(r, (*_HOLD_OFF, ev.WaitHold)):
            self.on_hold = False
        if isinstance(r, ev.CallerHeld):
            self.caller_held_at = e.t or 0.0
            self.raised.add(Flag.CALLER_HOLD)
        elif isinstance(r, ev.CallerResumed | ev.CallEnded) and self.caller_held_at is not None:
            if self.waiting_since is not None and isinstance(r, ev.CallerResumed):
                self.waiting_since += r.held_s  # the caller was not waiting on the agent meanwhile
            self.caller_held_at = None
        if isinstance(r, _AWAY):
            self.away = True
            self.raised.add(Flag.OUTAGE)
        elif isinstance(r, _BACK):
            self.away = False
        if isinstance(r, ev.SupervisorActed) and r.action in (ev.SupervisorKind.TAKEOVER, ev.SupervisorKind.HANDBACK):
            self.taken_over_by = r.who if r.action == ev.SupervisorKind.TAKEOVER else ""
        if isinstance(r, ev.Recovered):
            self.raised.add(Flag.RECOVERED)
        if isinstance(r, _ERRORS) or (isinstance(r, ev.CallEnded) and r.outcome is ev.CallOutcome.FAILED):
            self.raised.add(Flag.ERROR)
        if isinstance(r, ev.BargeIn):
            self.barge_ins += 1
            if self.barge_ins >= self.watch.barge_ins:
                self.raised.add(Flag.BARGE_INS)
        if isinstance(r, ev.LongestSilence) and r.longest_silence_ms > self.watch.silence_ms:
            self.raised.add(Flag.LONG_SILENCE)
        if isinstance(r, ev.CallEnded):
            self.ended, self.waiting_since, self.caller_speaking = True, None, False
        self._turn(r, e.t)

    def _turn(self, r: ev.Report | None, t: float | None) -> None:
        """Who speaks, and how long the caller waits for the agent's answer (a reply: caller stops -> agent audio;
        hold audio does not answer)."""
        if isinstance(r, ev.CallerSpeechStarted):
            self.caller_speaking, self.waiting_since = True, None
        elif isinstance(r, ev.CallerSpeechStopped):
            self.caller_speaking, self.waiting_since = False, t
        elif isinstance(r, ev.PhaseChanged):
            self.phase = r.new
            if self.phase == Phase.SPEAKING:
                if self.waiting_since is not None and t is not None:
                    self._reply((t - self.waiting_since) * 1000)
                self.waiting_since = None

    def _reply(self, ms: float) -> None:
        if ms > self.watch.reply_ms:
            self.raised.add(Flag.SLOW_AGENT)

    def now_flags(self, now: float | None = None) -> set[Flag]:
        """The flags that hold now; ``now`` (epoch s, a live call): a caller waiting longer than ``reply_ms`` so
        far raises ``slow_agent`` (the answer may never come)."""
        if now is not None and self.waiting_since is not None and not self.ended and self.caller_held_at is None:
            self._reply((now - self.waiting_since) * 1000)
        held = {Flag.ON_HOLD} if self.on_hold else set()
        by_caller = {Flag.CALLER_HOLD} if self.caller_held_at is not None else set()
        return held | by_caller | ({Flag.OUTAGE} if self.away else set())

    def marks(self, now: float | None = None) -> list[dict[str, Any]]:
        """``[{"flag", "label", "severity", "now"}, ...]`` in :data:`FLAGS` order."""
        current = self.now_flags(now)
        return [
            {"flag": str(f), "label": label, "severity": str(sev), "now": f in current}
            for f, (label, sev) in FLAGS.items()
            if f in self.raised
        ]

    def activity(self, state: Mapping[str, Any]) -> str:
        """What is going on, in words: from the call's hash (``phase``, ``on_hold``, ``in_outage``, ``transfer``)
        and what the entries told."""
        phase = str(state.get("phase") or self.phase)
        if phase == Phase.ENDED or self.ended:
            return "ended"
        if _yes(state.get("on_hold")) or self.on_hold:
            return "on hold"
        if self.caller_held_at is not None:
            return "held by the caller"
        if _yes(state.get("in_outage")) or self.away or phase == Phase.RECOVERING:
            return "reconnecting"
        if str(state.get("transfer") or "") in _TRANSFERRING:
            return "transferring"
        if phase == Phase.SPEAKING:
            return "agent speaking"
        if self.caller_speaking or phase == Phase.CANCELLING:
            return "caller speaking"
        if phase == Phase.THINKING or self.waiting_since is not None:
            return "waiting for the agent"
        return "connecting" if not phase or phase == Phase.IDLE else "listening"


def _yes(value: Any) -> bool:
    return value is True or value == "1"


def worst(marks: Iterable[Mapping[str, Any]]) -> str:
    """The worst severity among the marks ("" for none): a row's colour."""
    found = {m["severity"] for m in marks}
    return next((str(s) for s in SEVERITY_ORDER if s in found), "")


def watch_of(plans: Iterable[Dialplan]) -> Callable[[str], Watch]:
    """A plan's ``watch`` by plan name (an unknown plan: the defaults)."""
    watches = {plan.name: plan.watch for plan in plans}
    return lambda name: watches.get(name) or Watch()


def call_marks(
    entries: Iterable[StreamEntry], watch: Watch | None = None, state: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The marks of a call from its whole stream and its hash (``state``; an ended call: what it raised, none held
    ``now`` after its end)."""
    w = CallWatch(watch or Watch())
    w.feed(entries)
    w.note(state or {})
    return w.marks()


@dataclass
class Steady:
    """A word shown for at least ``hold_s``: :meth:`show` with each new reading returns what to show now."""

    hold_s: float = STEADY_S
    shown: str = ""
    since: float = float("-inf")

    def show(self, word: str, now: float) -> str:
        if word != self.shown and now - self.since >= self.hold_s:
            self.shown, self.since = word, now
        return self.shown
