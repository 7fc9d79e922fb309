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
import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson
import pybase64

from bridge.audio.vad import EnergyVad
from bridge.emulator import rules, voice
from bridge.emulator.annotations import Annotations, Reply, ToolCall
from bridge.emulator.config import value_at
from bridge.emulator.faults import Settings
from bridge.emulator.formats import FORMATS, PCM16_RATE, WireFormat
from bridge.emulator.session import ELIDED, Action, AudioSegment, Handler, SessionCore, SessionRecord, Timer
from bridge.emulator.wire import Ids
from bridge.realtime.dialects import Dialect, LiveService
from bridge.realtime.dialects.schema import ClientError, merge

VAD_THRESHOLD = 0.5  # Live's own turn-taking, as the emulator plays it
VAD_PADDING_MS = 300.0
VAD_SILENCE_MS = 500.0
MAX_FIXTURE_MS = 30_000.0  # session.output_audio.fixture.play: up to 30 s of PCM16 at 24 kHz
CLOSE_BAD_MODEL = 4000


def live_model(model: str) -> bool:
    """A Live model (``gpt-live-*``); a Realtime model on the Live endpoint is refused."""
    return model.startswith("gpt-live")


class LiveWire:
    """Builds Live's server events as dicts, from the dialect's table."""

    def __init__(self, dialect: Dialect, ids: Ids) -> None:
        service = dialect.service
        if not isinstance(service, LiveService):
            raise TypeError(f"the {dialect.name} dialect is not served in the Live shape")
        self.dialect, self.service, self.ids = dialect, service, ids

    def event(self, canonical: str, **fields: Any) -> dict[str, Any]:
        return {"type": self.dialect.wire(canonical), "event_id": self.ids.event(), **fields}

    def error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        client_event_id: str | None = None,
    ) -> dict[str, Any]:
        return self.event(
            "error", **self.service.error(code or error_type, error_type, message, param, client_event_id)
        )

    def audio(self, delta: str) -> dict[str, Any]:
        """An output audio delta: on the primary WebSocket it carries no ``event_id`` and no timings."""
        return {"type": self.dialect.wire("audio.delta"), "delta": delta}

    def inner(self, canonical: str, sequence: int, **fields: Any) -> dict[str, Any]:
        """One event of the backend's Responses stream (it goes inside ``response.event``)."""
        return {"type": self.service.responses_events[canonical], "sequence_number": sequence, **fields}


# --------------------------------------------------------------------------------------------------------------
# What the model says, and what its backend does


@dataclass
class _Speech:
    """One thing the model says (or a fixture it plays), laid out as the output stream's deltas."""

    number: int  # counts what the model says, for the faults' "Nth response"
    kind: Literal["reply", "commentary", "fixture"]
    text: str
    chunks: tuple[bytes, ...]  # wire-encoded audio, one per delta
    chunk_ms: tuple[float, ...]
    words: tuple[tuple[str, ...], ...]  # the words of each chunk
    ready_at: float  # not before this (response latency)
    id: str = ""
    index: int = 0
    sent_text: str = ""
    sent_ms: float = 0.0
    status: str = "in_progress"

    @property
    def done(self) -> bool:
        return self.index >= len(self.chunks)


@dataclass
class _Delegation:
    id: str
    response_id: str
    calls: list[str] = field(default_factory=list)  # call ids of its latest response
    outputs: dict[str, str] = field(default_factory=dict)  # call id -> output
    waiting: bool = True  # its latest response called tools that await outputs


class LiveSession(SessionCore):
    """The state machine of one Live connection. See the module docstring."""

    unknown_event_type = "session.emulator_unknown"
    wire: LiveWire

    def __init__(
        self,
        dialect: Dialect,
        settings: Settings | None = None,
        *,
        model: str | None = None,
        now: float = 0.0,
        wall: float = 0.0,
        annotations: Annotations | None = None,
        ids: Ids | None = None,
        record: SessionRecord | None = None,
        model_ok: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(dialect, settings, now=now, wall=wall, annotations=annotations, ids=ids)
        self.wire = LiveWire(dialect, self.ids)
        self.service = self.wire.service
        self._model_ok = model_ok or (lambda m: bool(m))
        self.session_id = self.ids.session()
        self.config: dict[str, Any] = self.service.session_defaults(model or dialect.default_model)
        self.record = record or SessionRecord(self.session_id, dialect.name, self.model)
        self.record.id, self.record.model = self.session_id, self.model
        self.record.settings = self.settings.as_dict()
        self._started_at: float | None = None
        # input
        self._appended_ms = 0.0
        self._carry = b""
        self._muted = False
        self._vad: EnergyVad | None = None
        self._speech_start_ms = 0.0
        self._had_turn = False
        # output
        self._out_ms = 0.0
        self._queue: deque[_Speech] = deque()
        self._speaking: _Speech | None = None
        self._said = 0
        self._tick: Timer | None = None
        self._ticks = 0  # deltas sent so far: the k-th is due k * delta_ms after the start, however late it ran
        # the backend
        self._delegations: dict[str, _Delegation] = {}
        self._calls: dict[str, _Delegation] = {}
        self._sequence = itertools.count()

    # ---------------------------------------------------------------------------------------------------------
    # The calling convention

    @property
    def model(self) -> str:
        return str(self.config.get("model") or "")

    @property
    def format(self) -> WireFormat:
        return FORMATS[self.dialect.format_name(value_at(self.config, self.service.session_paths["format"])) or "pcm16"]

    def open(self) -> list[Action]:
        """Nothing is sent before ``session.start``; the connection's own timers start now."""
        drop = self.settings.faults.drop_after_s
        if drop is not None:
            self._at(self.t0 + drop, lambda t: self._abort(f"drop_after_s={drop}", t))
        return self._flush()

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        self._drop_cancelled()
        return self._timers[0].t if self._timers else None

    # ---------------------------------------------------------------------------------------------------------
    # Plumbing

    def _stopped(self) -> None:
        self._queue.clear()
        self._speaking = None

    def _expire(self, t: float) -> None:
        self._end("expired", t)

    def _admit(self, kind: str) -> None:
        if self._started_at is None and kind != self.dialect.client_events["session.start"]:
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
            self._speak_at_once(now)

    def _resource(self) -> dict[str, Any]:
        return self.service.session_resource(self.config, self.session_id, self.expires_at)

    def _timeline_ms(self) -> float:
        """Where the session is on its timeline: as far as either stream has got."""
        return max(self._out_ms, self._appended_ms)

    def _usage(self) -> dict[str, Any]:
        return self.service.usage(self._timeline_ms() / 1000.0)

    def _end(self, reason: str, t: float) -> None:
        """``session.closed`` with the final snapshot and usage, then a clean close."""
        self._acknowledge("session.closed", t, reason=reason, session=self._resource(), usage=self._usage())
        self._close(1000, f"session closed: {reason}", t)

    # ---------------------------------------------------------------------------------------------------------
    # Client events

    def _acknowledge(self, canonical: str, t: float, **fields: Any) -> None:
        """A server event answering the client event being handled (``client_event_id`` when it had an id)."""
        event_id = self._event_id
        extra = {"client_event_id": event_id} if event_id else {}
        self._send(self.wire.event(canonical, **fields, **extra), t)

    def _on_start(self, ev: dict[str, Any], t: float) -> None:
        if self._started_at is not None:
            raise ClientError("session_already_started", "The session has already started.", "type")
        schema = self.service.session_schema
        checked = schema.check(ev["session"], "session")
        config: dict[str, Any] = merge(self.service.session_defaults(str(checked["model"])), checked, schema)
        model = str(config["model"])
        if not live_model(model) or not self._model_ok(model):
            code, message = "invalid_model", f"The model '{model}' is not a Live model or you do not have access to it."
            self._error(code, message, t, param="session.model", client_event_id=self._event_id)
            self._close(CLOSE_BAD_MODEL, message, t)
            return
        self.config = config
        self.record.model = model
        self._started_at = t
        self._acknowledge("session.started", t, session=self._resource())
        self._vad = EnergyVad(
            self.format.rate,
            threshold=VAD_THRESHOLD,
            prefix_padding_ms=VAD_PADDING_MS,
            silence_duration_ms=VAD_SILENCE_MS,
        )
        self._at(t + self._cap_s, self._expire)
        if self.settings.speed > 0:
            self._tick = self._at(t, self._on_tick)

    def _on_update(self, ev: dict[str, Any], t: float) -> None:
        schema = self.service.update_schema
        update = schema.check(ev["session"], "session")
        delegation = update.get("delegation")
        current = self.config.get("delegation")
        if isinstance(delegation, dict):
            if isinstance(current, dict) and current.get("type") != delegation.get("type"):
                raise ClientError("invalid_value", "The delegation type cannot change.", "session.delegation.type")
            if isinstance(current, dict):
                merged = {**current, **delegation}
                if isinstance(current.get("responses"), dict) and isinstance(delegation.get("responses"), dict):
                    merged["responses"] = {**current["responses"], **delegation["responses"]}
                delegation = merged
            self.config["delegation"] = delegation
        if "triggers" in update:
            self.config["triggers"] = update["triggers"]
        self._acknowledge("session.updated", t, session=self._resource())

    def _on_append(self, ev: dict[str, Any], t: float) -> None:
        try:
            data = pybase64.b64decode(ev[self._audio_field], validate=True)
        except (binascii.Error, ValueError):
            field_name = self._audio_field
            raise ClientError(
                "invalid_value", f"Invalid '{field_name}'. Expected base64-encoded audio bytes.", field_name
            ) from None
        self.record.received[-1][self._audio_field] = f"{ELIDED} {len(data)} bytes"
        fmt = self.format
        if fmt.bytes_per_sample == 2:
            data, self._carry = self._carry + data, b""
            if len(data) % 2:
                data, self._carry = data[:-1], data[-1:]
        pcm = fmt.to_pcm16(data)
        segs = self.record.audio
        if not segs or segs[-1].format != fmt.name:
            segs.append(AudioSegment(fmt.name, fmt.rate))
        segs[-1].pcm += pcm
        if fmt.is_g711:
            segs[-1].raw += data
        self._appended_ms += len(pcm) / 2 / fmt.rate * 1000.0
        if self._vad is None or self._muted:
            return
        for e in self._vad.feed(pcm):
            if e.kind == "start":
                self._caller_started(e.ms, t)
            else:
                self._caller_stopped(e.ms, t)

    def _on_mute(self, ev: dict[str, Any], t: float) -> None:
        self._muted = True
        self._acknowledge("input.muted", t)

    def _on_unmute(self, ev: dict[str, Any], t: float) -> None:
        self._muted = False
        self._acknowledge("input.unmuted", t)

    def _fixture_active(self) -> bool:
        return any(s.kind == "fixture" for s in (self._speaking, *self._queue) if s is not None)

    def _context(self, ev: dict[str, Any]) -> str:
        """The content of an append; rejected while a fixture plays, or with a delegation id under Responses."""
        if self._fixture_active():
            raise ClientError("fixture_active", "Rejected while an audio fixture is active.", "type")
        if ev.get("delegation_id") is not None and self._delegation_type() == "responses":
            raise ClientError(
                "invalid_value", "Non-null delegation IDs are not accepted with Responses delegation.", "delegation_id"
            )
        return str(ev["content"])

    def _on_instructions(self, ev: dict[str, Any], t: float) -> None:
        self._context(ev)
        self._acknowledge("instructions.appended", t, start_ms=int(self._out_ms), end_ms=int(self._out_ms))

    def _on_thinking(self, ev: dict[str, Any], t: float) -> None:
        content = self._context(ev)
        self._acknowledge("thinking.appended", t, start_ms=int(self._out_ms), end_ms=int(self._out_ms))
        self._answer(content, None, t)

    def _on_commentary(self, ev: dict[str, Any], t: float) -> None:
        content = self._context(ev)
        self._acknowledge("commentary.appended", t, start_ms=int(self._out_ms), end_ms=int(self._out_ms))
        said = rules.said(content)
        reply = None if said is not None or self._had_turn else self.annotations.take_greeting()
        if said is not None:
            text = said
        elif reply is not None and reply.text is not None:
            text = reply.text
        else:
            text = content if self._had_turn else self.settings.greeting
        self._say(text, reply, "commentary", t)

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
        if self._fixture_active():
            raise ClientError("fixture_active", "An audio fixture is already playing.", "type")
        fmt = self.format
        self._interrupt(t, "fixture")
        pcm = voice.resample_linear(pcm, PCM16_RATE, fmt.rate)
        self._queue_speech("fixture", "", pcm, fmt, t)
        self._acknowledge("fixture.playing", t)

    def _on_decision(self, ev: dict[str, Any], t: float) -> None:
        raise ClientError("decisions_not_enabled", "Decision commands require Decisions delegation.", "type")

    def _on_item_create(self, ev: dict[str, Any], t: float) -> None:
        self._require_responses()
        item = self.service.item_schema.check(ev["item"], "item")
        if item["type"] != "function_call_output":
            return  # context for the backend; the emulated backend answers only tool results
        call_id = str(item["call_id"])
        delegation = self._calls.get(call_id)
        if delegation is None:
            raise ClientError("invalid_value", f"Tool call ID '{call_id}' not found.", "item.call_id")
        output = item["output"]
        delegation.outputs[call_id] = output if isinstance(output, str) else orjson.dumps(output).decode()

    def _on_response_create(self, ev: dict[str, Any], t: float) -> None:
        self._require_responses()
        waiting = [d for d in self._delegations.values() if d.waiting]
        if not waiting:
            raise ClientError("no_pending_delegation", "No delegated response is waiting for tool results.", "type")
        delegation = waiting[-1]
        missing = [c for c in delegation.calls if c not in delegation.outputs]
        if missing:
            raise ClientError("tool_output_missing", f"No tool output found for function call {missing[0]}.", "type")
        delegation.waiting = False
        outputs = " ".join(delegation.outputs[c] for c in delegation.calls)
        ready = t + self.settings.scaled(self.settings.response_latency_ms)
        self._at(ready, lambda tt: self._backend_answer(delegation, rules.result(outputs), tt))

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
    # The caller

    def _caller_started(self, ms: float, t: float) -> None:
        self._speech_start_ms = ms
        self._interrupt(t, "caller")

    def _caller_stopped(self, ms: float, t: float) -> None:
        """A turn: its words (the annotations', else a placeholder), then the model's answer."""
        start, end = self._speech_start_ms, max(self._speech_start_ms, ms - VAD_SILENCE_MS)
        turn = self.annotations.next_turn()
        self._had_turn = True
        heard = turn.hears if turn is not None and turn.hears else f"[caller speech {(end - start) / 1000:.1f} s]"
        self.record.transcripts.append({"item_id": "", "text": heard, "audio_ms": round(end - start)})
        s = self.settings
        heard_at = t + s.scaled(s.transcript_delay_ms)
        self._at(heard_at, lambda tt: self._transcribe(heard, start, end, tt))
        if self._delegation_type() == "client":
            return  # the client decides: it makes the model speak (commentary) or think (thinking.append)
        self._answer(heard, turn.reply if turn is not None else None, heard_at)  # it answers what it transcribed

    def _transcribe(self, text: str, start_ms: float, end_ms: float, t: float) -> None:
        words = text.split(" ")
        step = (end_ms - start_ms) / len(words)
        for i, word in enumerate(words):
            delta = word if i == 0 else " " + word
            a, b = start_ms + i * step, start_ms + (i + 1) * step
            self._send(self.wire.event("input.transcript_delta", delta=delta, start_ms=int(a), end_ms=int(b)), t)

    # ---------------------------------------------------------------------------------------------------------
    # The model

    def _delegation_type(self) -> str | None:
        delegation = self.config.get("delegation")
        return str(delegation.get("type")) if isinstance(delegation, Mapping) else None

    def _require_responses(self) -> None:
        if self._delegation_type() != "responses":
            raise ClientError("invalid_request_error", "This command requires Responses delegation.", "type")

    def _has_tool(self, name: str) -> bool:
        tools = value_at(self.config, self.service.session_paths["tools"]) or ()
        return self._delegation_type() == "responses" and any(
            isinstance(tool, Mapping) and tool.get("name") == name for tool in tools
        )

    def _answer(self, heard: str, reply: Reply | None, t: float) -> None:
        """The model's answer to what it heard: the annotation's reply, else the rules (speech and maybe a tool)."""
        text = reply.text if reply is not None else None
        tool = reply.tool_call if reply is not None else None
        if text is None and tool is None:
            text, name = rules.answer(heard, self._has_tool)
            if name is not None:
                tool = ToolCall(name, orjson.dumps({"reason": heard}).decode())
        said_s = self._say(text, reply, "reply", t) if text is not None else 0.0
        if tool is not None:
            # what it says first is said before it hands the task over (as a Realtime response's text comes
            # before its function call): the delegation follows its last words by one delta
            ready = t + self.settings.scaled(self.settings.response_latency_ms)
            if said_s:
                ready += said_s + self.settings.delta_ms / 1000.0
            call = tool
            self._at(ready, lambda tt: self._delegate(call, tt))

    def _say(self, text: str, reply: Reply | None, kind: Literal["reply", "commentary"], t: float) -> float:
        """Queue ``text`` as speech; how long it lasts (seconds)."""
        fmt = self.format
        pcm = voice.speak(self.settings, text, fmt.rate, reply)
        ready = t + self.settings.scaled(self.settings.response_latency_ms)
        self._queue_speech(kind, text, pcm, fmt, ready)
        return len(pcm) / 2 / fmt.rate

    def _queue_speech(
        self, kind: Literal["reply", "commentary", "fixture"], text: str, pcm: bytes, fmt: WireFormat, ready: float
    ) -> None:
        chunks, chunk_ms = voice.wire_chunks(pcm, fmt.rate, self.settings.delta_ms, fmt.from_pcm16)
        if not chunks:
            return  # nothing to play
        words = text.split(" ") if text else []
        slots: list[list[str]] = [[] for _ in chunks]
        for j, word in enumerate(words):
            slots[min(len(chunks) - 1, j * len(chunks) // len(words))].append(word)
        if kind != "fixture":
            self._said += 1
            ready += self.settings.faults.delay_first_delta_ms / 1000.0
        speech = _Speech(
            self._said, kind, text, chunks, chunk_ms, tuple(tuple(s) for s in slots), ready, id=self.ids.response()
        )
        self._queue.append(speech)

    def _interrupt(self, t: float, by: Literal["caller", "fixture"]) -> None:
        """The model stops itself: what it was saying is cut, what it meant to say next is dropped. The caller's
        speech leaves a fixture playing; a new fixture replaces everything."""
        for speech in (self._speaking, *self._queue):
            if speech is not None and (by == "fixture" or speech.kind != "fixture"):
                self._finish(speech, "interrupted", t)
        if self._speaking is not None and self._speaking.status != "in_progress":
            self._speaking = None
        self._queue = deque(s for s in self._queue if s.status == "in_progress")

    def _on_tick(self, t: float) -> None:
        """One delta of the output stream: the next chunk of speech, or silence."""
        self._play_one(t)
        self._ticks += 1
        if not self.closed:
            at = self._started_at or 0.0
            self._tick = self._at(at + self._ticks * self.settings.delta_ms / 1000.0, self._on_tick)

    def _current(self, t: float) -> _Speech | None:
        if self._speaking is None and self._queue and self._queue[0].ready_at <= t:
            self._speaking = self._queue.popleft()
        return self._speaking

    def _play_one(self, t: float) -> None:
        speech = self._current(t)
        if speech is None:
            fmt = self.format
            pcm = voice.silence(self.settings.delta_ms, fmt.rate)
            self._delta(fmt.from_pcm16(pcm), self.settings.delta_ms, t)
            return
        self._chunk(speech, t)

    def _speak_at_once(self, t: float) -> None:
        """``speed`` 0: every queued thing is said now, whole, with no silence around it."""
        while not self.closed:
            speech = self._current(math.inf)
            if speech is None:
                return
            while not self.closed and self._speaking is speech and not speech.done:
                self._chunk(speech, t)

    def _chunk(self, speech: _Speech, t: float) -> None:
        k = speech.index
        speech.index += 1
        start = self._out_ms
        for i, word in enumerate(speech.words[k]):
            delta = word if not speech.sent_text and i == 0 else " " + word
            speech.sent_text += delta
            end = start + speech.chunk_ms[k]
            self._send(self.wire.event("audio_transcript.delta", delta=delta, start_ms=int(start), end_ms=int(end)), t)
        self._delta(speech.chunks[k], speech.chunk_ms[k], t)
        speech.sent_ms += speech.chunk_ms[k]
        if speech.kind != "fixture":
            self._faults(speech, k + 1, t)
        if self._speaking is speech and speech.done:
            self._finish(speech, "completed", t)
            self._speaking = None

    def _delta(self, audio: bytes, ms: float, t: float) -> None:
        self._send(self.wire.audio(pybase64.b64encode_as_string(audio)), t)
        self._out_ms += ms

    def _finish(self, speech: _Speech, status: str, t: float) -> None:
        if speech.status != "in_progress":
            return
        speech.status = status
        if speech.kind == "fixture":
            self._send(self.wire.event("fixture.played"), t)
            return
        self.record.responses.append(
            {
                "id": speech.id,
                "number": speech.number,
                "status": status,
                "reason": "turn_detected" if status == "interrupted" else None,
                "out_of_band": False,
                "outputs": [{"type": "message", "text": speech.sent_text, "audio_ms": speech.sent_ms}],
            }
        )
        if status == "interrupted":
            self.record.cancels.append({"t": t, "response_id": speech.id, "by": "turn_detected", "ok": True})
        self._send(self.wire.event("usage", usage=self._usage()), t)

    def _faults(self, speech: _Speech, deltas: int, t: float) -> None:
        f = self.settings.faults
        n = speech.number
        if deltas != f.fault_after_deltas:
            return
        if f.unknown_event == n:
            self._send({"type": self.unknown_event_type, "event_id": self.ids.event()}, t)
        if f.malformed_json == n:
            self._raw('{"type":"' + self.dialect.wire("audio.delta") + '","delta":"AAAA', t)
        if f.invalid_base64_delta == n:
            self._send(self.wire.audio("!!not*base64!!"), t)
        if f.oversized_delta == n:
            fmt = self.format
            pcm = voice.tone(self.settings.tone_hz, f.oversized_delta_ms, fmt.rate, dbfs=self.settings.tone_dbfs)
            self._delta(fmt.from_pcm16(pcm), f.oversized_delta_ms, t)
        if f.error_mid_response == n:
            code = f.error_code
            message = "The server had an error while processing your request. Please retry your request."
            self._error(
                code, message, t, error_type="server_error" if code == "server_error" else "invalid_request_error"
            )
            self._finish(speech, "failed", t)
            if self._speaking is speech:
                self._speaking = None
        if f.drop_mid_response == n:
            self._abort(f"drop_mid_response={n}", t)

    # ---------------------------------------------------------------------------------------------------------
    # The backend (Responses delegation)

    def _envelope(self, delegation: _Delegation, inner: dict[str, Any], t: float) -> None:
        self._send(self.wire.event("response.event", event=inner, delegation_id=delegation.id), t)

    def _response(self, response_id: str, status: str, output: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
        """A Responses ``response`` object as its lifecycle events carry it."""
        responses = value_at(self.config, ("delegation", "responses")) or {}
        body: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(self.wall0),
            "model": str(responses.get("model") or ""),
            "status": status,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if status != "in_progress":
            body["usage"] = {
                "input_tokens": tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 2 * tokens,
            }
        return body

    def _delegate(self, call: ToolCall, t: float) -> None:
        """The model hands a task to the backend, which calls a tool and waits for its output."""
        if self._delegation_type() != "responses":
            return  # the session delegates to nobody who could call a tool
        response_id = self.ids.response()
        delegation = _Delegation(self.ids.delegation(), response_id)
        self._delegations[delegation.id] = delegation
        info = {"id": delegation.id, "target": "responses", "type": "delegation", "response_id": response_id}
        self._send(self.wire.event("delegation.created", delegation=info, offset_ms=int(self._out_ms)), t)
        w, seq = self.wire, self._sequence
        self._envelope(
            delegation, w.inner("created", next(seq), response=self._response(response_id, "in_progress", [], 0)), t
        )
        item_id, call_id = self.ids.function_item(), self.ids.call()
        item = {"id": item_id, "type": "function_call", "call_id": call_id, "name": call.name, "arguments": ""}
        self._envelope(
            delegation, w.inner("item_added", next(seq), output_index=0, item={**item, "status": "in_progress"}), t
        )
        fields = {"item_id": item_id, "output_index": 0}
        self._envelope(delegation, w.inner("function_delta", next(seq), **fields, delta=call.arguments), t)
        self._envelope(delegation, w.inner("function_done", next(seq), **fields, arguments=call.arguments), t)
        done = {**item, "arguments": call.arguments, "status": "completed"}
        self._envelope(delegation, w.inner("item_done", next(seq), output_index=0, item=done), t)
        tokens = len(call.arguments) // 4 + 1
        self._envelope(
            delegation,
            w.inner("completed", next(seq), response=self._response(response_id, "completed", [], tokens)),
            t,
        )
        delegation.calls = [call_id]
        self._calls[call_id] = delegation
        self.record.responses.append(
            {
                "id": response_id,
                "number": 0,
                "status": "completed",
                "reason": None,
                "out_of_band": False,
                "outputs": [
                    {"type": "function_call", "name": call.name, "arguments": call.arguments, "call_id": call_id}
                ],
            }
        )

    def _backend_answer(self, delegation: _Delegation, text: str, t: float) -> None:
        """The backend's next response (with the tools' outputs): a message the model then reads out."""
        w, seq = self.wire, self._sequence
        response_id = self.ids.response()
        delegation.response_id = response_id
        self._envelope(
            delegation, w.inner("created", next(seq), response=self._response(response_id, "in_progress", [], 0)), t
        )
        item_id = self.ids.message_item()
        message = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        self._envelope(delegation, w.inner("item_added", next(seq), output_index=0, item=message), t)
        fields = {"item_id": item_id, "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": []}
        self._envelope(delegation, w.inner("part_added", next(seq), **fields, part=part), t)
        self._envelope(delegation, w.inner("text_delta", next(seq), **fields, delta=text, logprobs=[]), t)
        self._envelope(delegation, w.inner("text_done", next(seq), **fields, text=text, logprobs=[]), t)
        self._envelope(delegation, w.inner("part_done", next(seq), **fields, part={**part, "text": text}), t)
        done = {**message, "status": "completed", "content": [{**part, "text": text}]}
        self._envelope(delegation, w.inner("item_done", next(seq), output_index=0, item=done), t)
        tokens = len(text) // 4 + 1
        self._envelope(
            delegation,
            w.inner("completed", next(seq), response=self._response(response_id, "completed", [], tokens)),
            t,
        )
        self._say(text, None, "reply", t)
