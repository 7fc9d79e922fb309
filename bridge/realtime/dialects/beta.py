"""The Realtime beta dialect: ``OpenAI-Beta: realtime=v1`` on ``/v1/realtime``, a flat session object.

Checked against ``openai.types.beta.realtime``. OpenAI has retired this shape on its own service (it answers
``beta_api_shape_disabled``); it stays for endpoints that keep it and for recordings made on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from bridge import events as ev
from bridge.realtime.dialects import common
from bridge.realtime.dialects.base import Credential, Decoder, MintRequest, ResponseInfo, Service, Usage
from bridge.realtime.dialects.schema import (
    AnyValue,
    ClientError,
    Enum,
    ListOf,
    Nullable,
    Num,
    Obj,
    Str,
    Tagged,
)
from bridge.realtime.profile import AgentProfile

NAME: Final = "beta"
LABEL: Final = "beta"
DEFAULT_MODEL: Final = "gpt-4o-realtime-preview"
FORMATS: Final[Mapping[str, str]] = MappingProxyType(
    {"pcm16": "pcm16", "g711_ulaw": "g711_ulaw", "g711_alaw": "g711_alaw"}  # the profile's word -> beta's
)
_FORMAT_NAMES: Final = {wire: name for name, wire in FORMATS.items()}
SESSION_FIELDS: Final = frozenset(
    {
        "modalities", "instructions", "voice", "input_audio_format", "output_audio_format",
        "input_audio_transcription", "input_audio_noise_reduction", "turn_detection", "tools", "tool_choice",
        "temperature", "max_response_output_tokens", "speed", "tracing", "model",
    }
)  # fmt: skip


def _format_name(value: Any) -> str | None:
    return _FORMAT_NAMES.get(value) if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------------------------
# The bridge's side: session.update, response.create, the credential request


def build_session(profile: AgentProfile) -> dict[str, Any]:
    extra = common.check_extra(LABEL, profile, SESSION_FIELDS)
    common.check_format(LABEL, profile, common.CAPABILITIES)
    # Beta has no audio-only modality: audio always comes with its text transcript.
    modalities = ["text"] if profile.output_modalities == ("text",) else ["audio", "text"]
    session: dict[str, Any] = {
        "modalities": modalities,
        "instructions": profile.instructions,
        "voice": profile.voice,
        "input_audio_format": FORMATS[profile.audio_format],
        "output_audio_format": FORMATS[profile.audio_format],
        "turn_detection": common.turn_detection(LABEL, profile, idle_timeout=False),
        **common.tools(profile),
        **{f"input_audio_{name}": value for name, value in common.input_audio(profile).items()},
    }
    if profile.temperature is not None:
        session["temperature"] = profile.temperature
    if profile.speed is not None:
        session["speed"] = profile.speed
    if profile.max_output_tokens is not None:
        session["max_response_output_tokens"] = profile.max_output_tokens
    return {**session, **extra}


def _credential_request(profile: AgentProfile) -> dict[str, Any]:
    return {"model": profile.model or DEFAULT_MODEL, "voice": profile.voice}


def _parse_credential(body: Mapping[str, Any]) -> Credential:
    secret = body["client_secret"]
    return Credential(value=str(secret["value"]), expires_at=float(secret["expires_at"]))


def _named_calls() -> Mapping[str, Decoder]:
    """One session's function calls, named: beta's ``response.function_call_arguments.done`` has no ``name``, so it
    comes from the item's ``response.output_item.added``, remembered by item id."""
    names: dict[str, str] = {}  # function_call item id -> the function's name
    item_added, function_done = common.DECODERS["response.item_added"], common.DECODERS["response.function_done"]

    def added(e: Mapping[str, Any]) -> Sequence[ev.Event]:
        events = item_added(e)
        for event in events:
            if isinstance(event, ev.OutputItemAdded) and event.item_type == ev.ItemType.FUNCTION_CALL:
                item = e.get("item")
                names[event.item_id] = str(item.get("name") or "") if isinstance(item, Mapping) else ""
        return events

    def named(event: ev.Event) -> ev.Event:
        if isinstance(event, ev.FunctionCall) and not event.name:
            return dataclasses.replace(event, name=names.get(event.item_id, ""))
        return event

    def done(e: Mapping[str, Any]) -> Sequence[ev.Event]:
        return tuple(named(event) for event in function_done(e))

    return MappingProxyType({"response.item_added": added, "response.function_done": done})


# --------------------------------------------------------------------------------------------------------------
# The service's side: what it accepts, and how it spells its answers


def _modalities(values: list[Any], path: str) -> None:
    if sorted(values) not in (["text"], ["audio", "text"]):
        raise ClientError(
            "invalid_value",
            f"Invalid modalities: {values}. Supported combinations are: ['text'] and ['audio', 'text'].",
            path,
        )


_FORMAT = Enum(*FORMATS.values())
_SESSION = Obj(
    {
        "modalities": ListOf(Enum("text", "audio"), check=_modalities),
        "instructions": Str(),
        "voice": Enum(*common.VOICES),
        "input_audio_format": _FORMAT,
        "output_audio_format": _FORMAT,
        "input_audio_transcription": Nullable(Obj({"model": Str(), "language": Str(), "prompt": Str()})),
        "input_audio_noise_reduction": Nullable(Obj({"type": Enum("near_field", "far_field")})),
        "turn_detection": Nullable(
            Tagged(
                "type",
                {
                    "server_vad": Obj(common.SERVER_VAD_FIELDS, defaults=common.SERVER_VAD_DEFAULTS),
                    "semantic_vad": common.SEMANTIC_VAD,
                },
                default="server_vad",
            )
        ),
        "tools": ListOf(common.FUNCTION_TOOL),
        "tool_choice": Str(),
        "temperature": Num(0.6, 1.2),
        "max_response_output_tokens": common.MAX_TOKENS,
        "speed": Num(0.25, 1.5),
        "tracing": common.TRACING,
        "model": Str(),
        "client_secret": AnyValue(),  # only meaningful when minting; accepted and ignored
    },
    merge=True,
)
_RESPONSE = Obj(
    {
        "conversation": Enum("auto", "none"),
        "input": ListOf(AnyValue()),
        "instructions": Str(),
        "max_response_output_tokens": common.MAX_TOKENS,
        "metadata": Nullable(Obj({}, open=True)),
        "modalities": ListOf(Enum("text", "audio"), check=_modalities),
        "output_audio_format": _FORMAT,
        "temperature": Num(0.6, 1.2),
        "tool_choice": Str(),
        "tools": ListOf(common.FUNCTION_TOOL),
        "voice": Enum(*common.VOICES),
    }
)
_CONTENT_TYPES: Final = MappingProxyType({"audio": "audio", "text": "text"})


def _defaults(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "modalities": ["audio", "text"],
        "instructions": common.DEFAULT_INSTRUCTIONS,
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": {"type": "server_vad", **common.SERVER_VAD_DEFAULTS},
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
        "tracing": None,
    }


def _response_fields(r: ResponseInfo) -> dict[str, Any]:
    return {
        "modalities": ["audio", "text"] if "audio" in r.output_modalities else ["text"],
        "voice": r.voice,
        "output_audio_format": r.output_format,
        "temperature": 0.8,
        "max_output_tokens": "inf",
    }


def _usage(u: Usage) -> dict[str, Any]:
    return common.usage_body(u, {"cached_tokens": 0, "text_tokens": u.input_text, "audio_tokens": u.input_audio})


def _mint_request(body: Mapping[str, Any]) -> MintRequest:
    """``POST /realtime/sessions``: the session config is the body itself, the expiry inside ``client_secret``."""
    session = {k: v for k, v in body.items() if k != "client_secret"}
    expires_after = (body.get("client_secret") or {}).get("expires_after")
    return MintRequest(session, expires_after, frozenset(), "")


_MINT_TURN_DETECTION: Final = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")


def _mint_response(value: str, expires_at: int, session: dict[str, Any]) -> dict[str, Any]:
    # SessionCreateResponse (beta) lists a narrower turn_detection and transcription than the session object.
    out = {k: v for k, v in session.items() if k not in {"input_audio_noise_reduction", "expires_at"}}
    td = session.get("turn_detection")
    if isinstance(td, Mapping):
        out["turn_detection"] = {k: td[k] for k in _MINT_TURN_DETECTION if k in td}
    tr = session.get("input_audio_transcription")
    if isinstance(tr, Mapping):
        out["input_audio_transcription"] = {"model": tr.get("model")}
    return {**out, "client_secret": {"value": value, "expires_at": expires_at}}


_SESSION_PATHS: Final = MappingProxyType(
    {
        "model": ("model",),
        "instructions": ("instructions",),
        "voice": ("voice",),
        "input_format": ("input_audio_format",),
        "output_format": ("output_audio_format",),
        "output_modalities": ("modalities",),
        "transcription": ("input_audio_transcription",),
        "turn_detection": ("turn_detection",),
        "tools": ("tools",),
    }
)

SERVICE = Service(
    client_envelopes=common.CLIENT_ENVELOPES,
    session_schema=_SESSION,
    item_schema=common.item_schema(("input_text", "input_audio", "item_reference", "text", "audio")),
    response_schema=_RESPONSE,
    session_defaults=_defaults,
    session_paths=_SESSION_PATHS,
    item_object="realtime.item",
    item_done_event=False,  # items appear once: conversation.item.created
    content_types=_CONTENT_TYPES,
    rate_limits_on_created=("requests", "tokens"),
    rate_limits_after_done=(),
    obfuscation=False,
    name_on_function_done=False,  # response.function_call_arguments.done carries no name
    response_fields=_response_fields,
    usage=_usage,
    mint_request=_mint_request,
    mint_response=_mint_response,
    retired=(
        "beta_api_shape_disabled",
        "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
    ),
)

# --------------------------------------------------------------------------------------------------------------

BETA = common.realtime_dialect(
    name=NAME,
    label=LABEL,
    default_model=DEFAULT_MODEL,
    extra_headers=MappingProxyType({"OpenAI-Beta": "realtime=v1"}),
    encoders=common.encoders(build_session, {"modalities": ["audio", "text"]}, {"modalities": ["text"]}),
    own_server_events=MappingProxyType(
        {
            "conversation.item.created": "item.added",
            "response.audio.delta": "audio.delta",
            "response.audio.done": "audio.done",
            "response.audio_transcript.delta": "audio_transcript.delta",
            "response.audio_transcript.done": "audio_transcript.done",
            "response.text.delta": "text.delta",
            "response.text.done": "text.done",
            "transcription_session.updated": "transcription_session.updated",
        }
    ),
    decoders=common.decoders(_SESSION_PATHS, _format_name),
    session_decoders=_named_calls,
    build_session=build_session,
    session_fields=SESSION_FIELDS,
    format_value=FORMATS.__getitem__,
    format_name=_format_name,
    credential_path="/realtime/sessions",
    build_credential_request=_credential_request,
    parse_credential=_parse_credential,
    service=SERVICE,
    openai_shutdown=dt.date(2026, 2, 27),  # the beta interface's announced end at OpenAI (docs/protocol.md)
)
