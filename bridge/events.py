"""The bridge's one event vocabulary.

Every part of the bridge speaks these frozen dataclasses: the Realtime protocol core turns wire JSON of either
dialect into them, the SIP side reports calls, digits and hangups with them, the call session consumes them, and
replay, Redis summaries and metrics read them. Nothing outside ``bridge/realtime/dialects/`` knows a wire event
name.

Three families:

* **Events** (``Event`` subclasses): something that happened (server said, caller did, socket closed).
* **Commands** (``Command`` subclasses): something the bridge asks the Realtime session to do. The dialect table
  encodes them to wire JSON.
* **Reports** (``Report`` subclasses): what a call session did and saw, for its listeners (metrics, the Redis store,
  the rollout's health, recordings) and its timeline. Listeners dispatch on the type; ``Report.kind`` is the name a
  report is stored under (timeline, Redis stream, recording), and ``Report.summary`` its one line of text.

Interrupts outrank the model's stream: ``Event.urgent`` is True only for what the caller does (speech starting,
a digit, a hangup), so a queue that orders by it never leaves a barge-in or a hangup stuck behind buffered audio.
Everything else keeps its order: a response's audio chunks, its ``AudioDone`` and its ``ResponseDone`` are one
stream, and a whole response can arrive in a single read.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Final, TypeVar


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
    """How a response ended (``response.status`` in Realtime's ``response.done`` and the Responses API's)."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    IN_PROGRESS = "in_progress"
    UNKNOWN = ""  # the service named none (or one the bridge does not know): bad input is never fatal

    @classmethod
    def of(cls, value: str) -> ResponseStatus:
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class ItemType(enum.StrEnum):
    """An item's ``type``: the bridge acts on messages and function calls."""

    MESSAGE = "message"
    FUNCTION_CALL = "function_call"
    FUNCTION_CALL_OUTPUT = "function_call_output"
    OTHER = "other"  # any other type the service may add (reasoning, MCP calls, ...): shown, never acted on

    @classmethod
    def of(cls, value: str) -> ItemType:
        try:
            return cls(value)
        except ValueError:
            return cls.OTHER


class DtmfSource(enum.StrEnum):
    """Where a digit came from."""

    RFC4733 = "rfc4733"  # telephone-events in the RTP stream (RFC 4733)
    INFO = "info"  # a SIP INFO request
    REALTIME = "realtime"  # the service heard it (GA ``input_audio_buffer.dtmf_event_received``)


class CallOutcome(enum.StrEnum):
    """How a call ended (a metrics label)."""

    COMPLETED = "completed"
    TRANSFERRED = "transferred"
    FAILED = "failed"
    ABANDONED = "abandoned"  # the caller hung up (CANCEL, or BYE) before the answer: ABANDONED_WHILE_RINGING
    # the network ended the call: its BYE or CANCEL gave a Reason (RFC 3326) that names a network failure
    NETWORK_FAILURE = "network_failure"
    # a parallel ring was answered elsewhere: a CANCEL with Reason SIP cause 200 (RFC 3326), no abandon
    COMPLETED_ELSEWHERE = "completed_elsewhere"


class EndedBy(enum.StrEnum):
    """Who ended a call: its report (``ended_by``), its Redis hash and its log line say so. The caller only when the
    caller hung up: every end the bridge chose names the bridge's reason."""

    CALLER = "caller"  # the caller hung up (BYE or CANCEL)
    AGENT = "agent"  # the agent ended the call (its end_call tool) or transferred it
    SUPERVISOR = "supervisor"  # a supervisor hung up (the end reason names who)
    LIMIT = "limit"  # a bound: the dialplan's max_call_s, the media timeout, the session timer
    DRAIN = "drain"  # its worker was replaced (a rolling restart) and the call outlasted drain_timeout_s
    SHUTDOWN = "shutdown"  # serve stopped: the call outlasted drain_timeout_s, or the worker closed
    FAULT = "fault"  # the model away for good, a worker's death, a failure of the bridge
    NETWORK = "network"  # a BYE or CANCEL whose Reason names a network failure, or a call completed elsewhere


class TransferOutcome(enum.StrEnum):
    """How a warm transfer ended (:class:`WarmTransferEnded`)."""

    COMPLETED = "completed"  # the human answered (and accepted): caller and human are joined
    BUSY = "busy"  # 486 / 600 from the human's side
    NO_ANSWER = "no_answer"  # no answer within the plan's ring_timeout_s (or 408 / 480)
    DECLINED = "declined"  # 603, or accept: dtmf and no "1" within the window
    FAILED = "failed"  # the second leg could not be placed, or another final status
    CALLER_HUNG_UP = "caller_hung_up"  # the caller left during the attempt: both legs end


class TransferMode(enum.StrEnum):
    """How a decided transfer hands the caller over (the plan's ``transfer.mode``)."""

    BLIND = "blind"  # REFER (RFC 3515): the caller's phone calls the target
    WARM = "warm"  # the worker calls the target and joins the two calls (bridge/call/warm.py)


class TransferStep(enum.StrEnum):
    """Where a warm transfer is (:class:`TransferStepped`), before its outcome."""

    RINGING = "ringing"  # the human's phone is called; the caller hears the hold audio
    BRIEFING = "briefing"  # the human answered and hears the agent's briefing
    ACCEPTING = "accepting"  # briefed: waiting for the human to press 1 (accept: dtmf)


class LegState(enum.StrEnum):
    """Where the second leg of a warm transfer is (:class:`HumanLegChanged`)."""

    RINGING = "ringing"  # a provisional answer (180/183)
    ANSWERED = "answered"  # 200: the human picked up
    ENDED = "ended"  # a final status, a BYE, or our CANCEL


class ToolCallOutcome(enum.StrEnum):
    """How a business tool's call ended (:class:`ToolFinished`): ``ok``, or the typed error the model reads out
    (``bridge.tools.spec.ErrorType``)."""

    OK = "ok"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    UNREACHABLE = "unreachable"
    BAD_ARGUMENTS = "bad_arguments"
    TOOL_ERROR = "tool_error"
    UNVERIFIED = "unverified"  # not called: it waits for a verification of the caller (``verify_before``)


class ToolGuard(enum.StrEnum):
    """What the plan's guards kept from the model (:class:`ToolGuarded`, ``bridge/tools/guard.py``)."""

    UNVERIFIED = "unverified"  # the tool was not called: the caller is not verified yet
    PINNED_ARGUMENT = "pinned_argument"  # the model sent an argument the plan pins to the call's context: discarded


class EchoOutcome(enum.StrEnum):
    """What the echo guard made of a speech start over the agent (:class:`EchoJudged`)."""

    TAKEN = "taken"  # the caller: a barge-in
    REJECTED = "rejected"  # the agent's own audio coming back: the agent goes on
    PAUSED = "paused"  # maybe the caller: the agent's audio is held
    RESUMED = "resumed"  # no words followed: the agent goes on where it was held


class OrchestratedOutcome(enum.StrEnum):
    """What came of an orchestrator request (:class:`Orchestrated`)."""

    DECISION = "decision"  # the orchestrator decided
    LATE = "late"  # past ``timeout_ms``: the filler is due, the request goes on
    FAULT = "fault"  # no decision will come


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
    item_type: ItemType
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
    """``out_of_band``: a response kept out of the conversation (a say): its items cannot be truncated."""

    response_id: str
    out_of_band: bool = False


@dataclass(frozen=True, slots=True)
class OutputItemAdded(Event):
    response_id: str
    item_id: str
    item_type: ItemType


@dataclass(frozen=True, slots=True)
class AudioChunk(Event):
    """Model audio: PCM16 24 kHz, or G.711 bytes in passthrough mode (decoded from base64). ``decoded``: already
    the caller's 8 kHz PCM16, converted by the C downlink with the call's own converter state
    (``bridge.realtime.downlink``): the playout takes it as it is."""

    response_id: str
    item_id: str
    audio: bytes = field(repr=False)
    content_index: int = 0
    decoded: bool = False


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
    status: ResponseStatus
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
    source: DtmfSource = DtmfSource.RFC4733


@dataclass(frozen=True, slots=True)
class HumanLegChanged(Event):
    """The second leg of a warm transfer (the worker's call to the human) is ringing, answered or ended
    (``sip_code``: its final status, e.g. 486, 603, 487 after our CANCEL; 200 once answered)."""

    state: LegState
    sip_code: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PeerReason:
    """One value of the ``Reason`` header (RFC 3326) of the request that ended a call from the far side: what the
    network said about the ending, as data (``bridge/sip/reason.py`` reads it). ``protocol``: ``SIP``, ``Q.850`` or
    another token; ``cause``: its number (None without one); ``text``: its text, cleaned and cut."""

    protocol: str
    cause: int | None = None
    text: str = ""

    def header(self) -> str:
        """This value as a ``Reason`` header value says it: ``Q.850;cause=41;text="Temporary failure"``."""
        cause = "" if self.cause is None else f";cause={self.cause}"
        text = self.text.replace("\\", "\\\\").replace('"', '\\"')
        return f"{self.protocol}{cause}" + (f';text="{text}"' if self.text else "")


@dataclass(frozen=True, slots=True)
class PeerEnding:
    """What the BYE or CANCEL that ended a call said about the ending: its ``Reason`` values in order, and what the
    bridge reads in them (``bridge/sip/reason.py``): ``network_failure`` names the value that says the network
    failed (``Q.850 cause 41``, ``SIP 408``, ``RTP timeout``; "" for none), ``elsewhere`` is a CANCEL for a parallel
    ring answered elsewhere."""

    request: str  # BYE or CANCEL
    reasons: tuple[PeerReason, ...] = ()
    network_failure: str = ""
    elsewhere: bool = False

    def header(self) -> str:
        """The values as one ``Reason`` header value, written again from what was read ("" for none)."""
        return ", ".join(r.header() for r in self.reasons)


@dataclass(frozen=True, slots=True)
class CallerHungUp(Event):
    """The leg is gone. ``bound``: the bridge ended it on a SIP-level bound (``media timeout``, ``session timer
    expired``), not the caller; empty when the caller hung up. ``peer``: the far side's BYE or CANCEL that ended it,
    with what its ``Reason`` header says (None: the bridge ended it, or no such request was seen)."""

    urgent: ClassVar[bool] = True

    sip_code: int
    reason: str
    bound: str = ""
    local: bool = False  # the bridge's own BYE or final answer (the call was ended from this side)
    peer: PeerEnding | None = None


@dataclass(frozen=True, slots=True)
class MediaDropped(Event):
    """The caller is not heard: every media packet since the answer came from another host than the call's media
    hosts and was dropped (bridge/sip/rtpguard.py). ``admitted``: those hosts, comma-separated; ``source``: the host
    the packets came from ("" if unknown)."""

    dropped: int
    admitted: str
    source: str


@dataclass(frozen=True, slots=True)
class CallerHold(Event):
    """The caller put the call on hold (``held``: a re-INVITE whose SDP says ``a=sendonly`` or ``a=inactive``) or took
    it off hold (``a=sendrecv`` again). While held, nothing is sent to the caller and their phone's hold music never
    reaches the model: the agent's audio waits where it was."""

    held: bool


@dataclass(frozen=True, slots=True)
class TransferProgress(Event):
    """NOTIFY progress of a REFER (RFC 3515): ``final`` with 2xx means the transfer succeeded."""

    status_code: int
    reason: str
    final: bool


class SupervisorKind(enum.StrEnum):
    """What a supervisor does to a live call from the console or the API (``bridge.serve.actions``)."""

    HANGUP = "hangup"  # the agent says one short goodbye, then the bridge sends BYE
    WHISPER = "whisper"  # an instruction to the agent for the rest of the call, never read out
    TRANSFER = "transfer"  # to the plan's human target or another allowed target (REFER)
    TAKEOVER = "takeover"  # the supervisor talks to the caller (browser microphone); the model is muted
    HANDBACK = "handback"  # the end of a take-over: the model hears the caller again and resumes


@dataclass(frozen=True, slots=True)
class SupervisorAction(Event):
    """A supervisor's action on this call, in its inbox. ``who``: the signed-in account; ``text``: a whisper's
    instruction; ``target``: a transfer's SIP URI (checked against the plan's before it got here)."""

    action: SupervisorKind
    who: str
    text: str = ""
    target: str = ""


@dataclass(frozen=True, slots=True)
class EndRequested(Event):
    """The node ends the call (``bridge.serve.worker``: serve stops, or the worker is replaced, and the call outlasted
    ``drain_timeout_s``): as a supervisor's hang-up does, a short goodbye, then BYE; ended by ``by``."""

    by: EndedBy


@dataclass(frozen=True, slots=True)
class Orchestrated(Event):
    """The orchestrator's side of a caller turn, in the call's inbox (``bridge.call.orchestration``): its
    ``decision`` (a ``bridge.orchestrator.models.Decision``), ``late`` (past ``timeout_ms``: the filler is due), or
    a ``fault`` of one kind (``down``, ``timeout``, ``http_5xx``, ``http_4xx``, ``invalid_json``,
    ``invalid_answer``). ``sequence`` is the request's; an answer to a request since replaced is ignored."""

    sequence: int
    outcome: OrchestratedOutcome
    ms: float  # since the request was sent
    decision: Any = None
    fault: str = ""
    message: str = ""


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
class Say(Command):
    """Speak ``text`` verbatim, outside the conversation where the dialect can (an orchestrator's line): the
    dialect's capabilities say how (``Capabilities.says``)."""

    text: str


@dataclass(frozen=True, slots=True)
class AskText(Command):
    """A text-only response out of band (``conversation: "none"``): a question about the conversation whose answer
    is text, never heard and never in the conversation (the post-call summary). Where a dialect can (its
    ``Capabilities.text_out_of_band``)."""

    instructions: str
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


# --------------------------------------------------------------------------------------------------------------
# Reports (bridge/call/session.py emits them; see the module doc)


@dataclass(frozen=True, slots=True)
class Report:
    """Base of every report. A Redis stream entry and a recording line carry its ``kind``, its ``summary`` and every
    field (:func:`encode`, :func:`as_json`; :func:`decode` reads them back). ``stored`` names its key fields,
    :meth:`data`: what the call's Redis hash may take from it as it is (and a few reports add a value of their
    own there, such as a truncate's ``result``)."""

    kind: ClassVar[str]
    stored: ClassVar[tuple[str, ...]] = ()

    @property
    def summary(self) -> str:
        return ""

    def data(self) -> dict[str, Any]:
        """The key fields (``stored``), by name, in their declared order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in self.stored}


R = TypeVar("R", bound=Report)


class ReportTable:
    """A listener that dispatches on the report's type: ``table.on(ev.Latency, lambda r: ...)`` types ``r`` as
    :class:`Latency`, so a renamed report or field is a type error. Reports of a type with no handler are ignored."""

    def __init__(self) -> None:
        self._handlers: dict[type[Report], Callable[[Any], None]] = {}

    def on(self, cls: type[R], handler: Callable[[R], None]) -> ReportTable:
        self._handlers[cls] = handler
        return self

    def __call__(self, report: Report) -> None:
        handler = self._handlers.get(type(report))
        if handler is not None:
            handler(report)


@dataclass(frozen=True, slots=True)
class Ringing(Report):
    kind: ClassVar[str] = "ringing"

    caller: str
    called: str
    dialplan: str
    dialect: str

    @property
    def summary(self) -> str:
        return f"{self.caller} -> {self.called} ({self.dialplan}, {self.dialect})"


@dataclass(frozen=True, slots=True)
class RealtimeUnavailable(Report):
    """No Realtime session could be opened before the answer deadline."""

    kind: ClassVar[str] = "realtime_unavailable"
    stored: ClassVar[tuple[str, ...]] = ("error_class",)

    message: str
    error_class: ErrorClass

    @property
    def summary(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Answered(Report):
    kind: ClassVar[str] = "answered"


@dataclass(frozen=True, slots=True)
class PhaseChanged(Report):
    kind: ClassVar[str] = "phase"
    stored: ClassVar[tuple[str, ...]] = ("old", "new")

    old: str
    new: str
    why: str

    @property
    def summary(self) -> str:
        return f"{self.old} -> {self.new}: {self.why}"


@dataclass(frozen=True, slots=True)
class Latency(Report):
    """One sample of a latency budget segment (``bridge.metrics.SEGMENTS``)."""

    kind: ClassVar[str] = "latency"
    stored: ClassVar[tuple[str, ...]] = ("segment", "ms")

    segment: str
    ms: float

    @property
    def summary(self) -> str:
        return f"{self.segment} {self.ms:.0f} ms"


@dataclass(frozen=True, slots=True)
class SessionOpened(Report):
    """``SessionReady``: the service assigned a session."""

    kind: ClassVar[str] = "session_ready"
    stored: ClassVar[tuple[str, ...]] = ("session_id",)

    session_id: str

    @property
    def summary(self) -> str:
        return self.session_id


@dataclass(frozen=True, slots=True)
class SessionAccepted(Report):
    """``SessionConfigured``: the service accepted the profile."""

    kind: ClassVar[str] = "session_configured"
    stored: ClassVar[tuple[str, ...]] = ("session_id",)

    session_id: str

    @property
    def summary(self) -> str:
        return self.session_id


@dataclass(frozen=True, slots=True)
class ConversationOpened(Report):
    kind: ClassVar[str] = "conversation_ready"
    stored: ClassVar[tuple[str, ...]] = ("conversation_id",)

    conversation_id: str

    @property
    def summary(self) -> str:
        return self.conversation_id


@dataclass(frozen=True, slots=True)
class OutputItem(Report):
    kind: ClassVar[str] = "output_item"
    stored: ClassVar[tuple[str, ...]] = ("item_id",)

    item_type: ItemType
    item_id: str

    @property
    def summary(self) -> str:
        return f"{self.item_type} {self.item_id}"


@dataclass(frozen=True, slots=True)
class CallerSpeechStarted(Report):
    kind: ClassVar[str] = "speech_started"

    audio_start_ms: int

    @property
    def summary(self) -> str:
        return f"at {self.audio_start_ms} ms"


@dataclass(frozen=True, slots=True)
class CallerSpeechStopped(Report):
    kind: ClassVar[str] = "speech_stopped"

    audio_end_ms: int

    @property
    def summary(self) -> str:
        return f"at {self.audio_end_ms} ms"


@dataclass(frozen=True, slots=True)
class CallerSaid(Report):
    """The final transcript of one caller turn."""

    kind: ClassVar[str] = "caller_transcript"
    stored: ClassVar[tuple[str, ...]] = ("item_id",)

    text: str
    item_id: str

    @property
    def summary(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class CallerNotTranscribed(Report):
    kind: ClassVar[str] = "caller_transcript_failed"
    stored: ClassVar[tuple[str, ...]] = ("item_id",)

    message: str
    item_id: str

    @property
    def summary(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class AgentSaid(Report):
    """The final transcript (or text) of one agent item."""

    kind: ClassVar[str] = "agent_transcript"
    stored: ClassVar[tuple[str, ...]] = ("item_id",)

    text: str
    item_id: str

    @property
    def summary(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class ResponseBegan(Report):
    kind: ClassVar[str] = "response_started"

    response_id: str

    @property
    def summary(self) -> str:
        return self.response_id


@dataclass(frozen=True, slots=True)
class ResponseEnded(Report):
    kind: ClassVar[str] = "response_done"
    stored: ClassVar[tuple[str, ...]] = ("status",)

    response_id: str
    status: ResponseStatus
    usage: Usage | None = None  # the response's tokens (a variant's cost); not stored

    @property
    def summary(self) -> str:
        return f"{self.response_id} {self.status}"


@dataclass(frozen=True, slots=True)
class TruncateSent(Report):
    """A ``Truncate`` of one item to what the caller heard of it."""

    kind: ClassVar[str] = "truncate"
    stored: ClassVar[tuple[str, ...]] = ("item_id", "audio_end_ms")

    item_id: str
    audio_end_ms: int

    @property
    def summary(self) -> str:
        return f"{self.item_id} at {self.audio_end_ms} ms"


@dataclass(frozen=True, slots=True)
class Truncated(Report):
    """The service confirmed a truncate (``ItemTruncated``)."""

    kind: ClassVar[str] = "truncated"
    stored: ClassVar[tuple[str, ...]] = ("result",)

    item_id: str
    audio_end_ms: int

    @property
    def summary(self) -> str:
        return f"{self.item_id} at {self.audio_end_ms} ms"

    def data(self) -> dict[str, Any]:
        return {"result": "ok"}


@dataclass(frozen=True, slots=True)
class TruncateRefused(Report):
    """The service refused a truncate with an ``error`` event."""

    kind: ClassVar[str] = "truncate_refused"
    stored: ClassVar[tuple[str, ...]] = ("result",)

    message: str

    @property
    def summary(self) -> str:
        return self.message

    def data(self) -> dict[str, Any]:
        return {"result": "failed"}


@dataclass(frozen=True, slots=True)
class BargeIn(Report):
    """The caller interrupted the agent. ``truncate_error_ms``: the audio the truncate kept minus what the caller
    had heard by the wall clock (None when nothing had played)."""

    kind: ClassVar[str] = "barge_in"
    stored: ClassVar[tuple[str, ...]] = ("truncate_error_ms",)

    why: str
    truncate_error_ms: float | None

    @property
    def summary(self) -> str:
        return self.why


@dataclass(frozen=True, slots=True)
class UsageTotals(Report):
    """What the call used of the model service, all its sessions together: session audio time (where the dialect
    counts it) and response tokens."""

    kind: ClassVar[str] = "usage"
    stored: ClassVar[tuple[str, ...]] = ("audio_seconds", "input_tokens", "output_tokens")

    audio_seconds: float
    input_tokens: int
    output_tokens: int

    @property
    def summary(self) -> str:
        return f"{self.audio_seconds:g} s of session audio, {self.input_tokens}+{self.output_tokens} tokens"


@dataclass(frozen=True, slots=True)
class EchoJudged(Report):
    """The echo guard judged a speech start over the agent (``bridge/call/echo.py``): ``taken`` (the caller: a
    barge-in), ``rejected`` (the agent's own audio coming back: the agent goes on), ``paused`` (maybe the caller:
    the agent's audio is held), ``resumed`` (no words followed: the agent goes on where it was held)."""

    kind: ClassVar[str] = "echo_judged"
    stored: ClassVar[tuple[str, ...]] = ("outcome", "residual_dbfs", "delay_ms")

    outcome: EchoOutcome
    residual_dbfs: float | None  # what the echo path left unexplained over the window
    delay_ms: float | None  # the echo path's delay (None: the agent was silent over the window)

    @property
    def summary(self) -> str:
        where = f", residual {self.residual_dbfs:.0f} dBFS" if self.residual_dbfs is not None else ""
        path = f", echo path {self.delay_ms:.0f} ms" if self.delay_ms is not None else ""
        return f"{self.outcome}{where}{path}"


@dataclass(frozen=True, slots=True)
class TalkedOver(Report):
    """After a barge-in on a model that stops itself (no cancel), how long its speech went on over the caller: from
    the caller's onset (the bridge's own voice detection) to the model's last voiced audio. The caller heard only
    what was queued before the flush; the rest was dropped."""

    kind: ClassVar[str] = "talked_over"
    stored: ClassVar[tuple[str, ...]] = ("talk_over_ms",)

    talk_over_ms: float

    @property
    def summary(self) -> str:
        return f"the agent talked over the caller for {self.talk_over_ms:.0f} ms"


@dataclass(frozen=True, slots=True)
class TransferDecided(Report):
    """The model (or an orchestrator) called for a transfer and the bridge accepted it: from here the transfer
    happens (``bridge/call/toolcalls.py``), after its announcement or at once if the caller speaks over it."""

    kind: ClassVar[str] = "transfer_decided"
    stored: ClassVar[tuple[str, ...]] = ("target", "mode")

    target: str
    mode: TransferMode

    @property
    def summary(self) -> str:
        return f"{self.mode} transfer to {self.target}"


@dataclass(frozen=True, slots=True)
class TransferLineInterrupted(Report):
    """The caller spoke (or pressed a key) over the transfer's announcement: the line is cut, the transfer goes on
    at once with the caller on hold."""

    kind: ClassVar[str] = "transfer_line_interrupted"

    @property
    def summary(self) -> str:
        return "caller spoke over the transfer line; the transfer goes ahead"


@dataclass(frozen=True, slots=True)
class ToolCalled(Report):
    kind: ClassVar[str] = "tool_call"
    stored: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    arguments: str
    output_json: str

    @property
    def summary(self) -> str:
        return f"{self.name}({self.arguments}) -> {self.output_json}"


@dataclass(frozen=True, slots=True)
class ToolStarted(Report):
    """The bridge began a business tool's call (a dialplan's HTTP or MCP tool) for the model's ``call_id``."""

    kind: ClassVar[str] = "tool_started"
    stored: ClassVar[tuple[str, ...]] = ("name", "call_id")

    name: str
    call_id: str
    arguments: str

    @property
    def summary(self) -> str:
        return f"{self.name}({self.arguments}) started"


@dataclass(frozen=True, slots=True)
class ToolFinished(Report):
    """A business tool's result, as the model gets it: ``outcome`` is ``ok`` or the typed error (``timeout``,
    ``http_status``, ``unreachable``, ...); ``latency_ms`` from the model's call to the result;
    ``longest_silence_ms`` the longest the caller heard nothing meanwhile (``bridge.call.waiting``)."""

    kind: ClassVar[str] = "tool_result"
    stored: ClassVar[tuple[str, ...]] = ("name", "call_id", "outcome", "latency_ms", "longest_silence_ms")

    name: str
    call_id: str
    arguments: str
    output_json: str
    outcome: ToolCallOutcome
    latency_ms: float
    longest_silence_ms: float = 0.0

    @property
    def summary(self) -> str:
        return f"{self.name}: {self.outcome} in {self.latency_ms:.0f} ms -> {self.output_json}"


@dataclass(frozen=True, slots=True)
class ToolGuarded(Report):
    """The plan kept something from the model's tool call ``call_id``: ``unverified``, the tool was not called
    (``detail``: the verifying tools it waits for); ``pinned_argument``, arguments the plan pins were discarded
    (``detail``: their names, never their values)."""

    kind: ClassVar[str] = "tool_guarded"
    stored: ClassVar[tuple[str, ...]] = ("name", "call_id", "guard")

    name: str
    call_id: str
    guard: ToolGuard
    detail: str = ""

    @property
    def summary(self) -> str:
        if self.guard is ToolGuard.UNVERIFIED:
            return f"{self.name}: not called, the caller is not verified ({self.detail})"
        return f"{self.name}: the model's {self.detail} discarded (pinned by the plan)"


@dataclass(frozen=True, slots=True)
class FillerSaid(Report):
    """While the call waited (``waited_ms`` so far) the agent said ``text``: a ``filler`` line, or the ``announce``
    line of a tool that declared itself slow."""

    kind: ClassVar[str] = "filler"
    stored: ClassVar[tuple[str, ...]] = ("why", "waited_ms")

    text: str
    why: str
    waited_ms: float

    @property
    def summary(self) -> str:
        return f"{self.why} after {self.waited_ms:.0f} ms: {self.text}"


@dataclass(frozen=True, slots=True)
class WaitHold(Report):
    """The soft hold audio while a tool works, or while the answer to the caller's turn is slow, started (``on``)
    or stopped."""

    kind: ClassVar[str] = "wait_hold"
    stored: ClassVar[tuple[str, ...]] = ("on",)

    on: bool

    @property
    def summary(self) -> str:
        return "soft hold on" if self.on else "soft hold off"


@dataclass(frozen=True, slots=True)
class LongestSilence(Report):
    """The call's longest dead air so far grew (``CallReport.longest_silence_ms``: the longest the caller heard
    nothing while waiting on the agent, a turn's gap before the agent's first audio or its soft hold, or a stretch
    of a business tool's wait); the call's hash keeps it for the console."""

    kind: ClassVar[str] = "longest_silence"
    stored: ClassVar[tuple[str, ...]] = ("longest_silence_ms",)

    longest_silence_ms: float

    @property
    def summary(self) -> str:
        return f"longest silence so far {self.longest_silence_ms:.0f} ms"


@dataclass(frozen=True, slots=True)
class LongestWait(Report):
    """The longest the caller has waited for the agent so far grew (``CallReport.longest_wait_ms``: the greeting, or
    a turn's end of speech to the agent's audio answering it, hold audio included); the call's hash keeps it for
    the console."""

    kind: ClassVar[str] = "longest_wait"
    stored: ClassVar[tuple[str, ...]] = ("longest_wait_ms",)

    longest_wait_ms: float

    @property
    def summary(self) -> str:
        return f"longest wait so far {self.longest_wait_ms:.0f} ms"


@dataclass(frozen=True, slots=True)
class TransferStarted(Report):
    """The session asked the leg for a blind transfer (REFER, RFC 3515)."""

    kind: ClassVar[str] = "transfer"

    target: str

    @property
    def summary(self) -> str:
        return self.target


@dataclass(frozen=True, slots=True)
class AgentHungUp(Report):
    """The ``end_call`` tool's line played out: the session hangs up."""

    kind: ClassVar[str] = "hangup"

    @property
    def summary(self) -> str:
        return "end_call tool"


@dataclass(frozen=True, slots=True)
class SupervisorActed(Report):
    """A supervisor acted on the call (:class:`SupervisorAction`): who, and what (a whisper's text is kept: the
    call's timeline shows what the agent was told)."""

    kind: ClassVar[str] = "supervisor"
    stored: ClassVar[tuple[str, ...]] = ("action", "who")

    action: str
    who: str
    detail: str = ""

    @property
    def summary(self) -> str:
        return f"{self.action} by {self.who}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True, slots=True)
class TransferUpdate(Report):
    """A NOTIFY of the transfer's progress (RFC 3515)."""

    kind: ClassVar[str] = "transfer_progress"
    stored: ClassVar[tuple[str, ...]] = ("final",)

    status_code: int
    reason: str
    final: bool

    @property
    def summary(self) -> str:
        return f"{self.status_code} {self.reason}"


@dataclass(frozen=True, slots=True)
class KeyPressed(Report):
    kind: ClassVar[str] = "dtmf"
    stored: ClassVar[tuple[str, ...]] = ("source",)

    digit: str
    source: DtmfSource

    @property
    def summary(self) -> str:
        return self.digit


@dataclass(frozen=True, slots=True)
class ServiceError(Report):
    """An ``ErrorEvent`` from the service or the protocol core."""

    kind: ClassVar[str] = "error"
    stored: ClassVar[tuple[str, ...]] = ("code", "error_class")

    code: str
    error_class: ErrorClass
    message: str

    @property
    def summary(self) -> str:
        return f"{self.error_class}/{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class CallerSilent(Report):
    """``IdleTimeout``: the service's idle timeout fired."""

    kind: ClassVar[str] = "idle_timeout"
    stored: ClassVar[tuple[str, ...]] = ("item_id",)

    audio_start_ms: int
    audio_end_ms: int
    item_id: str

    @property
    def summary(self) -> str:
        return f"silence {self.audio_start_ms}-{self.audio_end_ms} ms"


@dataclass(frozen=True, slots=True)
class UnknownServerEvent(Report):
    kind: ClassVar[str] = "unknown_event"

    type: str

    @property
    def summary(self) -> str:
        return self.type


@dataclass(frozen=True, slots=True)
class SessionLost(Report):
    """The Realtime session closed under the call (``Closed``); recovery follows."""

    kind: ClassVar[str] = "realtime_closed"
    stored: ClassVar[tuple[str, ...]] = ("retryable", "error_class")

    error_class: ErrorClass | None
    code: int | None
    reason: str
    retryable: bool

    @property
    def summary(self) -> str:
        return f"{self.error_class}/{self.code}: {self.reason}"

    @property
    def error_label(self) -> str:
        """The error class as a metrics label: a close with no class counts as a network failure."""
        return str(self.error_class or ErrorClass.NETWORK)

    def data(self) -> dict[str, Any]:
        return {"retryable": self.retryable, "error_class": self.error_label}


@dataclass(frozen=True, slots=True)
class ReconnectFailed(Report):
    kind: ClassVar[str] = "reconnect_failed"
    stored: ClassVar[tuple[str, ...]] = ("attempt", "error_class")

    attempt: int
    error_class: ErrorClass
    step: str  # what the retry policy chose for this attempt

    @property
    def summary(self) -> str:
        return f"{self.error_class}: {self.step}"


@dataclass(frozen=True, slots=True)
class Recovered(Report):
    kind: ClassVar[str] = "recovered"

    reconnects: int  # sessions re-established on this call so far, this one included

    @property
    def summary(self) -> str:
        return f"attempt {self.reconnects}"


@dataclass(frozen=True, slots=True)
class WarmTransferEnded(Report):
    """A warm transfer's outcome (``bridge/call/warm.py``): ``sip_code`` is the human leg's final status (0: none,
    e.g. the ring timeout); ``seconds`` from the dial to the outcome."""

    kind: ClassVar[str] = "transfer_outcome"
    stored: ClassVar[tuple[str, ...]] = ("outcome", "target", "sip_code", "seconds")

    outcome: TransferOutcome
    target: str
    sip_code: int
    seconds: float

    @property
    def summary(self) -> str:
        return f"{self.outcome} ({self.sip_code})" if self.sip_code else str(self.outcome)


@dataclass(frozen=True, slots=True)
class TransferStepped(Report):
    """A warm transfer moved on (the console shows where it is); :class:`WarmTransferEnded` tells how it ended."""

    kind: ClassVar[str] = "transfer_step"
    stored: ClassVar[tuple[str, ...]] = ("step",)

    step: TransferStep

    @property
    def summary(self) -> str:
        return str(self.step)


class ConsentStatus(enum.StrEnum):
    """What became of a recorded call's consent prompt (``recording.consent_audio``), which the bridge plays itself
    at the answer: only a prompt that played out starts the recording."""

    PLAYED = "played"  # played out in full: the recording starts at its end
    INTERRUPTED = "interrupted"  # cut short by the caller's key or voice (``recording.consent_barge_in``): no recording
    CALLER_HUNG_UP = "caller_hung_up"  # the caller hung up before it played out: no recording
    NOT_PLAYED = "not_played"  # it could not be played (its file unreadable at the call, no answer): no recording


@dataclass(frozen=True, slots=True)
class ConsentPrompt(Report):
    """The consent prompt's end: what became of it (:class:`ConsentStatus`), how much of it the caller heard of how
    long it is, whether the caller spoke or pressed a key over it, and its file (the name, not the path)."""

    kind: ClassVar[str] = "consent"
    stored: ClassVar[tuple[str, ...]] = ("status",)

    status: ConsentStatus
    played_ms: int = 0
    duration_ms: int = 0
    talked_over: bool = False
    audio: str = ""

    def record(self) -> dict[str, Any]:
        """As the call's report, the recording's header and the ``call.ended`` webhook keep it."""
        return {
            "status": str(self.status),
            "played_ms": self.played_ms,
            "duration_ms": self.duration_ms,
            "talked_over": self.talked_over,
            "audio": self.audio,
        }

    @property
    def summary(self) -> str:
        over = ", the caller spoke over it" if self.talked_over else ""
        return f"consent prompt {self.status} ({self.played_ms} of {self.duration_ms} ms{over})"


@dataclass(frozen=True, slots=True)
class HoldStarted(Report):
    """The caller hears hold audio: the model has been away long enough (the dialplan's ``outage``), or a transfer
    holds the caller (a warm one while the human is called; a blind one whose announcement the caller cut short)."""

    kind: ClassVar[str] = "hold_started"

    @property
    def summary(self) -> str:
        return "caller on hold"


@dataclass(frozen=True, slots=True)
class HoldEnded(Report):
    """The hold audio stopped: the model is back, or the call fails over."""

    kind: ClassVar[str] = "hold_ended"
    stored: ClassVar[tuple[str, ...]] = ("held_s",)

    held_s: float

    @property
    def summary(self) -> str:
        return f"{self.held_s:.1f} s on hold"


@dataclass(frozen=True, slots=True)
class OutageEnded(Report):
    """The model came back after an outage of ``outage_s`` (the session was lost, or never opened)."""

    kind: ClassVar[str] = "outage_ended"
    stored: ClassVar[tuple[str, ...]] = ("outage_s",)

    outage_s: float

    @property
    def summary(self) -> str:
        return f"model back after {self.outage_s:.1f} s"


@dataclass(frozen=True, slots=True)
class FailedOver(Report):
    """The outage outlasted the dialplan's ``outage.hold_s``: ``failover`` is ``transfer`` or ``goodbye``."""

    kind: ClassVar[str] = "failed_over"
    stored: ClassVar[tuple[str, ...]] = ("failover", "outage_s")

    failover: str
    outage_s: float

    @property
    def summary(self) -> str:
        return f"{self.failover} after {self.outage_s:.1f} s without the model"


@dataclass(frozen=True, slots=True)
class RecoveryFailed(Report):
    """The session gave up on the model: ``gave_up_after`` reconnects were spent, or (None) none succeeded."""

    kind: ClassVar[str] = "recovery_failed"

    gave_up_after: int | None

    @property
    def summary(self) -> str:
        if self.gave_up_after is None:
            return "no realtime session"
        return f"gave up after {self.gave_up_after} reconnects"


@dataclass(frozen=True, slots=True)
class CallerTurnLost(Report):
    """Caller turns committed in a session that is gone, with no transcript: the new session never heard them."""

    kind: ClassVar[str] = "caller_turn_lost"

    turns: int
    replaced: bool  # taken along by a replaced session (rollover), not lost with a closed one

    @property
    def summary(self) -> str:
        return f"{self.turns} turn(s) with no transcript" + (" from the replaced session" if self.replaced else "")


@dataclass(frozen=True, slots=True)
class RolloverReady(Report):
    kind: ClassVar[str] = "rollover_ready"

    @property
    def summary(self) -> str:
        return "next session configured"


@dataclass(frozen=True, slots=True)
class RolloverFailed(Report):
    kind: ClassVar[str] = "rollover_failed"

    message: str

    @property
    def summary(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class RolledOver(Report):
    kind: ClassVar[str] = "rollover"

    why: str

    @property
    def summary(self) -> str:
        return self.why


@dataclass(frozen=True, slots=True)
class PlayoutTotals(Report):
    kind: ClassVar[str] = "playout"
    stored: ClassVar[tuple[str, ...]] = ("underruns", "dropped_frames")

    underruns: int
    dropped_frames: int

    @property
    def summary(self) -> str:
        return f"{self.underruns} underruns, {self.dropped_frames} dropped frames"


@dataclass(frozen=True, slots=True)
class CallerAudioDropped(Report):
    """:class:`MediaDropped`: the caller's audio reaches nobody (it comes from a host the call does not admit)."""

    kind: ClassVar[str] = "media_dropped"
    stored: ClassVar[tuple[str, ...]] = ("dropped", "admitted", "source")

    dropped: int
    admitted: str
    source: str

    @property
    def summary(self) -> str:
        source = self.source or "an unknown host"
        return f"caller audio dropped: {self.dropped} packets from {source} (admitted: {self.admitted})"


@dataclass(frozen=True, slots=True)
class CallerHeld(Report):
    """:class:`CallerHold`: the caller put the call on hold; the agent's audio waits for them."""

    kind: ClassVar[str] = "caller_held"

    @property
    def summary(self) -> str:
        return "the caller put the call on hold"


@dataclass(frozen=True, slots=True)
class CallerResumed(Report):
    """:class:`CallerHold` ended: the caller took the call off hold after ``held_s``; the agent goes on where it
    was."""

    kind: ClassVar[str] = "caller_resumed"
    stored: ClassVar[tuple[str, ...]] = ("held_s",)

    held_s: float

    @property
    def summary(self) -> str:
        return f"the caller took the call off hold after {self.held_s:.1f} s"


POST_CALL_OK: Final = "ok"  # a post-call status: the model answered (any other status says why it did not)


@dataclass(frozen=True, slots=True)
class PostCallDone(Report):
    """What the call's model said of the call once it was over (``bridge/call/wrapup.py``), or why it could not:
    ``status`` is ``ok`` or the reason; ``text`` the summary, ``disposition`` and ``fields_json`` ("" when none)."""

    kind: ClassVar[str] = "post_call"
    stored: ClassVar[tuple[str, ...]] = ("status", "disposition")

    status: str
    disposition: str = ""
    text: str = ""
    fields_json: str = ""

    @property
    def summary(self) -> str:
        if self.status != POST_CALL_OK:
            return f"no post-call summary: {self.status}"
        return f"{self.disposition or '(no disposition)'}: {self.text}" if self.text else self.disposition


@dataclass(frozen=True, slots=True)
class ChecksDone(Report):
    """The plan's compliance checks on the ended call (``bridge/call/checks.py``): how many, the names of those that
    failed, comma-separated ("" when none did), and every row as JSON."""

    kind: ClassVar[str] = "checks"
    stored: ClassVar[tuple[str, ...]] = ("failed",)

    total: int
    failed: str = ""
    rows_json: str = ""  # every check's row (name, passed, detail), as JSON

    @property
    def summary(self) -> str:
        return f"checks failed: {self.failed}" if self.failed else f"all {self.total} check(s) passed"


# The end reason of a call that reached its dialplan's max_call_s (bridge.call.limit)
MAX_CALL_DURATION = "max call duration"
# The end reason of a call whose caller hung up (CANCEL, or a BYE in the early dialog) before the 200 OK
ABANDONED_WHILE_RINGING = "caller abandoned while ringing"
# The end reason of a call whose 200 OK was never ACKed (RFC 3261 §13.3.1.4: the UAS gives up after 64*T1): the
# bridge's failure (NAT, a wrong Contact or Record-Route), not the caller's hang-up (bridge.sip.bounds)
NO_ACK = "no ACK"
# The end reason of a call whose ring was answered elsewhere: a CANCEL with Reason SIP cause 200 (RFC 3326 §2)
COMPLETED_ELSEWHERE = "call completed elsewhere"
# The end reason of a call the network ended (its BYE or CANCEL names a network failure): NETWORK_FAILURE + (label)
NETWORK_FAILURE = "network failure"


def network_failure(label: str) -> str:
    """The end reason of a call the network ended, naming the cause: ``network failure (Q.850 cause 41)``."""
    return f"{NETWORK_FAILURE} ({label})"


@dataclass(frozen=True, slots=True)
class PeerReasonGiven(Report):
    """The far side's BYE or CANCEL that ended the call gave a ``Reason`` header (RFC 3326): ``reason``, its values
    as read (:meth:`PeerEnding.header`), written again from what was parsed, never as received."""

    kind: ClassVar[str] = "peer_reason"
    stored: ClassVar[tuple[str, ...]] = ("request", "reason")

    request: str
    reason: str

    @property
    def summary(self) -> str:
        return f"{self.request} with Reason {self.reason}"


@dataclass(frozen=True, slots=True)
class CallEnded(Report):
    """The last report of a call."""

    kind: ClassVar[str] = "ended"
    stored: ClassVar[tuple[str, ...]] = ("outcome", "ended_by")

    reason: str
    outcome: CallOutcome
    ended_by: EndedBy

    @property
    def summary(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class OrchestratorDecided(Report):
    """The orchestrator answered a caller turn (``ms`` after the request): the action the call carries out."""

    kind: ClassVar[str] = "orchestrator_decision"
    stored: ClassVar[tuple[str, ...]] = ("action", "ms")

    action: str
    text: str
    ms: float

    @property
    def summary(self) -> str:
        return f"{self.action}: {self.text}" if self.text else self.action


@dataclass(frozen=True, slots=True)
class OrchestratorLate(Report):
    """No answer within ``orchestrator.timeout_ms``: the filler is said while the bridge waits on."""

    kind: ClassVar[str] = "orchestrator_filler"
    stored: ClassVar[tuple[str, ...]] = ("waited_ms",)

    waited_ms: float
    filler: str

    @property
    def summary(self) -> str:
        return f"no answer after {self.waited_ms:.0f} ms: {self.filler}"


@dataclass(frozen=True, slots=True)
class OrchestratorFailed(Report):
    """A request to the orchestrator failed (``error``: its kind); ``then`` is what the call did instead
    (``respond``: the model answered the turn; ``failover``: the plan's outage failover)."""

    kind: ClassVar[str] = "orchestrator_error"
    stored: ClassVar[tuple[str, ...]] = ("error", "then")

    error: str
    message: str
    then: str

    @property
    def summary(self) -> str:
        return f"{self.error}: {self.message} ({self.then})"


@dataclass(frozen=True, slots=True)
class LegHungUp(Report):
    """The bridge hung up the phone leg (a recording notes it; the session's own reports say why)."""

    kind: ClassVar[str] = "leg_hangup"

    @property
    def summary(self) -> str:
        return "the bridge hung up"


@dataclass(frozen=True, slots=True)
class LegTransferred(Report):
    """The bridge asked the phone leg to transfer the caller (a recording notes it)."""

    kind: ClassVar[str] = "leg_transfer"

    uri: str

    @property
    def summary(self) -> str:
        return self.uri


# --------------------------------------------------------------------------------------------------------------
# Reports as stored (a Redis stream entry) and read back

REPORTS: Final[Mapping[str, type[Report]]] = {
    c.kind: c
    for c in list(globals().values())
    if isinstance(c, type) and issubclass(c, Report) and c is not Report and "kind" in c.__dict__
}


class UndecodableEntry(ValueError):
    """A stored entry that is no report: an unknown ``kind``, or a value its field's type does not take."""


def text_of(value: Any) -> str:
    """One value as stored: enums by value, booleans as ``1``/``0``, floats to the thousandth, None as empty, a
    record (:class:`Usage`) as JSON."""
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if is_dataclass(value) and not isinstance(value, type):
        return json.dumps(asdict(value), separators=(",", ":"))
    return str(value)


def encode(report: Report) -> dict[str, str]:
    """What is stored for ``report`` (a Redis stream entry's fields): its ``kind`` and ``summary``, each of its
    fields by name, and what :meth:`Report.data` adds under names that are no field (a truncate's ``result``).
    :func:`decode` is the inverse."""
    out = {"kind": report.kind, "summary": report.summary}
    out |= {f.name: text_of(getattr(report, f.name)) for f in fields(report)}
    out |= {k: text_of(v) for k, v in report.data().items() if k not in out}
    return out


def as_json(report: Report) -> dict[str, Any]:
    """What a JSON line keeps of ``report`` (a recording's note): :func:`encode`'s fields with the values JSON has
    (numbers, booleans, null, a record as an object); :func:`decode` reads it back."""
    out: dict[str, Any] = {"kind": report.kind, "summary": report.summary}
    out |= {f.name: _native(getattr(report, f.name)) for f in fields(report)}
    out |= {k: _native(v) for k, v in report.data().items() if k not in out}
    return out


def _native(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def decode(entry: Mapping[str, Any]) -> Report:
    """The report an entry stores (:func:`encode`'s or :func:`as_json`'s output), enums as enums. A field the entry
    lacks (one stored before every field was) takes the summary where the summary is that field as it is (a
    transcript line, a digit), else its default, else the empty value of its type. Raises
    :class:`UndecodableEntry`."""
    cls = REPORTS.get(str(entry.get("kind", "")))
    if cls is None:
        raise UndecodableEntry(f"no report of kind {entry.get('kind')!r}")
    hints = _hints(cls)
    told = _summary_field(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in entry:
            values[f.name] = _parsed(hints[f.name], entry[f.name], f.name)
        elif f.name == told:
            values[f.name] = str(entry.get("summary", ""))
        elif f.default is MISSING:
            values[f.name] = _parsed(hints[f.name], "", f.name)
    return cls(**values)


_HINTS: dict[str, dict[str, Any]] = {}  # per kind, the report's field types (resolved on first use)
_TOLD: dict[str, str | None] = {}  # per kind, the field its summary is as it is (None: none)


def _hints(cls: type[Report]) -> dict[str, Any]:
    if cls.kind not in _HINTS:
        _HINTS[cls.kind] = typing.get_type_hints(cls)
    return _HINTS[cls.kind]


def _summary_field(cls: type[Report]) -> str | None:
    """The text field a report of ``cls`` has as its summary, unchanged (``CallerSaid.text``), if one: found by
    making one whose text fields all differ and looking which one its summary is."""
    if cls.kind not in _TOLD:
        hints = _hints(cls)
        texts = {f.name: f"<{f.name}>" for f in fields(cls) if hints[f.name] is str}
        try:
            sample = cls(**{f.name: texts.get(f.name) or _sample(hints[f.name]) for f in fields(cls)})
            _TOLD[cls.kind] = next((name for name, text in texts.items() if sample.summary == text), None)
        except (TypeError, ValueError):
            _TOLD[cls.kind] = None
    return _TOLD[cls.kind]


def _sample(hint: Any) -> Any:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(iter(hint))
    return hint()


_EMPTY: Final[Mapping[type, Any]] = {str: "", int: 0, float: 0.0, bool: False}


def _parsed(hint: Any, value: Any, name: str) -> Any:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if value in ("", None):
            return None
        (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
    if hint in (int, float) and isinstance(value, int | float) and not isinstance(value, bool):
        return hint(value)  # a JSON number
    if isinstance(hint, type) and is_dataclass(hint) and isinstance(value, Mapping):
        return hint(**value)  # a JSON object
    if not isinstance(value, str):
        value = text_of(value)
    try:
        if hint is bool:
            return value in ("1", "true", "True")
        if value == "" and hint in _EMPTY:
            return _EMPTY[hint]
        if isinstance(hint, type) and issubclass(hint, enum.Enum | int | float | str):
            return hint(value)
        return hint(**json.loads(value))
    except (ValueError, TypeError):
        raise UndecodableEntry(f"{name}: {value!r} is no {getattr(hint, '__name__', hint)}") from None
