"""The Realtime protocol core: wire text in, bridge events out; bridge commands in, wire text out. No I/O.

Like python-websockets' ``protocol.py`` or h11's ``Connection``, this object never touches a socket or an event loop:
``client.py`` pumps it. It is configured by one :class:`~bridge.realtime.dialects.Dialect` table and holds no branch
on the dialect.

Bad input never raises: malformed JSON, a non-object, an event without a type, a field of the wrong shape or invalid
base64 become an :class:`~bridge.events.ErrorEvent` of class PROTOCOL; an unknown type becomes an
:class:`~bridge.events.UnknownEvent`. Both are logged and counted in :attr:`RealtimeProtocol.counters`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from bridge import events as ev
from bridge.audio.wire import decode_b64, encode_append  # the audio hot path's wire encoding (bench audio)
from bridge.errors import classify_server_error, redact
from bridge.realtime.dialects import AUDIO_FORMAT_NAMES, Dialect

log = logging.getLogger("bridge.realtime")

OVERSIZED_DELTA_BYTES = 96_000  # 2 s of 24 kHz PCM16 in one delta (the service sends ~50-200 ms)

Decoder = Callable[[Mapping[str, Any]], "ev.Event | None"]


def _s(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string")
    return value


def _i(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"field {key!r} must be a number")
    return int(value)


def _m(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"field {key!r} must be an object")
    return value


def _session_created(e: Mapping[str, Any]) -> ev.Event:
    session = _m(e, "session")
    return ev.SessionReady(session_id=_s(session, "id"), model=_s(session, "model"))


def _session_updated(e: Mapping[str, Any]) -> ev.Event:
    s = _m(e, "session")
    audio = _m(s, "audio")
    out = _m(audio, "output")
    raw_voice = s.get("voice") or out.get("voice") or ""
    voice = str(raw_voice.get("id", "")) if isinstance(raw_voice, Mapping) else str(raw_voice)  # GA custom voice
    fmt = s.get("output_audio_format") or _m(out, "format").get("type", "")
    return ev.SessionConfigured(session_id=_s(s, "id"), voice=voice, audio_format=AUDIO_FORMAT_NAMES.get(str(fmt), ""))


def _item_added(e: Mapping[str, Any]) -> ev.Event:
    item = _m(e, "item")
    return ev.ItemAdded(
        item_id=_s(item, "id"),
        role=_s(item, "role"),
        item_type=_s(item, "type"),
        previous_item_id=e.get("previous_item_id"),
    )


def _response_done(e: Mapping[str, Any]) -> ev.Event:
    resp = _m(e, "response")
    details = _m(resp, "status_details")
    usage_raw = resp.get("usage")
    usage = None
    if isinstance(usage_raw, Mapping):
        usage = ev.Usage(
            total_tokens=_i(usage_raw, "total_tokens"),
            input_tokens=_i(usage_raw, "input_tokens"),
            output_tokens=_i(usage_raw, "output_tokens"),
        )
    reason = details.get("reason") or _m(details, "error").get("code")
    return ev.ResponseDone(response_id=_s(resp, "id"), status=_s(resp, "status"), reason=reason, usage=usage)


def _rate_limits(e: Mapping[str, Any]) -> ev.Event:
    limits = tuple(
        ev.RateLimit(
            name=_s(r, "name"),
            limit=_i(r, "limit"),
            remaining=_i(r, "remaining"),
            reset_seconds=float(r.get("reset_seconds") or 0.0),
        )
        for r in e.get("rate_limits") or ()
    )
    return ev.RateLimits(limits=limits)


def _error(e: Mapping[str, Any]) -> ev.Event:
    err = _m(e, "error")
    error_class, retryable = classify_server_error(_s(err, "type"), err.get("code"))
    return ev.ErrorEvent(
        error_class=error_class,
        code=_s(err, "code") or _s(err, "type"),
        message=redact(_s(err, "message")),
        param=err.get("param"),
        event_id=err.get("event_id"),
        retryable=retryable,
    )


def _audio_delta(e: Mapping[str, Any]) -> ev.Event:
    return ev.AudioChunk(
        response_id=_s(e, "response_id"),
        item_id=_s(e, "item_id"),
        audio=decode_b64(_s(e, "delta")),
        content_index=_i(e, "content_index"),
    )


def _ignore(e: Mapping[str, Any]) -> None:
    return None


# canonical key -> decoder. Events we deliberately do not surface map to _ignore (known, not counted as unknown).
DECODERS: Mapping[str, Decoder] = {
    "session.created": _session_created,
    "session.updated": _session_updated,
    "conversation.created": lambda e: ev.ConversationReady(conversation_id=_s(_m(e, "conversation"), "id")),
    "input.speech_started": lambda e: ev.SpeechStarted(
        item_id=_s(e, "item_id"), audio_start_ms=_i(e, "audio_start_ms")
    ),
    "input.speech_stopped": lambda e: ev.SpeechStopped(item_id=_s(e, "item_id"), audio_end_ms=_i(e, "audio_end_ms")),
    "input.committed": lambda e: ev.InputCommitted(
        item_id=_s(e, "item_id"), previous_item_id=e.get("previous_item_id")
    ),
    "input.cleared": lambda e: ev.InputCleared(),
    "input.timeout": lambda e: ev.IdleTimeout(
        item_id=_s(e, "item_id"), audio_start_ms=_i(e, "audio_start_ms"), audio_end_ms=_i(e, "audio_end_ms")
    ),
    "input.dtmf": lambda e: ev.Dtmf(digit=_s(e, "event"), source="realtime"),
    "input.transcript_delta": lambda e: ev.CallerTranscript(item_id=_s(e, "item_id"), text=_s(e, "delta"), final=False),
    "input.transcript_done": lambda e: ev.CallerTranscript(
        item_id=_s(e, "item_id"), text=_s(e, "transcript"), final=True
    ),
    "input.transcript_failed": lambda e: ev.CallerTranscriptFailed(
        item_id=_s(e, "item_id"), message=redact(_s(_m(e, "error"), "message"))
    ),
    "input.transcript_segment": _ignore,
    "item.added": _item_added,
    "item.done": lambda e: ev.ItemDone(item_id=_s(_m(e, "item"), "id")),
    "item.truncated": lambda e: ev.ItemTruncated(
        item_id=_s(e, "item_id"), content_index=_i(e, "content_index"), audio_end_ms=_i(e, "audio_end_ms")
    ),
    "item.deleted": lambda e: ev.ItemDeleted(item_id=_s(e, "item_id")),
    "item.retrieved": _ignore,
    "response.created": lambda e: ev.ResponseStarted(response_id=_s(_m(e, "response"), "id")),
    "response.item_added": lambda e: ev.OutputItemAdded(
        response_id=_s(e, "response_id"), item_id=_s(_m(e, "item"), "id"), item_type=_s(_m(e, "item"), "type")
    ),
    "response.item_done": _ignore,
    "response.part_added": _ignore,
    "response.part_done": _ignore,
    "response.function_delta": _ignore,
    "response.function_done": lambda e: ev.FunctionCall(
        response_id=_s(e, "response_id"),
        item_id=_s(e, "item_id"),
        call_id=_s(e, "call_id"),
        name=_s(e, "name"),
        arguments=_s(e, "arguments"),
    ),
    "response.done": _response_done,
    "audio.delta": _audio_delta,
    "audio.done": lambda e: ev.AudioDone(response_id=_s(e, "response_id"), item_id=_s(e, "item_id")),
    "audio_transcript.delta": lambda e: ev.AgentTranscript(
        response_id=_s(e, "response_id"), item_id=_s(e, "item_id"), text=_s(e, "delta"), final=False
    ),
    "audio_transcript.done": lambda e: ev.AgentTranscript(
        response_id=_s(e, "response_id"), item_id=_s(e, "item_id"), text=_s(e, "transcript"), final=True
    ),
    "text.delta": lambda e: ev.AgentText(
        response_id=_s(e, "response_id"), item_id=_s(e, "item_id"), text=_s(e, "delta"), final=False
    ),
    "text.done": lambda e: ev.AgentText(
        response_id=_s(e, "response_id"), item_id=_s(e, "item_id"), text=_s(e, "text"), final=True
    ),
    "rate_limits": _rate_limits,
    "error": _error,
    "transcription_session.updated": _ignore,
    "output_buffer.started": _ignore,
    "output_buffer.stopped": _ignore,
    "output_buffer.cleared": _ignore,
    "mcp": _ignore,
}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class RealtimeProtocol:
    """Sans-I/O Realtime protocol for one session in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.counters: Counter[str] = Counter()
        self.last_event_id: str | None = None
        self._tool_names: dict[str, str] = {}  # function_call item id -> tool name
        self._encoders: Mapping[type[ev.Command], Callable[[Any], list[str]]] = {
            ev.UpdateSession: lambda c: [
                _dumps({"type": "session.update", "session": dialect.build_session(c.profile)})
            ],
            ev.AppendAudio: lambda c: [encode_append(c.audio)],
            ev.CommitAudio: lambda c: [_dumps({"type": "input_audio_buffer.commit"})],
            ev.ClearAudio: lambda c: [_dumps({"type": "input_audio_buffer.clear"})],
            ev.CreateResponse: lambda c: [self._response_create(c.instructions, c.out_of_band, dict(c.metadata))],
            ev.CancelResponse: lambda c: [
                _dumps({"type": "response.cancel", **({"response_id": c.response_id} if c.response_id else {})})
            ],
            ev.Truncate: lambda c: [
                _dumps(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": c.item_id,
                        "content_index": c.content_index,
                        "audio_end_ms": max(0, int(c.audio_end_ms)),
                    }
                )
            ],
            ev.FunctionOutput: self._function_output,
            ev.AddText: lambda c: [
                _dumps(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": str(c.role),
                            "content": [{"type": "input_text", "text": c.text}],
                        },
                    }
                )
            ],
            ev.DeleteItem: lambda c: [_dumps({"type": "conversation.item.delete", "item_id": c.item_id})],
        }

    # -- commands -> wire
    def encode(self, command: ev.Command) -> list[str]:
        """Wire text frames for one command (a function output with ``respond`` is two frames)."""
        return self._encoders[type(command)](command)

    def _response_create(self, instructions: str | None, out_of_band: bool, metadata: Mapping[str, str]) -> str:
        return _dumps(
            {"type": "response.create", "response": self.dialect.build_response(instructions, out_of_band, metadata)}
        )

    def _function_output(self, c: ev.FunctionOutput) -> list[str]:
        frames = [
            _dumps(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": c.call_id, "output": c.output},
                }
            )
        ]
        if c.respond:
            frames.append(self._response_create(None, False, {}))
        return frames

    # -- wire -> events
    def decode(self, text: str | bytes | bytearray | memoryview) -> ev.Event | None:
        """One server frame to one bridge event (None for known events the bridge does not surface)."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._fault("malformed_json", "server frame is not valid JSON")
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            return self._fault("malformed_event", "server event has no string 'type'")
        wire_type: str = obj["type"]
        event_id = obj.get("event_id")
        if isinstance(event_id, str):
            self.last_event_id = event_id
        canonical = self.dialect.server_events.get(wire_type)
        if canonical is None:
            self.counters["unknown"] += 1
            log.warning("unknown %s event type %r (ignored)", self.dialect.name, wire_type[:80])
            return ev.UnknownEvent(type=wire_type[:120])
        try:
            event = DECODERS[canonical](obj)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            return self._fault("malformed_event", f"{wire_type}: {exc}")
        self.counters[canonical] += 1
        if isinstance(event, ev.AudioChunk) and len(event.audio) > OVERSIZED_DELTA_BYTES:
            self.counters["oversized_delta"] += 1  # played all the same; a sign of a misbehaving server
            log.warning("%s realtime: oversized audio delta of %d bytes", self.dialect.name, len(event.audio))
        return self._with_tool_name(obj, event)

    def _with_tool_name(self, obj: Mapping[str, Any], event: ev.Event | None) -> ev.Event | None:
        """Beta's ``function_call_arguments.done`` has no ``name``: take it from ``output_item.added``."""
        if isinstance(event, ev.OutputItemAdded) and event.item_type == "function_call":
            self._tool_names[event.item_id] = str(obj["item"].get("name") or "")
        elif isinstance(event, ev.FunctionCall) and not event.name:
            event = dataclasses.replace(event, name=self._tool_names.get(event.item_id, ""))
        return event

    def _fault(self, code: str, message: str) -> ev.ErrorEvent:
        self.counters[code] += 1
        log.warning("%s realtime: %s", self.dialect.name, message)
        return ev.ErrorEvent(error_class=ev.ErrorClass.PROTOCOL, code=code, message=message, retryable=False)
