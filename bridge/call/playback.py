"""The agent's side of a call: the response under way, its audio converted into the playout buffer (which the
media clock thread drains every 20 ms), and the cut of a barge-in.

A response's ``AudioChunk`` events, its ``AudioDone`` and its ``ResponseDone`` arrive in order; chunks of a response
the session cancelled are dropped (they were in flight when the caller barged in). A new output item starts a new
downlink stream (the converter is reset). A chunk the socket's C downlink decoded (``AudioChunk.decoded``,
:mod:`bridge.realtime.downlink`) is already 8 kHz: converted there with this converter's own C state, reset there
for a new item, so it goes to the playout as it is; the tail, the reset of a barge-in and the rest stay here.
Once such a chunk of an item is queued in the C ring (:class:`~bridge.audio.playout_native.NativePlayout`) on the
decoding stack, the session arms the downlink's sink for the item (:meth:`Playback.arm`): its later runs go from
the socket's bytes into the ring in C, with no event (``bridge/native/downlink.c``, "The sink"). Whatever the loop
must weigh first disarms it (:meth:`Playback.disarm`): a barge-in's cut, the item's ``AudioDone``, its response's
end, any event of the session but the agent's transcript deltas, a supervisor's take-over, the session's close.

A dialect with ``continuous_output`` (the model's audio one stream at real-time pace, silence included, with no
items or responses: :meth:`Playback.stream`) is gated by level instead: a chunk louder than :data:`SPEECH_DBFS`
opens a speech segment (a playout item of its own), silence inside it is kept, and :data:`HANGOVER_MS` of silence
ends it; silence outside a segment is never queued, so the playout buffer holds only what is about to be heard.
After a barge-in the model stops itself: its speech is dropped until it falls silent, and how long it went on is
reported (:class:`~bridge.events.TalkedOver`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bridge import events as ev
from bridge.audio import AudioConverter, Playout
from bridge.audio.analysis import level_dbfs
from bridge.audio.playout_native import CSink
from bridge.call.latency import LatencyMeter

LOCAL: Final = "local:"  # the prefix of the playout items the bridge plays itself (hold audio): in no conversation
SPEECH_DBFS = -45.0  # a continuous stream's chunk louder than this (RMS, 8 kHz PCM16) is speech
HANGOVER_MS = 200.0  # silence that ends a speech segment of a continuous stream


@dataclass(frozen=True, slots=True)
class Cut:
    """What a barge-in cut: the response to cancel, each item with the audio the caller heard of it (0 for items
    queued but never heard), and how far the kept audio is from what the caller heard by the clock."""

    cancel: str | None
    truncates: list[tuple[str, int]]
    error_ms: float | None
    item_id: str | None = None  # the item that was playing (or next to play)
    played_ms: int = 0  # of it, heard
    dropped_ms: int = 0  # of it, received and flushed unheard


class Playback:
    def __init__(
        self,
        playout: Playout,
        downlink: AudioConverter,
        latency: LatencyMeter,
        clock: Callable[[], float],
        *,
        continuous: bool = False,
        on_talk_over: Callable[[float], None] | None = None,
        sink: Callable[[CSink | None], bool] | None = None,
    ) -> None:
        self._sink = sink  # arms (or, None, disarms) the C downlink's sink (Link.sink_audio)
        self.sinking: str | None = None  # the item it is armed for
        self.continuous = continuous  # the model's audio is one stream (:meth:`stream`), not responses
        self.on_talk_over = on_talk_over  # (ms): a stream's model stopped itself after a barge-in
        self.playout = playout
        self._downlink = downlink
        self._latency = latency
        self._clock = clock
        self.response_id: str | None = None  # the active response, if any
        self.cancelled: set[str] = set()
        self.audio_item: str | None = None  # the item whose audio is playing / queued
        self.on_item: Callable[[], object] | None = None  # told when a new item's audio starts (the echo guard)
        self.audio_response: str | None = None
        self.had_audio = False  # the active (or last) response's audio reached the playout
        self._unlisted: set[str] = set()  # responses out of band (a say) and their items: in no conversation
        # a continuous stream (see the module doc)
        self.segments = 0  # speech segments opened so far
        self._silent_ms = 0.0  # silence since the segment's last speech
        self._muted_since: float | None = None  # a barge-in's onset: the model's speech is dropped until it stops
        self._last_voiced: float | None = None  # when the model's stream last carried speech

    @property
    def idle(self) -> bool:
        """No response under way and nothing left to play."""
        return self.response_id is None and self.playout.idle

    @property
    def busy(self) -> bool:
        """Agent audio queued or playing, or a response under way."""
        return not self.playout.idle or self.response_id is not None

    def responding(self) -> bool:
        """A response is under way."""
        return self.response_id is not None

    def started(self, response_id: str, out_of_band: bool = False) -> None:
        self.response_id = response_id
        self.had_audio = False
        if out_of_band:
            self._unlisted.add(response_id)

    def push(self, chunk: ev.AudioChunk) -> bool:
        """Queue a chunk for playout; False if it belongs to a cancelled response (dropped)."""
        if chunk.response_id in self.cancelled:
            return False
        if chunk.item_id != self.audio_item:
            self.audio_item, self.audio_response = chunk.item_id, chunk.response_id
            if not chunk.decoded:  # decoded: the C downlink reset the converter's state itself for the new item
                self._downlink.reset()  # documented reset policy: a new output item starts a new stream
            if chunk.response_id in self._unlisted:
                self._unlisted.add(chunk.item_id)
            if self.on_item is not None:
                self.on_item()
        t0 = self._clock()
        self.playout.push(chunk.item_id, chunk.audio if chunk.decoded else self._downlink.process(chunk.audio))
        if not self.had_audio:
            self.had_audio = True
            self._latency.first_audio_queued(t0)
        return True

    def arm(self, item_id: str) -> None:
        """A chunk of ``item_id`` decoded in C was queued on the decoding stack: its later runs may go into the C
        ring in C (see the module doc). Not for a continuous stream (gated by level here), nor a Python buffer."""
        c_sink = getattr(self.playout, "c_sink", None)
        if self._sink is None or c_sink is None or self.continuous or item_id != self.audio_item:
            return
        target: CSink | None = c_sink(item_id)
        if target is not None and self._sink(target):
            self.sinking = item_id

    def disarm(self) -> None:
        """The item's runs come to the loop again (as chunks)."""
        if self.sinking is not None and self._sink is not None:
            self.sinking = None
            self._sink(None)

    def stream(self, chunk: ev.AudioChunk) -> bool | None:
        """A chunk of a continuous stream: None if it was not queued (silence, or speech after a barge-in), True if
        it opened a speech segment, False if it went on with one."""
        # one stream: the converter is never reset between segments
        pcm = chunk.audio if chunk.decoded else self._downlink.process(chunk.audio)
        voiced = level_dbfs(pcm) > SPEECH_DBFS
        now = self._clock()
        if self._muted_since is not None:
            if voiced:
                self._last_voiced = now
                return None
            self._silent_ms += len(pcm) / 16.0
            if self._silent_ms >= HANGOVER_MS:  # the model stopped itself
                onset, self._muted_since = self._muted_since, None
                if self.on_talk_over is not None:
                    self.on_talk_over(max(0.0, ((self._last_voiced or onset) - onset) * 1000.0))
            return None
        opened = False
        if self.audio_item is None:
            if not voiced:
                return None
            self.segments += 1
            self.audio_item, self.audio_response = f"speech-{self.segments}", chunk.response_id
            self.had_audio = opened = True
        item = self.audio_item
        if voiced:
            self._silent_ms, self._last_voiced = 0.0, now
        else:
            self._silent_ms += len(pcm) / 16.0  # 8 kHz PCM16: 16 bytes a millisecond
        t0 = self._clock()
        self.playout.push(item, pcm)
        if opened:
            self._latency.first_audio_queued(t0)
        if self._silent_ms >= HANGOVER_MS:
            self.playout.end_item(item)
            self.audio_item = None
        return opened

    def audio_done(self, response_id: str, item_id: str) -> None:
        self.disarm()  # the tail goes after every run the sink pushed: they went in as they were read
        if item_id == self.audio_item and response_id not in self.cancelled:
            tail = self._downlink.drain()  # the last 2 ms still inside the filter
            if not self.playout.ran_dry(item_id):  # after a gap they would be a click of their own
                self.playout.push(item_id, tail)
            self.playout.end_item(item_id)

    def ended(self, response_id: str) -> None:
        """``ResponseDone``: it is no longer under way, and its audio ends with what was queued."""
        self.disarm()
        if response_id == self.response_id:
            self.response_id = None
        if self.audio_item is not None and response_id == self.audio_response:
            self.playout.end_item(self.audio_item)

    def drop_response(self) -> tuple[bool, bool]:
        """Forget the response under way (its session is gone): (one was under way, it had audio). A continuous
        stream has no responses: the model was under way if it was in the middle of a speech segment."""
        self.disarm()
        if self.continuous:
            speaking, item = self.audio_item is not None and self._muted_since is None, self.audio_item
            if item is not None:
                self.playout.end_item(item)  # what was queued still plays; the segment ends with it
            self.audio_item, self._silent_ms = None, 0.0
            return speaking, speaking
        active, self.response_id = self.response_id is not None, None
        return active, active and self.had_audio

    def cut(self) -> Cut:
        """Barge-in: flush the playout, mark the active response cancelled, and say what to truncate."""
        self.disarm()  # the cancelled response's runs still in flight come to the loop, which drops them
        flushed = self.playout.flush()
        cancel, self.response_id = self.response_id, None
        if cancel is not None:
            self.cancelled.add(cancel)
        truncates = [(flushed.item_id, flushed.played_ms)] if flushed.item_id is not None else []
        truncates += [(item_id, 0) for item_id in flushed.unplayed]  # queued items the caller never heard
        # an out-of-band item, or the bridge's own audio, is in no conversation: there is nothing to truncate (the
        # service would refuse it)
        truncates = [(i, ms) for i, ms in truncates if i not in self._unlisted and not i.startswith(LOCAL)]
        started = self.playout.first_played_at(flushed.item_id) if flushed.item_id else None
        heard_ms = (self._clock() - started) * 1000 if started is not None else None
        self.audio_item = None
        if self.continuous:  # the model stops itself: drop its speech until it does
            self._muted_since, self._silent_ms, self._last_voiced = self._clock(), 0.0, None
        else:
            self._downlink.reset()
        error = abs(flushed.played_ms - heard_ms) if heard_ms is not None else None
        return Cut(cancel, truncates, error, flushed.item_id, flushed.played_ms, flushed.dropped_ms)
