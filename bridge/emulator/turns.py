"""A Realtime session's input side: the caller's audio through the session's turn detection (``server_vad``, or
``semantic_vad`` played as energy VAD), turns committed by the VAD or the client, their transcription, and when
GA's idle timeout is due.

:class:`Turns` works on the session's :class:`~bridge.emulator.state.RealtimeState` and answers what the session
does next: whether the caller's speech may cut the active response, whether a turn that ended asks for one, when
the idle timeout falls."""

from __future__ import annotations

from typing import Any

from bridge.audio.vad import EnergyVad, VadEvent
from bridge.emulator.formats import FORMATS
from bridge.emulator.replies import Context, ContextKind
from bridge.emulator.state import RealtimeState
from bridge.emulator.wire import Id
from bridge.realtime.dialects.schema import ClientError

MIN_COMMIT_MS = 100.0  # a commit of less audio gets input_audio_buffer_commit_empty
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 600, "auto": 600, "high": 300}  # semantic_vad as plain energy VAD


class Turns:
    def __init__(self, state: RealtimeState) -> None:
        self.state = state
        self.buffer_start_ms = 0.0  # where the uncommitted audio starts
        self._vad: EnergyVad | None = None
        self._vad_offset_ms = 0.0
        self._speech_item: str | None = None
        self._speech_start_ms = 0.0

    # ---------------------------------------------------------------------------------------------------------
    # Client events

    def append(self, ev: dict[str, Any]) -> list[VadEvent]:
        """An append's audio into the buffer: what the turn detection made of it (start and stop, in order)."""
        pcm = self.state.input.take(ev, FORMATS[self.state.view.input_format])
        return self._vad.feed(pcm) if self._vad is not None else []

    def commit(self, t: float) -> None:
        buffered = self.state.input.appended_ms - self.buffer_start_ms
        if buffered < MIN_COMMIT_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {buffered:.2f}ms of audio.",
            )
        item_id = self._speech_item or self.state.core.ids.new(Id.ITEM)
        self._speech_item = None
        self.buffer_start_ms = self.state.input.appended_ms
        self.reset_vad()
        self._commit(item_id, buffered, t)

    def clear(self, t: float) -> None:
        self.buffer_start_ms = self.state.input.appended_ms
        self._speech_item = None
        self.reset_vad()
        self.state.core.send(self.state.wire.event("input.cleared"), t)

    # ---------------------------------------------------------------------------------------------------------
    # Turn detection

    def reset_vad(self) -> None:
        td = self.state.view.turn_detection
        self._vad = None
        self._speech_item = None
        if td is None:
            return
        silence = td.get("silence_duration_ms")
        if td.get("type") == "semantic_vad":
            silence = SEMANTIC_SILENCE_MS.get(str(td.get("eagerness", "auto")), 600)
        self._vad = EnergyVad(
            FORMATS[self.state.view.input_format].rate,
            threshold=float(td.get("threshold") or 0.5),
            prefix_padding_ms=float(td.get("prefix_padding_ms") or 0),
            silence_duration_ms=float(500 if silence is None else silence),
        )
        self._vad_offset_ms = self.state.input.appended_ms

    def speech_started(self, e: VadEvent, t: float) -> bool:
        """``input_audio_buffer.speech_started``; True when the turn detection lets it cut an active response."""
        state = self.state
        ms = max(self._vad_offset_ms + e.ms, self.buffer_start_ms)
        self._speech_item = state.core.ids.new(Id.ITEM)
        self._speech_start_ms = ms
        state.core.send(state.wire.event("input.speech_started", audio_start_ms=int(ms), item_id=self._speech_item), t)
        return bool((state.view.turn_detection or {}).get("interrupt_response", True))

    def speech_stopped(self, e: VadEvent, t: float) -> bool:
        """``input_audio_buffer.speech_stopped`` and the turn committed; True when the turn detection answers it
        with a response."""
        state = self.state
        ms = self._vad_offset_ms + e.ms
        item_id = self._speech_item or state.core.ids.new(Id.ITEM)
        self._speech_item = None
        state.core.send(state.wire.event("input.speech_stopped", audio_end_ms=int(ms), item_id=item_id), t)
        self.buffer_start_ms = ms
        self._commit(item_id, ms - self._speech_start_ms, t)
        return bool((state.view.turn_detection or {}).get("create_response", True))

    def _commit(self, item_id: str, audio_ms: float, t: float, *, hears: str | None = None) -> None:
        state, core = self.state, self.state.core
        previous = state.conversation.last()
        core.send(state.wire.event("input.committed", previous_item_id=previous, item_id=item_id), t)
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        state.conversation.insert(item)
        state.conversation.announce(item, previous, t)
        if hears is None:
            turn = core.annotations.next_turn()
            state.replies.had_turn = True
            transcript = turn.hears if turn is not None and turn.hears else f"[caller speech {audio_ms / 1000:.1f} s]"
            state.replies.context = Context(ContextKind.TURN, transcript, turn.reply if turn is not None else None)
        else:
            transcript = hears
            state.replies.context = Context(ContextKind.IDLE, hears)
        core.record.transcripts.append({"item_id": item_id, "text": transcript, "audio_ms": round(audio_ms)})
        if state.view.transcription is not None and transcript:
            seconds = round(audio_ms / 1000.0, 3)
            core.at(
                t + core.settings.scaled(core.settings.transcript_delay_ms),
                lambda tt: self._transcribe(item_id, transcript, seconds, tt),
            )

    def _transcribe(self, item_id: str, transcript: str, seconds: float, t: float) -> None:
        state = self.state
        item = state.conversation.items.get(item_id)
        if item is None:
            return
        state.core.send(
            state.wire.event("input.transcript_delta", item_id=item_id, content_index=0, delta=transcript), t
        )
        usage = {"type": "duration", "seconds": seconds}
        done = state.wire.event(
            "input.transcript_done", item_id=item_id, content_index=0, transcript=transcript, usage=usage
        )
        state.core.send(done, t)
        item["content"] = [{"type": "input_audio", "transcript": transcript}]

    # ---------------------------------------------------------------------------------------------------------
    # GA's idle timeout

    def idle_deadline(self, t: float, audio_ms: float) -> float | None:
        """GA idle timeout (docs): ``idle_timeout_ms`` after response.done plus the reply's playback time; None
        without one, or while the caller speaks."""
        idle_ms = (self.state.view.turn_detection or {}).get("idle_timeout_ms")
        if idle_ms and self._vad is not None and not self._vad.speaking:
            return t + (audio_ms + float(idle_ms)) / 1000.0
        return None

    def timed_out(self, t: float) -> None:
        """``input_audio_buffer.timeout_triggered``: the buffer so far committed as an empty turn."""
        state = self.state
        item_id = state.core.ids.new(Id.ITEM)
        start, end = self.buffer_start_ms, state.input.appended_ms
        event = state.wire.event("input.timeout", audio_start_ms=int(start), audio_end_ms=int(end), item_id=item_id)
        state.core.send(event, t)
        self.buffer_start_ms = end
        self.reset_vad()
        self._commit(item_id, end - start, t, hears="")
