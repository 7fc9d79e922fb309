"""The Realtime wire dialects, as data.

Each dialect is one :class:`Dialect` table: how to connect (URL, headers, credential endpoint), how its server event
names map onto the bridge's canonical event keys, and how an :class:`AgentProfile` becomes its ``session.update`` and
``response.create`` bodies. The protocol core (``protocol.py``), the client and the emulator read these tables; no
other module branches on the dialect. Adding a dialect is a new table plus its tests.

Wire facts are checked against the ``openai`` package's typed models (``openai.types.beta.realtime`` for beta,
``openai.types.realtime`` for GA): see ``docs/protocol.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from bridge.errors import DialectFieldError
from bridge.realtime.profile import AgentProfile, SemanticVad, ServerVad

# Canonical server-event keys. Every dialect maps its wire names onto these; the decoders in protocol.py are keyed
# by them. Events whose name is the same in both dialects appear in COMMON_SERVER_EVENTS.
COMMON_SERVER_EVENTS: Mapping[str, str] = MappingProxyType(
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


@dataclass(frozen=True)
class Credential:
    """A short-lived credential minted by a dialect's credential endpoint."""

    value: str
    expires_at: float  # unix seconds

    def __repr__(self) -> str:  # never print the secret
        return f"Credential(expires_at={self.expires_at})"


@dataclass(frozen=True)
class Dialect:
    name: str
    default_model: str
    extra_headers: Mapping[str, str]
    # wire name -> canonical key, dialect-specific names only (merged with COMMON_SERVER_EVENTS)
    own_server_events: Mapping[str, str]
    # wire names that mean the same canonical event but are not the primary spelling (decode only)
    alias_server_events: Mapping[str, str]
    build_session: Callable[[AgentProfile], dict[str, Any]]
    build_response: Callable[[str | None, bool, Mapping[str, str]], dict[str, Any]]
    session_fields: frozenset[str]  # top-level session fields this dialect accepts
    output_audio_content_type: str  # inside items: beta "audio", GA "output_audio"
    credential_path: str
    build_credential_request: Callable[[AgentProfile], dict[str, Any]]
    parse_credential: Callable[[Mapping[str, Any]], Credential]
    server_events: Mapping[str, str] = field(init=False)  # wire -> canonical, everything this dialect decodes
    wire_names: Mapping[str, str] = field(init=False)  # canonical -> primary wire name (the emulator encodes)

    def __post_init__(self) -> None:
        merged = {**COMMON_SERVER_EVENTS, **self.own_server_events}
        object.__setattr__(self, "wire_names", MappingProxyType({c: w for w, c in merged.items()}))
        object.__setattr__(self, "server_events", MappingProxyType({**merged, **self.alias_server_events}))

    def url(self, base: str, model: str | None = None) -> str:
        """``base`` is e.g. ``wss://api.openai.com/v1`` or ``ws://127.0.0.1:8765/v1?drop_after_s=3``.

        A query on ``base`` is kept (the emulator takes fault settings that way).
        """
        path, _, query = base.partition("?")
        params = urlencode({"model": model or self.default_model})
        return f"{path.rstrip('/')}/realtime?{params}" + (f"&{query}" if query else "")

    def headers(self, credential: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential}", **self.extra_headers}

    def wire(self, canonical: str) -> str:
        return self.wire_names[canonical]

    def __repr__(self) -> str:
        return f"Dialect({self.name})"


# --------------------------------------------------------------------------------------------------------------
# Session builders


def _check_extra(dialect: str, profile: AgentProfile, allowed: frozenset[str]) -> dict[str, Any]:
    for key in profile.extra:
        if key not in allowed:
            raise DialectFieldError(dialect, f"session.{key}")
    return dict(profile.extra)


def _tools(profile: AgentProfile) -> dict[str, Any]:
    if not profile.tools:
        return {}
    return {"tools": [t.wire() for t in profile.tools], "tool_choice": profile.tool_choice}


def _turn_detection(dialect: str, profile: AgentProfile, *, idle_timeout: bool) -> dict[str, Any] | None:
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


_BETA_FORMATS = {"pcm16": "pcm16", "g711_ulaw": "g711_ulaw", "g711_alaw": "g711_alaw"}
_BETA_SESSION_FIELDS = frozenset(
    {
        "modalities", "instructions", "voice", "input_audio_format", "output_audio_format",
        "input_audio_transcription", "input_audio_noise_reduction", "turn_detection", "tools", "tool_choice",
        "temperature", "max_response_output_tokens", "speed", "tracing", "model",
    }
)  # fmt: skip


def _beta_session(profile: AgentProfile) -> dict[str, Any]:
    extra = _check_extra("beta", profile, _BETA_SESSION_FIELDS)
    # Beta has no audio-only modality: audio always comes with its text transcript.
    modalities = ["text"] if profile.output_modalities == ("text",) else ["audio", "text"]
    session: dict[str, Any] = {
        "modalities": modalities,
        "instructions": profile.instructions,
        "voice": profile.voice,
        "input_audio_format": _BETA_FORMATS[profile.audio_format],
        "output_audio_format": _BETA_FORMATS[profile.audio_format],
        "turn_detection": _turn_detection("beta", profile, idle_timeout=False),
        **_tools(profile),
    }
    if profile.input_transcription is not None:
        session["input_audio_transcription"] = profile.input_transcription.model_dump(exclude_none=True)
    if profile.noise_reduction is not None:
        session["input_audio_noise_reduction"] = {"type": profile.noise_reduction}
    if profile.temperature is not None:
        session["temperature"] = profile.temperature
    if profile.speed is not None:
        session["speed"] = profile.speed
    if profile.max_output_tokens is not None:
        session["max_response_output_tokens"] = profile.max_output_tokens
    return {**session, **extra}


def _beta_response(instructions: str | None, out_of_band: bool, metadata: Mapping[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = {}  # modalities: the session's
    if instructions is not None:
        response["instructions"] = instructions
    if out_of_band:
        response["conversation"] = "none"
    if metadata:
        response["metadata"] = dict(metadata)
    return response


_GA_FORMATS: Mapping[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},  # GA audio/pcm allows only 24 kHz
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
_GA_SESSION_FIELDS = frozenset(
    {
        "type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
        "max_output_tokens", "tracing", "truncation", "prompt", "include", "parallel_tool_calls", "reasoning",
    }
)  # fmt: skip


def _ga_session(profile: AgentProfile) -> dict[str, Any]:
    extra = _check_extra("GA", profile, _GA_SESSION_FIELDS)
    if profile.temperature is not None:
        raise DialectFieldError("GA", "temperature", "GA sessions have no temperature")
    fmt = _GA_FORMATS[profile.audio_format]
    audio_in: dict[str, Any] = {
        "format": dict(fmt),
        "turn_detection": _turn_detection("GA", profile, idle_timeout=True),
    }
    if profile.input_transcription is not None:
        audio_in["transcription"] = profile.input_transcription.model_dump(exclude_none=True)
    if profile.noise_reduction is not None:
        audio_in["noise_reduction"] = {"type": profile.noise_reduction}
    audio_out: dict[str, Any] = {"format": dict(fmt), "voice": profile.voice}
    if profile.speed is not None:
        audio_out["speed"] = profile.speed
    session: dict[str, Any] = {
        "type": "realtime",  # required in every GA session.update
        "instructions": profile.instructions,
        "output_modalities": list(profile.output_modalities),
        "audio": {"input": audio_in, "output": audio_out},
        **_tools(profile),
    }
    if profile.model is not None:
        session["model"] = profile.model
    if profile.max_output_tokens is not None:
        session["max_output_tokens"] = profile.max_output_tokens
    return {**session, **extra}


def _ga_response(instructions: str | None, out_of_band: bool, metadata: Mapping[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = {}
    if instructions is not None:
        response["instructions"] = instructions
    if out_of_band:
        response["conversation"] = "none"
    if metadata:
        response["metadata"] = dict(metadata)
    return response


def _beta_credential_request(profile: AgentProfile) -> dict[str, Any]:
    return {"model": profile.model or BETA.default_model, "voice": profile.voice}


def _beta_parse_credential(body: Mapping[str, Any]) -> Credential:
    secret = body["client_secret"]
    return Credential(value=str(secret["value"]), expires_at=float(secret["expires_at"]))


def _ga_credential_request(profile: AgentProfile) -> dict[str, Any]:
    return {"session": {"type": "realtime", "model": profile.model or GA.default_model}}


def _ga_parse_credential(body: Mapping[str, Any]) -> Credential:
    return Credential(value=str(body["value"]), expires_at=float(body["expires_at"]))


BETA = Dialect(
    name="beta",
    default_model="gpt-4o-realtime-preview",
    extra_headers=MappingProxyType({"OpenAI-Beta": "realtime=v1"}),
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
    alias_server_events=MappingProxyType({}),
    build_session=_beta_session,
    build_response=_beta_response,
    session_fields=_BETA_SESSION_FIELDS,
    output_audio_content_type="audio",
    credential_path="/realtime/sessions",
    build_credential_request=_beta_credential_request,
    parse_credential=_beta_parse_credential,
)

GA = Dialect(
    name="ga",
    default_model="gpt-realtime",
    extra_headers=MappingProxyType({}),
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
    build_session=_ga_session,
    build_response=_ga_response,
    session_fields=_GA_SESSION_FIELDS,
    output_audio_content_type="output_audio",
    credential_path="/realtime/client_secrets",
    build_credential_request=_ga_credential_request,
    parse_credential=_ga_parse_credential,
)

# Every wire spelling of an audio format -> the bridge's neutral name (pcm16, g711_ulaw, g711_alaw).
AUDIO_FORMAT_NAMES: Mapping[str, str] = MappingProxyType(
    {**{v: k for k, v in _BETA_FORMATS.items()}, **{v["type"]: k for k, v in _GA_FORMATS.items()}}
)

DIALECTS: Mapping[str, Dialect] = MappingProxyType({d.name: d for d in (BETA, GA)})


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; expected one of {sorted(DIALECTS)}") from None
