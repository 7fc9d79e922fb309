"""The latency budget of one call, sampled as it goes (the segments are listed in ``bridge.metrics``).

Each sample lands in ``CallReport.latency_ms`` and goes out as a :class:`~bridge.events.Latency` report. Times are
on the session's clock, except ``capture`` and ``uplink``, which the caller's audio path measures itself.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge import events as ev
from bridge.audio import PlayoutBuffer
from bridge.call.report import CallReport


class LatencyMeter:
    def __init__(self, report: CallReport, emit: Callable[[ev.Report], None], clock: Callable[[], float]) -> None:
        self._report = report
        self._emit = emit
        self._clock = clock
        self.answered_at: float | None = None
        self._speech_stopped_at: float | None = None
        self._queued_at: float | None = None  # when the current response's first audio was queued
        self._turn_started_at: float | None = None  # speech_stopped of the turn being answered

    def sample(self, segment: str, ms: float) -> None:
        self._report.latency_ms.setdefault(segment, []).append(round(ms, 1))
        self._emit(ev.Latency(segment, ms))

    def caller_stopped(self) -> None:
        self._speech_stopped_at = self._clock()

    def first_audio_queued(self, received_at: float) -> None:
        """A response's first audio is in the playout (it was received at ``received_at``)."""
        self._queued_at = self._clock()
        self.sample("downlink", (self._queued_at - received_at) * 1000)
        if self._speech_stopped_at is not None:
            self.sample("inference", (received_at - self._speech_stopped_at) * 1000)
            self._turn_started_at, self._speech_stopped_at = self._speech_stopped_at, None

    def measure_playback(self, playout: PlayoutBuffer, item_id: str | None) -> None:
        """Once the first frame of a reply has been handed to RTP: the playback, first-audio and turn segments."""
        if self._queued_at is None or item_id is None:
            return
        played = playout.first_played_at(item_id)  # stamped on the session's clock
        if played is None:
            return
        self.sample("playback", (played - self._queued_at) * 1000)
        if self._report.first_audio_ms is None and self.answered_at is not None:
            self._report.first_audio_ms = round((played - self.answered_at) * 1000, 1)
            self.sample("first_audio", self._report.first_audio_ms)
        if self._turn_started_at is not None:
            self.sample("turn", (played - self._turn_started_at) * 1000)
            self._turn_started_at = None
        self._queued_at = None
