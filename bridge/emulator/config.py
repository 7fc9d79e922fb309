"""What each dialect's ``session.update``, ``response.create`` and ``conversation.item.create`` may hold, as data.

A session is stored in its dialect's own shape (beta flat, GA nested under ``audio``), so ``session.updated`` can
echo the whole object exactly as the client spelled it plus the server's defaults. The emulator's logic reads it
through :class:`SessionView`, built from each table's accessor paths, and never branches on the dialect.

Field lists follow the ``openai`` package's typed models (``openai.types.beta.realtime.session_update_event`` and
``openai.types.realtime.realtime_session_create_request``); range and value rules follow docs/protocol.md (GA
``audio/pcm`` is 24 kHz only; ``marin`` and ``cedar`` need a gpt-realtime model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bridge.emulator.schema import (
    AnyValue,
    Bool,
    ClientError,
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
    merge,
)

VOICES: Final = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
REALTIME_ONLY_VOICES: Final = frozenset({"marin", "cedar"})  # only on gpt-realtime models (docs/protocol.md)
DEFAULT_INSTRUCTIONS: Final = "You are a helpful, witty, and friendly AI. Keep your answers short."
SESSION_TTL_S: Final = 3600  # sessions last at most 60 minutes


# --------------------------------------------------------------------------------------------------------------
# Shared pieces

_MAX_TOKENS = OneOf(Int(1, 4096), Enum("inf"))
_TRACING = Nullable(OneOf(Enum("auto"), Obj({"group_id": Str(), "metadata": AnyValue(), "workflow_name": Str()})))
_FUNCTION_TOOL = Obj(
    {"type": Enum("function"), "name": Str(), "description": Str(), "parameters": AnyValue()}, required=("name",)
)
_SERVER_VAD_DEFAULTS: Final = {
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}
_SEMANTIC_VAD = Obj(
    {
        "type": Enum("semantic_vad"),
        "eagerness": Enum("low", "medium", "high", "auto"),
        "create_response": Bool(),
        "interrupt_response": Bool(),
    },
    defaults={"eagerness": "auto", "create_response": True, "interrupt_response": True},
)
_SERVER_VAD_FIELDS: Final[Mapping[str, Node]] = {
    "type": Enum("server_vad"),
    "threshold": Num(0.0, 1.0),
    "prefix_padding_ms": Int(0),
    "silence_duration_ms": Int(0),
    "create_response": Bool(),
    "interrupt_response": Bool(),
}


def _one_modality(values: list[Any], path: str) -> None:
    if len(values) != 1:
        raise invalid_value(path, values, detail="Supported combinations are: ['text'] and ['audio'].")


def _beta_modalities(values: list[Any], path: str) -> None:
    if sorted(values) not in (["text"], ["audio", "text"]):
        raise ClientError(
            "invalid_value",
            f"Invalid modalities: {values}. Supported combinations are: ['text'] and ['audio', 'text'].",
            path,
        )


# --------------------------------------------------------------------------------------------------------------
# Beta (flat)

_BETA_FORMAT = Enum("pcm16", "g711_ulaw", "g711_alaw")
_BETA_SESSION = Obj(
    {
        "modalities": ListOf(Enum("text", "audio"), check=_beta_modalities),
        "instructions": Str(),
        "voice": Enum(*VOICES),
        "input_audio_format": _BETA_FORMAT,
        "output_audio_format": _BETA_FORMAT,
        "input_audio_transcription": Nullable(Obj({"model": Str(), "language": Str(), "prompt": Str()})),
        "input_audio_noise_reduction": Nullable(Obj({"type": Enum("near_field", "far_field")})),
        "turn_detection": Nullable(
            Tagged(
                "type",
                {
                    "server_vad": Obj(_SERVER_VAD_FIELDS, defaults=_SERVER_VAD_DEFAULTS),
                    "semantic_vad": _SEMANTIC_VAD,
                },
                default="server_vad",
            )
        ),
        "tools": ListOf(_FUNCTION_TOOL),
        "tool_choice": Str(),
        "temperature": Num(0.6, 1.2),
        "max_response_output_tokens": _MAX_TOKENS,
        "speed": Num(0.25, 1.5),
        "tracing": _TRACING,
        "model": Str(),
        "client_secret": AnyValue(),  # only meaningful when minting; accepted and ignored
    },
    merge=True,
)


def _beta_defaults(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "modalities": ["audio", "text"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": {"type": "server_vad", **_SERVER_VAD_DEFAULTS},
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
        "tracing": None,
    }


# --------------------------------------------------------------------------------------------------------------
# GA (nested audio, type required)

_GA_FORMAT = Tagged(
    "type",
    {
        "audio/pcm": Obj({"type": Enum("audio/pcm"), "rate": Enum(24000)}, defaults={"rate": 24000}),
        "audio/pcmu": Obj({"type": Enum("audio/pcmu")}),
        "audio/pcma": Obj({"type": Enum("audio/pcma")}),
    },
)
_GA_VOICE = OneOf(Enum(*VOICES), Obj({"id": Str()}, required=("id",)))
_GA_SESSION = Obj(
    {
        "type": Enum("realtime"),
        "model": Str(),
        "instructions": Str(),
        "output_modalities": ListOf(Enum("text", "audio"), check=_one_modality),
        "audio": Obj(
            {
                "input": Obj(
                    {
                        "format": _GA_FORMAT,
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
                                        {**_SERVER_VAD_FIELDS, "idle_timeout_ms": Nullable(Int(0))},
                                        defaults={**_SERVER_VAD_DEFAULTS, "idle_timeout_ms": None},
                                    ),
                                    "semantic_vad": _SEMANTIC_VAD,
                                },
                            )
                        ),
                    },
                    merge=True,
                ),
                "output": Obj({"format": _GA_FORMAT, "voice": _GA_VOICE, "speed": Num(0.25, 1.5)}, merge=True),
            },
            merge=True,
        ),
        "tools": ListOf(Tagged("type", {"function": _FUNCTION_TOOL, "mcp": Obj({}, open=True)})),
        "tool_choice": OneOf(
            Enum("none", "auto", "required"),
            Obj({"type": Enum("function", "mcp"), "name": Str(), "server_label": Str()}, required=("type",)),
        ),
        "max_output_tokens": _MAX_TOKENS,
        "tracing": _TRACING,
        "truncation": AnyValue(),
        "prompt": AnyValue(),
        "include": Nullable(ListOf(Enum("item.input_audio_transcription.logprobs"))),
        "parallel_tool_calls": Bool(),
        "reasoning": Nullable(Obj({"effort": Str()})),
    },
    required=("type",),
    merge=True,
)


def _ga_defaults(model: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "audio": {
            "input": {
                "format": dict(pcm),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {"type": "server_vad", **_SERVER_VAD_DEFAULTS, "idle_timeout_ms": None},
            },
            "output": {"format": dict(pcm), "voice": "marin" if _realtime_model(model) else "alloy", "speed": 1.0},
        },
        "include": None,
    }


# --------------------------------------------------------------------------------------------------------------
# Items and response.create


def _content(types: tuple[str, ...]) -> Node:
    return Obj(
        {
            "type": Enum(*types),
            "text": Str(),
            "audio": Str(),
            "transcript": Nullable(Str()),
            "image_url": Str(),
            "detail": Enum("auto", "low", "high"),
            "id": Str(),
        }
    )


def _item_schema(content_types: tuple[str, ...]) -> Node:
    common: dict[str, Node] = {
        "id": Str(),
        "object": Enum("realtime.item"),
        "status": Enum("completed", "incomplete", "in_progress"),
    }
    return Tagged(
        "type",
        {
            "message": Obj(
                {
                    **common,
                    "type": Enum("message"),
                    "role": Enum("user", "assistant", "system"),
                    "content": ListOf(_content(content_types)),
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


_BETA_ITEM = _item_schema(("input_text", "input_audio", "item_reference", "text", "audio"))
_GA_ITEM = _item_schema(("input_text", "input_audio", "input_image", "output_text", "output_audio"))

_BETA_RESPONSE = Obj(
    {
        "conversation": Enum("auto", "none"),
        "input": ListOf(AnyValue()),
        "instructions": Str(),
        "max_response_output_tokens": _MAX_TOKENS,
        "metadata": Nullable(Obj({}, open=True)),
        "modalities": ListOf(Enum("text", "audio"), check=_beta_modalities),
        "output_audio_format": _BETA_FORMAT,
        "temperature": Num(0.6, 1.2),
        "tool_choice": Str(),
        "tools": ListOf(_FUNCTION_TOOL),
        "voice": Enum(*VOICES),
    }
)
_GA_RESPONSE = Obj(
    {
        "audio": Obj({"output": Obj({"format": _GA_FORMAT, "voice": _GA_VOICE})}),
        "conversation": Enum("auto", "none"),
        "input": ListOf(AnyValue()),
        "instructions": Str(),
        "max_output_tokens": _MAX_TOKENS,
        "metadata": Nullable(Obj({}, open=True)),
        "output_modalities": ListOf(Enum("text", "audio"), check=_one_modality),
        "parallel_tool_calls": Bool(),
        "prompt": AnyValue(),
        "reasoning": AnyValue(),
        "tool_choice": AnyValue(),
        "tools": ListOf(AnyValue()),
    }
)


# --------------------------------------------------------------------------------------------------------------
# The tables

_GA_FORMAT_KEYS: Final = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}


def _ga_format_value(key: str) -> dict[str, Any]:
    wire = next(t for t, k in _GA_FORMAT_KEYS.items() if k == key)
    return {"type": wire, "rate": 24000} if wire == "audio/pcm" else {"type": wire}


def _realtime_model(model: str) -> bool:
    return model.startswith("gpt-realtime")


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


@dataclass(frozen=True)
class SessionView:
    """The dialect-neutral reading of a stored session (or of a response's overrides of it)."""

    model: str
    instructions: str
    voice: str
    input_format: str  # a key of formats.FORMATS
    output_format: str
    output_modalities: tuple[str, ...]  # ("audio",) or ("text",)
    transcription: Mapping[str, Any] | None
    turn_detection: Mapping[str, Any] | None
    tools: tuple[Mapping[str, Any], ...]

    def tool(self, name: str) -> Mapping[str, Any] | None:
        return next((t for t in self.tools if t.get("name") == name), None)


@dataclass(frozen=True)
class ResponseParams:
    """``response.create`` read the same way in both dialects."""

    instructions: str | None = None
    out_of_band: bool = False
    metadata: Mapping[str, Any] | None = None
    voice: str | None = None
    output_format: str | None = None
    output_modalities: tuple[str, ...] | None = None
    input: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class DialectConfig:
    """One dialect's session, item and response tables."""

    name: str
    session: Obj
    item: Node
    response: Obj
    defaults: Callable[[str], dict[str, Any]]
    paths: Mapping[str, tuple[str, ...]]  # SessionView field -> path in the stored session
    format_key: Callable[[Any], str]  # stored format value -> formats.FORMATS key
    format_value: Callable[[str], Any]  # formats.FORMATS key -> stored format value
    modalities: Callable[[list[str]], tuple[str, ...]]
    response_paths: Mapping[str, tuple[str, ...]]  # ResponseParams field -> path in response.create's response

    def new_session(self, model: str, initial: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The session a connection starts with: defaults, then a minted secret's session config if any."""
        session = self.defaults(model)
        if initial:
            session = self.update(session, initial, prefix="session")
        return session

    def update(self, stored: Mapping[str, Any], body: Any, *, prefix: str = "session") -> dict[str, Any]:
        """``stored`` with ``body`` applied, or :class:`ClientError`: a rejected update changes nothing."""
        checked = self.session.check(body, prefix)
        merged: dict[str, Any] = merge(dict(stored), checked, self.session)
        view = self.view(merged)
        if view.voice in REALTIME_ONLY_VOICES and not _realtime_model(view.model):
            path = f"{prefix}.{'.'.join(self.paths['voice'])}"
            raise invalid_value(
                path,
                view.voice,
                [v for v in VOICES if v not in REALTIME_ONLY_VOICES],
                detail=f"Voice '{view.voice}' requires a gpt-realtime model.",
            )
        return merged

    def view(self, session: Mapping[str, Any]) -> SessionView:
        g = {name: _get(session, path) for name, path in self.paths.items()}
        voice = g["voice"]
        return SessionView(
            model=str(g["model"] or ""),
            instructions=str(g["instructions"] or ""),
            voice=str(voice["id"]) if isinstance(voice, Mapping) else str(voice or "alloy"),
            input_format=self.format_key(g["input_format"]),
            output_format=self.format_key(g["output_format"]),
            output_modalities=self.modalities(list(g["output_modalities"] or ["audio"])),
            transcription=g["transcription"],
            turn_detection=g["turn_detection"],
            tools=tuple(t for t in (g["tools"] or ()) if isinstance(t, Mapping)),
        )

    def response_params(self, body: Any) -> ResponseParams:
        if body is None:
            return ResponseParams()
        checked = self.response.check(body, "response")
        g = {name: _get(checked, path) for name, path in self.response_paths.items()}
        fmt = g["output_format"]
        mods = g["output_modalities"]
        voice = g["voice"]
        return ResponseParams(
            instructions=g["instructions"],
            out_of_band=g["conversation"] == "none",
            metadata=g["metadata"],
            voice=(str(voice["id"]) if isinstance(voice, Mapping) else voice),
            output_format=None if fmt is None else self.format_key(fmt),
            output_modalities=None if mods is None else self.modalities(list(mods)),
            input=None if g["input"] is None else tuple(g["input"]),
        )


def _audio_first(modalities: list[str]) -> tuple[str, ...]:
    return ("audio",) if "audio" in modalities else ("text",)


BETA_CONFIG = DialectConfig(
    name="beta",
    session=_BETA_SESSION,
    item=_BETA_ITEM,
    response=_BETA_RESPONSE,
    defaults=_beta_defaults,
    paths={
        "model": ("model",),
        "instructions": ("instructions",),
        "voice": ("voice",),
        "input_format": ("input_audio_format",),
        "output_format": ("output_audio_format",),
        "output_modalities": ("modalities",),
        "transcription": ("input_audio_transcription",),
        "turn_detection": ("turn_detection",),
        "tools": ("tools",),
    },
    format_key=lambda v: str(v or "pcm16"),
    format_value=lambda k: k,
    modalities=_audio_first,
    response_paths={
        "instructions": ("instructions",),
        "conversation": ("conversation",),
        "metadata": ("metadata",),
        "voice": ("voice",),
        "output_format": ("output_audio_format",),
        "output_modalities": ("modalities",),
        "input": ("input",),
    },
)

GA_CONFIG = DialectConfig(
    name="ga",
    session=_GA_SESSION,
    item=_GA_ITEM,
    response=_GA_RESPONSE,
    defaults=_ga_defaults,
    paths={
        "model": ("model",),
        "instructions": ("instructions",),
        "voice": ("audio", "output", "voice"),
        "input_format": ("audio", "input", "format"),
        "output_format": ("audio", "output", "format"),
        "output_modalities": ("output_modalities",),
        "transcription": ("audio", "input", "transcription"),
        "turn_detection": ("audio", "input", "turn_detection"),
        "tools": ("tools",),
    },
    format_key=lambda v: _GA_FORMAT_KEYS[v["type"]] if isinstance(v, Mapping) else "pcm16",
    format_value=_ga_format_value,
    modalities=_audio_first,
    response_paths={
        "instructions": ("instructions",),
        "conversation": ("conversation",),
        "metadata": ("metadata",),
        "voice": ("audio", "output", "voice"),
        "output_format": ("audio", "output", "format"),
        "output_modalities": ("output_modalities",),
        "input": ("input",),
    },
)

CONFIGS: Final[Mapping[str, DialectConfig]] = {c.name: c for c in (BETA_CONFIG, GA_CONFIG)}
