"""What a dialect is: the :class:`Dialect` table type, its capabilities and the far end's tables.

A dialect owns its whole wire, in both directions:

* **connect**: the URL path under the base, the extra headers and the credential endpoint;
* **handshake**: the command that opens the session and the bridge event that confirms it (:class:`Handshake`);
* **commands**: one encoder per :class:`~bridge.events.Command` (wire text frames out);
* **server events**: wire name -> canonical key -> decoder, and a decoder may yield several bridge events, or none;
* **audio append**: the JSON text around the base64 (:class:`~bridge.audio.wire.AppendTemplate`), which the C
  uplink also takes from here;
* **capabilities** (:class:`Capabilities`): who detects turns, who decides to respond, whether cancel and truncate
  exist, whether audio must flow without gaps, and which formats and rates go in and out;
* **the service** (:class:`Service`): what the far end accepts (session, item and response schemas, defaults) and how
  it spells its answers (item objects, content types, rate limits, usage, the credential endpoint). The emulator
  serves from these tables; nothing else does.

Code outside ``bridge/realtime/dialects/`` reads these fields and never compares a dialect's name or identity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlencode

from bridge import events as ev
from bridge.audio.wire import AppendTemplate
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
G711_ULAW = WireAudio("g711_ulaw", 8000)
G711_ALAW = WireAudio("g711_alaw", 8000)
# AgentProfile.audio_format (the dialplan's word) -> the format it means
PROFILE_FORMATS: Mapping[str, WireAudio] = MappingProxyType(
    {"pcm16": PCM16_24K, "g711_ulaw": G711_ULAW, "g711_alaw": G711_ALAW}
)


@dataclass(frozen=True)
class Capabilities:
    """What a dialect lets the bridge do, as data. The call session acts on these, never on a dialect's name."""

    turn_detection: Literal["server", "none"]  # the service's VAD marks turns, or nobody does (rebuild from text)
    responds: Literal["model", "orchestrator"]  # who decides when the agent speaks
    cancel: bool  # a response can be cancelled by the client
    truncate: bool  # the client can cut an item's audio to what the caller heard
    continuous_audio: bool  # caller audio must stream without gaps, silence included
    input_formats: frozenset[WireAudio]
    output_formats: frozenset[WireAudio]


@dataclass(frozen=True)
class Handshake:
    """How a session opens: the bridge sends ``opening(profile)`` and waits for a ``confirmation`` event
    (:meth:`bridge.realtime.client.RealtimeClient.open`). ``confirmed_by`` is the canonical key of the server event
    that decodes to it; ``closing`` the client command that ends a session (None: the client closes the socket)."""

    opening: Callable[[AgentProfile], ev.Command]
    confirmation: type[ev.Event]
    confirmed_by: str
    closing: str | None = None


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
    response_paths: Mapping[str, tuple[str, ...]]  # the same for response.create's ``response``
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


# --------------------------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, eq=False)
class Dialect:
    name: str
    label: str  # how people write it ("beta", "GA")
    default_model: str
    path: str  # the WebSocket's path under the base URL ("/realtime")
    extra_headers: Mapping[str, str]
    handshake: Handshake
    capabilities: Capabilities
    append: AppendTemplate  # the audio append's JSON text around the base64
    client_events: Mapping[str, str]  # canonical client key -> wire name
    encoders: Mapping[type[ev.Command], Encoder]
    # wire name -> canonical key, dialect-specific names only (merged with common_server_events)
    own_server_events: Mapping[str, str]
    # wire names that mean the same canonical event but are not the primary spelling (decode only)
    alias_server_events: Mapping[str, str]
    common_server_events: Mapping[str, str]
    decoders: Mapping[str, Decoder]  # canonical key -> decoder
    build_session: Callable[[AgentProfile], dict[str, Any]]
    build_response: Callable[[str | None, bool, Mapping[str, str]], dict[str, Any]]
    session_fields: frozenset[str]  # top-level session fields this dialect accepts
    format_value: Callable[[str], Any]  # the profile's word for a format -> its wire value
    format_name: Callable[[Any], str | None]  # a wire format value -> the profile's word for it (None: unknown)
    credential_path: str
    build_credential_request: Callable[[AgentProfile], dict[str, Any]]
    parse_credential: Callable[[Mapping[str, Any]], Credential]
    service: Service
    server_events: Mapping[str, str] = field(init=False)  # wire -> canonical, everything this dialect decodes
    wire_names: Mapping[str, str] = field(init=False)  # canonical -> primary wire name (the emulator encodes)

    def __post_init__(self) -> None:
        merged = {**self.common_server_events, **self.own_server_events}
        object.__setattr__(self, "wire_names", MappingProxyType({c: w for w, c in merged.items()}))
        object.__setattr__(self, "server_events", MappingProxyType({**merged, **self.alias_server_events}))

    def url(self, base: str, model: str | None = None) -> str:
        """``base`` is e.g. ``wss://api.openai.com/v1`` or ``ws://127.0.0.1:8765/v1?drop_after_s=3``.

        A query on ``base`` is kept (the emulator takes fault settings that way).
        """
        path, _, query = base.partition("?")
        params = urlencode({"model": model or self.default_model})
        return f"{path.rstrip('/')}{self.path}?{params}" + (f"&{query}" if query else "")

    def headers(self, credential: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {credential}", **self.extra_headers}

    def wire(self, canonical: str) -> str:
        return self.wire_names[canonical]

    @property
    def output_audio_content_type(self) -> str:
        """The content type of the model's audio inside items."""
        return self.service.content_types["audio"]

    def __repr__(self) -> str:
        return f"Dialect({self.name})"
