"""What the Realtime dialects (beta and GA) share: event names, decoders, command encoders, session helpers and
the service's common schema pieces. ``beta.py`` and ``ga.py`` build their tables from these.

Wire facts are checked against the ``openai`` package's typed models (``openai.types.beta.realtime`` for beta,
``openai.types.realtime`` for GA); see docs/protocol.md.

Bad input never raises out of a decoder as anything but ``TypeError``, ``ValueError``, ``KeyError`` or
``AttributeError``: the protocol core (``bridge.realtime.protocol``) turns those into a PROTOCOL error event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, Final

import orjson

from bridge import events as ev
from bridge.audio.wire import AppendTemplate, decode_b64
from bridge.errors import DialectFieldError, classify_server_error, redact
from bridge.realtime.dialects.base import (
    G711_ALAW,
    G711_ULAW,
    PCM16_24K,
    PROFILE_FORMATS,
    Capabilities,
    Decoder,
    Dialect,
    Encoder,
    Handshake,
    Usage,
)
from bridge.realtime.dialects.schema import (
    AnyValue,
    Bool,
    Enum,
    Int,
    ListOf,
    Node,
    Nullable,
    Num,
    Obj,
    OneOf,
    Str,
    Tagged,
    invalid_value,
)
from bridge.realtime.profile import AgentProfile, SemanticVad, ServerVad

# --------------------------------------------------------------------------------------------------------------
# Names

# Canonical server-event keys: every dialect maps its wire names onto these, and the decoders are keyed by them.
# These are the events whose wire name is the same in beta and GA.
SERVER_EVENTS: Mapping[str, str] = MappingProxyType(
    {
        "session.created": "session.created",
        "session.updated": "session.updated",
        "conversation.created": "conversation.created",
        "input_audio_buffer.speech_started": "input.speech_started",
        "input_audio_buffer.speech_stopped": "input.speech_stopped",
        "input_audio_buffer.committed": "input.committed",
        "input_audio_buffer.cleared": "input.cleared",
        "conversation.item.input_audio_transcription.delta": "input.transcript_delta",
        "conversation.item.input_audio_transcription.completed": "input.transcript_done",
        "conversation.item.input_audio_transcription.failed": "input.transcript_failed",
        "conversation.item.truncated": "item.truncated",
        "conversation.item.deleted": "item.deleted",
        "conversation.item.retrieved": "item.retrieved",
        "response.created": "response.created",
        "response.done": "response.done",
        "response.output_item.added": "response.item_added",
        "response.output_item.done": "response.item_done",
        "response.content_part.added": "response.part_added",
        "response.content_part.done": "response.part_done",
        "response.function_call_arguments.delta": "response.function_delta",
        "response.function_call_arguments.done": "response.function_done",
        "rate_limits.updated": "rate_limits",
        "error": "error",
    }
)

# Canonical client-event keys -> wire names (the same in beta and GA). The emulator lists them in this order.
CLIENT_EVENTS: Mapping[str, str] = MappingProxyType(
    {
        "session.update": "session.update",
        "input.append": "input_audio_buffer.append",
        "input.commit": "input_audio_buffer.commit",
        "input.clear": "input_audio_buffer.clear",
        "item.create": "conversation.item.create",
        "item.truncate": "conversation.item.truncate",
        "item.delete": "conversation.item.delete",
        "item.retrieve": "conversation.item.retrieve",
        "response.create": "response.create",
        "response.cancel": "response.cancel",
        "output_buffer.clear": "output_audio_buffer.clear",
    }
)

APPEND = AppendTemplate(CLIENT_EVENTS["input.append"])

# Both dialects: the service's VAD marks turns and the model answers them; the client may cancel and truncate;
# audio goes in bursts or gaps as it comes, and the model's comes per response, faster than real time; usage is
# tokens per response; sessions last 60 minutes; PCM16 at 24 kHz or G.711 at 8 kHz, both ways.
CAPABILITIES = Capabilities(
    turn_detection="server",
    responds="model",
    cancel=True,
    truncate=True,
    continuous_audio=False,
    continuous_output=False,
    usage="tokens",
    session_cap_s=3600.0,
    input_formats=frozenset({PCM16_24K, G711_ULAW, G711_ALAW}),
    output_formats=frozenset({PCM16_24K, G711_ULAW, G711_ALAW}),
    text_out_of_band=True,
)

# session.update opens the session (the history follows as items) and session.updated confirms it; the client ends
# it by closing the socket.
HANDSHAKE = Handshake(
    opening=ev.StartSession,
    opened_by="session.update",
    confirmation=ev.SessionConfigured,
    confirmed_by="session.updated",
)


# --------------------------------------------------------------------------------------------------------------
# Decoding


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


def _at(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path``; every object on the way must be an object (or missing)."""
    for key in path[:-1]:
        obj = _m(obj, key)
    return obj.get(path[-1])


def _session_created(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    session = _m(e, "session")
    return (ev.SessionReady(session_id=_s(session, "id"), model=_s(session, "model")),)


def session_configured(
    voice_path: tuple[str, ...], format_path: tuple[str, ...], format_name: Callable[[Any], str | None]
) -> Decoder:
    """``session.updated``, read where the dialect keeps the voice and the output format."""

    def decode(e: Mapping[str, Any]) -> Sequence[ev.Event]:
        s = _m(e, "session")
        raw_voice = _at(s, voice_path) or ""
        voice = str(raw_voice.get("id", "")) if isinstance(raw_voice, Mapping) else str(raw_voice)  # custom voice
        fmt = format_name(_at(s, format_path))
        return (ev.SessionConfigured(session_id=_s(s, "id"), voice=voice, audio_format=fmt or ""),)

    return decode


def _response_created(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    """A response out of band (``conversation: "none"``) shows a null ``conversation_id``, or the bridge's say
    metadata."""
    response = _m(e, "response")
    out_of_band = response.get("conversation_id", "") is None or _m(response, "metadata").get("callbridge") == "say"
    return (ev.ResponseStarted(response_id=_s(response, "id"), out_of_band=out_of_band),)


def _item_added(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    item = _m(e, "item")
    return (
        ev.ItemAdded(
            item_id=_s(item, "id"),
            role=_s(item, "role"),
            item_type=ev.ItemType.of(_s(item, "type")),
            previous_item_id=e.get("previous_item_id"),
        ),
    )


def token_usage(response: Mapping[str, Any]) -> ev.Usage | None:
    """A response object's token counts (Realtime's ``response.done``, the Responses API's lifecycle events)."""
    usage = response.get("usage")
    if not isinstance(usage, Mapping):
        return None
    return ev.Usage(
        total_tokens=_i(usage, "total_tokens"),
        input_tokens=_i(usage, "input_tokens"),
        output_tokens=_i(usage, "output_tokens"),
    )


def usage_body(u: Usage, input_details: dict[str, Any]) -> dict[str, Any]:
    """The service's ``usage`` of a response, as both dialects spell it around their ``input_token_details``."""
    inp, out = u.input_text + u.input_audio, u.output_text + u.output_audio
    return {
        "total_tokens": inp + out,
        "input_tokens": inp,
        "output_tokens": out,
        "input_token_details": input_details,
        "output_token_details": {"text_tokens": u.output_text, "audio_tokens": u.output_audio},
    }


def _response_done(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    resp = _m(e, "response")
    details = _m(resp, "status_details")
    reason = details.get("reason") or _m(details, "error").get("code")
    usage = token_usage(resp)
    return (
        ev.ResponseDone(
            response_id=_s(resp, "id"), status=ev.ResponseStatus.of(_s(resp, "status")), reason=reason, usage=usage
        ),
    )


def _rate_limits(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    limits = tuple(
        ev.RateLimit(
            name=_s(r, "name"),
            limit=_i(r, "limit"),
            remaining=_i(r, "remaining"),
            reset_seconds=float(r.get("reset_seconds") or 0.0),
        )
        for r in e.get("rate_limits") or ()
    )
    return (ev.RateLimits(limits=limits),)


def error_event(err: Mapping[str, Any], event_id: Any, fatal: frozenset[str] = frozenset()) -> ev.ErrorEvent:
    """An ``error`` event's ``error`` object, classified (a ``fatal`` code is never retryable), its message
    redacted; ``event_id`` names the client event it answers."""
    code = _s(err, "code")
    error_class, retryable = classify_server_error(_s(err, "type"), code or None)
    return ev.ErrorEvent(
        error_class=error_class,
        code=code or _s(err, "type"),
        message=redact(_s(err, "message")),
        param=err.get("param"),
        event_id=event_id,
        retryable=retryable and code not in fatal,
    )


def _error(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    err = _m(e, "error")
    return (error_event(err, err.get("event_id")),)


def _audio_delta(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    return (
        ev.AudioChunk(
            response_id=_s(e, "response_id"),
            item_id=_s(e, "item_id"),
            audio=decode_b64(_s(e, "delta")),
            content_index=_i(e, "content_index"),
        ),
    )


def _ignore(e: Mapping[str, Any]) -> Sequence[ev.Event]:
    return ()


# canonical key -> decoder, except session.updated (its fields sit where each dialect puts them: session_configured).
# Events the bridge does not surface map to _ignore: known, so not counted as unknown.
DECODERS: Mapping[str, Decoder] = MappingProxyType(
    {
        "session.created": _session_created,
        "conversation.created": lambda e: (ev.ConversationReady(conversation_id=_s(_m(e, "conversation"), "id")),),
        "input.speech_started": lambda e: (
            ev.SpeechStarted(item_id=_s(e, "item_id"), audio_start_ms=_i(e, "audio_start_ms")),
        ),
        "input.speech_stopped": lambda e: (
            ev.SpeechStopped(item_id=_s(e, "item_id"), audio_end_ms=_i(e, "audio_end_ms")),
        ),
        "input.committed": lambda e: (
            ev.InputCommitted(item_id=_s(e, "item_id"), previous_item_id=e.get("previous_item_id")),
        ),
        "input.cleared": lambda e: (ev.InputCleared(),),
        "input.timeout": lambda e: (
            ev.IdleTimeout(
                item_id=_s(e, "item_id"), audio_start_ms=_i(e, "audio_start_ms"), audio_end_ms=_i(e, "audio_end_ms")
            ),
        ),
        "input.dtmf": lambda e: (ev.Dtmf(digit=_s(e, "event"), source=ev.DtmfSource.REALTIME),),
        "input.transcript_delta": lambda e: (
            ev.CallerTranscript(item_id=_s(e, "item_id"), text=_s(e, "delta"), final=False),
        ),
        "input.transcript_done": lambda e: (
            ev.CallerTranscript(item_id=_s(e, "item_id"), text=_s(e, "transcript"), final=True),
        ),
        "input.transcript_failed": lambda e: (
            ev.CallerTranscriptFailed(item_id=_s(e, "item_id"), message=redact(_s(_m(e, "error"), "message"))),
        ),
        "input.transcript_segment": _ignore,
        "item.added": _item_added,
        "item.done": lambda e: (ev.ItemDone(item_id=_s(_m(e, "item"), "id")),),
        "item.truncated": lambda e: (
            ev.ItemTruncated(
                item_id=_s(e, "item_id"), content_index=_i(e, "content_index"), audio_end_ms=_i(e, "audio_end_ms")
            ),
        ),
        "item.deleted": lambda e: (ev.ItemDeleted(item_id=_s(e, "item_id")),),
        "item.retrieved": _ignore,
        "response.created": _response_created,
        "response.item_added": lambda e: (
            ev.OutputItemAdded(
                response_id=_s(e, "response_id"),
                item_id=_s(_m(e, "item"), "id"),
                item_type=ev.ItemType.of(_s(_m(e, "item"), "type")),
            ),
        ),
        "response.item_done": _ignore,
        "response.part_added": _ignore,
        "response.part_done": _ignore,
        "response.function_delta": _ignore,
        "response.function_done": lambda e: (
            ev.FunctionCall(
                response_id=_s(e, "response_id"),
                item_id=_s(e, "item_id"),
                call_id=_s(e, "call_id"),
                name=_s(e, "name"),
                arguments=_s(e, "arguments"),
            ),
        ),
        "response.done": _response_done,
        "audio.delta": _audio_delta,
        "audio.done": lambda e: (ev.AudioDone(response_id=_s(e, "response_id"), item_id=_s(e, "item_id")),),
        "audio_transcript.delta": lambda e: (
            ev.AgentTranscript(
                response_id=_s(e, "response_id"), item_id=_s(e, "item_id"), text=_s(e, "delta"), final=False
            ),
        ),
        "audio_transcript.done": lambda e: (
            ev.AgentTranscript(
                response_id=_s(e, "response_id"), item_id=_s(e, "item_id"), text=_s(e, "transcript"), final=True
            ),
        ),
        "text.delta": lambda e: (
            ev.AgentText(response_id=_s(e, "response_id"), item_id=_s(e, "item_id"), text=_s(e, "delta"), final=False),
        ),
        "text.done": lambda e: (
            ev.AgentText(response_id=_s(e, "response_id"), item_id=_s(e, "item_id"), text=_s(e, "text"), final=True),
        ),
        "rate_limits": _rate_limits,
        "error": _error,
        "transcription_session.updated": _ignore,
        "output_buffer.started": _ignore,
        "output_buffer.stopped": _ignore,
        "output_buffer.cleared": _ignore,
        "mcp": _ignore,
    }
)


def decoders(
    session_paths: Mapping[str, tuple[str, ...]], format_name: Callable[[Any], str | None]
) -> Mapping[str, Decoder]:
    """The dialect's decoders: :data:`DECODERS`, and ``session.updated`` read where ``session_paths`` put the voice
    and the output format."""
    updated = session_configured(session_paths["voice"], session_paths["output_format"], format_name)
    return MappingProxyType({**DECODERS, "session.updated": updated})


# --------------------------------------------------------------------------------------------------------------
# Encoding


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# How an out-of-band response is asked to read a text verbatim (``ev.Say``); the emulator reads the text back from it.
VERBATIM: Final = (
    'Read the following text aloud exactly as written, word for word, adding nothing before or after. Say: "'
)
SAY_METADATA: Final[Mapping[str, str]] = MappingProxyType({"callbridge": "say"})


def verbatim(text: str) -> str:
    """The instructions of a say: the text, quoted at the end (see :data:`VERBATIM`)."""
    return f'{VERBATIM}{text}"'


# How the post-call question (ev.AskText) is put: what to answer, then its form as JSON at the very end, which the
# emulator reads back (:func:`post_call_form`) to answer deterministically from the call's transcript.
POST_CALL_METADATA: Final[Mapping[str, str]] = MappingProxyType({"callbridge": "post_call"})
POST_CALL_FORM: Final = "The form of the answer (JSON): "
POST_CALL_ASK: Final = (
    "The call is over and the caller has hung up: do not speak to them. Answer in text only, with one JSON object and "
    'nothing else, with the keys "summary", "disposition" and "fields". "summary": two or three sentences for the '
    "next agent (what the caller wanted, what was done, what is left), or null if the form does not ask for one. "
    '"disposition": exactly one of the form\'s dispositions, or null if it lists none. "fields": an object that fits '
    "the form's JSON Schema, filled only from what was said in the call, or null if it has none. Never invent "
    "anything that was not said. "
)


def post_call_instructions(form: Mapping[str, Any]) -> str:
    """The post-call question's instructions; ``form``: ``{"summary": bool, "dispositions": [...], "fields":
    <JSON Schema> | None}``, written last (see :data:`POST_CALL_FORM`)."""
    return POST_CALL_ASK + POST_CALL_FORM + _dumps(form)


def post_call_form(instructions: str | None) -> dict[str, Any] | None:
    """The form a post-call question's instructions end with, or None if they are not one."""
    if not instructions or not instructions.startswith(POST_CALL_ASK):
        return None
    _, mark, form = instructions.partition(POST_CALL_FORM)
    try:
        value = orjson.loads(form) if mark else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def hold_answers(profile: AgentProfile) -> AgentProfile:
    """An orchestrated call's profile: the service's VAD still marks turns, but neither answers them
    (``create_response``) nor cancels what is playing (``interrupt_response``: the bridge cancels an active response
    itself on a barge-in, so no cancel ever meets a response that is not active)."""
    td = profile.turn_detection
    if td is None:
        return profile
    held = td.model_copy(update={"create_response": False, "interrupt_response": False})
    return profile.model_copy(update={"turn_detection": held})


def encoders(
    build_session: Callable[[AgentProfile], dict[str, Any]],
    say_modalities: Mapping[str, Any],
    text_modalities: Mapping[str, Any],
) -> Mapping[type[ev.Command], Encoder]:
    """One encoder per command, the same event names and response body (:func:`response_body`) in beta and GA; the
    session bodies differ. ``say_modalities``: the response fields that make a say audio (GA ``output_modalities``,
    beta ``modalities``); ``text_modalities``: those that make a response text only
    (:class:`~bridge.events.AskText`)."""
    names = CLIENT_EVENTS
    append = APPEND.encode  # the audio hot path: 50 frames a second per call

    def say(c: ev.Say) -> Sequence[str]:
        """An out-of-band response (``conversation: "none"``): spoken, kept out of the conversation."""
        response = {**response_body(verbatim(c.text), True, SAY_METADATA), **say_modalities}
        return (_dumps({"type": names["response.create"], "response": response}),)

    def ask_text(c: ev.AskText) -> Sequence[str]:
        """An out-of-band response (``conversation: "none"``) in text only: answered, never heard or kept."""
        response = {**response_body(c.instructions, True, dict(c.metadata)), **text_modalities}
        return (_dumps({"type": names["response.create"], "response": response}),)

    def response_create(instructions: str | None, out_of_band: bool, metadata: Mapping[str, str]) -> str:
        return _dumps(
            {"type": names["response.create"], "response": response_body(instructions, out_of_band, metadata)}
        )

    def function_output(c: ev.FunctionOutput) -> Sequence[str]:
        item = {"type": "function_call_output", "call_id": c.call_id, "output": c.output}
        frame = _dumps({"type": names["item.create"], "item": item})
        return (frame, response_create(None, False, {})) if c.respond else (frame,)

    def add_text(c: ev.AddText) -> Sequence[str]:
        item = {"type": "message", "role": str(c.role), "content": [{"type": "input_text", "text": c.text}]}
        return (_dumps({"type": names["item.create"], "item": item}),)

    def update(c: ev.UpdateSession | ev.StartSession) -> str:
        return _dumps({"type": names["session.update"], "session": build_session(c.profile)})

    def start(c: ev.StartSession) -> Sequence[str]:
        """The configuration, then the history as items: the service takes them in order."""
        return (update(c), *(frame for text in c.history for frame in add_text(text)))

    def truncate(c: ev.Truncate) -> Sequence[str]:
        return (
            _dumps(
                {
                    "type": names["item.truncate"],
                    "item_id": c.item_id,
                    "content_index": c.content_index,
                    "audio_end_ms": max(0, int(c.audio_end_ms)),
                }
            ),
        )

    table: dict[type[ev.Command], Encoder] = {
        ev.StartSession: start,
        ev.UpdateSession: lambda c: (update(c),),
        ev.AppendAudio: lambda c: (append(c.audio),),
        ev.CommitAudio: lambda c: (_dumps({"type": names["input.commit"]}),),
        ev.ClearAudio: lambda c: (_dumps({"type": names["input.clear"]}),),
        ev.CreateResponse: lambda c: (response_create(c.instructions, c.out_of_band, dict(c.metadata)),),
        ev.Say: say,
        ev.AskText: ask_text,
        ev.CancelResponse: lambda c: (
            _dumps({"type": names["response.cancel"], **({"response_id": c.response_id} if c.response_id else {})}),
        ),
        ev.Truncate: truncate,
        ev.FunctionOutput: function_output,
        ev.AddText: add_text,
        ev.DeleteItem: lambda c: (_dumps({"type": names["item.delete"], "item_id": c.item_id}),),
    }
    return MappingProxyType(table)


# --------------------------------------------------------------------------------------------------------------
# Session builders


def check_format(dialect: str, profile: AgentProfile, capabilities: Capabilities) -> None:
    """The profile's audio format must be one the dialect accepts both ways."""
    wanted = PROFILE_FORMATS[profile.audio_format]
    if wanted not in capabilities.input_formats or wanted not in capabilities.output_formats:
        raise DialectFieldError(dialect, "audio_format", f"{wanted} is not a format of this dialect")


def check_extra(dialect: str, profile: AgentProfile, allowed: frozenset[str]) -> dict[str, Any]:
    """The profile's raw extra fields, each one the dialect knows; a Realtime dialect has no ``delegation``."""
    if profile.delegation is not None:
        raise DialectFieldError(dialect, "delegation", "only Live delegates tasks to a Responses backend")
    for key in profile.extra:
        if key not in allowed:
            raise DialectFieldError(dialect, f"session.{key}")
    return dict(profile.extra)


def tools(profile: AgentProfile) -> dict[str, Any]:
    if not profile.tools:
        return {}
    return {"tools": [t.wire() for t in profile.tools], "tool_choice": profile.tool_choice}


def input_audio(profile: AgentProfile) -> dict[str, Any]:
    """The profile's ``transcription`` and ``noise_reduction`` of the caller's audio, each only if set, spelled as
    both dialects spell them (beta puts them at the top of the session, named ``input_audio_...``; GA under
    ``audio.input``)."""
    out: dict[str, Any] = {}
    if profile.input_transcription is not None:
        out["transcription"] = profile.input_transcription.model_dump(exclude_none=True)
    if profile.noise_reduction is not None:
        out["noise_reduction"] = {"type": profile.noise_reduction}
    return out


def turn_detection(dialect: str, profile: AgentProfile, *, idle_timeout: bool) -> dict[str, Any] | None:
    td = profile.turn_detection
    if td is None:
        return None
    if isinstance(td, ServerVad):
        out: dict[str, Any] = td.model_dump(exclude={"idle_timeout_ms"})
        if td.idle_timeout_ms is not None:
            if not idle_timeout:
                raise DialectFieldError(dialect, "turn_detection.idle_timeout_ms")
            out["idle_timeout_ms"] = td.idle_timeout_ms
        return out
    assert isinstance(td, SemanticVad)
    return td.model_dump()


def response_body(instructions: str | None, out_of_band: bool, metadata: Mapping[str, str]) -> dict[str, Any]:
    """``response.create``'s ``response``: modalities, voice and format are the session's in both dialects."""
    response: dict[str, Any] = {}
    if instructions is not None:
        response["instructions"] = instructions
    if out_of_band:
        response["conversation"] = "none"
    if metadata:
        response["metadata"] = dict(metadata)
    return response


# A Realtime dialect (beta or GA): a :class:`Dialect` with what the family shares filled in (the path, handshake,
# capabilities, audio append, client events, common server events, response body and orchestrated profile); each
# dialect adds its own name, session shape, event names, encoders, decoders, credential endpoint and service.
realtime_dialect: Final = partial(
    Dialect,
    path="/realtime",
    handshake=HANDSHAKE,
    capabilities=CAPABILITIES,
    append=APPEND,
    client_events=CLIENT_EVENTS,
    common_server_events=SERVER_EVENTS,
    build_response=response_body,
    hold_answers=hold_answers,
)


# --------------------------------------------------------------------------------------------------------------
# The service's shared schema pieces (what both accept; field lists follow the openai package's models)

VOICES: Final = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
REALTIME_ONLY_VOICES: Final = frozenset({"marin", "cedar"})  # only on gpt-realtime models
DEFAULT_INSTRUCTIONS: Final = "You are a helpful, witty, and friendly AI. Keep your answers short."

MAX_TOKENS: Final = OneOf(Int(1, 4096), Enum("inf"))
TRACING: Final = Nullable(OneOf(Enum("auto"), Obj({"group_id": Str(), "metadata": AnyValue(), "workflow_name": Str()})))
FUNCTION_TOOL: Final = Obj(
    {"type": Enum("function"), "name": Str(), "description": Str(), "parameters": AnyValue()}, required=("name",)
)
SERVER_VAD_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }
)
SEMANTIC_VAD: Final = Obj(
    {
        "type": Enum("semantic_vad"),
        "eagerness": Enum("low", "medium", "high", "auto"),
        "create_response": Bool(),
        "interrupt_response": Bool(),
    },
    defaults={"eagerness": "auto", "create_response": True, "interrupt_response": True},
)
SERVER_VAD_FIELDS: Final[Mapping[str, Node]] = MappingProxyType(
    {
        "type": Enum("server_vad"),
        "threshold": Num(0.0, 1.0),
        "prefix_padding_ms": Int(0),
        "silence_duration_ms": Int(0),
        "create_response": Bool(),
        "interrupt_response": Bool(),
    }
)


def realtime_model(model: str) -> bool:
    return model.startswith("gpt-realtime")  # gpt-realtime, gpt-realtime-2025-08-28, gpt-realtime-mini, ...


def voice_on(voice: str, model: str) -> bool:
    """Whether ``model`` speaks in ``voice``: marin and cedar only on gpt-realtime models (docs/protocol.md)."""
    return voice not in REALTIME_ONLY_VOICES or realtime_model(model)


def one_modality(values: list[Any], path: str) -> None:
    if len(values) != 1:
        raise invalid_value(path, values, detail="Supported combinations are: ['text'] and ['audio'].")


def item_schema(content_types: tuple[str, ...]) -> Node:
    common: dict[str, Node] = {
        "id": Str(),
        "object": Enum("realtime.item"),
        "status": Enum("completed", "incomplete", "in_progress"),
    }
    content = Obj(
        {
            "type": Enum(*content_types),
            "text": Str(),
            "audio": Str(),
            "transcript": Nullable(Str()),
            "image_url": Str(),
            "detail": Enum("auto", "low", "high"),
            "id": Str(),
        }
    )
    return Tagged(
        "type",
        {
            "message": Obj(
                {
                    **common,
                    "type": Enum("message"),
                    "role": Enum("user", "assistant", "system"),
                    "content": ListOf(content),
                },
                required=("role", "content"),
            ),
            "function_call": Obj(
                {**common, "type": Enum("function_call"), "name": Str(), "call_id": Str(), "arguments": Str()},
                required=("name", "arguments"),
            ),
            "function_call_output": Obj(
                {**common, "type": Enum("function_call_output"), "call_id": Str(), "output": Str()},
                required=("call_id", "output"),
            ),
        },
    )


def _envelopes() -> Mapping[str, Obj]:
    base: dict[str, Node] = {"type": Str(), "event_id": Str()}
    return MappingProxyType(
        {
            "session.update": Obj({**base, "session": AnyValue()}, required=("session",)),
            "input.append": Obj({**base, APPEND.audio_field: Str()}, required=(APPEND.audio_field,)),
            "input.commit": Obj(base),
            "input.clear": Obj(base),
            "item.create": Obj({**base, "previous_item_id": Nullable(Str()), "item": AnyValue()}, required=("item",)),
            "item.truncate": Obj(
                {**base, "item_id": Str(), "content_index": Int(0), "audio_end_ms": Int(0)},
                required=("item_id", "content_index", "audio_end_ms"),
            ),
            "item.delete": Obj({**base, "item_id": Str()}, required=("item_id",)),
            "item.retrieve": Obj({**base, "item_id": Str()}, required=("item_id",)),
            "response.create": Obj({**base, "response": AnyValue()}),
            "response.cancel": Obj({**base, "response_id": Str()}),
            "output_buffer.clear": Obj({**base, "response_id": Str()}),
        }
    )


CLIENT_ENVELOPES: Final = _envelopes()
