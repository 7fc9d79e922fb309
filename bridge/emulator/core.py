"""What an emulated session is whatever its dialect, sans I/O: the calling convention (client text and a clock in,
:mod:`actions <bridge.emulator.actions>` out), its timers and record, the check of every client event against its
envelope before its handler runs, the faults the control API injects, and the caller's audio as appends bring it.

Like h11's ``Connection``, a session never touches a socket or an event loop. The server feeds it each client frame
with the time it arrived (:meth:`~SessionCore.receive`), asks it when it next wants to act (``next_deadline``) and
lets time pass (:meth:`~SessionCore.advance`). Time is any monotonic float in seconds, so a replay can run it in
virtual time with no sockets at all.
"""

from __future__ import annotations

import binascii
import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict, Unpack

import orjson
import pybase64

from bridge.emulator.actions import Abort, Action, Close, Send, SendRaw
from bridge.emulator.annotations import Annotations
from bridge.emulator.faults import SERVER_ERROR, Fault, Settings, error_type
from bridge.emulator.formats import WireFormat
from bridge.emulator.record import ELIDED, AudioSegment, SessionRecord
from bridge.emulator.wire import EventBuilder, Id, Ids
from bridge.realtime.dialects import Dialect
from bridge.realtime.dialects.schema import ClientError, Obj


@dataclass(order=True)
class Timer:
    """Something a session does at time ``t`` (``seq`` keeps the order of timers set for the same time)."""

    t: float
    seq: int
    fn: Callable[[float], None] = field(compare=False)
    cancelled: bool = field(compare=False, default=False)


Handler = Callable[[Any, dict[str, Any], float], None]  # (session, checked client event, time)


class Opening(TypedDict, total=False):
    """How a session of any dialect opens (keywords of its constructor)."""

    model: str | None  # the model asked for (None: the dialect's default)
    now: float  # the session's clock at the upgrade (monotonic seconds; default 0)
    wall: float  # the wall clock then (``expires_at`` counts from it; default 0)
    annotations: Annotations | None  # the call script's turns
    initial_session: Mapping[str, Any] | None  # Realtime: the session a minted client secret carries
    model_ok: Callable[[str], bool] | None  # Live: may ``session.start`` name this model (default: any non-empty)
    settings_for: Callable[[str], Settings] | None  # Live: the settings of the model ``session.start`` names


class SessionCore:
    """What an emulated session shares whatever its dialect. A dialect's session brings its handlers
    (``_handlers``: canonical client key -> handler), how time passes (``_advance``) and how the session cap ends
    it (``_expire``); its collaborators (responses, turns, the backend) speak through the plumbing below."""

    _handlers: ClassVar[Mapping[str, Handler]]
    unknown_event_type: ClassVar[str] = "emulator.unknown_event"  # the ``unknown_event`` fault's default type
    record: SessionRecord
    wire: EventBuilder

    def __init__(self, dialect: Dialect, settings: Settings | None = None, **opening: Unpack[Opening]) -> None:
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
        self.ids = Ids(self.settings.seed)
        self.annotations = opening.get("annotations") or Annotations()
        self.model_asked = opening.get("model") or dialect.default_model
        self.t0 = opening.get("now", 0.0)
        self.wall0 = opening.get("wall", 0.0)
        self.closed = False
        self._out: list[Action] = []
        self._seq = itertools.count()
        self._timers: list[Timer] = []
        self._event_id: str | None = None  # the ``event_id`` of the client event being handled

    # ---------------------------------------------------------------------------------------------------------
    # The calling convention

    @property
    def expires_at(self) -> int:
        return int(self.wall0 + self.cap_s)

    @property
    def cap_s(self) -> float:
        cap = self.settings.session_max_s
        return self.dialect.capabilities.session_cap_s if cap is None else cap

    def refuse(
        self, code: str, message: str, close_code: int, *, error_type: str = "invalid_request_error"
    ) -> list[Action]:
        """A fatal error at connect time (bad key 3000, bad model or beta shape disabled 4000): error, then close."""
        self.error(code, message, self.t0, error_type=error_type)
        self.close(close_code, message, self.t0)
        return self._flush()

    def report(self, code: str, message: str, now: float, *, param: str | None = None) -> list[Action]:
        """An ``error`` event about the connection itself (a bad setting in its URL), outside any client event."""
        self.error(code, message, now, param=param)
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
        """A fault right now (the control API): one of :class:`~bridge.emulator.faults.Fault`."""
        self._advance(now)
        if self.closed:
            return self._flush()
        fault = Fault.named(kind)
        if fault is Fault.DROP:
            self.abort("injected drop", now)
        elif fault is Fault.ERROR:
            code = str(opts.get("code", "server_error"))
            message = str(opts.get("message", SERVER_ERROR))
            self.error(code, message, now, error_type=str(opts.get("type", error_type(code))))
        elif fault is Fault.UNKNOWN_EVENT:
            event_type = str(opts.get("event_type", self.unknown_event_type))
            self.send({"type": event_type, "event_id": self.ids.new(Id.EVENT)}, now)
        elif fault is Fault.MALFORMED_JSON:
            self.send_raw(str(opts.get("text", self._malformed_json())), now)
        elif fault is Fault.EXPIRE:
            self._expire(now)
        else:
            self.close(int(opts.get("code", 1000)), str(opts.get("reason", "")), now)
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
    # Plumbing (the session's collaborators use it too)

    def send(self, event: dict[str, Any], t: float) -> None:
        if self.closed:
            return
        self.record.log("out", t, event)
        self._out.append(Send(event))

    def send_raw(self, text: str, t: float) -> None:
        if not self.closed:
            self.record.log("raw", t, text)
            self._out.append(SendRaw(text))

    def close(self, code: int, reason: str, t: float) -> None:
        if not self.closed:
            self._out.append(Close(code, reason))
            self._closed(code, reason)

    def abort(self, reason: str, t: float) -> None:
        if not self.closed:
            self._out.append(Abort(reason))
            self._closed(1006, reason)

    def at(self, t: float, fn: Callable[[float], None]) -> Timer:
        timer = Timer(t, next(self._seq), fn)
        heapq.heappush(self._timers, timer)
        return timer

    def error(
        self,
        code: str | None,
        message: str,
        t: float,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        client_event_id: str | None = None,
    ) -> None:
        self.send(
            self.wire.error(code, message, param=param, error_type=error_type, client_event_id=client_event_id), t
        )

    def malformed_json(self, t: float) -> None:
        """The ``malformed_json`` fault: an audio delta cut off mid-string."""
        self.send_raw(self._malformed_json(), t)

    def _malformed_json(self) -> str:
        return '{"type":"' + self.dialect.wire("audio.delta") + '","delta":"AAAA'

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _closed(self, code: int, reason: str) -> None:
        self.closed = True
        self.record.closed, self.record.close_code, self.record.close_reason = True, code, reason
        self._timers.clear()
        self._stopped()

    def _handle(self, text: str | bytes, t: float) -> None:
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self.record.log("in", t, {"type": "<invalid json>", "text": str(text)[:200]})
            self.error("invalid_json", f"Invalid JSON in client event: {exc}", t)
            return
        if not isinstance(obj, dict):
            self.error("invalid_type", "Invalid type for client event: expected an object.", t)
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
            self.error(exc.code, exc.message, t, param=exc.param, error_type=exc.error_type, client_event_id=event_id)

    def _plain_append(self, obj: dict[str, Any]) -> bool:
        """An append its envelope check would pass as it is: only known fields, all strings, the audio there.

        Checked instead of the envelope for every append (50 a second per call): the check (a copy of the event, a
        path per field) was a seventh of an append's own work. Anything else still takes the check and its error."""
        return (
            obj.keys() <= self._append_fields
            and isinstance(obj.get(self._audio_field), str)
            and isinstance(obj.get("event_id", ""), str)
        )


class AudioInput:
    """The caller's audio as appends bring it, in either dialect: the base64 decoded (an error names the field),
    PCM16 split on sample boundaries across appends, G.711 decoded, all of it recorded, and how much so far."""

    def __init__(self, record: SessionRecord, audio_field: str) -> None:
        self.record = record
        self.audio_field = audio_field
        self.appended_ms = 0.0
        self._carry = b""  # the odd byte of a PCM16 append, for the next one

    def take(self, ev: dict[str, Any], fmt: WireFormat) -> bytes:
        """One append's audio as PCM16 at the format's rate."""
        try:
            data = pybase64.b64decode(ev[self.audio_field], validate=True)  # SIMD; same errors as the stdlib's
        except (binascii.Error, ValueError):
            name = self.audio_field
            raise ClientError(
                "invalid_value", f"Invalid '{name}'. Expected base64-encoded audio bytes.", name
            ) from None
        self.record.received[-1][self.audio_field] = f"{ELIDED} {len(data)} bytes"
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
        self.appended_ms += len(pcm) / 2 / fmt.rate * 1000.0
        return pcm
