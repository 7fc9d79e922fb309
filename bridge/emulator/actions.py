"""What an emulated session answers with: the actions its network shell carries out, in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Send:
    event: dict[str, Any]


@dataclass(frozen=True)
class SendRaw:
    """A text frame that is not a valid event (faults only)."""

    text: str


@dataclass(frozen=True)
class Close:
    code: int
    reason: str = ""


@dataclass(frozen=True)
class Abort:
    """Drop the TCP connection without a close frame (the client sees 1006)."""

    reason: str = ""


Action = Send | SendRaw | Close | Abort
