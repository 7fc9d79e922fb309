"""The Realtime GA dialect: ``/v1/realtime`` without the beta header, a session nested under ``audio`` whose
``type`` is required in every ``session.update``.

Checked against ``openai.types.realtime``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from bridge.errors import DialectFieldError
from bridge.realtime.dialects import common
from bridge.realtime.dialects.base import Credential, MintRequest, ResponseInfo, Service, Usage
from bridge.realtime.dialects.schema import (
    AnyValue,
    Bool,
    Enum,
    Int,
    ListOf,
    Nullable,
    Num,
    Obj,
    OneOf,
    Str,
    Tagged,
)
from bridge.realtime.profile import AgentProfile

NAME: Final = "ga"
LABEL: Final = "GA"
DEFAULT_MODEL: Final = "gpt-realtime"
PCM_RATE: Final = 24000  # GA audio/pcm allows only 24 kHz
# the profile's word -> GA's spelling
FORMATS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "pcm16": MappingProxyType({"type": "audio/pcm", "rate": PCM_RATE}),
        "g711_ulaw": MappingProxyType({"type": "audio/pcmu"}),
        "g711_alaw": MappingProxyType({"type": "audio/pcma"}),
    }
)
_FORMAT_NAMES: Final = {wire["type"]: name for name, wire in FORMATS.items()}
SESSION_FIELDS: Final = frozenset(
    {
        "type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
        "max_output_tokens", "tracing", "truncation", "prompt", "include", "parallel_tool_calls", "reasoning",
    }
)  # fmt: skip


def _format_value(name: str) -> dict[str, Any]:
    return dict(FORMATS[name])


def _format_name(value: Any) -> str | None:
    return _FORMAT_NAMES.get(value.get("type")) if isinstance(value, Mapping) else None


# --------------------------------------------------------------------------------------------------------------
# The bridge's side: session.update, response.create, the credential request


def build_session(profile: AgentProfile) -> dict[str, Any]:
    extra = common.check_extra(LABEL, profile, SESSION_FIELDS)
    common.check_format(LABEL, profile, common.CAPABILITIES)
    if profile.temperature is not None:
        raise DialectFieldError(LABEL, "temperature", "GA sessions have no temperature")
    audio_in: dict[str, Any] = {
        "format": _format_value(profile.audio_format),
        "turn_detection": common.turn_detection(LABEL, profile, idle_timeout=True),
        **common.input_audio(profile),
    }
    audio_out: dict[str, Any] = {"format": _format_value(profile.audio_format), "voice": profile.voice}
    if profile.speed is not None:
        audio_out["speed"] = profile.speed
    session: dict[str, Any] = {
        "type": "realtime",  # required in every GA session.update
        "instructions": profile.instructions,
        "output_modalities": list(profile.output_modalities),
        "audio": {"input": audio_in, "output": audio_out},
        **common.tools(profile),
    }
    if profile.model is not None:
        session["model"] = profile.model
    if profile.max_output_tokens is not None:
        session["max_output_tokens"] = profile.max_output_tokens
    return {**session, **extra}


def _credential_request(profile: AgentProfile) -> dict[str, Any]:
    return {"session": {"type": "realtime", "model": profile.model or DEFAULT_MODEL}}


def _parse_credential(body: Mapping[str, Any]) -> Credential:
    return Credential(value=str(body["value"]), expires_at=float(body["expires_at"]))


# --------------------------------------------------------------------------------------------------------------
# The service's side: what it accepts, and how it spells its answers

_FORMAT = Tagged(
    "type",
    {
        "audio/pcm": Obj({"type": Enum("audio/pcm"), "rate": Enum(PCM_RATE)}, defaults={"rate": PCM_RATE}),
        "audio/pcmu": Obj({"type": Enum("audio/pcmu")}),
        "audio/pcma": Obj({"type": Enum("audio/pcma")}),
    },
)
_VOICE = OneOf(Enum(*common.VOICES), Obj({"id": Str()}, required=("id",)))
_SESSION = Obj(
    {
        "type": Enum("realtime"),
        "model": Str(),
        "instructions": Str(),
        "output_modalities": ListOf(Enum("text", "audio"), check=common.one_modality),
        "audio": Obj(
            {
                "input": Obj(
                    {
                        "format": _FORMAT,
                        "transcription": Nullable(
                            Obj(
                                {
                                    "model": Str(),
                                    "language": Str(),
                                    "prompt": Str(),
                                    "delay": Enum("minimal", "low", "medium", "high", "xhigh"),
                                    "keywords": ListOf(Str()),
                                    "languages": ListOf(Str()),
                                }
                            )
                        ),
                        "noise_reduction": Nullable(
                            Obj({"type": Enum("near_field", "far_field"), "strength": Num(0.0, 1.0)})
                        ),
                        "turn_detection": Nullable(
                            Tagged(
                                "type",
                                {
                                    "server_vad": Obj(
                                        {**common.SERVER_VAD_FIELDS, "idle_timeout_ms": Nullable(Int(0))},
                                        defaults={**common.SERVER_VAD_DEFAULTS, "idle_timeout_ms": None},
                                    ),
                                    "semantic_vad": common.SEMANTIC_VAD,
                                },
                            )
                        ),
                    },
                    merge=True,
                ),
                "output": Obj({"format": _FORMAT, "voice": _VOICE, "speed": Num(0.25, 1.5)}, merge=True),
            },
            merge=True,
        ),
        "tools": ListOf(Tagged("type", {"function": common.FUNCTION_TOOL, "mcp": Obj({}, open=True)})),
        "tool_choice": OneOf(
            Enum("none", "auto", "required"),
            Obj({"type": Enum("function", "mcp"), "name": Str(), "server_label": Str()}, required=("type",)),
        ),
        "max_output_tokens": common.MAX_TOKENS,
        "tracing": common.TRACING,
        "truncation": AnyValue(),
        "prompt": AnyValue(),
        "include": Nullable(ListOf(Enum("item.input_audio_transcription.logprobs"))),
        "parallel_tool_calls": Bool(),
        "reasoning": Nullable(Obj({"effort": Str()})),
    },
    required=("type",),
    merge=True,
)
_RESPONSE = Obj(
    {
        "audio": Obj({"output": Obj({"format": _FORMAT, "voice": _VOICE})}),
        "conversation": Enum("auto", "none"),
        "input": ListOf(AnyValue()),
        "instructions": Str(),
        "max_output_tokens": common.MAX_TOKENS,
        "metadata": Nullable(Obj({}, open=True)),
        "output_modalities": ListOf(Enum("text", "audio"), check=common.one_modality),
        "parallel_tool_calls": Bool(),
        "prompt": AnyValue(),
        "reasoning": AnyValue(),
        "tool_choice": AnyValue(),
        "tools": ListOf(AnyValue()),
    }
)
_CONTENT_TYPES: Final = MappingProxyType({"audio": "output_audio", "text": "output_text"})


def _defaults(model: str) -> dict[str, Any]:
    return {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": common.DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "audio": {
            "input": {
                "format": _format_value("pcm16"),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {"type": "server_vad", **common.SERVER_VAD_DEFAULTS, "idle_timeout_ms": None},
            },
            "output": {
                "format": _format_value("pcm16"),
                "voice": "marin" if common.realtime_model(model) else "alloy",
                "speed": 1.0,
            },
        },
        "include": None,
    }


def _response_fields(r: ResponseInfo) -> dict[str, Any]:
    return {
        "output_modalities": list(r.output_modalities),
        "max_output_tokens": "inf",
        "audio": {"output": {"format": r.output_format, "voice": r.voice}},
    }


def _usage(u: Usage) -> dict[str, Any]:
    return common.usage_body(
        u,
        {
            "text_tokens": u.input_text,
            "audio_tokens": u.input_audio,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
    )


def _mint_request(body: Mapping[str, Any]) -> MintRequest:
    """``POST /realtime/client_secrets``: ``{"session": {...}, "expires_after": {...}}`` and nothing else."""
    return MintRequest(
        body.get("session", {"type": "realtime"}),
        body.get("expires_after"),
        frozenset(body) - {"session", "expires_after"},
        "session",
    )


def _mint_response(value: str, expires_at: int, session: dict[str, Any]) -> dict[str, Any]:
    return {"value": value, "expires_at": expires_at, "session": session}


_SESSION_PATHS: Final = MappingProxyType(
    {
        "model": ("model",),
        "instructions": ("instructions",),
        "voice": ("audio", "output", "voice"),
        "input_format": ("audio", "input", "format"),
        "output_format": ("audio", "output", "format"),
        "output_modalities": ("output_modalities",),
        "transcription": ("audio", "input", "transcription"),
        "turn_detection": ("audio", "input", "turn_detection"),
        "tools": ("tools",),
    }
)

SERVICE = Service(
    client_envelopes=common.CLIENT_ENVELOPES,
    session_schema=_SESSION,
    item_schema=common.item_schema(("input_text", "input_audio", "input_image", "output_text", "output_audio")),
    response_schema=_RESPONSE,
    session_defaults=_defaults,
    session_paths=_SESSION_PATHS,
    item_object=None,
    item_done_event=True,  # conversation.item.added, then conversation.item.done
    content_types=_CONTENT_TYPES,
    rate_limits_on_created=(),
    rate_limits_after_done=("tokens",),
    obfuscation=True,
    name_on_function_done=True,
    response_fields=_response_fields,
    usage=_usage,
    mint_request=_mint_request,
    mint_response=_mint_response,
)

# --------------------------------------------------------------------------------------------------------------

GA = common.realtime_dialect(
    name=NAME,
    label=LABEL,
    default_model=DEFAULT_MODEL,
    encoders=common.encoders(build_session, {"output_modalities": ["audio"]}, {"output_modalities": ["text"]}),
    own_server_events=MappingProxyType(
        {
            "conversation.item.added": "item.added",
            "conversation.item.done": "item.done",
            "response.output_audio.delta": "audio.delta",
            "response.output_audio.done": "audio.done",
            "response.output_audio_transcript.delta": "audio_transcript.delta",
            "response.output_audio_transcript.done": "audio_transcript.done",
            "response.output_text.delta": "text.delta",
            "response.output_text.done": "text.done",
            "input_audio_buffer.timeout_triggered": "input.timeout",
            "input_audio_buffer.dtmf_event_received": "input.dtmf",
            "conversation.item.input_audio_transcription.segment": "input.transcript_segment",
            "output_audio_buffer.started": "output_buffer.started",
            "output_audio_buffer.stopped": "output_buffer.stopped",
            "output_audio_buffer.cleared": "output_buffer.cleared",
            "mcp_list_tools.in_progress": "mcp",
            "mcp_list_tools.completed": "mcp",
            "mcp_list_tools.failed": "mcp",
            "response.mcp_call_arguments.delta": "mcp",
            "response.mcp_call_arguments.done": "mcp",
            "response.mcp_call.in_progress": "mcp",
            "response.mcp_call.completed": "mcp",
            "response.mcp_call.failed": "mcp",
        }
    ),
    # GA still has conversation.item.created in its server-event union.
    alias_server_events=MappingProxyType({"conversation.item.created": "item.added"}),
    decoders=common.decoders(_SESSION_PATHS, _format_name),
    build_session=build_session,
    session_fields=SESSION_FIELDS,
    format_value=_format_value,
    format_name=_format_name,
    credential_path="/realtime/client_secrets",
    build_credential_request=_credential_request,
    parse_credential=_parse_credential,
    service=SERVICE,
)
