"""The agent's side of a call: the response under way, its audio converted into the playout buffer (which the
media clock thread drains every 20 ms), and the cut of a barge-in.

A response's ``AudioChunk`` events, its ``AudioDone`` and its ``ResponseDone`` arrive in order; chunks of a response
the session cancelled are dropped (they were in flight when the caller barged in). A new output item starts a new
downlink stream (the converter is reset).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge import events as ev
from bridge.audio import AudioConverter, PlayoutBuffer
from bridge.call.latency import LatencyMeter


@dataclass(frozen=True, slots=True)
class Cut:
    """What a barge-in cut: the response to cancel, each item with the audio the caller heard of it (0 for items
    queued but never heard), and how far the kept audio is from what the caller heard by the clock."""

    cancel: str | None
    truncates: list[tuple[str, int]]
    error_ms: float | None


class Playback:
    def __init__(
        self, playout: PlayoutBuffer, downlink: AudioConverter, latency: LatencyMeter, clock: Callable[[], float]
    ) -> None:
        self.playout = playout
        self._downlink = downlink
        self._latency = latency
        self._clock = clock
        self.response_id: str | None = None  # the active response, if any
        self.cancelled: set[str] = set()
        self.audio_item: str | None = None  # the item whose audio is playing / queued
        self.audio_response: str | None = None
        self.had_audio = False  # the active (or last) response's audio reached the playout

    @property
    def idle(self) -> bool:
        """No response under way and nothing left to play."""
        return self.response_id is None and self.playout.idle

    @property
    def busy(self) -> bool:
        """Agent audio queued or playing, or a response under way."""
        return not self.playout.idle or self.response_id is not None

    def started(self, response_id: str) -> None:
        self.response_id = response_id
        self.had_audio = False

    def push(self, chunk: ev.AudioChunk) -> bool:
        """Queue a chunk for playout; False if it belongs to a cancelled response (dropped)."""
        if chunk.response_id in self.cancelled:
            return False
        if chunk.item_id != self.audio_item:
            self.audio_item, self.audio_response = chunk.item_id, chunk.response_id
            self._downlink.reset()  # documented reset policy: a new output item starts a new stream
        t0 = self._clock()
        self.playout.push(chunk.item_id, self._downlink.process(chunk.audio))
        if not self.had_audio:
            self.had_audio = True
            self._latency.first_audio_queued(t0)
        return True

    def audio_done(self, response_id: str, item_id: str) -> None:
        if item_id == self.audio_item and response_id not in self.cancelled:
            self.playout.push(item_id, self._downlink.drain())  # the last 2 ms still inside the filter
            self.playout.end_item(item_id)

    def ended(self, response_id: str) -> None:
        """``ResponseDone``: it is no longer under way, and its audio ends with what was queued."""
        if response_id == self.response_id:
            self.response_id = None
        if self.audio_item is not None and response_id == self.audio_response:
            self.playout.end_item(self.audio_item)

    def drop_response(self) -> tuple[bool, bool]:
        """Forget the response under way (its session is gone): (one was under way, it had audio)."""
        active, self.response_id = self.response_id is not None, None
        return active, active and self.had_audio

    def cut(self) -> Cut:
        """Barge-in: flush the playout, mark the active response cancelled, and say what to truncate."""
        flushed = self.playout.flush()
        cancel, self.response_id = self.response_id, None
        if cancel is not None:
            self.cancelled.add(cancel)
        truncates = [(flushed.item_id, flushed.played_ms)] if flushed.item_id is not None else []
        truncates += [(item_id, 0) for item_id in flushed.unplayed]  # queued items the caller never heard
        started = self.playout.first_played_at(flushed.item_id) if flushed.item_id else None
        heard_ms = (self._clock() - started) * 1000 if started is not None else None
        self.audio_item = None
        self._downlink.reset()
        return Cut(cancel, truncates, abs(flushed.played_ms - heard_ms) if heard_ms is not None else None)
