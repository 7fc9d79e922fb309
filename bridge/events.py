"""The bridge's one event vocabulary.

Every part of the bridge speaks these frozen dataclasses: the Realtime protocol core turns wire JSON of either
dialect into them, the SIP side reports calls, digits and hangups with them, the call session consumes them, and
replay, Redis summaries and metrics read them. Nothing outside ``bridge/realtime/dialects/`` knows a wire event
name.

Two families:

* **Events** (``Event`` subclasses): something that happened (server said, caller did, socket closed).
* **Commands** (``Command`` subclasses): something the bridge asks the Realtime session to do. The dialect table
  encodes them to wire JSON.

Interrupts outrank the model's stream: ``Event.urgent`` is True only for what the caller does (speech starting,
a digit, a hangup), so a queue that orders by it never leaves a barge-in or a hangup stuck behind buffered audio.
Everything else keeps its order: a response's audio chunks, its ``AudioDone`` and its ``ResponseDone`` are one
stream, and a whole response can arrive in a single read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ErrorClass(enum.StrEnum):
    """Where a failure comes from; decides recovery (see ``bridge.errors``)."""

    NETWORK = "network"  # socket closed, DNS, timeout: reconnect with the same credential
    AUTH = "auth"  # 401/403, expired or bad credential: fresh credential, new session
    PROTOCOL = "protocol"  # malformed JSON, unknown event, invalid request: log, count, go on
    SERVER = "server"  # server_error, overloaded, session expired: new session


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class ResponseStatus(enum.StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    IN_PROGRESS = "in_progress"


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event. ``urgent`` events are never queued behind the model's stream (see the module doc)."""

    urgent: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return type(self).__name__


# --------------------------------------------------------------------------------------------------------------
# Realtime session events (decoded from either dialect)


@dataclass(frozen=True, slots=True)
class SessionReady(Event):
    """``session.created``: the socket is up and the server assigned a session."""

    session_id: str
    model: str = ""


@dataclass(frozen=True, slots=True)
class SessionConfigured(Event):
    """``session.updated``: our configuration was accepted."""

    session_id: str
    voice: str = ""
    audio_format: str = ""


@dataclass(frozen=True, slots=True)
class ConversationReady(Event):
    conversation_id: str


@dataclass(frozen=True, slots=True)
class SpeechStarted(Event):
    urgent: ClassVar[bool] = True

    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped(Event):
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputCommitted(Event):
    item_id: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputCleared(Event):
    pass


@dataclass(frozen=True, slots=True)
class IdleTimeout(Event):
    """GA ``input_audio_buffer.timeout_triggered``: silence after the model's last audio."""

    item_id: str
    audio_start_ms: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ItemAdded(Event):
    """An item entered the conversation (beta ``conversation.item.created``, GA ``conversation.item.added``)."""

    item_id: str
    role: str
    item_type: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemDone(Event):
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemTruncated(Event):
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ItemDeleted(Event):
    item_id: str


@dataclass(frozen=True, slots=True)
class CallerTranscript(Event):
    """Input transcription of the caller's speech: a delta (``final=False``) or the completed text.

    ``start_ms``/``end_ms``: where the fragment sits on the session's timeline, when the dialect says (Live's
    transcript deltas carry them and nothing else marks a turn)."""

    item_id: str
    text: str
    final: bool
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallerTranscriptFailed(Event):
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ResponseStarted(Event):
    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded(Event):
    response_id: str
    item_id: str
    item_type: str  # "message" | "function_call"


@dataclass(frozen=True, slots=True)
class AudioChunk(Event):
    """Model audio: PCM16 24 kHz, or G.711 bytes in passthrough mode (decoded from base64)."""

    response_id: str
    item_id: str
    audio: bytes = field(repr=False)
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class AudioDone(Event):
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class AgentTranscript(Event):
    """What the agent says: a delta (``final=False``) or the whole transcript of one item; timings as in
    :class:`CallerTranscript`."""

    response_id: str
    item_id: str
    text: str
    final: bool
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AgentText(Event):
    """Text-modality output (no audio)."""

    response_id: str
    item_id: str
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class FunctionCall(Event):
    """The model asked for a tool (``response.function_call_arguments.done``)."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ResponseDone(Event):
    response_id: str
    status: str
    reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class UsageUpdated(Event):
    """Cumulative audio time of the session (Live ``session.usage.updated``, and the final figure in
    ``session.closed``): a total so far, not an increment; ``final`` once the session is over."""

    seconds: float
    final: bool = False


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str
    limit: int
    remaining: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class RateLimits(Event):
    limits: tuple[RateLimit, ...]


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    """An ``error`` event from the server, or a local protocol fault (malformed JSON, bad base64).

    ``message`` never carries a credential: the protocol core redacts before it builds this.
    """

    error_class: ErrorClass
    code: str
    message: str
    param: str | None = None
    event_id: str | None = None
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class UnknownEvent(Event):
    """A well-formed event whose type this dialect does not know. Logged and counted, never fatal."""

    type: str


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The Realtime connection ended (or could not be opened)."""

    error_class: ErrorClass | None  # None: a clean close we asked for
    code: int | None
    reason: str
    retryable: bool


# --------------------------------------------------------------------------------------------------------------
# Telephone-side events (bridge/sip produces them)


@dataclass(frozen=True, slots=True)
class Dtmf(Event):
    """One digit, from RFC 4733 telephone-events (or SIP INFO)."""

    urgent: ClassVar[bool] = True

    digit: str
    source: str = "rfc4733"


@dataclass(frozen=True, slots=True)
class CallerHungUp(Event):
    urgent: ClassVar[bool] = True

    sip_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class TransferProgress(Event):
    """NOTIFY progress of a REFER (RFC 3515): ``final`` with 2xx means the transfer succeeded."""

    status_code: int
    reason: str
    final: bool


# --------------------------------------------------------------------------------------------------------------
# Commands (encoded per dialect by its table in bridge/realtime/dialects/)


@dataclass(frozen=True, slots=True)
class Command:
    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, slots=True)
class UpdateSession(Command):
    """Apply an agent profile (``bridge.realtime.profile.AgentProfile``) as the session configuration."""

    profile: Any  # AgentProfile; typed Any to keep this module free of pydantic


@dataclass(frozen=True, slots=True)
class StartSession(Command):
    """Open a session with a profile and, for a session that continues a call (a rollover, a reconnect), the text
    history it starts from. Each dialect sends this its own way (its table's handshake)."""

    profile: Any  # AgentProfile, as in UpdateSession
    history: tuple[AddText, ...] = ()


@dataclass(frozen=True, slots=True)
class AppendAudio(Command):
    audio: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CommitAudio(Command):
    pass


@dataclass(frozen=True, slots=True)
class ClearAudio(Command):
    pass


@dataclass(frozen=True, slots=True)
class CreateResponse(Command):
    """``out_of_band`` sets ``conversation: none`` (speech that does not enter the conversation)."""

    instructions: str | None = None
    out_of_band: bool = False
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CancelResponse(Command):
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class Truncate(Command):
    item_id: str
    audio_end_ms: int
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class FunctionOutput(Command):
    """A ``function_call_output`` item; with ``respond`` a ``response.create`` follows."""

    call_id: str
    output: str
    respond: bool = True


@dataclass(frozen=True, slots=True)
class AddText(Command):
    """A text item (DTMF digits, system notes, a recovery summary)."""

    text: str
    role: Role = Role.USER


@dataclass(frozen=True, slots=True)
class DeleteItem(Command):
    item_id: str
