"""One emulated session's state, whatever part works on it: a dataclass per session kind that the session owns and
hands to its parts (turns and responses for Realtime, the output stream and the backend for Live).

A part takes the state, sends its events through the state's ``core`` (the sans-I/O plumbing of
:class:`~bridge.emulator.core.SessionCore`: events out as actions, timers, the record) and returns what the session
must do next (start or cut a response, arm a timer, say something). No part holds the session or reaches another
part through it: the session is the one place that applies what they return.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.emulator.config import DialectConfig, SessionView, value_at
from bridge.emulator.conversation import Conversation
from bridge.emulator.core import AudioInput, SessionCore
from bridge.emulator.formats import FORMATS, WireFormat
from bridge.emulator.replies import Replies
from bridge.emulator.wire import LiveWire, Wire
from bridge.realtime.dialects import LiveService


class DelegationType(enum.StrEnum):
    """A Live session's ``delegation.type``: the two the emulator plays."""

    RESPONSES = "responses"
    CLIENT = "client"


@dataclass
class RealtimeState:
    """A Realtime session: its configuration as stored and as read, its conversation, what the next response
    answers, and the caller's audio so far."""

    core: SessionCore
    wire: Wire
    cfg: DialectConfig
    session_id: str
    conversation_id: str
    config: dict[str, Any]  # the session object, in the dialect's shape
    view: SessionView
    conversation: Conversation
    replies: Replies
    input: AudioInput


@dataclass
class LiveState:
    """A GPT-Live session: its configuration, when it started, the caller's audio so far and how far the model's
    output stream has got (both on the session's timeline)."""

    core: SessionCore
    wire: LiveWire
    session_id: str
    config: dict[str, Any]
    input: AudioInput
    started_at: float | None = None
    out_ms: float = 0.0

    @property
    def service(self) -> LiveService:
        return self.wire.service

    @property
    def model(self) -> str:
        return str(self.config.get("model") or "")

    @property
    def format(self) -> WireFormat:
        name = self.wire.dialect.format_name(value_at(self.config, self.service.session_paths["format"]))
        return FORMATS[name or "pcm16"]

    def usage(self) -> dict[str, Any]:
        """The usage so far: as far as either stream has got on the session's timeline."""
        return self.service.usage(max(self.out_ms, self.input.appended_ms) / 1000.0)

    def delegation(self) -> str | None:
        """The session's delegation type (``responses``, ``client``...), None without one."""
        delegation = self.config.get("delegation")
        return str(delegation.get("type")) if isinstance(delegation, Mapping) else None
