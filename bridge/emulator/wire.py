"""Server-event builders for every dialect, from the dialect's own tables.

Event names come from ``dialect.wire(canonical)``. Everything else that differs between the dialects is data in
``dialect.service`` (:class:`bridge.realtime.dialects.Service`): which ``object`` items carry, which content types
assistant items use, when ``rate_limits.updated`` comes and with which limits, whether text deltas carry
``obfuscation``, whether ``conversation.item.done`` follows ``conversation.item.added``, and how a response object
and its usage are spelled. No builder branches on the dialect. Shapes follow the ``openai`` package's server-event
models, and docs/protocol.md's account of the service.
"""

from __future__ import annotations

import enum
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bridge.realtime.dialects import Dialect, LiveService, ResponseInfo, Usage

__all__ = ["EventBuilder", "Id", "Ids", "LiveWire", "ResponseInfo", "Usage", "Wire"]

BASE62: Final = string.digits + string.ascii_letters
ID_LEN: Final = 21  # event_, sess_, item_, resp_, conv_ + 21 base62 characters, as the service spells them
CALL_ID_LEN: Final = 16  # call_ + 16


_TO_BASE62: Final = bytes(ord(BASE62[b % len(BASE62)]) for b in range(256))


class Id(enum.Enum):
    """The identifiers the service hands out: each one's prefix and how many base62 characters follow it."""

    EVENT = ("event_", ID_LEN)
    SESSION = ("sess_", ID_LEN)
    ITEM = ("item_", ID_LEN)
    RESPONSE = ("resp_", ID_LEN)
    CONVERSATION = ("conv_", ID_LEN)
    CALL = ("call_", CALL_ID_LEN)
    DELEGATION = ("deleg_", ID_LEN)
    FUNCTION_ITEM = ("fc_", ID_LEN)  # a Responses function call item (Live's backend)
    MESSAGE_ITEM = ("msg_", ID_LEN)  # a Responses message item (Live's backend)


class Ids:
    """Service-shaped identifiers; seeded for reproducible replays."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def _make(self, prefix: str, n: int = ID_LEN) -> str:
        # random bytes mapped onto the alphabet by a table: C speed (``choices`` cost 7 % of the emulator's CPU
        # under ``bench calls``, one id per delta); the slight skew towards the first 8 characters is harmless
        return prefix + self._rng.randbytes(n).translate(_TO_BASE62).decode()

    def new(self, kind: Id) -> str:
        """A new identifier of ``kind``."""
        prefix, n = kind.value
        return self._make(prefix, n)

    def obfuscation(self) -> str:
        return "".join(self._rng.choices(BASE62, k=self._rng.randint(4, 16)))

    def secret(self) -> str:
        return "ek_" + "".join(self._rng.choices("0123456789abcdef", k=32))


# Canonical keys (bridge.realtime.dialects) of the deltas that carry "obfuscation" where the shape says so.
OBFUSCATED: Final = frozenset({"audio_transcript.delta", "text.delta"})
RATE_LIMITS: Final = {"requests": 5000, "tokens": 40000}


class EventBuilder:
    """What every dialect's event builder offers: a server event by its canonical name, and the ``error`` event
    (the one builder of it: a dialect's builder only says how its ``error`` object is spelled)."""

    dialect: Dialect
    ids: Ids

    def event(self, canonical: str, **fields: Any) -> dict[str, Any]:
        return {"type": self.dialect.wire(canonical), "event_id": self.ids.new(Id.EVENT), **fields}

    def error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        client_event_id: str | None = None,
    ) -> dict[str, Any]:
        return self.event("error", **self.error_fields(code, error_type, message, param, client_event_id))

    def error_fields(
        self, code: str | None, error_type: str, message: str, param: str | None, client_event_id: str | None
    ) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class Wire(EventBuilder):
    """Builds one Realtime dialect's server events as dicts (the server serializes them)."""

    dialect: Dialect
    ids: Ids = field(default_factory=Ids)

    def __post_init__(self) -> None:
        self.shape = self.dialect.realtime_service

    def event(self, canonical: str, **fields: Any) -> dict[str, Any]:
        """One server event; ``canonical`` is a key of the dialect table (``audio.delta``, ``item.added``...)."""
        ev: dict[str, Any] = {"type": self.dialect.wire(canonical), "event_id": self.ids.new(Id.EVENT), **fields}
        if self.shape.obfuscation and canonical in OBFUSCATED:
            ev["obfuscation"] = self.ids.obfuscation()
        return ev

    def error_fields(
        self, code: str | None, error_type: str, message: str, param: str | None, client_event_id: str | None
    ) -> dict[str, Any]:
        return {
            "error": {"type": error_type, "code": code, "message": message, "param": param, "event_id": client_event_id}
        }

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


class LiveWire(EventBuilder):
    """Builds Live's server events as dicts, from the dialect's table."""

    def __init__(self, dialect: Dialect, ids: Ids) -> None:
        service = dialect.service
        if not isinstance(service, LiveService):
            raise TypeError(f"the {dialect.name} dialect is not served in the Live shape")
        self.dialect, self.service, self.ids = dialect, service, ids

    def error_fields(
        self, code: str | None, error_type: str, message: str, param: str | None, client_event_id: str | None
    ) -> dict[str, Any]:
        return self.service.error(code or error_type, error_type, message, param, client_event_id)

    def audio(self, delta: str) -> dict[str, Any]:
        """An output audio delta: on the primary WebSocket it carries no ``event_id`` and no timings."""
        return {"type": self.dialect.wire("audio.delta"), "delta": delta}

    def inner(self, canonical: str, sequence: int, **fields: Any) -> dict[str, Any]:
        """One event of the backend's Responses stream (it goes inside ``response.event``)."""
        return {"type": self.service.responses_events[canonical], "sequence_number": sequence, **fields}
