"""One emulated Realtime session, sans I/O: client text and a clock in, server actions out.

Like h11's ``Connection``, :class:`EmulatorSession` never touches a socket or an event loop. The server feeds it
each client frame with the time it arrived (:meth:`~EmulatorSession.receive`), asks it when it next wants to act
(:meth:`~EmulatorSession.next_deadline`) and lets time pass (:meth:`~EmulatorSession.advance`). It answers with
:class:`Send`, :class:`SendRaw`, :class:`Close` and :class:`Abort` actions. Time is any monotonic float in seconds,
so a replay can run it in virtual time with no sockets at all.

Everything dialect-specific is data from the dialect's table (``bridge.realtime.dialects``): client and server
event names, the client events' envelopes, the append's audio field, the shapes of its answers and the session and
request schemas (``dialect.service``). Behaviour follows the service as docs/protocol.md describes it.
"""

from __future__ import annotations

import binascii
import fnmatch
import heapq
import itertools
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import orjson
import pybase64

from bridge.audio.vad import EnergyVad
from bridge.emulator import rules, voice
from bridge.emulator.annotations import Annotations, Reply
from bridge.emulator.config import DialectConfig, ResponseParams, SessionView
from bridge.emulator.faults import Settings
from bridge.emulator.formats import FORMATS, WireFormat
from bridge.emulator.wire import Ids, ResponseInfo, Usage, Wire
from bridge.realtime.dialects import Dialect
from bridge.realtime.dialects.schema import ClientError, Obj

log = logging.getLogger("bridge.emulator")

MIN_COMMIT_MS = 100.0  # a commit of less audio gets input_audio_buffer_commit_empty
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 600, "auto": 600, "high": 300}  # semantic_vad as plain energy VAD
ELIDED = "<elided>"  # recorded input_audio_buffer.append events keep their size, not their audio


# --------------------------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class Send:
    event: dict[str, Any]


@dataclass(frozen=True)
class SendRaw:
    """A text frame that is not a valid event (faults only)."""

    text: str


@dataclass(frozen=True)
class Close:
    code: int
    reason: str = ""


@dataclass(frozen=True)
class Abort:
    """Drop the TCP connection without a close frame (the client sees 1006)."""

    reason: str = ""


Action = Send | SendRaw | Close | Abort


# --------------------------------------------------------------------------------------------------------------
# What a session records (tests, QA, recording to disk)


@dataclass
class AudioSegment:
    """Input audio in one format: ``pcm`` is PCM16 at ``rate``; ``raw`` the G.711 bytes as received, if G.711."""

    format: str
    rate: int
    pcm: bytearray = field(default_factory=bytearray)
    raw: bytearray = field(default_factory=bytearray)


Listener = Callable[[str, float, Any], None]  # (direction "in" | "out" | "raw", time, event or text)


@dataclass
class SessionRecord:
    id: str
    dialect: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)  # client events, parsed (append audio elided)
    sent: list[dict[str, Any]] = field(default_factory=list)  # server events
    raw_sent: list[str] = field(default_factory=list)  # frames that are not events (faults)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # (time, "in"/"out", type)
    audio: list[AudioSegment] = field(default_factory=list)
    transcripts: list[dict[str, Any]] = field(default_factory=list)  # caller turns: item_id, text, audio_ms
    responses: list[dict[str, Any]] = field(default_factory=list)
    truncates: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # error events sent
    closed: bool = False
    close_code: int | None = None
    close_reason: str = ""
    listener: Listener | None = None

    @property
    def input_rate(self) -> int:
        return self.audio[0].rate if self.audio else 0

    @property
    def input_audio(self) -> bytes:
        """All input audio at the first segment's rate, as PCM16 (24 kHz for pcm16, 8 kHz decoded for G.711)."""
        return b"".join(bytes(s.pcm) for s in self.audio if s.rate == self.input_rate)

    @property
    def input_g711(self) -> bytes:
        return b"".join(bytes(s.raw) for s in self.audio)

    def types_sent(self) -> list[str]:
        return [str(e.get("type")) for e in self.sent]

    def types_received(self) -> list[str]:
        return [str(e.get("type")) for e in self.received]

    def log(self, direction: str, t: float, obj: Any) -> None:
        if direction == "in":
            self.received.append(obj)
        elif direction == "out":
            self.sent.append(obj)
            if obj.get("type") == "error":
                self.errors.append(obj)
        else:
            self.raw_sent.append(obj)
        kind = obj.get("type", "?") if isinstance(obj, dict) else "<raw>"
        self.timeline.append((t, direction, str(kind)))
        if self.listener is not None:
            self.listener(direction, t, obj)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dialect": self.dialect,
            "model": self.model,
            "closed": self.closed,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "received": len(self.received),
            "sent": len(self.sent),
            "input_audio_ms": round(sum(len(s.pcm) / 2 / s.rate * 1000 for s in self.audio)),
            "transcripts": [t["text"] for t in self.transcripts],
            "responses": [{k: r[k] for k in ("id", "status", "reason")} for r in self.responses],
            "truncates": self.truncates,
            "cancels": self.cancels,
            "errors": [e["error"].get("code") for e in self.errors],
        }


# --------------------------------------------------------------------------------------------------------------
# Responses in flight


@dataclass
class _Output:
    index: int
    kind: Literal["message", "function_call"]
    item_id: str
    modality: str = "audio"
    text: str = ""
    chunks: list[bytes] = field(default_factory=list)  # wire-encoded audio, one per delta
    chunk_ms: list[float] = field(default_factory=list)
    name: str = ""
    call_id: str = ""
    arguments: str = ""
    # progress
    started: bool = False
    finished: bool = False
    part_open: bool = False
    media_done: bool = False  # audio (or text) done sent
    transcript_done: bool = False
    sent_text: str = ""
    sent_ms: float = 0.0
    status: str = "in_progress"


@dataclass(order=True)
class _Step:
    t: float
    seq: int
    kind: str = field(compare=False)
    index: int = field(compare=False, default=0)
    payload: Any = field(compare=False, default=None)


@dataclass
class _Run:
    id: str
    number: int
    t0: float
    out_of_band: bool
    voice: str
    format_key: str
    modality: str
    metadata: Mapping[str, Any] | None
    outputs: list[_Output]
    steps: deque[_Step] = field(default_factory=deque)
    deltas: int = 0

    def next_t(self) -> float:
        return self.steps[0].t if self.steps else math.inf


@dataclass
class _Context:
    """What the next response answers."""

    kind: Literal["turn", "text", "function_output", "idle"]
    text: str
    reply: Reply | None = None


@dataclass(order=True)
class Timer:
    """Something a session does at time ``t`` (``seq`` keeps the order of timers set for the same time)."""

    t: float
    seq: int
    fn: Callable[[float], None] = field(compare=False)
    cancelled: bool = field(compare=False, default=False)


Handler = Callable[[Any, dict[str, Any], float], None]  # (session, checked client event, time)


class WireLike(Protocol):
    """What every dialect's event builder offers (``wire.Wire``, ``live.LiveWire``)."""

    def event(self, canonical: str, **fields: Any) -> dict[str, Any]: ...

    def error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        client_event_id: str | None = None,
    ) -> dict[str, Any]: ...


# --------------------------------------------------------------------------------------------------------------


class SessionCore:
    """What an emulated session shares whatever its dialect: the calling convention's plumbing (the actions it
    returns, its timers, its record), the check of every client event against its envelope before its handler
    runs, and the faults the control API injects. A dialect's session brings its handlers (``_handlers``:
    canonical client key -> handler), how time passes (``_advance``) and how the session cap ends it
    (``_expire``)."""

    _handlers: ClassVar[Mapping[str, Handler]]
    unknown_event_type: ClassVar[str] = "emulator.unknown_event"  # the ``unknown_event`` fault's default type
    record: SessionRecord
    wire: WireLike

    def __init__(
        self,
        dialect: Dialect,
        settings: Settings | None,
        *,
        now: float,
        wall: float,
        annotations: Annotations | None,
        ids: Ids | None,
    ) -> None:
        self.dialect = dialect
        self.settings = settings or Settings()
        # client events: wire name -> (envelope, handler), in the dialect's order (the error for an unknown type
        # lists them)
        envelopes = dialect.service.client_envelopes
        self._dispatch: dict[str, tuple[Obj, Handler]] = {
            wire: (envelopes[key], self._handlers[key]) for key, wire in dialect.client_events.items()
        }
        self._append_type = dialect.append.event_type
        self._audio_field = dialect.append.audio_field
        self._append_fields = frozenset(self._dispatch[self._append_type][0].fields)
        self.ids = ids or Ids(self.settings.seed)
        self.annotations = annotations or Annotations()
        self.t0 = now
        self.wall0 = wall
        self.closed = False
        self._out: list[Action] = []
        self._seq = itertools.count()
        self._timers: list[Timer] = []
        self._event_id: str | None = None  # the ``event_id`` of the client event being handled

    # ---------------------------------------------------------------------------------------------------------
    # The calling convention

    @property
    def expires_at(self) -> int:
        return int(self.wall0 + self._cap_s)

    @property
    def _cap_s(self) -> float:
        cap = self.settings.session_max_s
        return self.dialect.capabilities.session_cap_s if cap is None else cap

    def refuse(
        self, code: str, message: str, close_code: int, *, error_type: str = "invalid_request_error"
    ) -> list[Action]:
        """A fatal error at connect time (bad key 3000, bad model or beta shape disabled 4000): error, then close."""
        self._error(code, message, self.t0, error_type=error_type)
        self._close(close_code, message, self.t0)
        return self._flush()

    def receive(self, text: str | bytes, now: float) -> list[Action]:
        """One client frame."""
        self._advance(now)
        if not self.closed:
            self._handle(text, now)
            self._advance(now)
        return self._flush()

    def advance(self, now: float) -> list[Action]:
        """Let time pass up to ``now``: paced output, transcriptions, timers."""
        self._advance(now)
        return self._flush()

    def inject(self, kind: str, now: float, **opts: Any) -> list[Action]:
        """A fault right now (the control API): drop, error, unknown_event, malformed_json, expire, close."""
        self._advance(now)
        if self.closed:
            return self._flush()
        if kind == "drop":
            self._abort("injected drop", now)
        elif kind == "error":
            code = str(opts.get("code", "server_error"))
            self._error(
                code,
                str(opts.get("message", "The server had an error while processing your request.")),
                now,
                error_type=str(opts.get("type", code if code == "server_error" else "invalid_request_error")),
            )
        elif kind == "unknown_event":
            kind_name = str(opts.get("event_type", self.unknown_event_type))
            self._send({"type": kind_name, "event_id": self.ids.event()}, now)
        elif kind == "malformed_json":
            default = '{"type":"' + self.dialect.wire("audio.delta") + '","delta":"AAAA'
            self._raw(str(opts.get("text", default)), now)
        elif kind == "expire":
            self._expire(now)
        elif kind == "close":
            self._close(int(opts.get("code", 1000)), str(opts.get("reason", "")), now)
        else:
            raise ValueError(f"unknown fault {kind!r}")
        return self._flush()

    def annotate(self, obj: Any) -> None:
        self.annotations.extend(obj)

    # ---------------------------------------------------------------------------------------------------------
    # What a dialect's session brings

    def _advance(self, now: float) -> None:
        raise NotImplementedError

    def _expire(self, t: float) -> None:
        raise NotImplementedError

    def _admit(self, kind: str) -> None:
        """Raise :class:`ClientError` for a client event the session cannot take now (default: every one it can)."""

    def _stopped(self) -> None:
        """The connection is over: drop what was under way."""

    # ---------------------------------------------------------------------------------------------------------
    # Plumbing

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _send(self, event: dict[str, Any], t: float) -> None:
        if self.closed:
            return
        self.record.log("out", t, event)
        self._out.append(Send(event))

    def _raw(self, text: str, t: float) -> None:
        if not self.closed:
            self.record.log("raw", t, text)
            self._out.append(SendRaw(text))

    def _close(self, code: int, reason: str, t: float) -> None:
        if not self.closed:
            self._out.append(Close(code, reason))
            self._closed(code, reason)

    def _abort(self, reason: str, t: float) -> None:
        if not self.closed:
            self._out.append(Abort(reason))
            self._closed(1006, reason)

    def _closed(self, code: int, reason: str) -> None:
        self.closed = True
        self.record.closed, self.record.close_code, self.record.close_reason = True, code, reason
        self._timers.clear()
        self._stopped()

    def _at(self, t: float, fn: Callable[[float], None]) -> Timer:
        timer = Timer(t, next(self._seq), fn)
        heapq.heappush(self._timers, timer)
        return timer

    def _error(
        self,
        code: str | None,
        message: str,
        t: float,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        client_event_id: str | None = None,
    ) -> None:
        self._send(
            self.wire.error(code, message, param=param, error_type=error_type, client_event_id=client_event_id), t
        )

    def _handle(self, text: str | bytes, t: float) -> None:
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self.record.log("in", t, {"type": "<invalid json>", "text": str(text)[:200]})
            self._error("invalid_json", f"Invalid JSON in client event: {exc}", t)
            return
        if not isinstance(obj, dict):
            self._error("invalid_type", "Invalid type for client event: expected an object.", t)
            return
        kind = obj.get("type")
        append = kind == self._append_type
        self.record.log("in", t, {**obj, self._audio_field: ELIDED} if append else obj)
        event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
        self._event_id = event_id
        try:
            if not isinstance(kind, str):
                raise ClientError("missing_required_parameter", "Missing required parameter: 'type'.", "type")
            entry = self._dispatch.get(kind)
            if entry is None:
                raise ClientError(
                    "invalid_value",
                    f"Invalid value: '{kind}'. Supported values are: "
                    + ", ".join(f"'{k}'" for k in self._dispatch)
                    + ".",
                    "type",
                )
            envelope, handler = entry
            checked = obj if append and self._plain_append(obj) else envelope.check(obj, "")
            self._admit(kind)
            handler(self, checked, t)
        except ClientError as exc:
            self._error(exc.code, exc.message, t, param=exc.param, error_type=exc.error_type, client_event_id=event_id)

    def _plain_append(self, obj: dict[str, Any]) -> bool:
        """An append its envelope check would pass as it is: only known fields, all strings, the audio there.

        Checked instead of the envelope for every append (50 a second per call): the check (a copy of the event, a
        path per field) was a seventh of an append's own work. Anything else still takes the check and its error."""
        return (
            obj.keys() <= self._append_fields
            and isinstance(obj.get(self._audio_field), str)
            and isinstance(obj.get("event_id", ""), str)
        )


class EmulatorSession(SessionCore):
    """The state machine of one Realtime connection. See the module docstring for the calling convention."""

    wire: Wire

    def __init__(
        self,
        dialect: Dialect,
        settings: Settings | None = None,
        *,
        model: str | None = None,
        now: float = 0.0,
        wall: float = 0.0,
        annotations: Annotations | None = None,
        initial_session: Mapping[str, Any] | None = None,
        ids: Ids | None = None,
        record: SessionRecord | None = None,
    ) -> None:
        super().__init__(dialect, settings, now=now, wall=wall, annotations=annotations, ids=ids)
        self.cfg = DialectConfig(dialect)
        self.wire = Wire(dialect, self.ids)
        self.session_id = self.ids.session()
        self.conversation_id = self.ids.conversation()
        self.session: dict[str, Any] = self.cfg.new_session(model or dialect.default_model, initial_session)
        self.view: SessionView = self.cfg.view(self.session)
        self.record = record or SessionRecord(self.session_id, dialect.name, self.view.model)
        self.record.id, self.record.model = self.session_id, self.view.model
        self.record.settings = self.settings.as_dict()
        # conversation
        self._order: list[str] = []
        self._items: dict[str, dict[str, Any]] = {}
        self._audio_ms: dict[str, float] = {}  # assistant item -> audio ms delivered in deltas
        self._context: _Context | None = None
        self._had_turn = False
        # input
        self._appended_ms = 0.0
        self._buffer_start_ms = 0.0
        self._carry = b""
        self._vad: EnergyVad | None = None
        self._vad_offset_ms = 0.0
        self._speech_item: str | None = None
        self._speech_start_ms = 0.0
        self._idle: Timer | None = None
        # responses
        self._run: _Run | None = None
        self._responses = 0
        self._reset_vad()

    # ---------------------------------------------------------------------------------------------------------
    # The calling convention

    def open(self) -> list[Action]:
        """``session.created`` (unsolicited, right after the upgrade) and the session's own timers."""
        faults = self.settings.faults
        self._send(self.wire.event("session.created", session=self._echo()), self.t0)
        self._at(self.t0 + self._cap_s, self._expire)
        if faults.drop_after_s is not None:
            self._at(self.t0 + faults.drop_after_s, lambda t: self._abort(f"drop_after_s={faults.drop_after_s}", t))
        return self._flush()

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        t = min(self._timers[0].t if self._timers else math.inf, self._run.next_t() if self._run else math.inf)
        return None if t == math.inf else t

    # ---------------------------------------------------------------------------------------------------------
    # Plumbing

    def _stopped(self) -> None:
        self._run = None

    def _advance(self, now: float) -> None:
        while not self.closed:
            t_timer = self._timers[0].t if self._timers else math.inf
            t_run = self._run.next_t() if self._run else math.inf
            if min(t_timer, t_run) > now:
                return
            if t_run <= t_timer:  # model output first when both are due at the same time
                assert self._run is not None
                self._step(self._run, self._run.steps.popleft())
            else:
                timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    timer.fn(timer.t)

    def _echo(self) -> dict[str, Any]:
        return self.wire.session(self.session, self.session_id, self.expires_at)

    def _expire(self, t: float) -> None:
        minutes = f"{self._cap_s / 60:g}"
        self._error("session_expired", f"Your session hit the maximum duration of {minutes} minutes.", t)
        self._close(1001, "session expired", t)

    # ---------------------------------------------------------------------------------------------------------
    # Client events

    def _on_session_update(self, ev: dict[str, Any], t: float) -> None:
        before = self.view
        self.session = self.cfg.update(self.session, ev["session"])  # raises: the update is discarded whole
        self.view = self.cfg.view(self.session)
        if (before.turn_detection, before.input_format) != (self.view.turn_detection, self.view.input_format):
            self._reset_vad()
            self._cancel_idle()
        self._send(self.wire.event("session.updated", session=self._echo()), t)

    def _on_append(self, ev: dict[str, Any], t: float) -> None:
        try:
            data = pybase64.b64decode(ev[self._audio_field], validate=True)  # SIMD; same errors as the stdlib's
        except (binascii.Error, ValueError):
            field_name = self._audio_field
            raise ClientError(
                "invalid_value", f"Invalid '{field_name}'. Expected base64-encoded audio bytes.", field_name
            ) from None
        self.record.received[-1][self._audio_field] = f"{ELIDED} {len(data)} bytes"
        fmt = FORMATS[self.view.input_format]
        if fmt.bytes_per_sample == 2:
            data, self._carry = self._carry + data, b""
            if len(data) % 2:
                data, self._carry = data[:-1], data[-1:]
        pcm = fmt.to_pcm16(data)
        self._record_audio(fmt, data, pcm)
        self._appended_ms += len(pcm) / 2 / fmt.rate * 1000.0
        if self._vad is not None:
            for e in self._vad.feed(pcm):
                ms = self._vad_offset_ms + e.ms
                if e.kind == "start":
                    self._speech_started(max(ms, self._buffer_start_ms), t)
                else:
                    self._speech_stopped(ms, t)

    def _on_commit(self, ev: dict[str, Any], t: float) -> None:
        buffered = self._appended_ms - self._buffer_start_ms
        if buffered < MIN_COMMIT_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {buffered:.2f}ms of audio.",
            )
        item_id = self._speech_item or self.ids.item()
        self._speech_item = None
        self._buffer_start_ms = self._appended_ms
        self._reset_vad()
        self._commit(item_id, buffered, t)

    def _on_clear(self, ev: dict[str, Any], t: float) -> None:
        self._buffer_start_ms = self._appended_ms
        self._speech_item = None
        self._reset_vad()
        self._send(self.wire.event("input.cleared"), t)

    def _on_item_create(self, ev: dict[str, Any], t: float) -> None:
        item: dict[str, Any] = self.cfg.item.check(ev["item"], "item")
        item.pop("object", None)
        item_id = item.get("id") or self.ids.item()
        if item_id in self._items:
            raise ClientError("invalid_value", f"Item with id '{item_id}' already exists.", "item.id")
        previous = ev.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self._items:
            raise ClientError("invalid_value", f"Previous item with id '{previous}' not found.", "previous_item_id")
        if item["type"] == "function_call_output" and not any(
            i.get("type") == "function_call" and i.get("call_id") == item["call_id"] for i in self._items.values()
        ):
            raise ClientError(
                "invalid_value", f"Tool call ID '{item['call_id']}' not found in conversation.", "item.call_id"
            )
        item = {"id": item_id, **{k: v for k, v in item.items() if k != "id"}, "status": "completed"}
        prev = self._insert(item, previous)
        self._announce(item, prev, t)
        if item["type"] == "function_call_output":
            self._context = _Context("function_output", item["output"])
        elif item["type"] == "message" and item["role"] == "user":
            text = " ".join(c.get("text") or c.get("transcript") or "" for c in item["content"]).strip()
            if text:
                self._context = _Context("text", text)

    def _on_truncate(self, ev: dict[str, Any], t: float) -> None:
        item = self._find(ev["item_id"], "item_id")
        delivered = self._audio_ms.get(item["id"], 0.0)
        if item.get("role") != "assistant" or delivered <= 0:  # a user item, or no audio yet
            raise ClientError(
                "unsupported_content_type", "Only model output audio messages can be truncated", "item_id"
            )
        if ev["content_index"] != 0:
            raise ClientError("invalid_value", f"Invalid value: {ev['content_index']}.", "content_index")
        end = ev["audio_end_ms"]
        if end > delivered:
            self.record.truncates.append({"t": t, "item_id": item["id"], "audio_end_ms": end, "ok": False})
            raise ClientError(
                "invalid_value", f"Audio content of {int(delivered)}ms is already shorter than {end}ms", "audio_end_ms"
            )
        self._audio_ms[item["id"]] = float(end)
        self.record.truncates.append({"t": t, "item_id": item["id"], "audio_end_ms": end, "ok": True})
        self._send(self.wire.event("item.truncated", item_id=item["id"], content_index=0, audio_end_ms=end), t)

    def _on_delete(self, ev: dict[str, Any], t: float) -> None:
        item = self._find(ev["item_id"], "item_id")
        self._order.remove(item["id"])
        del self._items[item["id"]]
        self._send(self.wire.event("item.deleted", item_id=item["id"]), t)

    def _on_retrieve(self, ev: dict[str, Any], t: float) -> None:
        item = self._find(ev["item_id"], "item_id")
        self._send(self.wire.event("item.retrieved", item=self.wire.item(item)), t)

    def _on_response_create(self, ev: dict[str, Any], t: float) -> None:
        if self._run is not None:
            raise ClientError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._run.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        self._start_response(self.cfg.response_params(ev.get("response")), t)

    def _on_response_cancel(self, ev: dict[str, Any], t: float) -> None:
        run = self._run
        wanted = ev.get("response_id")
        if run is None or (wanted is not None and wanted != run.id):
            self.record.cancels.append({"t": t, "response_id": wanted, "by": "client", "ok": False})
            raise ClientError("response_cancel_not_active", "Cancellation failed: no active response found")
        self.record.cancels.append({"t": t, "response_id": run.id, "by": "client", "ok": True})
        self._end_run(run, "cancelled", {"type": "cancelled", "reason": "client_cancelled"}, t)

    def _on_output_buffer_clear(self, ev: dict[str, Any], t: float) -> None:
        kind = self.dialect.client_events["output_buffer.clear"]
        raise ClientError("invalid_value", f"{kind} is only supported for WebRTC and SIP connections.", "type")

    # canonical client key (the dialect's client_events) -> handler
    _handlers: ClassVar[Mapping[str, Handler]] = {
        "session.update": _on_session_update,
        "input.append": _on_append,
        "input.commit": _on_commit,
        "input.clear": _on_clear,
        "item.create": _on_item_create,
        "item.truncate": _on_truncate,
        "item.delete": _on_delete,
        "item.retrieve": _on_retrieve,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "output_buffer.clear": _on_output_buffer_clear,
    }

    # ---------------------------------------------------------------------------------------------------------
    # Conversation

    def _find(self, item_id: str, param: str) -> dict[str, Any]:
        item = self._items.get(item_id)
        if item is None:
            raise ClientError("item_not_found", f"Conversation item with id '{item_id}' not found.", param)
        return item

    def _insert(self, item: dict[str, Any], previous: str | None = None) -> str | None:
        """Add ``item`` after ``previous`` (default: at the end); returns the id it follows."""
        if previous == "root":
            index = 0
        elif previous is not None:
            index = self._order.index(previous) + 1
        else:
            index = len(self._order)
        self._order.insert(index, item["id"])
        self._items[item["id"]] = item
        return self._order[index - 1] if index > 0 else None

    def _announce(self, item: dict[str, Any], previous: str | None, t: float) -> None:
        """beta conversation.item.created; GA conversation.item.added then conversation.item.done."""
        self._send(self.wire.event("item.added", previous_item_id=previous, item=self.wire.item(item)), t)
        if self.wire.shape.item_done_event:
            self._send(self.wire.event("item.done", previous_item_id=previous, item=self.wire.item(item)), t)

    def _last_item(self) -> str | None:
        return self._order[-1] if self._order else None

    # ---------------------------------------------------------------------------------------------------------
    # Input audio, VAD, commits, transcription

    def _record_audio(self, fmt: WireFormat, data: bytes, pcm: bytes) -> None:
        segs = self.record.audio
        if not segs or segs[-1].format != fmt.name:
            segs.append(AudioSegment(fmt.name, fmt.rate))
        segs[-1].pcm += pcm
        if fmt.is_g711:
            segs[-1].raw += data

    def _reset_vad(self) -> None:
        td = self.view.turn_detection
        self._vad = None
        self._speech_item = None
        if td is None:
            return
        silence = td.get("silence_duration_ms")
        if td.get("type") == "semantic_vad":
            silence = SEMANTIC_SILENCE_MS.get(str(td.get("eagerness", "auto")), 600)
        self._vad = EnergyVad(
            FORMATS[self.view.input_format].rate,
            threshold=float(td.get("threshold") or 0.5),
            prefix_padding_ms=float(td.get("prefix_padding_ms") or 0),
            silence_duration_ms=float(500 if silence is None else silence),
        )
        self._vad_offset_ms = self._appended_ms

    def _speech_started(self, ms: float, t: float) -> None:
        self._speech_item = self.ids.item()
        self._speech_start_ms = ms
        self._cancel_idle()
        self._send(self.wire.event("input.speech_started", audio_start_ms=int(ms), item_id=self._speech_item), t)
        run = self._run
        td = self.view.turn_detection or {}
        if run is not None and not run.out_of_band and td.get("interrupt_response", True):
            self.record.cancels.append({"t": t, "response_id": run.id, "by": "turn_detected", "ok": True})
            self._end_run(run, "cancelled", {"type": "cancelled", "reason": "turn_detected"}, t)

    def _speech_stopped(self, ms: float, t: float) -> None:
        item_id = self._speech_item or self.ids.item()
        self._speech_item = None
        self._send(self.wire.event("input.speech_stopped", audio_end_ms=int(ms), item_id=item_id), t)
        self._buffer_start_ms = ms
        self._commit(item_id, ms - self._speech_start_ms, t)
        td = self.view.turn_detection or {}
        if td.get("create_response", True) and self._run is None:
            self._start_response(ResponseParams(), t)

    def _commit(self, item_id: str, audio_ms: float, t: float, *, hears: str | None = None) -> None:
        previous = self._last_item()
        self._send(self.wire.event("input.committed", previous_item_id=previous, item_id=item_id), t)
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._insert(item)
        self._announce(item, previous, t)
        if hears is None:
            turn = self.annotations.next_turn()
            self._had_turn = True
            transcript = turn.hears if turn is not None and turn.hears else f"[caller speech {audio_ms / 1000:.1f} s]"
            self._context = _Context("turn", transcript, turn.reply if turn is not None else None)
        else:
            transcript = hears
            self._context = _Context("idle", hears)
        self.record.transcripts.append({"item_id": item_id, "text": transcript, "audio_ms": round(audio_ms)})
        if self.view.transcription is not None and transcript:
            seconds = round(audio_ms / 1000.0, 3)
            self._at(
                t + self.settings.scaled(self.settings.transcript_delay_ms),
                lambda tt: self._transcribe(item_id, transcript, seconds, tt),
            )

    def _transcribe(self, item_id: str, transcript: str, seconds: float, t: float) -> None:
        item = self._items.get(item_id)
        if item is None:
            return
        self._send(self.wire.event("input.transcript_delta", item_id=item_id, content_index=0, delta=transcript), t)
        self._send(
            self.wire.event(
                "input.transcript_done",
                item_id=item_id,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": seconds},
            ),
            t,
        )
        item["content"] = [{"type": "input_audio", "transcript": transcript}]

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancelled = True
            self._idle = None

    def _arm_idle(self, t: float, audio_ms: float) -> None:
        """GA idle timeout (docs): ``idle_timeout_ms`` after response.done plus the reply's playback time."""
        td = self.view.turn_detection or {}
        idle_ms = td.get("idle_timeout_ms")
        self._cancel_idle()
        if idle_ms and self._vad is not None and not self._vad.speaking:
            self._idle = self._at(t + (audio_ms + float(idle_ms)) / 1000.0, self._idle_timeout)

    def _idle_timeout(self, t: float) -> None:
        self._idle = None
        if self._run is not None:
            return
        item_id = self.ids.item()
        start, end = self._buffer_start_ms, self._appended_ms
        self._send(
            self.wire.event("input.timeout", audio_start_ms=int(start), audio_end_ms=int(end), item_id=item_id), t
        )
        self._buffer_start_ms = end
        self._reset_vad()
        self._commit(item_id, end - start, t, hears="")
        self._start_response(ResponseParams(), t)

    # ---------------------------------------------------------------------------------------------------------
    # Responses

    def _start_response(self, params: ResponseParams, t: float) -> None:
        self._cancel_idle()
        self._responses += 1
        view = self.view
        format_key = params.output_format or view.output_format
        modality = (params.output_modalities or view.output_modalities)[0]
        run = _Run(
            id=self.ids.response(),
            number=self._responses,
            t0=t,
            out_of_band=params.out_of_band,
            voice=params.voice or view.voice,
            format_key=format_key,
            modality=modality,
            metadata=params.metadata,
            outputs=self._plan(params, modality, FORMATS[format_key]),
        )
        self._schedule(run, t)
        self._run = run
        self._send(self.wire.event("response.created", response=self._response(run, "in_progress")), t)
        if self.wire.shape.rate_limits_on_created:
            self._send(self.wire.rate_limits(self.wire.shape.rate_limits_on_created, 0), t)

    def _plan(self, params: ResponseParams, modality: str, fmt: WireFormat) -> list[_Output]:
        """The reply: annotation first, then instructions ("say '...'"), then the rules."""
        ctx = self._context
        if not params.out_of_band:
            self._context = None
        # an out-of-band response says what it is asked to, never the scripted answer to the caller's turn
        reply = ctx.reply if ctx is not None and not params.out_of_band else None
        if ctx is None and not self._had_turn and not params.out_of_band:
            reply = self.annotations.take_greeting()
        text: str | None = reply.text if reply is not None else None
        tool = reply.tool_call if reply is not None else None
        if text is None and tool is None:
            said = rules.said(params.instructions)
            if said is not None:
                text = said
            elif ctx is not None and ctx.kind in ("turn", "text"):
                text, tool_name = self._rules(ctx.text)
                if tool_name is not None:
                    args = orjson.dumps({"reason": ctx.text}).decode()
                    outputs = [] if text is None else [self._message(0, text, modality, fmt, reply)]
                    outputs.append(self._function_call(len(outputs), tool_name, args))
                    return outputs
            elif ctx is not None and ctx.kind == "function_output":
                text = rules.result(ctx.text)
            elif ctx is not None and ctx.kind == "idle":
                text = rules.STILL_THERE
            else:
                heard = self._input_text(params.input)
                text = rules.echo(heard) if heard else self.settings.greeting
        outputs = [] if text is None else [self._message(0, text, modality, fmt, reply)]
        if tool is not None:
            outputs.append(self._function_call(len(outputs), tool.name, tool.arguments))
        elif text is not None and ctx is not None and ctx.kind == "turn" and self._says_preambles(params):
            # gpt-realtime-2 and later: a short preamble, then the answer, as two message items of one response
            preamble = self._message(0, self.settings.preamble, modality, fmt, None)
            outputs = [preamble, self._message(1, text, modality, fmt, reply)]
        return outputs

    def _says_preambles(self, params: ResponseParams) -> bool:
        patterns = [p.strip() for p in self.settings.preamble_models.split(",") if p.strip()]
        model_ok = any(fnmatch.fnmatchcase(self.view.model, p) for p in patterns)
        return bool(self.settings.preamble) and model_ok and not params.out_of_band and not params.instructions

    def _rules(self, transcript: str) -> tuple[str | None, str | None]:
        """(spoken text, tool name) for a caller transcript: transfer, hang up, or echo."""
        return rules.answer(transcript, lambda name: self.view.tool(name) is not None)

    @staticmethod
    def _input_text(items: tuple[Any, ...] | None) -> str:
        texts = []
        for item in items or ():
            if isinstance(item, Mapping):
                for c in item.get("content") or ():
                    if isinstance(c, Mapping) and isinstance(c.get("text"), str):
                        texts.append(c["text"])
        return " ".join(texts).strip()

    def _message(self, index: int, text: str, modality: str, fmt: WireFormat, reply: Reply | None) -> _Output:
        out = _Output(index=index, kind="message", item_id=self.ids.item(), modality=modality, text=text)
        if modality == "audio":
            pcm = self._voice(text, fmt.rate, reply)
            chunks, chunk_ms = voice.wire_chunks(pcm, fmt.rate, self.settings.delta_ms, fmt.from_pcm16)
            out.chunks.extend(chunks)
            out.chunk_ms.extend(chunk_ms)
        return out

    def _function_call(self, index: int, name: str, arguments: str) -> _Output:
        return _Output(
            index=index,
            kind="function_call",
            item_id=self.ids.item(),
            name=name,
            call_id=self.ids.call(),
            arguments=arguments,
        )

    def _voice(self, text: str, rate: int, reply: Reply | None) -> bytes:
        return voice.speak(self.settings, text, rate, reply)

    def _schedule(self, run: _Run, t0: float) -> None:
        """Lay out the response's events in time (docs/protocol.md, "A response")."""
        s = self.settings
        steps: list[_Step] = []

        def add(t: float, kind: str, index: int = 0, payload: Any = None) -> None:
            steps.append(_Step(t, len(steps), kind, index, payload))

        t = t0 + s.scaled(s.response_latency_ms)
        first_delay = s.faults.delay_first_delta_ms / 1000.0
        d = s.scaled(s.delta_ms)
        in_conv = not run.out_of_band
        for out in run.outputs:
            add(t, "item_added", out.index)
            if in_conv:
                add(t, "conv_added", out.index)
            if out.kind == "function_call":
                cut = max(1, len(out.arguments) // 2)
                for piece in (out.arguments[:cut], out.arguments[cut:]):
                    if piece:
                        add(t, "fdelta", out.index, piece)
                add(t, "fdone", out.index)
            else:
                add(t, "part_added", out.index)
                words = re.findall(r"\S+\s*", out.text) or [out.text]
                if out.modality == "audio":
                    t += first_delay
                    first_delay = 0.0
                    n = len(out.chunks)
                    slots: list[list[str]] = [[] for _ in range(n)]
                    for j, w in enumerate(words):
                        slots[min(n - 1, j * n // len(words))].append(w)
                    for k in range(n):
                        for w in slots[k]:
                            add(t, "tdelta", out.index, w)
                        add(t, "adelta", out.index, k)
                        t += d
                    add(t, "adone", out.index)
                    add(t, "tdone", out.index)
                else:
                    for w in words:
                        add(t, "xdelta", out.index, w)
                        t += d
                    add(t, "xdone", out.index)
                add(t, "part_done", out.index)
            if in_conv and self.wire.shape.item_done_event:
                add(t, "conv_done", out.index)
            add(t, "item_done", out.index)
        add(t, "done")
        run.steps = deque(sorted(steps))

    def _response(
        self,
        run: _Run,
        status: str,
        details: Mapping[str, Any] | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        output = tuple(self._item_state(run, o) for o in run.outputs if o.started) if status != "in_progress" else ()
        return self.wire.response(
            ResponseInfo(
                id=run.id,
                status=status,
                conversation_id=None if run.out_of_band else self.conversation_id,
                output_modalities=(run.modality,),
                voice=run.voice,
                output_format=self.cfg.format_value(run.format_key),
                output=output,
                status_details=details,
                usage=usage,
                metadata=run.metadata,
            )
        )

    def _item_state(self, run: _Run, out: _Output) -> dict[str, Any]:
        if out.kind == "function_call":
            return {
                "id": out.item_id,
                "type": "function_call",
                "status": out.status,
                "name": out.name,
                "call_id": out.call_id,
                "arguments": out.arguments if out.finished and out.status == "completed" else "",
            }
        content: list[dict[str, Any]] = []
        if out.part_open or out.finished:
            if out.modality == "audio":
                content = [{"type": self.wire.content_type("audio"), "transcript": out.sent_text}]
            else:
                content = [{"type": self.wire.content_type("text"), "text": out.sent_text}]
        return {"id": out.item_id, "type": "message", "status": out.status, "role": "assistant", "content": content}

    def _part(self, out: _Output) -> dict[str, Any]:
        # response.content_part.* parts are typed "audio" / "text" in both dialects
        if out.modality == "audio":
            return {"type": "audio", "transcript": out.sent_text}
        return {"type": "text", "text": out.sent_text}

    def _step(self, run: _Run, step: _Step) -> None:
        t, kind = step.t, step.kind
        if kind == "done":
            self._end_run(run, "completed", None, t)
            return
        out = run.outputs[step.index]
        common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index}
        w = self.wire
        if kind == "item_added":
            out.started = True
            self._send(
                w.event(
                    "response.item_added",
                    response_id=run.id,
                    output_index=out.index,
                    item=w.item(self._item_state(run, out)),
                ),
                t,
            )
        elif kind == "conv_added":
            previous = self._last_item()
            item = self._item_state(run, out)
            self._insert(item)
            self._send(w.event("item.added", previous_item_id=previous, item=w.item(item)), t)
        elif kind == "part_added":
            out.part_open = True
            self._send(w.event("response.part_added", **common, content_index=0, part=self._part(out)), t)
        elif kind == "tdelta":
            out.sent_text += step.payload
            self._send(w.event("audio_transcript.delta", **common, content_index=0, delta=step.payload), t)
        elif kind == "xdelta":
            out.sent_text += step.payload
            self._send(w.event("text.delta", **common, content_index=0, delta=step.payload), t)
            self._delta_faults(run, out, t)
        elif kind == "adelta":
            chunk = out.chunks[step.payload]
            out.sent_ms += out.chunk_ms[step.payload]
            if not run.out_of_band:
                self._audio_ms[out.item_id] = out.sent_ms
            self._send(w.event("audio.delta", **common, content_index=0, delta=pybase64.b64encode_as_string(chunk)), t)
            self._delta_faults(run, out, t)
        elif kind == "adone":
            out.media_done = True
            self._send(w.event("audio.done", **common, content_index=0), t)
        elif kind == "tdone":
            out.transcript_done = True
            self._send(w.event("audio_transcript.done", **common, content_index=0, transcript=out.sent_text), t)
        elif kind == "xdone":
            out.media_done = out.transcript_done = True
            self._send(w.event("text.done", **common, content_index=0, text=out.sent_text), t)
        elif kind == "part_done":
            out.part_open = False
            self._send(w.event("response.part_done", **common, content_index=0, part=self._part(out)), t)
        elif kind == "fdelta":
            self._send(w.event("response.function_delta", **common, call_id=out.call_id, delta=step.payload), t)
        elif kind == "fdone":
            named = {"name": out.name} if w.shape.name_on_function_done else {}
            self._send(
                w.event("response.function_done", **common, call_id=out.call_id, **named, arguments=out.arguments), t
            )
        elif kind == "conv_done":
            out.finished, out.status = True, "completed"
            self._conv_done(run, out, t)
        elif kind == "item_done":
            out.finished, out.status = True, "completed"
            self._item_done(run, out, t)

    def _conv_done(self, run: _Run, out: _Output, t: float) -> None:
        item = self._item_state(run, out)
        if out.item_id in self._items:
            self._items[out.item_id] = item
        index = self._order.index(out.item_id) if out.item_id in self._order else 0
        previous = self._order[index - 1] if index > 0 else None
        self._send(self.wire.event("item.done", previous_item_id=previous, item=self.wire.item(item)), t)

    def _item_done(self, run: _Run, out: _Output, t: float) -> None:
        item = self._item_state(run, out)
        if out.item_id in self._items:
            self._items[out.item_id] = item
        self._send(
            self.wire.event(
                "response.item_done", response_id=run.id, output_index=out.index, item=self.wire.item(item)
            ),
            t,
        )

    def _delta_faults(self, run: _Run, out: _Output, t: float) -> None:
        run.deltas += 1
        f = self.settings.faults
        if run.deltas != f.fault_after_deltas:
            return
        n = run.number
        common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index, "content_index": 0}
        if f.unknown_event == n:
            self._send({"type": "response.emulator_unknown.delta", "event_id": self.ids.event(), **common}, t)
        if f.malformed_json == n:
            self._raw('{"type":"' + self.dialect.wire("audio.delta") + '","delta":"AAAA', t)
        if f.invalid_base64_delta == n:
            self._send(self.wire.event("audio.delta", **common, delta="!!not*base64!!"), t)
        if f.oversized_delta == n and out.modality == "audio":
            fmt = FORMATS[run.format_key]
            pcm = voice.tone(self.settings.tone_hz, f.oversized_delta_ms, fmt.rate, dbfs=self.settings.tone_dbfs)
            out.sent_ms += f.oversized_delta_ms
            if not run.out_of_band:
                self._audio_ms[out.item_id] = out.sent_ms
            delta = pybase64.b64encode_as_string(fmt.from_pcm16(pcm))
            self._send(self.wire.event("audio.delta", **common, delta=delta), t)
        if f.error_mid_response == n:
            code = f.error_code
            message = "The server had an error while processing your request. Please retry your request."
            error_type = "server_error" if code == "server_error" else "invalid_request_error"
            self._error(code, message, t, error_type=error_type)
            self._end_run(run, "failed", {"type": "failed", "error": {"type": error_type, "code": code}}, t)
        if f.drop_mid_response == n:
            self._abort(f"drop_mid_response={n}", t)

    def _end_run(self, run: _Run, status: str, details: Mapping[str, Any] | None, t: float) -> None:
        """Close what is open (incomplete unless completed), then response.done."""
        if self._run is not run:
            return
        self._run = None
        run.steps.clear()
        w = self.wire
        for out in run.outputs:
            if not out.started or out.finished:
                continue
            out.status = "incomplete"
            common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index}
            if out.kind == "message" and out.part_open:
                if out.modality == "audio":
                    if not out.media_done:
                        self._send(w.event("audio.done", **common, content_index=0), t)
                    if not out.transcript_done:
                        self._send(
                            w.event("audio_transcript.done", **common, content_index=0, transcript=out.sent_text), t
                        )
                elif not out.media_done:
                    self._send(w.event("text.done", **common, content_index=0, text=out.sent_text), t)
                self._send(w.event("response.part_done", **common, content_index=0, part=self._part(out)), t)
                out.part_open = False
            out.finished = True
            if not run.out_of_band and self.wire.shape.item_done_event:
                self._conv_done(run, out, t)
            self._item_done(run, out, t)
        audio_ms = sum(o.sent_ms for o in run.outputs)
        text_tokens = sum(len(o.sent_text.split()) for o in run.outputs)
        usage = Usage(
            input_text=len(self.view.instructions) // 4 + 10,
            input_audio=int(self._appended_ms / 100),
            output_text=text_tokens,
            output_audio=int(audio_ms / 50),
        )
        usage_obj = w.usage(usage)
        self._send(w.event("response.done", response=self._response(run, status, details, usage_obj)), t)
        self.record.responses.append(
            {
                "id": run.id,
                "number": run.number,
                "status": status,
                "reason": (details or {}).get("reason"),
                "out_of_band": run.out_of_band,
                "outputs": [
                    {
                        "type": o.kind,
                        "item_id": o.item_id,
                        "text": o.sent_text,
                        "audio_ms": o.sent_ms,
                        "name": o.name,
                        "arguments": o.arguments,
                        "call_id": o.call_id,
                    }
                    for o in run.outputs
                    if o.started
                ],
            }
        )
        if w.shape.rate_limits_after_done and not self.closed:
            tokens = usage_obj["total_tokens"]
            self._at(
                t + self.settings.scaled(self.settings.rate_limits_delay_ms),
                lambda tt: self._send(w.rate_limits(w.shape.rate_limits_after_done, tokens), tt),
            )
        if status == "completed" and audio_ms > 0 and not run.out_of_band:
            self._arm_idle(t, audio_ms)
