"""Per-session settings of the emulator: its pace and voice, and the faults it injects on request.

One flat namespace, so the same names work everywhere a setting can come from, later sources winning:

1. ``EmulatorServer(**settings)`` / ``callbridge emulator --set name=value``: defaults for every session;
2. ``POST /control/next`` ``{"settings": {...}}``: the next N connections;
3. the WebSocket URL's query, next to ``model``: ``/v1/realtime?model=gpt-realtime&speed=0&drop_after_s=2.5``.

Settings per model (``model_settings``: a model name or fnmatch pattern -> settings) sit on top of 1 and 2 for the
connections of a matching model (``EmulatorServer(model_settings=...)``, ``POST /control/defaults`` and
``/control/next`` ``{"models": {...}}``, ``callbridge emulator --model-set MODEL:NAME=VALUE``): a candidate model
slower, costlier or failing while the others are unchanged. :func:`for_model` picks them.

Faults are opt-in and several of them deliberately send events that are not valid models (malformed JSON, an
unknown type, bad base64). "Nth response" counts the session's responses from 1; such faults fire after
``fault_after_deltas`` deltas of that response.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import math
import random
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final


@dataclass(frozen=True)
class Faults:
    drop_after_s: float | None = None  # abort the TCP connection (no close frame) this long after the upgrade
    upgrade_delay_ms: float = 0.0  # wait this long before answering the WebSocket upgrade (a slow service)
    drop_mid_response: int | None = None  # abort during the Nth response
    delay_first_delta_ms: float = 0.0  # extra wait before a response's first audio delta (not scaled by speed)
    error_mid_response: int | None = None  # an ``error`` event in the Nth response, which then ends ``failed``
    error_code: str = "server_error"  # code (and type) of that error
    unknown_event: int | None = None  # an event of an unknown type in the Nth response
    malformed_json: int | None = None  # a frame that is not JSON in the Nth response
    invalid_base64_delta: int | None = None  # an audio delta with invalid base64 in the Nth response
    oversized_delta: int | None = None  # one huge audio delta in the Nth response
    oversized_delta_ms: float = 5000.0
    drop_on_post_call: bool = False  # abort the TCP connection when the post-call question (summary) is asked
    fault_after_deltas: int = 2  # deltas of the Nth response sent before its fault fires
    beta_disabled: bool = False  # the beta header gets beta_api_shape_disabled + close 4000, as the service today
    refuse_models: str = ""  # comma-separated model patterns (fnmatch) whose WebSocket upgrade fails with ...
    refuse_status: int = 503  # ... this HTTP status, before any session (a connect failure for that model)
    refuse_share: float = 1.0  # the share of those connections refused, drawn per connection (seeded by ``seed``)
    # > 0: refuse_share is drawn per spell of this many seconds instead, every connection of a spell refused or
    # not together: a model down that share of the time in short spells, which a call's reconnects do not outlast
    refuse_spell_s: float = 0.0
    # comma-separated model patterns (fnmatch) the service has retired: answered as the service answers a model it
    # refuses (Realtime: ``error`` model_not_found, then close 4000; GPT-Live: invalid_model), not as an outage
    retire_models: str = ""

    def retired(self, model: str) -> bool:
        """Is ``model`` retired (the ``retire_models`` fault)?"""
        return any(fnmatch.fnmatchcase(model, p.strip()) for p in self.retire_models.split(",") if p.strip())

    def __post_init__(self) -> None:
        if not 0.0 <= self.refuse_share <= 1.0:
            raise ValueError(f"setting 'refuse_share': a share in [0, 1], got {self.refuse_share!r}")
        if not self.refuse_spell_s >= 0.0:
            raise ValueError(f"setting 'refuse_spell_s': seconds >= 0, got {self.refuse_spell_s!r}")

    def refusal_draw(self, connection_draw: float, at_s: float, salt: str) -> float:
        """The draw a connection's refusal is decided by (:meth:`refusal_status`): its own ``connection_draw``, or
        with ``refuse_spell_s`` the draw of the spell holding ``at_s`` (seconds since the server started), the same
        for every connection of that spell; ``salt`` (the seed, or one random per server) picks the spells' draws."""
        if self.refuse_spell_s <= 0:
            return connection_draw
        return random.Random(f"{salt}:{math.floor(at_s / self.refuse_spell_s)}").random()

    def refusal_status(self, model: str, draw: float = 0.0) -> int | None:
        """The HTTP status the upgrade of a connection for ``model`` fails with, or None; ``draw`` is the
        connection's uniform draw in [0, 1) against ``refuse_share``."""
        patterns = [p.strip() for p in self.refuse_models.split(",") if p.strip()]
        matched = any(fnmatch.fnmatchcase(model, p) for p in patterns)
        return self.refuse_status if matched and draw < self.refuse_share else None


REPLY_AUDIO: Final = frozenset({"tone", "silence"})


@dataclass(frozen=True)
class Settings:
    speed: float = 4.0  # pace of responses as a multiple of real time; 0 = as fast as possible
    delta_ms: float = 100.0  # audio per response.(output_)audio.delta
    tone_hz: float = 600.0  # default reply voice: a tone...
    tone_dbfs: float = -12.0  # ...at this peak level
    reply_audio: str = "tone"  # "tone" or "silence" (an annotation or ``wav_path`` can give a WAV instead)
    wav_path: str | None = None  # default reply voice from a mono PCM16 WAV file (resampled as needed)
    ms_per_char: float = 60.0  # reply duration follows the reply text...
    min_reply_ms: float = 500.0
    max_reply_ms: float = 6000.0  # ...clamped to this range
    response_latency_ms: float = 150.0  # response.created -> first output (scaled by speed)
    transcript_delay_ms: float = 300.0  # commit -> input transcription (scaled by speed)
    post_call_delay_ms: float = 0.0  # a post-call question's answer starts this much later (scaled by speed)
    rate_limits_delay_ms: float = 40.0  # GA: response.done -> rate_limits.updated (scaled by speed)
    session_max_s: float | None = None  # the service's cap; None: the dialect's (Realtime: 60 min, session_expired
    # then close 1001; Live: about 2 h, session.closed "expired")
    greeting: str = "Hello! How can I help you today?"
    # gpt-realtime-2 and later may answer a caller's turn with a preamble and the answer as two message items in one
    # response: the preamble's text ("" turns it off) and the models (fnmatch patterns, comma-separated) that do
    preamble: str = "Let me check that for you."
    preamble_models: str = "gpt-realtime-2,gpt-realtime-2.*,gpt-realtime-2-*,gpt-realtime-[3-9]*"
    seed: int | None = None  # for reproducible ids (virtual-time replays)
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.reply_audio not in REPLY_AUDIO:
            raise ValueError(f"setting 'reply_audio': expected one of {sorted(REPLY_AUDIO)}, got {self.reply_audio!r}")
        if self.speed < 0 or self.delta_ms <= 0:
            raise ValueError("settings 'speed' must be >= 0 and 'delta_ms' > 0")

    def scaled(self, ms: float) -> float:
        """``ms`` of service time as seconds of emulator time at ``speed``."""
        return 0.0 if self.speed <= 0 else ms / 1000.0 / self.speed

    def with_values(self, values: Mapping[str, Any]) -> Settings:
        """A copy with flat ``values`` applied (strings are parsed, as from a URL query)."""
        own, faults = {}, {}
        for key, raw in values.items():
            if key in _SETTING_TYPES:
                own[key] = _coerce(key, raw, _SETTING_TYPES[key])
            elif key in _FAULT_TYPES:
                faults[key] = _coerce(key, raw, _FAULT_TYPES[key])
            else:
                raise ValueError(f"unknown emulator setting {key!r}")
        return dataclasses.replace(self, **own, faults=dataclasses.replace(self.faults, **faults))

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(out.pop("faults"))
        return out


def _types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != "faults"}


_SETTING_TYPES: Final = _types(Settings)
_FAULT_TYPES: Final = _types(Faults)
NAMES: Final = frozenset(_SETTING_TYPES) | frozenset(_FAULT_TYPES)
_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}


def _coerce(key: str, raw: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if raw is None or (optional and isinstance(raw, str) and raw.lower() in {"", "none", "null"}):
        if optional:
            return None
        raise ValueError(f"setting {key!r} cannot be empty")
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError(raw)
        if base is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if base is float:
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ValueError(f"setting {key!r}: cannot read {raw!r} as {base.__name__}") from None


ModelSettings = Mapping[str, Mapping[str, Any]]  # a model name or fnmatch pattern -> settings


def for_model(model_settings: ModelSettings, model: str) -> dict[str, Any]:
    """The settings ``model_settings`` gives ``model``: every matching pattern's, in order, the exact name's last."""
    out: dict[str, Any] = {}
    for pattern, values in model_settings.items():
        if pattern != model and fnmatch.fnmatchcase(model, pattern):
            out.update(values)
    out.update(model_settings.get(model, {}))
    return out


def check_model_settings(model_settings: Any) -> dict[str, dict[str, Any]]:
    """``model_settings`` as a dict of dicts, each setting checked; ValueError naming the model and the setting."""
    if not isinstance(model_settings, Mapping):
        raise ValueError(f"model settings: expected a mapping of model -> settings, got {model_settings!r}")
    out: dict[str, dict[str, Any]] = {}
    for model, values in model_settings.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"model {model!r}: expected a mapping of settings, got {values!r}")
        try:
            Settings().with_values(values)
        except ValueError as exc:
            raise ValueError(f"model {model!r}: {exc}") from None
        out[str(model)] = dict(values)
    return out


def error_type(code: str) -> str:
    """The ``type`` of an error a fault sends: ``server_error`` for that code, else an invalid request."""
    return "server_error" if code == "server_error" else "invalid_request_error"


SERVER_ERROR = "The server had an error while processing your request."  # an injected error's default message
MID_RESPONSE_ERROR = SERVER_ERROR + " Please retry your request."  # the error_mid_response fault's message


class Fault(enum.StrEnum):
    """A fault the control API injects into a live session right now (POST /control/sessions/{id}/fault, its
    ``kind``)."""

    DROP = "drop"  # abort the TCP connection
    ERROR = "error"  # an ``error`` event (code, message, type)
    UNKNOWN_EVENT = "unknown_event"  # an event of an unknown type (event_type)
    MALFORMED_JSON = "malformed_json"  # a frame that is not JSON (text)
    EXPIRE = "expire"  # the session cap, now
    CLOSE = "close"  # a close frame (code, reason)

    @classmethod
    def named(cls, kind: str) -> Fault:
        """The fault called ``kind``; ValueError naming the ones there are otherwise."""
        try:
            return cls(kind)
        except ValueError:
            raise ValueError(f"unknown fault {kind!r}; expected one of {sorted(INJECTABLE)}") from None


INJECTABLE: Final = frozenset(f.value for f in Fault)
