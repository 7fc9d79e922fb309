"""What a dialect is: the :class:`Dialect` table type, its capabilities and the far end's tables.

A dialect owns its whole wire, in both directions:

* **connect**: the URL path under the base (with the model in the query or not), the extra headers and the
  credential endpoint (if it has one);
* **handshake**: the command that opens the session (:class:`~bridge.events.StartSession`, with the history a
  continued call starts from), the bridge event that confirms it and the command that ends it (:class:`Handshake`);
* **commands**: one encoder per :class:`~bridge.events.Command` (wire text frames out), or the reason the dialect
  has no such command (``refused``: encoding one raises :class:`UnsupportedCommand`);
* **server events**: wire name -> canonical key -> decoder, and a decoder may yield several bridge events, or none;
* **audio append**: the JSON text around the base64 (:class:`~bridge.audio.wire.AppendTemplate`), which the C
  uplink also takes from here;
* **capabilities** (:class:`Capabilities`): who detects turns, who decides to respond, whether cancel and truncate
  exist, whether audio must flow without gaps either way, how usage is counted, the session's cap, and which
  formats and rates go in and out;
* **the service**: what the far end accepts and how it spells its answers, for the emulator: :class:`Service` for
  the Realtime shapes (session, item and response schemas, item objects, content types, rate limits, usage, the
  credential endpoint), :class:`LiveService` for GPT-Live's. The emulator serves from these tables; nothing else
  does.

Code outside ``bridge/realtime/dialects/`` reads these fields and never compares a dialect's name or identity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlencode

from bridge import events as ev
from bridge.audio.wire import AppendTemplate
from bridge.errors import LocalProtocolError
from bridge.realtime.dialects.schema import Node, Obj
from bridge.realtime.profile import AgentProfile, AudioFormat

Encoder = Callable[[Any], Sequence[str]]  # one command -> its wire text frames
Decoder = Callable[[Mapping[str, Any]], Sequence[ev.Event]]  # one server event -> bridge events (maybe none)


@dataclass(frozen=True, order=True)
class WireAudio:
    """One audio format on the wire, with its rate: PCM16 little-endian mono, or G.711 (ITU-T G.711) at 8 kHz."""

    encoding: AudioFormat  # the profile's word for the encoding
    rate: int  # Hz

    def __str__(self) -> str:
        return (
            f"{self.encoding} {self.rate // 1000} kHz" if self.rate % 1000 == 0 else f"{self.encoding} {self.rate} Hz"
        )


PCM16_24K = WireAudio("pcm16", 24000)
PCM16_16K = WireAudio("pcm16", 16000)
G711_ULAW = WireAudio("g711_ulaw", 8000)
G711_ALAW = WireAudio("g711_alaw", 8000)
# AgentProfile.audio_format (the dialplan's word) -> the format it means
PROFILE_FORMATS: Mapping[str, WireAudio] = MappingProxyType(
    {"pcm16": PCM16_24K, "pcm16_16k": PCM16_16K, "g711_ulaw": G711_ULAW, "g711_alaw": G711_ALAW}
)


@dataclass(frozen=True)
class Capabilities:
    """What a dialect lets the bridge do, as data. The call session acts on these, never on a dialect's name."""

    turn_detection: Literal["server", "none"]  # the service's VAD marks turns, or nobody does (rebuild from text)
    responds: Literal["model", "orchestrator"]  # who decides when the agent speaks
    cancel: bool  # a response can be cancelled by the client
    truncate: bool  # the client can cut an item's audio to what the caller heard
    continuous_audio: bool  # caller audio must stream without gaps, silence included
    continuous_output: bool  # the model's audio streams at real-time pace, silence included, outside responses
    usage: Literal["tokens", "audio_seconds"]  # what the service counts: tokens per response, or session audio time
    session_cap_s: float  # the service ends a session after this long
    input_formats: frozenset[WireAudio]
    output_formats: frozenset[WireAudio]
    # how a text is spoken verbatim (ev.Say): an out-of-band response (``conversation: "none"``, with its own
    # response lifecycle, cancellable, never in the conversation so never truncated), or commentary in the stream
    says: Literal["out_of_band", "commentary"] = "out_of_band"
    # a text-only response out of band (ev.AskText): the session answers a question about the conversation in text,
    # outside it (the post-call summary); without it the dialect refuses the command
    text_out_of_band: bool = False


@dataclass(frozen=True)
class Handshake:
    """How a session opens and ends. The bridge sends ``opening(profile, history)`` (its first frame is the client
    event ``opened_by``, a canonical client key) and waits for a ``confirmation`` event
    (:meth:`bridge.realtime.client.RealtimeClient.open`); ``confirmed_by`` is the canonical key of the server event
    that decodes to it. ``closing`` is the canonical client key of the command that ends a session, answered by the
    server event ``closed_by`` (None: the client just closes the socket)."""

    opening: Callable[[AgentProfile, tuple[ev.AddText, ...]], ev.Command]
    opened_by: str
    confirmation: type[ev.Event]
    confirmed_by: str
    closing: str | None = None
    closed_by: str | None = None


class UnsupportedCommand(LocalProtocolError):
    """A command the dialect does not have (its table says why): the caller should have read the capabilities."""

    def __init__(self, dialect: str, command: str, reason: str) -> None:
        super().__init__(f"the {dialect} dialect has no {command}: {reason}")
        self.dialect, self.command, self.reason = dialect, command, reason


@dataclass(frozen=True)
class Credential:
    """A short-lived credential minted by a dialect's credential endpoint."""

    value: str
    expires_at: float  # unix seconds

    def __repr__(self) -> str:  # never print the secret
        return f"Credential(expires_at={self.expires_at})"


# --------------------------------------------------------------------------------------------------------------
# The far end


@dataclass(frozen=True)
class Usage:
    """Token counts of one response, dialect-neutral (the service spells them per dialect)."""

    input_text: int = 0
    input_audio: int = 0
    output_text: int = 0
    output_audio: int = 0


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
class MintRequest:
    """A credential request's body, read: the session config, ``expires_after`` and fields the endpoint lacks."""

    session: Any
    expires_after: Any
    unknown: frozenset[str]
    param_prefix: str  # where the session sits in the body, for error params ("session" or top level "")


@dataclass(frozen=True)
class Service:
    """The far end as this dialect's wire shows it. A session is stored in the dialect's own shape, so
    ``session.updated`` echoes it as the client spelled it; ``session_paths`` say where each neutral field sits."""

    # what it accepts
    client_envelopes: Mapping[str, Obj]  # canonical client key -> the event's envelope
    session_schema: Obj
    item_schema: Node
    response_schema: Obj
    session_defaults: Callable[[str], dict[str, Any]]  # model -> the session a connection starts with
    session_paths: Mapping[str, tuple[str, ...]]  # model, instructions, voice, input_format, output_format, ...
    # the same for response.create's ``response``: its own fields, and the voice, output format and modalities
    # where the session keeps them
    response_paths: Mapping[str, tuple[str, ...]] = field(init=False)
    # how it spells its answers
    item_object: str | None  # "object" of every item (None: items carry none)
    item_done_event: bool  # item.done follows item.added
    content_types: Mapping[str, str]  # assistant content: {"audio": ..., "text": ...}
    rate_limits_on_created: tuple[str, ...]  # limits sent right after response.created
    rate_limits_after_done: tuple[str, ...]  # limits sent a little after response.done
    obfuscation: bool  # text and transcript deltas carry an "obfuscation" string
    name_on_function_done: bool  # response.function_call_arguments.done names the function
    response_fields: Callable[[ResponseInfo], dict[str, Any]]
    usage: Callable[[Usage], dict[str, Any]]
    # the credential endpoint
    mint_request: Callable[[Mapping[str, Any]], MintRequest]
    mint_response: Callable[[str, int, dict[str, Any]], dict[str, Any]]
    # how the service refuses this shape once it has retired it: (error code, message), None if it never did
    retired: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        shared = {name: self.session_paths[name] for name in ("voice", "output_format", "output_modalities")}
        own = {"instructions": ("instructions",), "conversation": ("conversation",), "metadata": ("metadata",)}
        object.__setattr__(self, "response_paths", MappingProxyType({**own, **shared, "input": ("input",)}))


@dataclass(frozen=True)
class LiveService:
    """The far end as GPT-Live's wire shows it, for the emulator's Live module (``bridge/emulator/live.py``).

    Live has no conversation items or responses of its own: speech is one continuous output stream, and decisions
    go to a delegated Responses backend whose stream events come wrapped in ``response.event``."""

    client_envelopes: Mapping[str, Obj]  # canonical client key -> the event's envelope
    session_schema: Obj  # session.start's session
    update_schema: Obj  # session.update's session (delegation and triggers only)
    item_schema: Node  # response.item.create's item (a Responses input item)
    session_defaults: Callable[[str], dict[str, Any]]  # model -> the server's defaults, under the client's config
    session_paths: Mapping[str, tuple[str, ...]]  # model, instructions, voice, format, delegation, tools, input
    session_resource: Callable[[Mapping[str, Any], str, int], dict[str, Any]]  # (config, id, expires_at) -> resource
    error: Callable[[str, str, str, str | None, str | None], dict[str, Any]]  # (code, type, message, param, id)
    usage: Callable[[float], dict[str, Any]]  # cumulative seconds -> the usage object
    responses_events: Mapping[str, str]  # canonical key -> the type of a Responses stream event inside response.event
    voices: tuple[str, ...]
    retired: tuple[str, str] | None = None


# --------------------------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, eq=False)
class Dialect:
    name: str
    label: str  # how people write it ("beta", "GA", "Live")
    default_model: str
    path: str  # the WebSocket's path under the base URL ("/realtime")
    handshake: Handshake
    capabilities: Capabilities
    append: AppendTemplate  # the audio append's JSON text around the base64
    client_events: Mapping[str, str]  # canonical client key -> wire name
    encoders: Mapping[type[ev.Command], Encoder]
    # wire name -> canonical key, dialect-specific names only (merged with common_server_events)
    own_server_events: Mapping[str, str]
    decoders: Mapping[str, Decoder]  # canonical key -> decoder
    build_session: Callable[[AgentProfile], dict[str, Any]]
    build_response: Callable[[str | None, bool, Mapping[str, str]], dict[str, Any]]
    session_fields: frozenset[str]  # top-level session fields this dialect accepts
    format_value: Callable[[str], Any]  # the profile's word for a format -> its wire value
    format_name: Callable[[Any], str | None]  # a wire format value -> the profile's word for it (None: unknown)
    credential_path: str | None  # None: no short-lived credentials (the long-lived key connects)
    build_credential_request: Callable[[AgentProfile], dict[str, Any]]
    parse_credential: Callable[[Mapping[str, Any]], Credential]
    service: Service | LiveService
    extra_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # wire name -> canonical key, the names this dialect shares with its family (Realtime beta and GA)
    common_server_events: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # wire names that mean the same canonical event but are not the primary spelling (decode only)
    alias_server_events: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    model_in_url: bool = True  # ``?model=`` on the WebSocket URL (else the model goes in the opening command)
    openai_shutdown: dt.date | None = None  # the day OpenAI's service stopped taking this dialect (None: it does)
    refused: Mapping[type[ev.Command], str] = field(default_factory=lambda: MappingProxyType({}))  # command -> why not
    # decoders that remember what one session said earlier, made afresh for each session: canonical key ->
    # decoder, over ``decoders`` (beta names a function only in its output item, not where its arguments end)
    session_decoders: Callable[[], Mapping[str, Decoder]] = field(default=lambda: MappingProxyType({}))
    # the profile of an orchestrated call: the model answers nothing on its own (the bridge asks it to speak)
    hold_answers: Callable[[AgentProfile], AgentProfile] = field(default=lambda profile: profile)
    server_events: Mapping[str, str] = field(init=False)  # wire -> canonical, everything this dialect decodes
    wire_names: Mapping[str, str] = field(init=False)  # canonical -> primary wire name (the emulator encodes)

    def __post_init__(self) -> None:
        merged = {**self.common_server_events, **self.own_server_events}
        object.__setattr__(self, "wire_names", MappingProxyType({c: w for w, c in merged.items()}))
        object.__setattr__(self, "server_events", MappingProxyType({**merged, **self.alias_server_events}))

    def url(self, base: str, model: str | None = None) -> str:
        """``base`` is e.g. ``wss://api.openai.com/v1`` or ``ws://127.0.0.1:8765/v1?drop_after_s=3``.

        A query on ``base`` is kept (the emulator takes fault settings that way); ``model`` is ignored by a dialect
        whose model goes in the opening command.
        """
        path, _, query = base.partition("?")
        params = [urlencode({"model": model or self.default_model})] if self.model_in_url else []
        params += [query] if query else []
        return f"{path.rstrip('/')}{self.path}" + ("?" + "&".join(params) if params else "")

    def headers(self, credential: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential}", **self.extra_headers}

    def wire(self, canonical: str) -> str:
        return self.wire_names[canonical]

    @property
    def realtime_service(self) -> Service:
        """The service tables of a Realtime dialect; TypeError for a dialect of another shape."""
        if not isinstance(self.service, Service):
            raise TypeError(f"the {self.name} dialect is not served in the Realtime shape")
        return self.service

    @property
    def output_audio_content_type(self) -> str:
        """The content type of the model's audio inside items."""
        return self.realtime_service.content_types["audio"]

    def __repr__(self) -> str:
        return f"Dialect({self.name})"
