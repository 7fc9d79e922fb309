"""The GPT-Live dialect: ``/v1/live/sessions`` (no query), opened by ``session.start`` and confirmed by
``session.started``; speech is one continuous stream each way, and tools go to a delegated Responses backend.

Checked against ``openai.types.live`` (``ClientEvent`` and ``ServerEvent``); see docs/protocol.md, "GPT-Live".

What it has that Realtime lacks, and the other way round, is in its capabilities and in ``refused``:

* no turn events, no commit or clear: the model takes turns itself; the caller's audio is one continuous stream
  (silence included), and the only record of a turn is the transcript deltas with their ``start_ms``/``end_ms``;
* no responses for speech: the model's audio streams at real-time pace, silence included;
  ``session.commentary.append`` gives it something to say (a greeting, a notice);
* no cancel and no truncate: the model stops itself when the caller speaks over it;
* tools through a ``responses`` delegation: the Responses backend's stream events come wrapped in ``response.event``
  (the call is in the inner ``response.output_item.done``), and the bridge answers with ``response.item.create``
  (a ``function_call_output``) and one ``response.create`` once every call of the response is answered;
* the caller's keys and the bridge's notes go in as text (``session.thinking.append``, silent context the model
  may act on; ``session.instructions.append``, developer instructions);
* usage is the session's cumulative audio time (``session.usage.updated``, and the final figure in
  ``session.closed``), the backend's tokens come with its responses;
* a session ends with ``session.close``, answered by ``session.closed`` (its reason says how it ended);
* errors come as ``error {error: {code, type, message, param, client_event_id}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NoReturn

from bridge import events as ev
from bridge.audio.wire import AppendTemplate, decode_b64
from bridge.errors import DialectFieldError
from bridge.realtime.dialects import common
from bridge.realtime.dialects.base import (
    G711_ALAW,
    G711_ULAW,
    PCM16_16K,
    PCM16_24K,
    Capabilities,
    Credential,
    Decoder,
    Dialect,
    Encoder,
    Handshake,
    LiveService,
    UnsupportedCommand,
)
from bridge.realtime.dialects.common import _dumps, _i, _m, _s
from bridge.realtime.dialects.schema import (
    AnyValue,
    Bool,
    Enum,
    Int,
    ListOf,
    Node,
    Nullable,
    Obj,
    OneOf,
    Str,
    Tagged,
)
from bridge.realtime.profile import AgentProfile, Delegation

NAME: Final = "live"
LABEL: Final = "Live"
DEFAULT_MODEL: Final = "gpt-live-1"
DEFAULT_VOICE: Final = "marin"  # the service's default (openai.types.live.SessionConfig.audio.output.voice)
# The profile's word -> Live's spelling. G.711 is at 8 kHz (openai.types.live.AudioPCMU / AudioPCMA).
FORMATS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "pcm16": MappingProxyType({"type": "audio/pcm", "rate": 24000}),
        "pcm16_16k": MappingProxyType({"type": "audio/pcm", "rate": 16000}),
        "g711_ulaw": MappingProxyType({"type": "audio/pcmu", "rate": 8000}),
        "g711_alaw": MappingProxyType({"type": "audio/pcma", "rate": 8000}),
    }
)
_FORMAT_NAMES: Final = {(wire["type"], wire["rate"]): name for name, wire in FORMATS.items()}
SESSION_FIELDS: Final = frozenset(
    {"model", "instructions", "audio", "delegation", "input", "store", "safety_identifier"}
)
EXTRA_FIELDS: Final = frozenset({"store", "safety_identifier"})  # what a profile's ``extra`` may add
# Realtime knobs Live has no counterpart for. Their defaults describe what Live does anyway (audio out, the caller
# transcribed, the service taking turns and yielding to the caller), so a profile keeps them at their defaults.
REALTIME_ONLY: Final = (
    "output_modalities",
    "input_transcription",
    "turn_detection",
    "noise_reduction",
    "speed",
    "temperature",
    "max_output_tokens",
)
# Fatal: no retry, whatever the error's class (the peers' practice; the service closes the socket after them).
FATAL_CODES: Final = frozenset(
    {"insufficient_quota", "invalid_api_key", "account_deactivated", "billing_hard_limit_reached"}
)

CLIENT_EVENTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "session.start": "session.start",
        "session.update": "session.update",
        "input.append": "session.input_audio.append",
        "input.mute": "session.input_audio.mute",
        "input.unmute": "session.input_audio.unmute",
        "fixture.play": "session.output_audio.fixture.play",
        "instructions.append": "session.instructions.append",
        "thinking.append": "session.thinking.append",
        "commentary.append": "session.commentary.append",
        "decision.create": "decision.create",
        "decision.item_create": "decision.item.create",
        "decision.item_delete": "decision.item.delete",
        "response.item_create": "response.item.create",
        "response.create": "response.create",
        "session.close": "session.close",
    }
)
APPEND: Final = AppendTemplate(CLIENT_EVENTS["input.append"])

# The Responses stream events the bridge reads inside ``response.event`` (openai.types.responses), canonical key ->
# type. The rest of that vocabulary (reasoning, text parts, hosted tools) is the backend's business.
RESPONSES_EVENTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "created": "response.created",
        "in_progress": "response.in_progress",
        "item_added": "response.output_item.added",
        "item_done": "response.output_item.done",
        "part_added": "response.content_part.added",
        "part_done": "response.content_part.done",
        "text_delta": "response.output_text.delta",
        "text_done": "response.output_text.done",
        "function_delta": "response.function_call_arguments.delta",
        "function_done": "response.function_call_arguments.done",
        "completed": "response.completed",
        "failed": "response.failed",
        "incomplete": "response.incomplete",
    }
)

CAPABILITIES: Final = Capabilities(
    turn_detection="none",
    responds="model",
    cancel=False,
    truncate=False,
    continuous_audio=True,
    continuous_output=True,
    usage="audio_seconds",
    session_cap_s=7200.0,  # about 2 h (a peer's report; the SDK states no figure)
    input_formats=frozenset({PCM16_24K, PCM16_16K, G711_ULAW, G711_ALAW}),
    output_formats=frozenset({PCM16_24K, PCM16_16K, G711_ULAW, G711_ALAW}),
    says="commentary",
)

HANDSHAKE: Final = Handshake(
    opening=ev.StartSession,
    opened_by="session.start",
    confirmation=ev.SessionConfigured,
    confirmed_by="session.started",
    closing="session.close",
    closed_by="session.closed",
)

REFUSED: Final[Mapping[type[ev.Command], str]] = MappingProxyType(
    {
        ev.CommitAudio: "the model takes turns itself; the caller's audio is one stream (turn_detection none)",
        ev.ClearAudio: "nothing is buffered to clear; the caller's audio is one stream",
        ev.CancelResponse: "the model stops itself when the caller speaks; drop the audio played out instead",
        ev.Truncate: "the model keeps what it said; there are no items to cut",
        ev.DeleteItem: "Live has no conversation items",
        ev.AskText: "Live speaks in one stream and keeps no conversation to ask about out of band",
    }
)


def _format_value(name: str) -> dict[str, Any]:
    return dict(FORMATS[name])


def _format_name(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None
    return _FORMAT_NAMES.get((value.get("type"), value.get("rate")))


# --------------------------------------------------------------------------------------------------------------
# The bridge's side


def _check(profile: AgentProfile) -> dict[str, Any]:
    """The profile's extra fields, after refusing what Live cannot honour, by name."""
    common.check_format(LABEL, profile, CAPABILITIES)
    for name in REALTIME_ONLY:
        default = AgentProfile.model_fields[name].get_default(call_default_factory=True)
        if getattr(profile, name) != default:
            raise DialectFieldError(LABEL, name, f"Live has no {name} (it sets its own); leave it unset")
    for key in profile.extra:
        if key not in EXTRA_FIELDS:
            raise DialectFieldError(LABEL, f"session.{key}")
    return dict(profile.extra)


def delegation(profile: AgentProfile) -> dict[str, Any]:
    """The ``responses`` delegation: the backend model, its prompt and the profile's tools; or the ``client``
    delegation (an orchestrated call: the bridge decides, and makes the model speak with commentary)."""
    d = profile.delegation or Delegation()
    if d.type == "client":
        return {"type": "client"}
    responses: dict[str, Any] = {
        "model": d.model,
        "instructions": profile.instructions if d.instructions is None else d.instructions,
        **common.tools(profile),
    }
    return {"type": "responses", "responses": responses}


def build_session(profile: AgentProfile) -> dict[str, Any]:
    """``session.start``'s session (without the history: see :func:`_start`)."""
    extra = _check(profile)
    session: dict[str, Any] = {
        "model": profile.model or DEFAULT_MODEL,
        "instructions": profile.instructions,
        "audio": {"format": _format_value(profile.audio_format), "output": {"voice": profile.voice}},
        "delegation": delegation(profile),
    }
    return {**session, **extra}


_ROLES: Final = {ev.Role.SYSTEM: "developer", ev.Role.USER: "user", ev.Role.ASSISTANT: "assistant"}


def _initial_item(text: ev.AddText) -> dict[str, Any]:
    """One message of ``session.start``'s ``input[]`` (one text part each, as the service requires)."""
    part = {"type": "output_text" if text.role is ev.Role.ASSISTANT else "input_text", "text": text.text}
    return {"type": "message", "role": _ROLES[text.role], "content": [part]}


def _start(c: ev.StartSession) -> Sequence[str]:
    session = build_session(c.profile)
    if c.history:
        session["input"] = [_initial_item(t) for t in c.history]
    return (_dumps({"type": CLIENT_EVENTS["session.start"], "session": session}),)


def _update(c: ev.UpdateSession) -> Sequence[str]:
    """Only the delegation can change mid-session (instructions, voice and format are fixed at start)."""
    _check(c.profile)
    return (_dumps({"type": CLIENT_EVENTS["session.update"], "session": {"delegation": delegation(c.profile)}}),)


def _append_text(kind: str, text: str) -> str:
    return _dumps({"type": CLIENT_EVENTS[kind], "content": text, "delegation_id": None})


def _speak(c: ev.CreateResponse) -> Sequence[str]:
    """Make it speak: ``session.commentary.append`` carries what to say. The model decides when to speak on its own,
    so a request without content has no Live counterpart; nor has speech kept out of the conversation."""
    if c.instructions is None:
        raise UnsupportedCommand(NAME, "CreateResponse without instructions", "commentary needs something to say")
    if c.out_of_band:
        raise UnsupportedCommand(NAME, "out-of-band CreateResponse", "all commentary enters the session")
    return (_append_text("commentary.append", c.instructions),)


def _say(c: ev.Say) -> Sequence[str]:
    """A verbatim line is commentary: speakable text, said as it is."""
    return (_append_text("commentary.append", c.text),)


def hold_answers(profile: AgentProfile) -> AgentProfile:
    """An orchestrated call's profile: ``client`` delegation, so the model leaves the decisions to the bridge."""
    return profile.model_copy(
        update={"delegation": (profile.delegation or Delegation()).model_copy(update={"type": "client"})}
    )


def _add_text(c: ev.AddText) -> Sequence[str]:
    """The caller's doing (keys, text) as silent context the model may act on; the bridge's notes as instructions."""
    if c.role is ev.Role.ASSISTANT:
        raise UnsupportedCommand(NAME, "AddText as the assistant", "the history is given only at session.start")
    kind = "instructions.append" if c.role is ev.Role.SYSTEM else "thinking.append"
    return (_append_text(kind, c.text),)


def _function_output(c: ev.FunctionOutput) -> Sequence[str]:
    item = {"type": "function_call_output", "call_id": c.call_id, "output": c.output}
    frame = _dumps({"type": CLIENT_EVENTS["response.item_create"], "item": item})
    return (frame, _dumps({"type": CLIENT_EVENTS["response.create"]})) if c.respond else (frame,)


_append = APPEND.encode
ENCODERS: Final[Mapping[type[ev.Command], Encoder]] = MappingProxyType(
    {
        ev.StartSession: _start,
        ev.UpdateSession: _update,
        ev.AppendAudio: lambda c: (_append(c.audio),),
        ev.CreateResponse: _speak,
        ev.Say: _say,
        ev.FunctionOutput: _function_output,
        ev.AddText: _add_text,
    }
)


def _no_credentials(*_: Any) -> NoReturn:
    raise UnsupportedCommand(NAME, "short-lived credential", "connect with the API key")


def _parse_credential(body: Mapping[str, Any]) -> Credential:
    _no_credentials(body)


# --------------------------------------------------------------------------------------------------------------
# Decoding


def _configured(session: Mapping[str, Any]) -> ev.SessionConfigured:
    audio = _m(session, "audio")
    voice = _m(audio, "output").get("voice") or ""
    voice = str(voice.get("id", "")) if isinstance(voice, Mapping) else str(voice)  # a custom voice
    return ev.SessionConfigured(
        session_id=_s(session, "id"), voice=voice, audio_format=_format_name(audio.get("format")) or ""
    )


def _started(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    """``session.started`` is both the session's creation and our configuration's acceptance."""
    session = _m(e, "session")
    return (ev.SessionReady(session_id=_s(session, "id"), model=_s(session, "model")), _configured(session))


def _ms(e: Mapping[str, Any], key: str) -> int | None:
    return _i(e, key) if e.get(key) is not None else None


def _input_transcript(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    return (
        ev.CallerTranscript(
            item_id="", text=_s(e, "delta"), final=False, start_ms=_ms(e, "start_ms"), end_ms=_ms(e, "end_ms")
        ),
    )


def _output_transcript(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    return (
        ev.AgentTranscript(
            response_id="",
            item_id="",
            text=_s(e, "delta"),
            final=False,
            start_ms=_ms(e, "start_ms"),
            end_ms=_ms(e, "end_ms"),
        ),
    )


def _audio(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    """Speech and silence alike: the stream has no items (a constant empty id)."""
    return (ev.AudioChunk(response_id="", item_id="", audio=decode_b64(_s(e, "delta"))),)


def _seconds(e: Mapping[str, Any]) -> float:
    value = _m(e, "usage").get("seconds", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("field 'usage.seconds' must be a number")
    return float(value)


# session.closed's reason -> (class, retryable): only the session cap and a lost connection call for a new session.
CLOSE_REASONS: Final[Mapping[str, tuple[ev.ErrorClass | None, bool]]] = MappingProxyType(
    {
        "close_requested": (None, False),
        "remote_hangup": (None, False),
        "expired": (ev.ErrorClass.SERVER, True),
        "connection_lost": (ev.ErrorClass.NETWORK, True),
        "content": (ev.ErrorClass.PROTOCOL, False),
    }
)


def _closed(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    """The final usage, then the end of the connection as one :class:`~bridge.events.Closed`."""
    reason = _s(e, "reason")
    cls, retryable = CLOSE_REASONS.get(reason, (ev.ErrorClass.SERVER, False))
    return (
        ev.UsageUpdated(seconds=_seconds(e), final=True),
        ev.Closed(error_class=cls, code=None, reason=f"session closed: {reason}", retryable=retryable),
    )


def _error(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    err = _m(e, "error")
    return (common.error_event(err, err.get("client_event_id") or e.get("client_event_id"), FATAL_CODES),)


def _ignore(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    return ()


# -- response.event: the backend's Responses stream. Its events name no response except in the lifecycle ones, so
# the bridge keys a backend's calls and responses by the delegation that started them (``delegation_id``).


def _response_done(key: str, inner: Mapping[str, Any]) -> Sequence[ev.Event]:
    resp = _m(inner, "response")
    reason = _m(resp, "incomplete_details").get("reason") or _m(resp, "error").get("code")
    usage = common.token_usage(resp)
    return (
        ev.ResponseDone(response_id=key, status=ev.ResponseStatus.of(_s(resp, "status")), reason=reason, usage=usage),
    )


def _item_done(key: str, inner: Mapping[str, Any]) -> Sequence[ev.Event]:
    item = _m(inner, "item")
    if item.get("type") != "function_call":
        return ()
    return (
        ev.FunctionCall(
            response_id=key,
            item_id=_s(item, "id"),
            call_id=_s(item, "call_id"),
            name=_s(item, "name"),
            arguments=_s(item, "arguments"),
        ),
    )


_INNER: Final[Mapping[str, Callable[[str, Mapping[str, Any]], Sequence[ev.Event]]]] = MappingProxyType(
    {
        RESPONSES_EVENTS["created"]: lambda key, inner: (ev.ResponseStarted(response_id=key),),
        RESPONSES_EVENTS["item_added"]: lambda key, inner: (
            ev.OutputItemAdded(
                response_id=key,
                item_id=_s(_m(inner, "item"), "id"),
                item_type=ev.ItemType.of(_s(_m(inner, "item"), "type")),
            ),
        ),
        RESPONSES_EVENTS["item_done"]: _item_done,
        RESPONSES_EVENTS["completed"]: _response_done,
        RESPONSES_EVENTS["failed"]: _response_done,
        RESPONSES_EVENTS["incomplete"]: _response_done,
    }
)


def _response_event(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    """A ``response.event`` envelope, unwrapped: the backend's response and its function calls. The backend's text
    is not surfaced: what the caller hears of it arrives as the model's own speech and transcript."""
    inner = _m(e, "event")
    decode = _INNER.get(_s(inner, "type"))
    if decode is None:
        return ()
    key = e.get("delegation_id") or _s(_m(inner, "response"), "id")
    if not isinstance(key, str):
        raise TypeError("field 'delegation_id' must be a string")
    return decode(key, inner)


SERVER_EVENTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "session.started": "session.started",
        "session.updated": "session.updated",
        "session.input_transcript.delta": "input.transcript_delta",
        "session.output_transcript.delta": "audio_transcript.delta",
        "session.output_audio.delta": "audio.delta",
        "session.delegation.created": "delegation.created",
        "response.event": "response.event",
        "session.usage.updated": "usage",
        "session.closed": "session.closed",
        "error": "error",
        "info": "info",
        "session.input_audio.muted": "input.muted",
        "session.input_audio.unmuted": "input.unmuted",
        "session.output_audio.fixture.playing": "fixture.playing",
        "session.output_audio.fixture.played": "fixture.played",
        "session.instructions.appended": "instructions.appended",
        "session.thinking.appended": "thinking.appended",
        "session.commentary.appended": "commentary.appended",
        "decision.event": "decision.event",
        "decision.item.created": "decision.item_created",
        "decision.item.deleted": "decision.item_deleted",
        "session.input_audio.append": "input.reflected",
        "transport.dtmf.received": "transport.dtmf_received",
        "transport.dtmf.send": "transport.dtmf_send",
        "transport.dtmf.sent": "transport.dtmf_sent",
        "transport.ringing": "transport.ringing",
        "transport.answered": "transport.answered",
        "transport.failed": "transport.failed",
    }
)

# Known and deliberately not surfaced, with the reason: acknowledgements the bridge does not wait for, notices,
# and what only other transports or other delegations produce.
IGNORED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "delegation.created": "metadata only: the backend's own events follow in response.event",
        "info": "a notice (e.g. a WebRTC data channel's permissions); nothing to act on",
        "input.muted": "acknowledges session.input_audio.mute, which the bridge does not send",
        "input.unmuted": "acknowledges session.input_audio.unmute, which the bridge does not send",
        "fixture.playing": "audio fixtures are not used by the bridge",
        "fixture.played": "audio fixtures are not used by the bridge",
        "instructions.appended": "an acknowledgement; the bridge does not wait for it",
        "thinking.appended": "an acknowledgement; the bridge does not wait for it",
        "commentary.appended": "an acknowledgement; what is said arrives as speech and transcript",
        "decision.event": "Decisions delegation only (the bridge delegates to Responses)",
        "decision.item_created": "Decisions delegation only",
        "decision.item_deleted": "Decisions delegation only",
        "input.reflected": "sideband connections only (reflected caller audio)",
        "transport.dtmf_received": "OpenAI's own SIP sideband only; the bridge's SIP leg reports keys itself",
        "transport.dtmf_send": "OpenAI's own SIP sideband only",
        "transport.dtmf_sent": "OpenAI's own SIP sideband only",
        "transport.ringing": "OpenAI's own SIP sideband only",
        "transport.answered": "OpenAI's own SIP sideband only",
        "transport.failed": "OpenAI's own SIP sideband only",
    }
)

DECODERS: Final[Mapping[str, Decoder]] = MappingProxyType(
    {
        "session.started": _started,
        "session.updated": lambda e: (_configured(_m(e, "session")),),
        "input.transcript_delta": _input_transcript,
        "audio_transcript.delta": _output_transcript,
        "audio.delta": _audio,
        "response.event": _response_event,
        "usage": lambda e: (ev.UsageUpdated(seconds=_seconds(e)),),
        "session.closed": _closed,
        "error": _error,
        **dict.fromkeys(IGNORED, _ignore),
    }
)


# --------------------------------------------------------------------------------------------------------------
# The service's side (the emulator's Live module serves from these)

VOICES: Final = (
    "alloy", "ash", "ballad", "beacon", "bossa", "cedar", "cinder", "coral", "delta", "echo", "gleam", "marin",
    "meridian", "quartz", "ripple", "sage", "shida", "shimmer", "stone", "tempo", "verse", "vesper", "willow",
)  # fmt: skip  # openai.types.live.BuiltInVoice

_FORMAT: Final = Tagged(
    "type",
    {
        "audio/pcm": Obj({"type": Enum("audio/pcm"), "rate": Enum(16000, 24000)}, required=("rate",)),
        "audio/pcmu": Obj({"type": Enum("audio/pcmu"), "rate": Enum(8000)}, required=("rate",)),
        "audio/pcma": Obj({"type": Enum("audio/pcma"), "rate": Enum(8000)}, required=("rate",)),
    },
)
_ACK: Final = {"acknowledgement_delay_ms": Int(0)}
_RESPONSES_FIELDS: Final[Mapping[str, Node]] = MappingProxyType(
    {
        "model": Str(),
        "instructions": Str(),
        "max_output_tokens": Int(1),
        "parallel_tool_calls": Bool(),
        "reasoning": AnyValue(),
        "service_tier": Enum("auto", "default", "fast_tier_temp_pilot", "flex", "priority", "ultrafast"),
        "text": AnyValue(),
        "tool_choice": AnyValue(),
        "tools": ListOf(Tagged("type", {"function": Obj({**common.FUNCTION_TOOL.fields, "strict": Bool()})})),
    }
)


def _delegation(responses_required: tuple[str, ...]) -> Node:
    return Nullable(
        Tagged(
            "type",
            {
                "client": Obj({"type": Enum("client"), **_ACK}),
                "responses": Obj(
                    {
                        "type": Enum("responses"),
                        **_ACK,
                        "responses": Obj(_RESPONSES_FIELDS, required=responses_required),
                    },
                    required=("responses",) if responses_required else (),
                ),
                "decisions": Obj({"type": Enum("decisions"), **_ACK, "decisions": AnyValue()}, required=("decisions",)),
            },
        )
    )


_TEXT_PART: Final = Obj({"type": Enum("input_text", "output_text", "text"), "text": Str()}, required=("text",))
_SESSION: Final = Obj(
    {
        "model": Str(),
        "instructions": Str(),
        "audio": Obj(
            {
                "format": _FORMAT,
                "output": Obj({"voice": OneOf(Enum(*VOICES), Obj({"id": Str()}, required=("id",)))}, merge=True),
            },
            merge=True,
        ),
        "client": AnyValue(),
        "delegation": _delegation(("model",)),
        "input": ListOf(
            Obj(
                {
                    "type": Enum("message"),
                    "role": Enum("developer", "user", "assistant"),
                    "content": ListOf(_TEXT_PART),
                    "id": Str(),
                    "status": Enum("incomplete", "completed"),
                },
                required=("role", "content"),
            )
        ),
        "safety_identifier": Str(),
        "store": Bool(),
        "triggers": ListOf(AnyValue()),
    },
    required=("model",),
    merge=True,
)
_UPDATE: Final = Obj({"delegation": _delegation(()), "triggers": ListOf(AnyValue())})
_ITEM: Final = Tagged(
    "type",
    {
        "function_call_output": Obj(
            {
                "type": Enum("function_call_output"),
                "call_id": Str(),
                "output": OneOf(Str(), ListOf(AnyValue())),
                "id": Str(),
                "status": Enum("in_progress", "completed", "incomplete"),
            },
            required=("call_id", "output"),
        ),
        "message": Obj(
            {
                "type": Enum("message"),
                "role": Enum("user", "assistant", "system", "developer"),
                "content": OneOf(Str(), ListOf(AnyValue())),
            },
            required=("role", "content"),
        ),
    },
    default="message",
)


def _envelopes() -> Mapping[str, Obj]:
    base: dict[str, Node] = {"type": Str(), "event_id": Str()}
    text = Obj({**base, "content": Str(), "delegation_id": Nullable(Str())}, required=("content", "delegation_id"))
    return MappingProxyType(
        {
            "session.start": Obj({**base, "session": AnyValue()}, required=("session",)),
            "session.update": Obj({**base, "session": AnyValue()}, required=("session",)),
            "input.append": Obj({**base, APPEND.audio_field: Str()}, required=(APPEND.audio_field,)),
            "input.mute": Obj(base),
            "input.unmute": Obj(base),
            "fixture.play": Obj({**base, "audio": Str()}, required=("audio",)),
            "instructions.append": text,
            "thinking.append": text,
            "commentary.append": text,
            "decision.create": Obj(base, open=True),
            "decision.item_create": Obj({**base, "item": AnyValue()}, required=("item",)),
            "decision.item_delete": Obj({**base, "item_id": Str()}, required=("item_id",)),
            "response.item_create": Obj({**base, "item": AnyValue()}, required=("item",)),
            "response.create": Obj(base),
            "session.close": Obj(base),
        }
    )


def _defaults(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "instructions": "",
        "audio": {"format": _format_value("pcm16"), "output": {"voice": DEFAULT_VOICE}},
        "delegation": None,
        "input": [],
        "store": False,
    }


def _resource(session: Mapping[str, Any], session_id: str, expires_at: int) -> dict[str, Any]:
    return {"id": session_id, "expires_at": expires_at, "status": "active", **session}


def _error_fields(
    code: str, error_type: str, message: str, param: str | None, client_event_id: str | None
) -> dict[str, Any]:
    err = {"code": code, "type": error_type, "message": message, "param": param, "client_event_id": client_event_id}
    return {"error": err, **({"client_event_id": client_event_id} if client_event_id else {})}


SERVICE: Final = LiveService(
    client_envelopes=_envelopes(),
    session_schema=_SESSION,
    update_schema=_UPDATE,
    item_schema=_ITEM,
    session_defaults=_defaults,
    session_paths=MappingProxyType(
        {
            "model": ("model",),
            "instructions": ("instructions",),
            "voice": ("audio", "output", "voice"),
            "format": ("audio", "format"),
            "delegation": ("delegation",),
            "tools": ("delegation", "responses", "tools"),
            "input": ("input",),
        }
    ),
    session_resource=_resource,
    error=_error_fields,
    usage=lambda seconds: {"seconds": round(seconds, 3)},
    responses_events=RESPONSES_EVENTS,
    voices=VOICES,
)

# --------------------------------------------------------------------------------------------------------------

LIVE = Dialect(
    name=NAME,
    label=LABEL,
    default_model=DEFAULT_MODEL,
    path="/live/sessions",
    handshake=HANDSHAKE,
    capabilities=CAPABILITIES,
    append=APPEND,
    client_events=CLIENT_EVENTS,
    encoders=ENCODERS,
    own_server_events=SERVER_EVENTS,
    decoders=DECODERS,
    build_session=build_session,
    build_response=lambda instructions, out_of_band, metadata: {},  # Live's response.create has no body
    session_fields=SESSION_FIELDS,
    format_value=_format_value,
    format_name=_format_name,
    credential_path=None,
    build_credential_request=_no_credentials,
    parse_credential=_parse_credential,
    service=SERVICE,
    model_in_url=False,
    refused=REFUSED,
    hold_answers=hold_answers,
)
