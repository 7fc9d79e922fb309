"""A session as the emulator keeps it: stored in its dialect's own shape, read through dialect-neutral views.

A session is stored as the client spelled it (beta flat, GA nested under ``audio``), so ``session.updated`` can echo
the whole object plus the server's defaults. What a session may hold, its defaults and where each neutral field sits
come from the dialect's service tables (:attr:`bridge.realtime.dialects.Dialect.service`); this module reads them
through :class:`SessionView` and never branches on the dialect. Range and value rules: GA ``audio/pcm`` is 24 kHz
only (in the schema), ``marin`` and ``cedar`` need a gpt-realtime model (here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bridge.realtime.dialects import Dialect
from bridge.realtime.dialects.common import REALTIME_ONLY_VOICES, VOICES, voice_on
from bridge.realtime.dialects.schema import Node, Obj, invalid_value, merge

DEFAULT_FORMAT: Final = "pcm16"


def value_at(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested objects; None where a step is missing or not an object."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _audio_first(modalities: list[str]) -> tuple[str, ...]:
    return ("audio",) if "audio" in modalities else ("text",)


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


class DialectConfig:
    """One dialect's session, item and response tables (from ``dialect.service``), with the emulator's readings."""

    def __init__(self, dialect: Dialect) -> None:
        service = dialect.realtime_service
        self.dialect = dialect
        self.session: Obj = service.session_schema
        self.item: Node = service.item_schema
        self.response: Obj = service.response_schema
        self.defaults = service.session_defaults
        self.paths = service.session_paths  # SessionView field -> path in the stored session
        self.response_paths = service.response_paths  # ResponseParams field -> path in response.create's response
        self.format_value = dialect.format_value  # formats.FORMATS key -> stored format value

    def format_key(self, value: Any) -> str:
        """A stored format value -> its formats.FORMATS key (validated values only; absent: the default)."""
        return self.dialect.format_name(value) or DEFAULT_FORMAT

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
        if not voice_on(view.voice, view.model):
            path = f"{prefix}.{'.'.join(self.paths['voice'])}"
            raise invalid_value(
                path,
                view.voice,
                [v for v in VOICES if v not in REALTIME_ONLY_VOICES],
                detail=f"Voice '{view.voice}' requires a gpt-realtime model.",
            )
        return merged

    def view(self, session: Mapping[str, Any]) -> SessionView:
        g = {name: value_at(session, path) for name, path in self.paths.items()}
        voice = g["voice"]
        return SessionView(
            model=str(g["model"] or ""),
            instructions=str(g["instructions"] or ""),
            voice=str(voice["id"]) if isinstance(voice, Mapping) else str(voice or "alloy"),
            input_format=self.format_key(g["input_format"]),
            output_format=self.format_key(g["output_format"]),
            output_modalities=_audio_first(list(g["output_modalities"] or ["audio"])),
            transcription=g["transcription"],
            turn_detection=g["turn_detection"],
            tools=tuple(t for t in (g["tools"] or ()) if isinstance(t, Mapping)),
        )

    def response_params(self, body: Any) -> ResponseParams:
        if body is None:
            return ResponseParams()
        checked = self.response.check(body, "response")
        g = {name: value_at(checked, path) for name, path in self.response_paths.items()}
        fmt = g["output_format"]
        mods = g["output_modalities"]
        voice = g["voice"]
        return ResponseParams(
            instructions=g["instructions"],
            out_of_band=g["conversation"] == "none",
            metadata=g["metadata"],
            voice=(str(voice["id"]) if isinstance(voice, Mapping) else voice),
            output_format=None if fmt is None else self.format_key(fmt),
            output_modalities=None if mods is None else _audio_first(list(mods)),
            input=None if g["input"] is None else tuple(g["input"]),
        )
