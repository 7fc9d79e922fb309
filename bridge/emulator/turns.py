"""A Realtime session's input side: the caller's audio through the session's turn detection (``server_vad``, or
``semantic_vad`` played as energy VAD), turns committed by the VAD or the client, their transcription, and GA's
idle timeout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.audio.vad import EnergyVad
from bridge.emulator.config import ResponseParams
from bridge.emulator.core import AudioInput, Timer
from bridge.emulator.formats import FORMATS
from bridge.emulator.replies import Context
from bridge.realtime.dialects.schema import ClientError

if TYPE_CHECKING:
    from bridge.emulator.session import EmulatorSession

MIN_COMMIT_MS = 100.0  # a commit of less audio gets input_audio_buffer_commit_empty
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 600, "auto": 600, "high": 300}  # semantic_vad as plain energy VAD


class Turns:
    def __init__(self, session: EmulatorSession, input: AudioInput) -> None:
        self.rt = session
        self.input = input
        self.buffer_start_ms = 0.0  # where the uncommitted audio starts
        self._vad: EnergyVad | None = None
        self._vad_offset_ms = 0.0
        self._speech_item: str | None = None
        self._speech_start_ms = 0.0
        self._idle: Timer | None = None

    # ---------------------------------------------------------------------------------------------------------
    # Client events

    def append(self, ev: dict[str, Any], t: float) -> None:
        pcm = self.input.take(ev, FORMATS[self.rt.view.input_format])
        if self._vad is not None:
            for e in self._vad.feed(pcm):
                ms = self._vad_offset_ms + e.ms
                if e.kind == "start":
                    self._speech_started(max(ms, self.buffer_start_ms), t)
                else:
                    self._speech_stopped(ms, t)

    def commit(self, t: float) -> None:
        buffered = self.input.appended_ms - self.buffer_start_ms
        if buffered < MIN_COMMIT_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {buffered:.2f}ms of audio.",
            )
        item_id = self._speech_item or self.rt.ids.item()
        self._speech_item = None
        self.buffer_start_ms = self.input.appended_ms
        self.reset_vad()
        self._commit(item_id, buffered, t)

    def clear(self, t: float) -> None:
        self.buffer_start_ms = self.input.appended_ms
        self._speech_item = None
        self.reset_vad()
        self.rt.send(self.rt.wire.event("input.cleared"), t)

    # ---------------------------------------------------------------------------------------------------------
    # Turn detection

    def reset_vad(self) -> None:
        td = self.rt.view.turn_detection
        self._vad = None
        self._speech_item = None
        if td is None:
            return
        silence = td.get("silence_duration_ms")
        if td.get("type") == "semantic_vad":
            silence = SEMANTIC_SILENCE_MS.get(str(td.get("eagerness", "auto")), 600)
        self._vad = EnergyVad(
            FORMATS[self.rt.view.input_format].rate,
            threshold=float(td.get("threshold") or 0.5),
            prefix_padding_ms=float(td.get("prefix_padding_ms") or 0),
            silence_duration_ms=float(500 if silence is None else silence),
        )
        self._vad_offset_ms = self.input.appended_ms

    def _speech_started(self, ms: float, t: float) -> None:
        rt = self.rt
        self._speech_item = rt.ids.item()
        self._speech_start_ms = ms
        self.cancel_idle()
        rt.send(rt.wire.event("input.speech_started", audio_start_ms=int(ms), item_id=self._speech_item), t)
        run = rt.responses.active
        td = rt.view.turn_detection or {}
        if run is not None and not run.out_of_band and td.get("interrupt_response", True):
            rt.responses.cancel(run, "turn_detected", t)

    def _speech_stopped(self, ms: float, t: float) -> None:
        rt = self.rt
        item_id = self._speech_item or rt.ids.item()
        self._speech_item = None
        rt.send(rt.wire.event("input.speech_stopped", audio_end_ms=int(ms), item_id=item_id), t)
        self.buffer_start_ms = ms
        self._commit(item_id, ms - self._speech_start_ms, t)
        td = rt.view.turn_detection or {}
        if td.get("create_response", True) and rt.responses.active is None:
            rt.responses.start(ResponseParams(), t)

    def _commit(self, item_id: str, audio_ms: float, t: float, *, hears: str | None = None) -> None:
        rt = self.rt
        previous = rt.conversation.last()
        rt.send(rt.wire.event("input.committed", previous_item_id=previous, item_id=item_id), t)
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        rt.conversation.insert(item)
        rt.conversation.announce(item, previous, t)
        if hears is None:
            turn = rt.annotations.next_turn()
            rt.replies.had_turn = True
            transcript = turn.hears if turn is not None and turn.hears else f"[caller speech {audio_ms / 1000:.1f} s]"
            rt.replies.context = Context("turn", transcript, turn.reply if turn is not None else None)
        else:
            transcript = hears
            rt.replies.context = Context("idle", hears)
        rt.record.transcripts.append({"item_id": item_id, "text": transcript, "audio_ms": round(audio_ms)})
        if rt.view.transcription is not None and transcript:
            seconds = round(audio_ms / 1000.0, 3)
            rt.at(
                t + rt.settings.scaled(rt.settings.transcript_delay_ms),
                lambda tt: self._transcribe(item_id, transcript, seconds, tt),
            )

    def _transcribe(self, item_id: str, transcript: str, seconds: float, t: float) -> None:
        rt = self.rt
        item = rt.conversation.items.get(item_id)
        if item is None:
            return
        rt.send(rt.wire.event("input.transcript_delta", item_id=item_id, content_index=0, delta=transcript), t)
        usage = {"type": "duration", "seconds": seconds}
        done = rt.wire.event(
            "input.transcript_done", item_id=item_id, content_index=0, transcript=transcript, usage=usage
        )
        rt.send(done, t)
        item["content"] = [{"type": "input_audio", "transcript": transcript}]

    # ---------------------------------------------------------------------------------------------------------
    # GA's idle timeout

    def cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancelled = True
            self._idle = None

    def arm_idle(self, t: float, audio_ms: float) -> None:
        """GA idle timeout (docs): ``idle_timeout_ms`` after response.done plus the reply's playback time."""
        td = self.rt.view.turn_detection or {}
        idle_ms = td.get("idle_timeout_ms")
        self.cancel_idle()
        if idle_ms and self._vad is not None and not self._vad.speaking:
            self._idle = self.rt.at(t + (audio_ms + float(idle_ms)) / 1000.0, self._idle_timeout)

    def _idle_timeout(self, t: float) -> None:
        rt = self.rt
        self._idle = None
        if rt.responses.active is not None:
            return
        item_id = rt.ids.item()
        start, end = self.buffer_start_ms, self.input.appended_ms
        rt.send(rt.wire.event("input.timeout", audio_start_ms=int(start), audio_end_ms=int(end), item_id=item_id), t)
        self.buffer_start_ms = end
        self.reset_vad()
        self._commit(item_id, end - start, t, hears="")
        rt.responses.start(ResponseParams(), t)
