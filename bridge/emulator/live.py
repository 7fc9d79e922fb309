"""One emulated GPT-Live session, sans I/O, with the calling convention of :class:`~bridge.emulator.EmulatorSession`
(``open``, ``receive``, ``advance``, ``next_deadline``, ``inject``; actions out), driven by the Live dialect's table
(``bridge.realtime.dialects.live``: event names, client envelopes, session schema, the shapes of its answers).

What it does, as docs/protocol.md ("GPT-Live") describes the service:

* nothing until ``session.start``; then ``session.started`` with the resolved session (an invalid configuration
  gets an ``error``; a model that is not a Live model gets ``invalid_model`` and the socket closes with 4000);
* the model's audio is one stream: a ``session.output_audio.delta`` every ``delta_ms`` of real time, speech or
  silence (whatever the ``speed``, which scales only latencies; with ``speed`` 0 nothing is paced: a reply goes out
  at once and no silence fills the gaps), each word of speech as a ``session.output_transcript.delta`` timed on the
  session's timeline (``start_ms``/``end_ms``);
* the caller's audio goes through an energy VAD (threshold 0.5, 300 ms padding, 500 ms of silence ends a turn): a
  turn's words come back as ``session.input_transcript.delta`` (from the call script's annotations, like the other
  dialects), and the model answers by the same rules (``bridge/emulator/rules.py``); caller speech over the model
  stops it at once (the model stops itself);
* with ``client`` delegation the model answers no turn by itself (the client decides what is said);
* ``session.commentary.append`` is spoken (a greeting: the annotations' or the ``greeting`` setting, before any
  caller turn; "say 'X'" says X; else the content); ``session.thinking.append`` is context the model answers like
  a turn; ``session.instructions.append`` is only acknowledged;
* a tool the rules or the annotations call goes to the ``responses`` delegation: ``session.delegation.created``, then
  the backend's Responses stream in ``response.event`` envelopes (the call in ``response.output_item.done``);
  ``response.item.create`` answers a call, and ``response.create`` once every call of that response has its output
  continues the backend, whose answer the model reads out (a ``response.create`` with an output missing gets an
  ``error``, code ``tool_output_missing``);
* ``session.usage.updated`` after each thing the model said, ``session.close`` -> ``session.closed`` (with the
  usage) and a clean close; the session cap ends it with ``session.closed`` reason ``expired``;
* every client event is checked against its envelope and the service's schemas; a bad one gets Live's error
  envelope ``{error: {code, type, message, param, client_event_id}}``;
* the faults of ``bridge/emulator/faults.py``, counted per thing said (the "Nth response").
"""

from __future__ import annotations

import binascii
import heapq
from collections.abc import Mapping
from typing import Any, ClassVar, Unpack

import orjson
import pybase64

from bridge.audio.vad import EnergyVad, VadKind
from bridge.emulator import rules, voice
from bridge.emulator.actions import Action
from bridge.emulator.annotations import Reply, ToolCall
from bridge.emulator.core import AudioInput, Handler, Opening, SessionCore
from bridge.emulator.faults import Settings
from bridge.emulator.formats import PCM16_RATE
from bridge.emulator.live_backend import Delegation, LiveBackend
from bridge.emulator.live_speech import LiveSpeech, SpeechKind
from bridge.emulator.record import SessionRecord
from bridge.emulator.state import DelegationType, LiveState
from bridge.emulator.wire import Id, LiveWire
from bridge.realtime.dialects import Dialect
from bridge.realtime.dialects.schema import ClientError, merge

__all__ = ["LiveSession", "LiveWire", "live_model"]

VAD_THRESHOLD = 0.5  # Live's own turn-taking, as the emulator plays it
VAD_PADDING_MS = 300.0
VAD_SILENCE_MS = 500.0
MAX_FIXTURE_MS = 30_000.0  # session.output_audio.fixture.play: up to 30 s of PCM16 at 24 kHz
CLOSE_BAD_MODEL = 4000


def live_model(model: str) -> bool:
    """A Live model (``gpt-live-*``); a Realtime model on the Live endpoint is refused."""
    return model.startswith("gpt-live")


class LiveSession(SessionCore):
    """The state machine of one Live connection (see the module docstring): its client events and the caller's
    turns, on its :class:`~bridge.emulator.state.LiveState`; what the model says is
    :class:`~bridge.emulator.live_speech.LiveSpeech`'s room, its backend
    :class:`~bridge.emulator.live_backend.LiveBackend`'s. What they return, the session carries out."""

    unknown_event_type = "session.emulator_unknown"
    wire: LiveWire

    def __init__(self, dialect: Dialect, settings: Settings | None = None, **opening: Unpack[Opening]) -> None:
        super().__init__(dialect, settings, **opening)
        self.wire = LiveWire(dialect, self.ids)
        self.service = self.wire.service
        self._model_ok = opening.get("model_ok") or bool
        self._settings_for = opening.get("settings_for")
        session_id = self.ids.new(Id.SESSION)
        config = self.service.session_defaults(self.model_asked)
        model = str(config.get("model") or "")
        self.record = SessionRecord(session_id, dialect.name, model, settings=self.settings.as_dict())
        self.state = LiveState(self, self.wire, session_id, config, AudioInput(self.record, self._audio_field))
        self.speech = LiveSpeech(self.state)
        self.backend = LiveBackend(self.state)
        self._muted = False
        self._vad: EnergyVad | None = None
        self._speech_start_ms = 0.0
        self._had_turn = False

    # ---------------------------------------------------------------------------------------------------------
    # The calling convention

    def open(self) -> list[Action]:
        """Nothing is sent before ``session.start``; the connection's own timers start now."""
        drop = self.settings.faults.drop_after_s
        if drop is not None:
            self.at(self.t0 + drop, lambda t: self.abort(f"drop_after_s={drop}", t))
        return self._flush()

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        self._drop_cancelled()
        return self._timers[0].t if self._timers else None

    def usage(self) -> dict[str, Any]:
        """The usage so far: as far as either stream has got on the session's timeline."""
        return self.state.usage()

    # ---------------------------------------------------------------------------------------------------------
    # Plumbing

    def _stopped(self) -> None:
        self.speech.stop()

    def _expire(self, t: float) -> None:
        self._end("expired", t)

    def _admit(self, kind: str) -> None:
        if self.state.started_at is None and kind != self.dialect.client_events["session.start"]:
            raise ClientError(
                "session_not_started", "Send session.start and wait for session.started before other commands."
            )

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)

    def _advance(self, now: float) -> None:
        while not self.closed:
            self._drop_cancelled()
            if not self._timers or self._timers[0].t > now:
                break
            timer = heapq.heappop(self._timers)
            timer.fn(timer.t)
        if not self.closed and self.settings.speed <= 0:
            self.speech.at_once(now)

    def _resource(self) -> dict[str, Any]:
        return self.service.session_resource(self.state.config, self.state.session_id, self.expires_at)

    def _end(self, reason: str, t: float) -> None:
        """``session.closed`` with the final snapshot and usage, then a clean close."""
        self._acknowledge("session.closed", t, reason=reason, session=self._resource(), usage=self.usage())
        self.close(1000, f"session closed: {reason}", t)

    # ---------------------------------------------------------------------------------------------------------
    # Client events

    def _acknowledge(self, canonical: str, t: float, **fields: Any) -> None:
        """A server event answering the client event being handled (``client_event_id`` when it had an id)."""
        event_id = self._event_id
        extra = {"client_event_id": event_id} if event_id else {}
        self.send(self.wire.event(canonical, **fields, **extra), t)

    def _appended(self, canonical: str, t: float) -> None:
        """An append acknowledged where the output stream has got (an empty span there)."""
        at = int(self.state.out_ms)
        self._acknowledge(canonical, t, start_ms=at, end_ms=at)

    def _on_start(self, ev: dict[str, Any], t: float) -> None:
        if self.state.started_at is not None:
            raise ClientError("session_already_started", "The session has already started.", "type")
        schema = self.service.session_schema
        checked = schema.check(ev["session"], "session")
        config: dict[str, Any] = merge(self.service.session_defaults(str(checked["model"])), checked, schema)
        model = str(config["model"])
        if not live_model(model) or not self._model_ok(model):
            code, message = "invalid_model", f"The model '{model}' is not a Live model or you do not have access to it."
            self.error(code, message, t, param="session.model", client_event_id=self._event_id)
            self.close(CLOSE_BAD_MODEL, message, t)
            return
        self.state.config = config
        self.record.model = model
        self._settings_of(model)
        self.state.started_at = t
        self._acknowledge("session.started", t, session=self._resource())
        self._vad = EnergyVad(
            self.state.format.rate,
            threshold=VAD_THRESHOLD,
            prefix_padding_ms=VAD_PADDING_MS,
            silence_duration_ms=VAD_SILENCE_MS,
        )
        self.at(t + self.cap_s, self._expire)
        self.speech.start(t)

    def _settings_of(self, model: str) -> None:
        """The settings of ``model`` from now on (the server's settings per model: Live names it only now)."""
        settings_for = self._settings_for
        if settings_for is not None:
            self.settings = self.speech.settings = settings_for(model)
            self.record.settings = self.settings.as_dict()

    def _on_update(self, ev: dict[str, Any], t: float) -> None:
        schema = self.service.update_schema
        update = schema.check(ev["session"], "session")
        delegation = update.get("delegation")
        current = self.state.config.get("delegation")
        if isinstance(delegation, dict):
            if isinstance(current, dict) and current.get("type") != delegation.get("type"):
                raise ClientError("invalid_value", "The delegation type cannot change.", "session.delegation.type")
            if isinstance(current, dict):
                merged = {**current, **delegation}
                if isinstance(current.get("responses"), dict) and isinstance(delegation.get("responses"), dict):
                    merged["responses"] = {**current["responses"], **delegation["responses"]}
                delegation = merged
            self.state.config["delegation"] = delegation
        if "triggers" in update:
            self.state.config["triggers"] = update["triggers"]
        self._acknowledge("session.updated", t, session=self._resource())

    def _on_append(self, ev: dict[str, Any], t: float) -> None:
        pcm = self.state.input.take(ev, self.state.format)
        if self._vad is None or self._muted:
            return
        for e in self._vad.feed(pcm):
            if e.kind is VadKind.START:
                self._caller_started(e.ms, t)
            else:
                self._caller_stopped(e.ms, t)

    def _on_mute(self, ev: dict[str, Any], t: float) -> None:
        self._muted = True
        self._acknowledge("input.muted", t)

    def _on_unmute(self, ev: dict[str, Any], t: float) -> None:
        self._muted = False
        self._acknowledge("input.unmuted", t)

    def _context(self, ev: dict[str, Any]) -> str:
        """The content of an append; rejected while a fixture plays, or with a delegation id under Responses."""
        if self.speech.fixture_active():
            raise ClientError("fixture_active", "Rejected while an audio fixture is active.", "type")
        if ev.get("delegation_id") is not None and self.state.delegation() == DelegationType.RESPONSES:
            raise ClientError(
                "invalid_value", "Non-null delegation IDs are not accepted with Responses delegation.", "delegation_id"
            )
        return str(ev["content"])

    def _on_instructions(self, ev: dict[str, Any], t: float) -> None:
        self._context(ev)
        self._appended("instructions.appended", t)

    def _on_thinking(self, ev: dict[str, Any], t: float) -> None:
        content = self._context(ev)
        self._appended("thinking.appended", t)
        self._answer(content, None, t)

    def _on_commentary(self, ev: dict[str, Any], t: float) -> None:
        content = self._context(ev)
        self._appended("commentary.appended", t)
        said = rules.said(content)
        reply = None if said is not None or self._had_turn else self.annotations.take_greeting()
        if said is not None:
            text = said
        elif reply is not None and reply.text is not None:
            text = reply.text
        else:
            text = content if self._had_turn else self.settings.greeting
        self.speech.say(text, reply, SpeechKind.COMMENTARY, t)

    def _on_fixture(self, ev: dict[str, Any], t: float) -> None:
        try:
            pcm = pybase64.b64decode(ev["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise ClientError(
                "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio"
            ) from None
        pcm = pcm[: len(pcm) // 2 * 2]
        if not pcm:
            raise ClientError("invalid_value", "An audio fixture needs audio.", "audio")
        if len(pcm) / 2 / PCM16_RATE * 1000.0 > MAX_FIXTURE_MS:
            raise ClientError("invalid_value", "An audio fixture can last at most 30 seconds.", "audio")
        if self.speech.fixture_active():
            raise ClientError("fixture_active", "An audio fixture is already playing.", "type")
        fmt = self.state.format
        self.speech.interrupt(t, "fixture")
        pcm = voice.resample_linear(pcm, PCM16_RATE, fmt.rate)
        self.speech.queue(SpeechKind.FIXTURE, "", pcm, fmt, t)
        self._acknowledge("fixture.playing", t)

    def _on_decision(self, ev: dict[str, Any], t: float) -> None:
        raise ClientError("decisions_not_enabled", "Decision commands require Decisions delegation.", "type")

    def _on_item_create(self, ev: dict[str, Any], t: float) -> None:
        self.backend.item_create(ev)

    def _on_response_create(self, ev: dict[str, Any], t: float) -> None:
        delegation, text = self.backend.response_create()
        self.at(self.speech.latency(t), lambda tt: self._backend_answers(delegation, text, tt))

    def _backend_answers(self, delegation: Delegation, text: str, t: float) -> None:
        """The backend's answer with the tools' outputs, which the model reads out."""
        self.backend.answer(delegation, text, t)
        self.speech.say(text, None, SpeechKind.REPLY, t)

    def _on_close(self, ev: dict[str, Any], t: float) -> None:
        self._end("close_requested", t)

    # canonical client key (the dialect's client_events) -> handler
    _handlers: ClassVar[Mapping[str, Handler]] = {
        "session.start": _on_start,
        "session.update": _on_update,
        "input.append": _on_append,
        "input.mute": _on_mute,
        "input.unmute": _on_unmute,
        "fixture.play": _on_fixture,
        "instructions.append": _on_instructions,
        "thinking.append": _on_thinking,
        "commentary.append": _on_commentary,
        "decision.create": _on_decision,
        "decision.item_create": _on_decision,
        "decision.item_delete": _on_decision,
        "response.item_create": _on_item_create,
        "response.create": _on_response_create,
        "session.close": _on_close,
    }

    # ---------------------------------------------------------------------------------------------------------
    # The caller and the model

    def _caller_started(self, ms: float, t: float) -> None:
        self._speech_start_ms = ms
        self.speech.interrupt(t, "caller")

    def _caller_stopped(self, ms: float, t: float) -> None:
        """A turn: its words (the annotations', else a placeholder), then the model's answer."""
        start, end = self._speech_start_ms, max(self._speech_start_ms, ms - VAD_SILENCE_MS)
        turn = self.annotations.next_turn()
        self._had_turn = True
        heard = turn.hears if turn is not None and turn.hears else f"[caller speech {(end - start) / 1000:.1f} s]"
        self.record.transcripts.append({"item_id": "", "text": heard, "audio_ms": round(end - start)})
        s = self.settings
        heard_at = t + s.scaled(s.transcript_delay_ms)
        self.at(heard_at, lambda tt: self._transcribe(heard, start, end, tt))
        if self.state.delegation() == DelegationType.CLIENT:
            return  # the client decides: it makes the model speak (commentary) or think (thinking.append)
        self._answer(heard, turn.reply if turn is not None else None, heard_at)  # it answers what it transcribed

    def _transcribe(self, text: str, start_ms: float, end_ms: float, t: float) -> None:
        words = text.split(" ")
        step = (end_ms - start_ms) / len(words)
        for i, word in enumerate(words):
            delta = word if i == 0 else " " + word
            a, b = start_ms + i * step, start_ms + (i + 1) * step
            self.send(self.wire.event("input.transcript_delta", delta=delta, start_ms=int(a), end_ms=int(b)), t)

    def _answer(self, heard: str, reply: Reply | None, t: float) -> None:
        """The model's answer to what it heard: the annotation's reply, else the rules (speech and maybe a tool)."""
        text = reply.text if reply is not None else None
        tool = reply.tool_call if reply is not None else None
        if text is None and tool is None:
            text, name = rules.answer(heard, self.backend.has_tool)
            if name is not None:
                tool = ToolCall(name, orjson.dumps({"reason": heard}).decode())
        said_s = self.speech.say(text, reply, SpeechKind.REPLY, t) if text is not None else 0.0
        if tool is not None:
            # what it says first is said before it hands the task over (as a Realtime response's text comes
            # before its function call): the delegation follows its last words by one delta
            ready = self.speech.latency(t)
            if said_s:
                ready += said_s + self.settings.delta_ms / 1000.0
            call, after = tool, reply.after_tool if reply is not None else None
            self.at(ready, lambda tt: self.backend.delegate(call, tt, after))
