"""The model's wire dialects, each one table (:class:`Dialect`) that owns its whole wire.

::

    base.py     the Dialect type, Capabilities, WireAudio, Handshake, Service (the far end's tables)
    schema.py   a validator for client JSON that fails the way the service does (the Service's schemas)
    common.py   what the Realtime dialects share: event names, decoders, encoders, session helpers, schema pieces
    beta.py     Realtime beta (OpenAI-Beta: realtime=v1; flat session)
    ga.py       Realtime GA (nested audio; session.type required)
    live.py     GPT-Live (/live/sessions; session.start; continuous audio; a Responses backend for tools)
    eventmap.py docs/protocol.md's event map, generated from the tables (``python -m bridge.realtime.dialects``)

Adding a dialect is one module here, its tests and, when the emulator must speak it, its service tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bridge.realtime.dialects.base import (
    PROFILE_FORMATS,
    Capabilities,
    Credential,
    Dialect,
    Handshake,
    LiveService,
    MintRequest,
    ResponseInfo,
    Service,
    UnsupportedCommand,
    Usage,
    WireAudio,
)
from bridge.realtime.dialects.beta import BETA
from bridge.realtime.dialects.ga import GA
from bridge.realtime.dialects.live import LIVE

DIALECTS: Mapping[str, Dialect] = MappingProxyType({d.name: d for d in (BETA, GA, LIVE)})


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; expected one of {sorted(DIALECTS)}") from None


__all__ = [
    "BETA",
    "DIALECTS",
    "GA",
    "LIVE",
    "PROFILE_FORMATS",
    "Capabilities",
    "Credential",
    "Dialect",
    "Handshake",
    "LiveService",
    "MintRequest",
    "ResponseInfo",
    "Service",
    "UnsupportedCommand",
    "Usage",
    "WireAudio",
    "get_dialect",
]
