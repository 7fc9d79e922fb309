"""The latency budget of one call, sampled as it goes (the segments are listed in ``bridge.metrics``).

Each sample lands in ``CallReport.latency_ms`` and goes out as a :class:`~bridge.events.Latency` report. Times are
on the session's clock, except ``capture`` and ``uplink``, which the caller's audio path measures itself.

The caller's figures (``docs/operating.md``, *what each figure means*), each measured here once, to the agent's
first frame handed to RTP:

* the **greeting**: the answer -> the agent's first audio, on a plan whose agent speaks first, when that audio is
  not the answer to a caller's turn (``greeting``; a plan where the caller speaks first has none);
* a **reply**: the caller stops (``speech_stopped``) -> the agent's audio answering them (``turn``); the call's
  first one is its **first reply** (``first_reply``);
* a turn's **wait**: the end of the caller's speech (as the service's VAD places it, else ``speech_stopped``) -> the
  agent's audio answering them, the soft hold played meanwhile included (``CallReport.turn_wait_ms``).

Time the caller had the call on hold (their phone's hold key) counts in none of them: the agent's audio waited for
them (:meth:`LatencyMeter.caller_held`).
"""

from __future__ import annotations

from collections.abc import Callable

from bridge import events as ev
from bridge.audio import Playout
from bridge.call.report import CallReport
from bridge.realtime.profile import AgentProfile


def vad_silence_ms(profile: AgentProfile) -> float:
    """The silence window of the service's VAD (server VAD's ``silence_duration_ms``; else none known)."""
    return float(getattr(profile.turn_detection, "silence_duration_ms", 0) or 0)


MAX_VAD_LAG_MS = 5000  # a speech end placed further back than this is taken as not comparable (a new session)


class LatencyMeter:
    def __init__(
        self,
        report: CallReport,
        emit: Callable[[ev.Report], None],
        clock: Callable[[], float],
        silence_ms: float = 0,
        *,
        greets: bool = False,
    ) -> None:
        self.silence_ms = silence_ms  # the service VAD's silence window (server VAD's silence_duration_ms)
        self.greets = greets  # the plan's agent speaks first
        self._report = report
        self._emit = emit
        self._clock = clock
        self.answered_at: float | None = None
        self._speech_stopped_at: float | None = None
        self._queued_at: float | None = None  # when the current response's first audio was queued
        self._turn_started_at: float | None = None  # speech_stopped of the turn being answered
        self._speech_ended_at: float | None = None  # the caller's speech end, as the service's VAD places it
        self._felt_from: float | None = None  # ... of the turn being answered
        self._held_s = 0.0  # the caller had the call on hold this long since the wait under way began
        self._resumed_at: float | None = None  # the caller last took the call off hold

    @property
    def speech_ended_at(self) -> float | None:
        """Where the caller's speech ended, on the session's clock, for the turn being answered (None: not known)."""
        return self._speech_ended_at

    def sample(self, segment: str, ms: float) -> None:
        self._report.latency_ms.setdefault(segment, []).append(round(ms, 1))
        self._emit(ev.Latency(segment, ms))

    def caller_stopped(self, sent_ms: float | None = None, audio_end_ms: float | None = None) -> None:
        """The service's VAD says the caller stopped. ``audio_end_ms`` is where it places that on the session's
        audio, of which ``sent_ms`` has gone out at the caller's pace, and it includes the VAD's silence window
        (:attr:`silence_ms`; the service documents so): the caller's speech ended that much before now, and the
        caller-felt turn starts there."""
        now = self._speech_stopped_at = self._clock()
        self._speech_ended_at = now
        self._held_s = 0.0  # a new wait for the agent begins
        if sent_ms is not None and audio_end_ms is not None and 0 <= sent_ms - audio_end_ms <= MAX_VAD_LAG_MS:
            self._speech_ended_at = now - (sent_ms - audio_end_ms + self.silence_ms) / 1000

    def caller_held(self, held_s: float, resumed_at: float) -> None:
        """The caller had the call on hold for ``held_s`` and took it off at ``resumed_at``: a wait for the agent
        under way counts without it (nothing was sent meanwhile; the agent's audio waited), and audio queued before
        the resume counts its playback from the resume."""
        self._held_s += max(0.0, held_s)
        self._resumed_at = resumed_at

    def first_audio_queued(self, received_at: float) -> None:
        """A response's first audio is in the playout (it was received at ``received_at``)."""
        self._queued_at = self._clock()
        self.sample("downlink", (self._queued_at - received_at) * 1000)
        if self._speech_stopped_at is not None:
            self.sample("inference", (received_at - self._speech_stopped_at) * 1000)
            if self._speech_ended_at is not None:  # the model's share of the caller-felt turn
                self.sample("caller_turn_model", (received_at - self._speech_ended_at) * 1000)
            self._turn_started_at, self._speech_stopped_at = self._speech_stopped_at, None
            self._felt_from, self._speech_ended_at = self._speech_ended_at, None

    def measure_playback(self, playout: Playout, item_id: str | None) -> None:
        """Once the first frame of a reply has been handed to RTP: the playback, first-audio and turn segments."""
        if self._queued_at is None or item_id is None:
            return
        played = playout.first_played_at(item_id)  # stamped on the session's clock
        if played is None:
            return
        # the port may take the first frame while the delta is still being queued: then it played at once, not before
        queued = self._queued_at if self._resumed_at is None else max(self._queued_at, self._resumed_at)
        self.sample("playback", max(0.0, (played - queued) * 1000))
        report = self._report
        felt = played - self._held_s  # the caller-felt end of the wait: their hold counts in none of it
        if report.first_audio_ms is None and self.answered_at is not None:
            report.first_audio_ms = round((felt - self.answered_at) * 1000, 1)
            if self.greets and self._turn_started_at is None:
                report.greeting_ms = report.first_audio_ms
                self.sample("greeting", report.greeting_ms)
        if self._turn_started_at is not None:
            waited_from = self._turn_started_at if self._felt_from is None else self._felt_from
            report.turn_wait_ms.append(round((felt - waited_from) * 1000, 1))
            reply_ms = round((felt - self._turn_started_at) * 1000, 1)
            if report.first_reply_ms is None:
                report.first_reply_ms = reply_ms
                self.sample("first_reply", reply_ms)
            self.sample("turn", reply_ms)
            self._turn_started_at = None
        if self._felt_from is not None:
            self.sample("caller_turn", (felt - self._felt_from) * 1000)
            self._felt_from = None
        self._queued_at = None
        self._held_s = 0.0
