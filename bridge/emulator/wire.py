"""Server-event builders for both dialects.

Event names come from the project's dialect tables (``bridge.realtime.dialects``: ``dialect.wire(canonical)``).
Everything else that differs between the dialects is one :class:`WireShape` per dialect, keyed by dialect name:
which ``object`` items carry, which content types assistant items use, when ``rate_limits.updated`` comes and
with which limits, whether text deltas carry ``obfuscation``, whether ``conversation.item.done`` follows
``conversation.item.added``, and how a response object and its usage are spelled. No builder branches on the
dialect. Shapes follow the ``openai`` package's models (``openai.types.beta.realtime`` and
``openai.types.realtime``) and docs/protocol.md's captures of the service.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bridge.realtime.dialects import Dialect

BASE62: Final = string.digits + string.ascii_letters
ID_LEN: Final = 21  # event_, sess_, item_, resp_, conv_ + 21 base62 characters, as the service spells them
CALL_ID_LEN: Final = 16  # call_ + 16


_TO_BASE62: Final = bytes(ord(BASE62[b % len(BASE62)]) for b in range(256))


class Ids:
    """Service-shaped identifiers; seeded for reproducible replays."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def _make(self, prefix: str, n: int = ID_LEN) -> str:
        # random bytes mapped onto the alphabet by a table: C speed (``choices`` cost 7 % of the emulator's CPU
        # under ``bench calls``, one id per delta); the slight skew towards the first 8 characters is harmless
        return prefix + self._rng.randbytes(n).translate(_TO_BASE62).decode()

    def event(self) -> str:
        return self._make("event_")

    def session(self) -> str:
        return self._make("sess_")

    def item(self) -> str:
        return self._make("item_")

    def response(self) -> str:
        return self._make("resp_")

    def conversation(self) -> str:
        return self._make("conv_")

    def call(self) -> str:
        return self._make("call_", CALL_ID_LEN)

    def obfuscation(self) -> str:
        return "".join(self._rng.choices(BASE62, k=self._rng.randint(4, 16)))

    def secret(self) -> str:
        return "ek_" + "".join(self._rng.choices("0123456789abcdef", k=32))


@dataclass(frozen=True)
class ResponseInfo:
    """What a response object shows, in dialect-neutral terms."""

    id: str
    status: str
    conversation_id: str | None
    output_modalities: tuple[str, ...]
    voice: str
    output_format: Any  # the dialect's own spelling of the output format
    output: tuple[Mapping[str, Any], ...] = ()
    status_details: Mapping[str, Any] | None = None
    usage: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Usage:
    input_text: int = 0
    input_audio: int = 0
    output_text: int = 0
    output_audio: int = 0


def _beta_response(r: ResponseInfo) -> dict[str, Any]:
    return {
        "modalities": ["audio", "text"] if "audio" in r.output_modalities else ["text"],
        "voice": r.voice,
        "output_audio_format": r.output_format,
        "temperature": 0.8,
        "max_output_tokens": "inf",
    }


def _ga_response(r: ResponseInfo) -> dict[str, Any]:
    return {
        "output_modalities": list(r.output_modalities),
        "max_output_tokens": "inf",
        "audio": {"output": {"format": r.output_format, "voice": r.voice}},
    }


def _beta_usage(u: Usage) -> dict[str, Any]:
    inp, out = u.input_text + u.input_audio, u.output_text + u.output_audio
    return {
        "total_tokens": inp + out,
        "input_tokens": inp,
        "output_tokens": out,
        "input_token_details": {"cached_tokens": 0, "text_tokens": u.input_text, "audio_tokens": u.input_audio},
        "output_token_details": {"text_tokens": u.output_text, "audio_tokens": u.output_audio},
    }


def _ga_usage(u: Usage) -> dict[str, Any]:
    inp, out = u.input_text + u.input_audio, u.output_text + u.output_audio
    return {
        "total_tokens": inp + out,
        "input_tokens": inp,
        "output_tokens": out,
        "input_token_details": {
            "text_tokens": u.input_text,
            "audio_tokens": u.input_audio,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": u.output_text, "audio_tokens": u.output_audio},
    }


@dataclass(frozen=True)
class WireShape:
    name: str
    item_object: str | None  # "object" of every item (beta "realtime.item"; GA items have none)
    item_done_event: bool  # GA: conversation.item.done follows conversation.item.added
    content_types: Mapping[str, str]  # assistant content: {"audio": ..., "text": ...}
    rate_limits_on_created: tuple[str, ...]  # beta: requests + tokens, right after response.created
    rate_limits_after_done: tuple[str, ...]  # GA: tokens only, ~40 ms after response.done
    obfuscation: bool  # GA text and transcript deltas carry an "obfuscation" string
    name_on_function_done: bool  # GA response.function_call_arguments.done names the function; beta's does not
    response_fields: Callable[[ResponseInfo], dict[str, Any]]
    usage: Callable[[Usage], dict[str, Any]]
    # The credential endpoint's answer around the secret and the session echo
    mint_response: Callable[[str, int, dict[str, Any]], dict[str, Any]]


_BETA_MINT_TURN_DETECTION: Final = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")


def _beta_mint(value: str, expires_at: int, session: dict[str, Any]) -> dict[str, Any]:
    # SessionCreateResponse (beta) lists a narrower turn_detection and transcription than the session object.
    out = {k: v for k, v in session.items() if k not in {"input_audio_noise_reduction", "expires_at"}}
    td = session.get("turn_detection")
    if isinstance(td, Mapping):
        out["turn_detection"] = {k: td[k] for k in _BETA_MINT_TURN_DETECTION if k in td}
    tr = session.get("input_audio_transcription")
    if isinstance(tr, Mapping):
        out["input_audio_transcription"] = {"model": tr.get("model")}
    return {**out, "client_secret": {"value": value, "expires_at": expires_at}}


def _ga_mint(value: str, expires_at: int, session: dict[str, Any]) -> dict[str, Any]:
    return {"value": value, "expires_at": expires_at, "session": session}


SHAPES: Final[Mapping[str, WireShape]] = {
    "beta": WireShape(
        name="beta",
        item_object="realtime.item",
        item_done_event=False,
        content_types={"audio": "audio", "text": "text"},
        rate_limits_on_created=("requests", "tokens"),
        rate_limits_after_done=(),
        obfuscation=False,
        name_on_function_done=False,
        response_fields=_beta_response,
        usage=_beta_usage,
        mint_response=_beta_mint,
    ),
    "ga": WireShape(
        name="ga",
        item_object=None,
        item_done_event=True,
        content_types={"audio": "output_audio", "text": "output_text"},
        rate_limits_on_created=(),
        rate_limits_after_done=("tokens",),
        obfuscation=True,
        name_on_function_done=True,
        response_fields=_ga_response,
        usage=_ga_usage,
        mint_response=_ga_mint,
    ),
}

# Canonical keys (bridge.realtime.dialects) of the deltas that carry "obfuscation" where the shape says so.
OBFUSCATED: Final = frozenset({"audio_transcript.delta", "text.delta"})
RATE_LIMITS: Final = {"requests": 5000, "tokens": 40000}


@dataclass
class Wire:
    """Builds one dialect's server events as dicts (the server serializes them)."""

    dialect: Dialect
    ids: Ids = field(default_factory=Ids)

    def __post_init__(self) -> None:
        self.shape = SHAPES[self.dialect.name]
        if self.dialect.output_audio_content_type != self.shape.content_types["audio"]:
            raise ValueError(f"{self.dialect}: content type disagrees with the dialect table")

    def event(self, canonical: str, **fields: Any) -> dict[str, Any]:
        """One server event; ``canonical`` is a key of the dialect table (``audio.delta``, ``item.added``...)."""
        ev: dict[str, Any] = {"type": self.dialect.wire(canonical), "event_id": self.ids.event(), **fields}
        if self.shape.obfuscation and canonical in OBFUSCATED:
            ev["obfuscation"] = self.ids.obfuscation()
        return ev

    def error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        client_event_id: str | None = None,
    ) -> dict[str, Any]:
        return self.event(
            "error",
            error={"type": error_type, "code": code, "message": message, "param": param, "event_id": client_event_id},
        )

    def item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """An item as this dialect spells it inside events (stored items carry no ``object``)."""
        out = {"id": item["id"]}
        if self.shape.item_object is not None:
            out["object"] = self.shape.item_object
        out.update({k: v for k, v in item.items() if k != "id"})
        return out

    def content_type(self, modality: str) -> str:
        return self.shape.content_types[modality]

    def response(self, r: ResponseInfo) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": r.id,
            "status": r.status,
            "status_details": None if r.status_details is None else dict(r.status_details),
            "output": [self.item(i) for i in r.output],
            "conversation_id": r.conversation_id,
            **self.shape.response_fields(r),
            "usage": None if r.usage is None else dict(r.usage),
            "metadata": None if r.metadata is None else dict(r.metadata),
        }

    def usage(self, u: Usage) -> dict[str, Any]:
        return self.shape.usage(u)

    def rate_limits(self, names: tuple[str, ...], used_tokens: int) -> dict[str, Any]:
        limits = []
        for name in names:
            limit = RATE_LIMITS[name]
            used = 1 if name == "requests" else used_tokens
            reset = round(used * 60 / limit, 3)
            limits.append({"name": name, "limit": limit, "remaining": max(0, limit - used), "reset_seconds": reset})
        return self.event("rate_limits", rate_limits=limits)

    def session(self, session: Mapping[str, Any], session_id: str, expires_at: int) -> dict[str, Any]:
        """The whole session object as ``session.created`` / ``session.updated`` echo it."""
        return {"object": "realtime.session", "id": session_id, **session, "expires_at": expires_at}

    def mint_response(self, value: str, expires_at: int, session: dict[str, Any]) -> dict[str, Any]:
        return self.shape.mint_response(value, expires_at, session)
