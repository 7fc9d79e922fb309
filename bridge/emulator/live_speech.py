"""What a Live session's model says, on the shared :class:`~bridge.emulator.scheduler.ResponseScheduler`: the
output is one audio stream, a ``session.output_audio.delta`` every ``delta_ms`` of real time from the start,
speech or silence (with ``speed`` 0 nothing is paced: each thing said goes out at once, and no silence fills the
gaps); each word as a ``session.output_transcript.delta`` timed on the session's timeline. Caller speech over the
model stops it at once; an audio fixture plays through the same stream.

:class:`LiveSpeech` works on the session's :class:`~bridge.emulator.state.LiveState` (it moves ``out_ms``, how far
the stream has got)."""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import pybase64

from bridge.emulator import voice
from bridge.emulator.annotations import Reply
from bridge.emulator.core import Timer
from bridge.emulator.faults import MID_RESPONSE_ERROR, error_type
from bridge.emulator.formats import WireFormat
from bridge.emulator.scheduler import CancelledBy, ResponseScheduler, Status, Utterance, record_response
from bridge.emulator.state import LiveState
from bridge.emulator.wire import Id


class SpeechKind(enum.Enum):
    """What goes out on the stream: the model's reply, commentary it was asked to speak, or an audio fixture."""

    REPLY = enum.auto()
    COMMENTARY = enum.auto()
    FIXTURE = enum.auto()


@dataclass
class Speech:
    """One thing the model says (or a fixture it plays), laid out as the output stream's deltas."""

    number: int  # counts what the model says, for the faults' "Nth response"
    kind: SpeechKind
    text: str
    said: Utterance
    ready_at: float  # not before this (response latency)
    id: str = ""
    index: int = 0
    sent_text: str = ""
    sent_ms: float = 0.0
    status: Status = Status.IN_PROGRESS

    @property
    def done(self) -> bool:
        return self.index >= len(self.said.chunks)


class LiveSpeech(ResponseScheduler[Speech]):
    def __init__(self, state: LiveState) -> None:
        super().__init__(state.core)
        self.state = state
        self._tick: Timer | None = None
        self._ticks = 0  # deltas sent so far: the k-th is due k * delta_ms after the start, however late it ran

    def start(self, t: float) -> None:
        """The output stream starts (``session.started``)."""
        if self.settings.speed > 0:
            self._tick = self.state.core.at(t, self._on_tick)

    def stop(self) -> None:
        self.waiting.clear()
        self.active = None

    def say(self, text: str, reply: Reply | None, kind: SpeechKind, t: float) -> float:
        """Queue ``text`` as speech; how long it lasts (seconds)."""
        fmt = self.state.format
        pcm = voice.speak(self.settings, text, fmt.rate, reply)
        self.queue(kind, text, pcm, fmt, self.latency(t))
        return len(pcm) / 2 / fmt.rate

    def queue(self, kind: SpeechKind, text: str, pcm: bytes, fmt: WireFormat, ready: float) -> None:
        said = Utterance.of(pcm, fmt, self.settings.delta_ms, text.split(" ") if text else [])
        if not said.chunks:
            return  # nothing to play
        number = self.count
        if kind is not SpeechKind.FIXTURE:
            number = self.number()
            ready += self.first_delta_delay()
        self.waiting.append(Speech(number, kind, text, said, ready, id=self.state.core.ids.new(Id.RESPONSE)))

    def fixture_active(self) -> bool:
        return any(s.kind is SpeechKind.FIXTURE for s in (self.active, *self.waiting) if s is not None)

    def interrupt(self, t: float, by: Literal["caller", "fixture"]) -> None:
        """The model stops itself: what it was saying is cut, what it meant to say next is dropped. The caller's
        speech leaves a fixture playing; a new fixture replaces everything."""
        for speech in (self.active, *self.waiting):
            if speech is not None and (by == "fixture" or speech.kind is not SpeechKind.FIXTURE):
                self._finish(speech, Status.INTERRUPTED, t)
        if self.active is not None and self.active.status is not Status.IN_PROGRESS:
            self.active = None
        self.waiting = deque(s for s in self.waiting if s.status is Status.IN_PROGRESS)

    def _on_tick(self, t: float) -> None:
        """One delta of the output stream: the next chunk of speech, or silence."""
        speech = self._current(t)
        if speech is None:
            fmt = self.state.format
            self._delta(fmt.from_pcm16(voice.silence(self.settings.delta_ms, fmt.rate)), self.settings.delta_ms, t)
        else:
            self._chunk(speech, t)
        self._ticks += 1
        core = self.state.core
        if not core.closed:
            at = self.state.started_at or 0.0
            self._tick = core.at(at + self._ticks * self.settings.delta_ms / 1000.0, self._on_tick)

    def _current(self, t: float) -> Speech | None:
        if self.active is None and self.waiting and self.waiting[0].ready_at <= t:
            self.active = self.waiting.popleft()
        return self.active

    def at_once(self, t: float) -> None:
        """``speed`` 0: every queued thing is said now, whole, with no silence around it."""
        core = self.state.core
        while not core.closed:
            speech = self._current(math.inf)
            if speech is None:
                return
            while not core.closed and self.active is speech and not speech.done:
                self._chunk(speech, t)

    def _chunk(self, speech: Speech, t: float) -> None:
        k = speech.index
        speech.index += 1
        start = self.state.out_ms
        said = speech.said
        wire, send = self.state.wire, self.state.core.send
        for i, word in enumerate(said.words[k]):
            delta = word if not speech.sent_text and i == 0 else " " + word
            speech.sent_text += delta
            end = start + said.chunk_ms[k]
            send(wire.event("audio_transcript.delta", delta=delta, start_ms=int(start), end_ms=int(end)), t)
        self._delta(said.chunks[k], said.chunk_ms[k], t)
        speech.sent_ms += said.chunk_ms[k]
        if speech.kind is not SpeechKind.FIXTURE and self.fault_due(k + 1):
            self.fire_faults(speech.number, _StreamFaults(self, speech), t)
        if self.active is speech and speech.done:
            self._finish(speech, Status.COMPLETED, t)
            self.active = None

    def _delta(self, audio: bytes, ms: float, t: float) -> None:
        self.state.core.send(self.state.wire.audio(pybase64.b64encode_as_string(audio)), t)
        self.state.out_ms += ms

    def _finish(self, speech: Speech, status: Status, t: float) -> None:
        if speech.status is not Status.IN_PROGRESS:
            return
        speech.status = status
        wire, send = self.state.wire, self.state.core.send
        if speech.kind is SpeechKind.FIXTURE:
            send(wire.event("fixture.played"), t)
            return
        outputs = [{"type": "message", "text": speech.sent_text, "audio_ms": speech.sent_ms}]
        interrupted = status is Status.INTERRUPTED
        reason = CancelledBy.TURN_DETECTED if interrupted else None
        record_response(self.core.record, speech.id, speech.number, status, reason, outputs)
        if interrupted:
            self.cancelled(speech.id, CancelledBy.TURN_DETECTED, t)
        send(wire.event("usage", usage=self.state.usage()), t)


class _StreamFaults:
    """The per-delta faults as Live's output stream shows them."""

    def __init__(self, speech: LiveSpeech, said: Speech) -> None:
        self.speech, self.said = speech, said

    def unknown_event(self, t: float) -> None:
        core = self.speech.state.core
        core.send({"type": core.unknown_event_type, "event_id": core.ids.new(Id.EVENT)}, t)

    def invalid_base64_delta(self, t: float) -> None:
        state = self.speech.state
        state.core.send(state.wire.audio("!!not*base64!!"), t)

    def oversized_delta(self, t: float) -> None:
        speech = self.speech
        speech._delta(speech.oversized_audio(speech.state.format), speech.settings.faults.oversized_delta_ms, t)

    def fail(self, t: float) -> None:
        speech, code = self.speech, self.speech.settings.faults.error_code
        speech.state.core.error(code, MID_RESPONSE_ERROR, t, error_type=error_type(code))
        speech._finish(self.said, Status.FAILED, t)
        if speech.active is self.said:
            speech.active = None
