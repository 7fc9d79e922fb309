"""Typed settings for ``callbridge serve`` and its workers, the twelve-factor way.

Every field comes from, later sources winning (:data:`SOURCES`): its default; the YAML file (``--config``); the
environment, ``CALLBRIDGE_<FIELD>`` (``CALLBRIDGE_WORKERS=4``; a list or mapping as JSON, a list also as
``a,b``; one entry of a mapping as ``CALLBRIDGE_<FIELD>__<KEY>``), and the older names of :data:`ENV`; the
command-line flags. Every secret (a ``SecretStr`` field, and :data:`EXTRA_SECRETS`) is also read from a file named by
``<VARIABLE>_FILE`` (Docker and Kubernetes secrets, systemd ``LoadCredential``; :class:`Secret`, the one reader of
secrets). Each source is a pydantic-settings source (:class:`Layer`: :class:`FlagSource`, :class:`SecretFileSource`,
:class:`EnvironmentSource`, :class:`YamlFileSource`, :class:`DerivedSource`) that records where each of its values
came from (:meth:`Settings.origin`). :func:`load_settings` reports every bad value at once, each with its source
(``flag --workers``, ``variable CALLBRIDGE_WORKERS``, ``file serve.yaml``) and its field. ``Settings`` is made of
parts, each a class of its own (:class:`TracingSettings`, :class:`WebhookSettings`) with the same flat keys: a part
changes nothing of the file's format or the variables' names.

Secrets are never written back anywhere: ``Settings`` keeps them out of its ``repr``, :meth:`Settings.public` leaves
the key out, and :func:`masked` hides every secret. ``Settings(...)`` itself reads only its arguments (workers get
theirs as JSON from ``serve``); only :func:`load_settings` reads the environment and files.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import typing
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.audio.frames import BEAT_FRAMES, MAX_BEAT_FRAMES, MAX_JITTER_FLOOR_MS
from bridge.errors import ConfigError, ConfigErrors
from bridge.privacy.masking import mask_url, mask_urls

OPENAI_URL = "wss://api.openai.com/v1"
EMULATOR_URL = "ws://127.0.0.1:8765/v1"
ENV_PREFIX = "CALLBRIDGE_"
FILE_SUFFIX = "_FILE"
CONFIG_ENV = "CALLBRIDGE_CONFIG"  # the settings file of every command when --config is not given
SOURCES = ("default", "file", "variable", "flag")  # later sources win
# Other names a field is also read from (the ecosystem's own and older ones); CALLBRIDGE_<FIELD> wins over them.
ENV = {
    "redis_url": "REDIS_URL",
    "api_key": "OPENAI_API_KEY",
    "media_beat_frames": "CALLBRIDGE_MEDIA_BEAT",
    "sip_auth_nonce_secret": "CALLBRIDGE_SIP_NONCE_SECRET",
    "http_metrics_token": "CALLBRIDGE_METRICS_TOKEN",
}
EXTRA_SECRETS = frozenset({"redis_url", "front_dialog_url"})  # not a SecretStr, but may carry a password
SUPERVISOR_TOKEN_ENV = "CALLBRIDGE_SUPERVISOR_TOKEN"
SUPERVISOR_READONLY_TOKEN_ENV = "CALLBRIDGE_SUPERVISOR_READONLY_TOKEN"
BROKER_TOKEN_ENV = "CALLBRIDGE_BROKER_TOKEN"  # bridge.realtime.credentials reads it (a worker's broker token)
# The OTLP exporter's headers (an API key), the traces' own first (it wins, as in the SDK): read by serve and sent
# to each worker through its settings pipe (:func:`otlp_headers`), in no process's environment after
OTLP_HEADERS_ENV = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
# Secrets that are no setting (:func:`secret_names` adds the settings' own)
OTHER_SECRETS = (SUPERVISOR_TOKEN_ENV, SUPERVISOR_READONLY_TOKEN_ENV, BROKER_TOKEN_ENV, *OTLP_HEADERS_ENV)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
URL_FORMS = "wss://api.openai.com/v1 or wss://api.openai.com/v1/realtime (ws:// for the emulator)"
MIN_KEY_CHARS = 16  # each key of rollout_key


# The sources a Settings being built reads besides its arguments (set by load_settings while it builds one)
_PIPELINE: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar("settings_sources", default=())


def default_recordings_dir() -> Path:
    """``$XDG_STATE_HOME/callbridge/recordings``, or ``~/.local/state/callbridge/recordings``: an absolute path,
    whatever directory the process starts in."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "callbridge" / "recordings"


def default_spool_dir() -> Path:
    """``$XDG_STATE_HOME/callbridge/spool`` (or ``~/.local/state/callbridge/spool``), beside the recordings."""
    return default_recordings_dir().parent / "spool"


def realtime_base(url: str) -> str:
    """The base URL the Realtime client appends ``/realtime`` to: the base form (``.../v1``) is kept, the documented
    endpoint form (``.../v1/realtime``) loses its ``/realtime``; the query (emulator faults) is kept. A URL that is
    not ``ws://`` or ``wss://`` is refused with the setting's name and the right form."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss") or not rest.split("/", 1)[0]:
        raise ValueError(f"realtime_url must be a WebSocket URL such as {URL_FORMS}")
    path, mark, query = rest.partition("?")
    path = path.rstrip("/")
    if path.endswith("/realtime"):
        path = path[: -len("/realtime")]
    return f"{scheme}://{path}{mark}{query}"


def split_keys(text: str) -> list[str]:
    """The keys of a key list such as ``rollout_key``: ``new,old`` (or one a line, as in its file), each stripped,
    the empty ones and repeats left out, in order."""
    parts = (p.strip() for line in text.splitlines() for p in line.split(","))
    return list(dict.fromkeys(p for p in parts if p))


def check_caller(caller: str, url: str | None) -> None:
    """A webhook endpoint's ``caller``: ``full`` (every caller's whole number) goes only over TLS, to an
    ``https://`` ``url``. Raises ValueError (the URL is not quoted: a query may hold a token)."""
    if caller == "full" and url and not url.lower().startswith("https://"):
        scheme = url.split(":", 1)[0]
        raise ValueError(f"full sends every caller's whole number: only to an https:// URL, not {scheme}://")


def web_origins(value: tuple[str, ...]) -> tuple[str, ...]:
    """``http_cors_origins``: each an origin (``https://crm.example.com[:port]``, no path) or ``"*"``."""
    for i, entry in enumerate(value):
        parts = urlsplit(entry.strip())
        bare = parts.scheme in ("http", "https") and parts.hostname and parts.path in ("", "/") and not parts.username
        if entry.strip() != "*" and not (bare and not parts.query and not parts.fragment):
            raise ValueError(f'[{i}] {entry!r}: an origin (https://crm.example.com[:port], no path) or "*"')
    return tuple(entry.strip().rstrip("/") for entry in value)


TRACE_ID_FIELD = "{trace_id}"  # what tracing_ui_url's template puts a call's trace id in place of


def trace_ui_url(value: str) -> str:
    """``tracing_ui_url``: "" (no link), or an ``http(s)://`` URL with ``{trace_id}`` where a trace's id goes (32
    hex digits: data, never markup), no credentials, no spaces or quotes."""
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL such as https://tempo.example.com/trace/{trace_id}")
    if parts.username or parts.password:
        raise ValueError("no credentials in it: every console user's page shows it")
    if TRACE_ID_FIELD not in value:
        raise ValueError(
            f"{TRACE_ID_FIELD} marks where the trace's id goes (https://tempo.example.com/trace/{TRACE_ID_FIELD})"
        )
    if any(c.isspace() or c in "\"'<>`\\" or not c.isprintable() for c in value):
        raise ValueError("no spaces, quotes, angle brackets or control characters in it")
    return value


class TracingSettings(BaseModel):
    """The settings of traces (docs/operating.md, "Traces"): a part of :class:`Settings`, read from the same keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # traces of every call (and webhook delivery) over OTLP/HTTP, configured by the OTEL_* variables (docs/operating.md,
    # "Traces"); "off": nothing of OpenTelemetry is loaded. "otlp" needs the otel extra (pip install 'callbridge[otel]')
    tracing: Literal["off", "otlp"] = "off"
    # the console's call detail links a traced call's trace id here: a template with {trace_id}, such as
    # https://tempo.example.com/trace/{trace_id} (""; no link, the id alone)
    tracing_ui_url: Annotated[str, AfterValidator(trace_ui_url)] = ""


class WebhookSettings(BaseModel):
    """The settings of signed webhooks (bridge/webhooks): a part of :class:`Settings`, read from the same keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # signed webhooks (Standard Webhooks, bridge/webhooks): every event of every dialplan is POSTed to webhook_url
    # (http or https, no credentials in it), signed with webhook_secret (whsec_ + base64 of 24 to 64 bytes);
    # pending deliveries are kept in Redis (redis_url is required); `serve` checks all three at start
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # the caller's number as webhook_url gets it: viewer (its last two digits, as the console's viewers see it),
    # masked (as the plans' logs and Redis keep it) or full (only to an https:// webhook_url; said at start)
    webhook_caller: Literal["viewer", "masked", "full"] = "viewer"
    # what one endpoint may hold in Redis, pending deliveries and dead letters together: past either cap the oldest
    # go first (dead letters before pending ones), counted in callbridge_webhooks_dropped_total
    # (bridge/webhooks/limits.py)
    webhook_max_events: int = Field(10_000, ge=10, le=10_000_000)
    webhook_max_mb: float = Field(64.0, gt=0, le=65536)
    webhook_dead_letter_ttl_s: float = Field(7 * 86400, gt=0, le=90 * 86400)  # a dead letter is dropped after this
    # a string in an event's data longer than this is cut, with a marker saying how much (a 20 kB utterance)
    webhook_field_max_chars: int = Field(4000, ge=100, le=1_000_000)
    # a process's events waiting in memory while Redis is away: past either cap the oldest are dropped (counted)
    webhook_memory_max_events: int = Field(1000, ge=10, le=1_000_000)
    webhook_memory_max_mb: float = Field(16.0, gt=0, le=4096)

    @field_validator("webhook_caller")
    @classmethod
    def _webhook_caller(cls, value: str, info: ValidationInfo) -> str:
        check_caller(value, info.data.get("webhook_url"))  # the one rule, a dialplan's webhooks' too
        return value


class Settings(BaseSettings, TracingSettings, WebhookSettings):
    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix=ENV_PREFIX, env_nested_delimiter="__", env_ignore_empty=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Its arguments only; within :func:`load_settings` the flags, the secret files, the environment, the
        settings file and the derived defaults too (the strongest first), each a :class:`Layer`."""
        return (init_settings, *_PIPELINE.get())

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def origin(self, field: str) -> str:
        """Where ``field``'s value came from: ``flag --workers``, ``variable CALLBRIDGE_WORKERS``, ``file
        serve.yaml``, ``default``; ``argument`` for a value given to ``Settings(...)`` itself."""
        if field not in type(self).model_fields:
            raise KeyError(field)
        return self._origins.get(field) or ("argument" if field in self.model_fields_set else "default")

    sip_host: str = "127.0.0.1"
    sip_port: int = Field(5060, ge=0, le=65535)  # worker i listens on sip_port + i (UDP and TCP)
    workers: int = Field(1, ge=1, le=64)
    # behind 1:1 NAT (a cloud VM): the public address SIP (Contact, Via; the front's Record-Route) and RTP (SDP c=)
    # announce instead of the bound one. "": the bound address; rtp_public_address "": sip_public_address
    sip_public_address: str = ""
    rtp_public_address: str = ""
    # SIP over TLS (bridge/sip/transports.py): worker i listens on sip_tls_port + i (None: no TLS; behind a front the
    # front listens on it, and worker i on sip_tls_port + 1 + i); PEM certificate and key, checked at start-up
    # (bridge/sip/tlsfiles.py); a CA list verifies the far end of TLS connections the workers open
    sip_tls_port: int | None = Field(None, ge=0, le=65535)
    sip_tls_cert: Path | None = None
    sip_tls_key: Path | None = None
    sip_tls_ca: Path | None = None  # None: the system's CA store verifies them
    sip_tls_verify: bool = True  # False: the far end's certificate is not verified (a warning at each start)
    # the Server and User-Agent headers of the workers and the front: "" (none) names nothing to a scanner
    sip_server_header: str = Field("", max_length=128, pattern=r"^[A-Za-z0-9 ._/()+:;,=@-]*$")
    # SRTP (SDES, RFC 4568: AES_CM_128_HMAC_SHA1_80 and _32): off; optional (offered, plain RTP accepted); mandatory
    # (an offer without crypto gets 488)
    srtp: Literal["off", "optional", "mandatory"] = "off"
    rtp_port: int = Field(20000, ge=0, le=65535)  # worker i uses rtp_port + i*rtp_ports_per_worker ...
    rtp_ports_per_worker: int = Field(100, ge=8)
    realtime_url: str = EMULATOR_URL
    api_key: SecretStr | None = None  # None with the emulator; required for api.openai.com
    redis_url: str | None = None
    realtime_max_session_s: float | None = Field(None, gt=1)  # None: each dialect's own cap (its capabilities)
    # after a call, the model's post-call answer (a plan's post_call) is awaited this long, then given up ("timed out")
    post_call_timeout_s: float = Field(10.0, gt=0, le=60)
    # static: workers use the key; mint: workers mint short-lived secrets with it; broker: only the serve process
    # holds the key and workers fetch short-lived secrets from its broker (they never see the key)
    credentials: Literal["static", "mint", "broker"] = "static"
    broker_port: int | None = Field(None, ge=0, le=65535)  # the service's session cap: calls roll over before it
    http_port: int | None = Field(None, ge=0, le=65535)
    # the supervisor API, the console, /metrics and /healthz listen here (loopback: set an address to expose them;
    # with no users_file, serve warns that the shared demo tokens are exposed)
    http_host: str = "127.0.0.1"
    # HTTPS for the console and the API (both or neither): PEM certificate chain and private key
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    # CIDRs of TLS-terminating proxies whose X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-For are believed
    # (secure cookies and the Origin check behind them); from any other address those headers change nothing
    http_trusted_proxies: tuple[str, ...] = ()
    # /metrics: on its own port (on http_host) instead of http_port, and/or behind `Authorization: Bearer <token>`
    http_metrics_port: int | None = Field(None, ge=0, le=65535)
    http_metrics_token: SecretStr | None = None
    # text: "time level logger: message"; json: one object a line with time, level, logger, worker ("serve" or the
    # worker's index), call_id (null outside a call) and message
    log_format: Literal["text", "json"] = "text"
    # the console's accounts (`callbridge users add`): names, roles, scrypt hashes, API-token digests; None: the
    # demo's shared tokens (CALLBRIDGE_SUPERVISOR_TOKEN, ..._READONLY_TOKEN), with a warning at start
    users_file: Path | None = None
    # failed sign-ins (and wrong bearer tokens) allowed per client address and per account within the window;
    # past it: 429 with Retry-After
    http_signin_failures: int = Field(10, ge=1, le=10_000)
    http_signin_window_s: float = Field(300.0, gt=0, le=86400)
    # requests a minute per API token or console session (bridge/supervisor/ratelimit.py): past it 429, Retry-After
    http_api_requests_per_minute: int = Field(600, ge=1, le=1_000_000)
    # serve's HTTP port (bridge/supervisor/gate.py): a request's head within http_head_timeout_s of the connection
    # (or of the last answer), its body within http_body_timeout_s (408); connections per source address (503 past
    # it) and in all (kept below the open-file limit; past it an idle or half-sent connection makes room, else 503)
    http_head_timeout_s: float = Field(10.0, gt=0, le=3600)
    http_body_timeout_s: float = Field(30.0, gt=0, le=3600)
    http_max_connections: int = Field(1000, ge=16, le=1_000_000)
    http_max_connections_per_source: int = Field(64, ge=1, le=1_000_000)
    # /healthz without a credential says only {"ready": true|false}; its detail (workers, pids, ports, the front's
    # run directory) is for a bearer token of the API or http_metrics_token ("token"), or for anyone ("open")
    http_health_detail: Literal["token", "open"] = "token"
    # web origins whose pages may call /api (CORS; "*": any, without credentials); none: no other origin's page may
    http_cors_origins: Annotated[tuple[str, ...], AfterValidator(web_origins)] = ()
    dialplans: Path = Path("dialplans")
    report_file: Path | None = None  # append one JSON line per finished call (demo, tests)
    # calls of dialplans with recording enabled (and consent) go here, one directory per call (mode 0700) named by the
    # bridge's own call id; default: $XDG_STATE_HOME/callbridge/recordings (~/.local/state/callbridge/recordings)
    recordings_dir: Path = Field(default_factory=default_recordings_dir)
    # a worker stopped while Redis is away writes its calls' unwritten final state here (one JSON file per stop,
    # 0600); the next worker of the node to reach Redis writes it there (bridge/store/spool.py)
    spool_dir: Path = Field(default_factory=default_spool_dir)
    price_table: Path | None = None  # model prices for the cost per call (None: bridge/rollout/data/prices.yaml)
    pjsua_log_level: int = Field(1, ge=0, le=6)
    # how serve starts a worker (bridge/serve/zygote.py): forked from one preloaded parent, so the interpreter's,
    # numpy's and pjsua2's pages are shared between workers, or a fresh interpreter each (exec)
    worker_start: Literal["preload", "exec"] = "preload"
    # workers run SCHED_RR at this priority (bridge/runtime/sched.py: needs CAP_SYS_NICE); 0 keeps ordinary scheduling
    realtime_priority: int = Field(0, ge=0, le=99)
    # the event loop wakes once every this many 20 ms media ticks (bridge.runtime.metronome): fewer wake-ups, less CPU;
    # the Realtime socket is read and a barge-in seen up to one beat later
    media_beat_frames: int = Field(BEAT_FRAMES, ge=1, le=MAX_BEAT_FRAMES)
    # in C: the model's audio deltas decoded from the Realtime socket's bytes (native_downlink, realtime/downlink.py;
    # off: the loop decodes them) and played out from a ring (native_playout, audio/playout_native.py; off: Python's)
    native_downlink: bool = True
    native_playout: bool = True
    # the floor of a call's jitter buffer for the caller's audio, in ms (bridge/sip/sipconfig.py: JitterBuffer): what
    # the model hears is played this much behind the network at least (docs/benchmarks.md, bench network). 0:
    # pjmedia's adaptive defaults, which play reordered packets out of place on a jittery line
    sip_jitter_buffer_ms: int = Field(20, ge=0, le=MAX_JITTER_FLOOR_MS)
    # CIDRs allowed to send INVITEs to any worker; others get 403. With none of sip_allowed_sources, sip_auth_users,
    # sip_trusted_fronts a worker answers loopback callers only, and `serve` on another address refuses to start
    sip_allowed_sources: tuple[str, ...] = ()
    sip_allow_any_source: bool = False  # answer INVITEs from any source on purpose (the start-up check lets it pass)
    # concurrent calls one source address may hold at a worker; more get 486. Sources in sip_allowed_sources are
    # exempt (and loopback when nothing is configured). 0: no limit
    sip_calls_per_source: int = Field(2, ge=0)
    # CIDRs of listed trunks (not an allow-list: sip_allowed_sources, sip_auth_users decide who may call): no
    # sip_calls_per_source limit, and room kept for them: where trunks are listed (here or in sip_allowed_sources),
    # the sources outside both lists together hold at most sip_unlisted_share of a worker's calls (rounded down), the
    # next gets 486; 1: no such limit
    sip_trunk_sources: tuple[str, ...] = ()
    sip_unlisted_share: float = Field(0.5, ge=0, le=1)
    # every call bounded at the SIP level (bridge/sip/bounds.py): no RTP from the caller for this long ends it (BYE,
    # "media timeout"); while the caller holds the call, the hold timeout applies
    rtp_timeout_s: float = Field(30.0, gt=0, le=3600)
    rtp_hold_timeout_s: float = Field(600.0, gt=0, le=86400)
    # SIP session timers (RFC 4028): the interval the bridge asks for and the smallest it accepts (RFC 4028 §4: at
    # least 90; pjsip aborts the process below 90, docs/pjsip.md)
    sip_session_expires_s: int = Field(1800, ge=90, le=86400)
    sip_session_min_se_s: int = Field(90, ge=90, le=86400)
    sip_auth_users: dict[str, SecretStr] = Field(default_factory=dict)  # trunk digest auth (RFC 7616); empty: off
    sip_auth_realm: str = "callbridge"
    # the key of the digest nonces: every worker behind one front must share it, so that a challenge answered on
    # another worker still counts (None: one random key per serve node; set it when several nodes share a front)
    sip_auth_nonce_secret: SecretStr | None = None
    # signs the console's commands on Redis (bridge/supervisor/listen_token.py) and seals each call's stored SIP
    # dialog (bridge/store/dialogseal.py). None: one random key per serve node (another node can neither listen to
    # its calls nor BYE its lost calls' callers); set the same key on every node that shares a Redis
    listen_key: SecretStr | None = None
    # the keys of the rollout's seals (bridge/rollout/seal.py), "new,old" (commas, or lines in its file): the first
    # signs each flag change's audit entry and each outcome record, any of them vouches for one. A flag no entry
    # signed with a listed key vouches for is not obeyed. None: the audit alone vouches and records are unsigned.
    # Every node and every `callbridge rollout` against that Redis lists the same keys (rotation: docs/operating.md)
    rollout_key: SecretStr | None = None
    # The front door (bridge/serve/front.py). "kamailio": Kamailio answers on sip_host:sip_port, the one address
    # callers and trunks use, and worker i listens on sip_port + 1 + i behind it. "none": worker i on sip_port + i.
    front: Literal["none", "kamailio"] = "none"
    # more workers for the front to dispatch to, from other `serve` nodes: "host:port" or "host:port/max_calls"
    # (without /max_calls: the cap this node's workers report)
    front_peers: tuple[str, ...] = ()
    front_dir: Path | None = None  # the front's config, dispatcher list and control socket; None: see front_run_dir()
    # a stop (SIGTERM) or a worker's replacement lets live calls finish for this long, then ends the rest with a
    # spoken goodbye (bridge/serve/stopping.py); the systemd unit's TimeoutStopSec must exceed it
    drain_timeout_s: float = Field(300.0, ge=0, le=86400)
    # serve's local control (callbridge reload, restart --rolling, drain --node); None: see control.control_path()
    control_socket: Path | None = None
    # Retry-After of the front's 503 when every worker is full (and of its 486 over front_calls_per_source); an SBC
    # takes a node that sends it out of route that long, so 0 (the default) sends none: the SBC tries elsewhere
    front_retry_after_s: int = Field(0, ge=0, le=3600)
    # The front's own edge (bridge/serve/kamailio/kamailio.cfg, route[ADMIT] and route[AUTH]): CIDRs that may send it
    # anything (others get 403 before any worker sees them; empty: any source); digest auth of new calls against
    # sip_auth_users at the front (401 / 403 there; workers believe the front's X-Callbridge-Auth); a flood limit
    # per source address (more than front_pike_requests requests within front_pike_window_s bans it for
    # front_ban_s: its requests are dropped); topology hiding (Kamailio's topoh) of the workers' addresses
    front_allowed_sources: tuple[str, ...] = ()
    front_auth: bool = False
    front_pike_requests: int = Field(400, ge=1, le=1_000_000)
    front_pike_window_s: int = Field(2, ge=1, le=300)
    front_ban_s: int = Field(300, ge=1, le=86400)
    # refusals (403: not allowed, bad credentials, not the caller's dialog; the front's or a worker's) to one address,
    # each within 60 s of the last, that ban it for front_ban_s as a flood does; None: 3 with front_allowed_sources
    # (a stranger has nothing to try there; a scanner gives up after 3), 10 without
    front_refusal_limit: int | None = Field(None, ge=1, le=10000)
    front_topology_hiding: bool = False
    # calls one source address outside front_allowed_sources and sip_trunk_sources may hold through the front at once
    # (ringing or answered; a digest challenge holds none): the next gets 486; 0: no limit
    front_calls_per_source: int = Field(2, ge=0, le=10000)
    # digest guessing of one user at the front (front_auth): this many wrong passwords for one sip_auth_users user,
    # from any addresses outside sip_trunk_sources, each within front_auth_user_window_s of the last, guard that user
    # for front_auth_user_ban_s: its new calls from unlisted sources get 403 whatever their credentials, its listed
    # trunks' are checked as always (a stale nonce's new challenge is no failure)
    front_auth_user_failures: int = Field(10, ge=1, le=100_000)
    front_auth_user_window_s: int = Field(60, ge=1, le=86400)
    front_auth_user_ban_s: int = Field(300, ge=1, le=86400)
    # The front's TCP and TLS connections (bridge/serve/front_conns.py): in all (TLS among them), and per source
    # address outside sip_trunk_sources (not a worker, not the front's own): serve closes a source's connections over
    # the limit as it finds them; a connection idle this long before it has carried a whole request is closed (a
    # half-sent message too); Kamailio's shared memory in MB (None: enough for the connection limits)
    front_tcp_max_connections: int = Field(1024, ge=8, le=65536)
    front_tls_max_connections: int = Field(256, ge=2, le=65536)
    front_connections_per_source: int = Field(16, ge=1, le=65536)
    front_tcp_idle_s: int = Field(20, ge=2, le=3600)
    front_shm_mb: int | None = Field(None, ge=64, le=65536)
    # Where the front keeps its dialogs: "redis" (Kamailio's dialog module with db_redis, written as they change), so
    # that a restarted front, or a second one taking over its address, carries every live call's in-dialog requests
    # to its worker; "memory": in Kamailio's memory only. With "redis" they go to front_dialog_url if set, else to
    # the Redis of redis_url when it is a plain redis://host:port; where db_redis cannot follow redis_url (Sentinel,
    # a cluster, a Unix socket, TLS) and no front_dialog_url names a plain Redis for them, they stay in memory and
    # the start-up line and /healthz say why (bridge/serve/front_dialogs.py: dialog_store)
    front_dialogs: Literal["redis", "memory"] = "redis"
    front_dialog_url: str | None = None  # redis://[:password@]host:port[/db]: a plain Redis for the dialogs alone
    # the database of that Redis the dialogs go to; None: front_dialog_url's own, else 15 (14 where redis_url's own
    # database is 15)
    front_dialog_db: int | None = Field(None, ge=0, le=15)
    # this front's number among the fronts sharing front_dialog_db (each its own): the dialog ids it makes are its own
    front_dialog_id: int = Field(0, ge=0, le=15)
    # CIDRs of fronts (on other machines) whose X-Callbridge-Source header names the caller; a node's own front is
    # trusted without being listed (trusted_fronts())
    sip_trusted_fronts: tuple[str, ...] = ()
    # at start, one credential request to realtime_url (bridge/serve/preflight.py): warn (log, start anyway),
    # require (a failed check stops the start), off
    realtime_check: Literal["warn", "require", "off"] = "warn"
    # while the model is unreachable at a call's arrival, answer new INVITEs 503 (a front tries another node)
    # instead of answering with the hold message
    reject_when_model_down: bool = False
    breaker_failures: int = Field(5, ge=1, le=1000)  # consecutive failed connects that open the worker's breaker

    @field_validator("realtime_url")
    @classmethod
    def _realtime_url(cls, value: str) -> str:
        return realtime_base(value)

    @field_validator("rollout_key", mode="before")
    @classmethod
    def _rollout_key_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):  # a YAML list
            return ",".join(v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value)
        return value

    @field_validator("rollout_key")
    @classmethod
    def _rollout_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        found = split_keys(value.get_secret_value())
        if not found:
            raise ValueError("no key: give one (16 characters or more), or a list new,old")
        short = [str(i) for i, k in enumerate(found, 1) if len(k) < MIN_KEY_CHARS]
        if short:
            which = "the key" if len(found) == 1 else f"key {', '.join(short)} of {len(found)}"
            raise ValueError(f"{which} is shorter than {MIN_KEY_CHARS} characters (each key of new,old must have them)")
        return SecretStr(",".join(found))

    @field_validator("sip_host")
    @classmethod
    def _sip_host(cls, value: str) -> str:
        try:
            address = ipaddress.ip_address(value.strip().strip("[]"))
        except ValueError:
            return value  # a name (or ""): pjsua resolves it, to IPv4
        if address.version == 6:  # pjsua's IPv4 transports cannot bind it: each worker died at start, for ever
            raise ValueError(
                f"{value!r} is an IPv6 address: the workers serve SIP and RTP over IPv4 only (their transports, the "
                "media guard, the access rules and the front's routing); use an IPv4 address, or 0.0.0.0 for every "
                "interface"
            )
        return value

    @field_validator("http_trusted_proxies", "front_allowed_sources", "sip_trunk_sources")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry.strip(), strict=False)  # a bad entry: ValueError naming it
        return tuple(entry.strip() for entry in value)

    @field_validator("http_tls_key")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("http_tls_cert") is None):
            raise ValueError("http_tls_cert and http_tls_key go together: set both or neither")
        return value

    @field_validator("front_dialog_url")
    @classmethod
    def _front_dialog_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme != "redis" or not parts.hostname or parts.query:
            raise ValueError(
                f"db_redis reaches Redis at redis://[:password@]host:port[/db] only, not {parts.scheme}://"
            )
        if parts.path.strip("/") and not (parts.path.strip("/").isdigit() and int(parts.path.strip("/")) < 16):
            raise ValueError("the database is a number, 0-15")
        return value

    @field_validator("front_dialog_db")
    @classmethod
    def _front_dialog_db(cls, value: int | None, info: ValidationInfo) -> int | None:
        url = info.data.get("redis_url")
        if value is None or info.data.get("front_dialog_url"):
            return value
        if not url:
            raise ValueError(
                "the front keeps its dialogs in the Redis of redis_url: set redis_url (or front_dialog_url)"
            )
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(
                f"Kamailio's db_redis reaches Redis at redis://host:port only (redis_url: {parts.scheme}://): "
                "name a plain Redis for the dialogs in front_dialog_url"
            )
        if (parts.path.strip("/") or "0") == str(value):
            raise ValueError(f"must not be redis_url's own database ({value})")
        return value

    @field_validator("recordings_dir", "spool_dir")
    @classmethod
    def _recordings_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()  # workers and the start-up log agree on one place

    @field_validator("sip_session_min_se_s")
    @classmethod
    def _min_se(cls, value: int, info: ValidationInfo) -> int:
        expires = info.data.get("sip_session_expires_s")
        if expires is not None and value > expires:
            raise ValueError(f"must not exceed sip_session_expires_s ({expires})")
        return value

    def worker_sip_port(self, index: int) -> int:
        if not self.sip_port:
            return 0
        return self.sip_port + index + (1 if self.front != "none" else 0)

    @property
    def front_host(self) -> str:
        """The address the front and this node's workers reach each other on (loopback if sip_host is a wildcard)."""
        return "127.0.0.1" if self.sip_host in WILDCARD_HOSTS else self.sip_host

    def trusted_fronts(self) -> tuple[str, ...]:
        """Whose X-Callbridge-Source header the workers believe: the configured fronts, and this node's own."""
        own = (self.front_host,) if self.front != "none" else ()
        return tuple(dict.fromkeys((*self.sip_trusted_fronts, *own)))

    def worker_tls_port(self, index: int) -> int | None:
        """Worker ``index``'s TLS port (None: no TLS; 0: any free port), laid out like :meth:`worker_sip_port`."""
        if self.sip_tls_port is None or not self.sip_tls_port:
            return self.sip_tls_port
        return self.sip_tls_port + index + (1 if self.front != "none" else 0)

    def worker_rtp_port(self, index: int) -> int:
        return self.rtp_port + index * self.rtp_ports_per_worker if self.rtp_port else 0

    @property
    def credential(self) -> str:
        """The bearer credential; the emulator accepts any non-empty one."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.realtime_url.startswith(OPENAI_URL):
            raise ConfigError("environment", "OPENAI_API_KEY", "required for the OpenAI Realtime service")
        return "emulator-key"

    @property
    def credential_or_none(self) -> str | None:
        """The API key if one is configured (None with none), without :attr:`credential`'s error."""
        return self.api_key.get_secret_value() if self.api_key is not None else None

    @property
    def rollout_keys(self) -> tuple[bytes, ...]:
        """``rollout_key``'s keys as the HMAC keys of the rollout's seals: the first signs, any vouches (empty: not
        set; bridge/rollout/seal.py)."""
        if self.rollout_key is None:
            return ()
        return tuple(k.encode() for k in split_keys(self.rollout_key.get_secret_value()))

    def public(self) -> dict[str, Any]:
        """Safe to log and to show a supervisor: no secret (the Redis URL's password masked)."""
        hidden = {"api_key", "http_metrics_token"}
        shown = self.model_dump(mode="json", exclude=hidden) | {
            "api_key_set": self.api_key is not None,
            "http_metrics_token_set": self.http_metrics_token is not None,
        }
        return {k: mask_urls(v) for k, v in shown.items()}  # every URL, the Redis URL's password included


def is_secret(name: str) -> bool:
    """A field that must come from a file or the environment, never appear in a log, and be masked when shown."""
    return name in EXTRA_SECRETS or "SecretStr" in str(Settings.model_fields[name].annotation)


def variables(name: str) -> list[str]:
    """The environment variables a field is read from, the winner first (``_FILE`` forms not included)."""
    return [ENV_PREFIX + name.upper(), *([ENV[name]] if name in ENV else [])]


def secret_names() -> tuple[str, ...]:
    """Every variable that may carry a secret (its ``_FILE`` form and ``__`` entries too): the secret fields'
    variables and :data:`OTHER_SECRETS`. The one list of them."""
    fields = (var for field in Settings.model_fields if is_secret(field) for var in variables(field))
    return (*OTHER_SECRETS, *fields)


def secret_variables(environ: Mapping[str, str]) -> set[str]:
    """The variables of ``environ`` that hold a secret or name its file (:func:`secret_names`). None of them may
    reach a worker or Kamailio."""
    names = secret_names()
    return {k for k in environ if any(k in (n, n + FILE_SUFFIX) or k.startswith(n + "__") for n in names)}


@dataclass(frozen=True, slots=True)
class Secret:
    """One secret of the environment: the variable ``var``, or the text of the file ``<var>_FILE`` names (Docker
    and Kubernetes secrets, systemd ``LoadCredential``). Errors name the variable, the file and the ``setting``
    (the variable itself by default), never the value."""

    var: str
    setting: str = ""

    def read(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The secret (a file's text with one trailing newline dropped); ``None``: neither variable is set. Raises
        :class:`ConfigError` when the file cannot be read or both are set."""
        env = os.environ if environ is None else environ
        var, named_by = self.var, self.var + FILE_SUFFIX
        direct, path = env.get(var) or None, env.get(named_by) or None
        if direct is not None and path is not None:
            raise ConfigError(f"variable {named_by}", self.setting or var, f"set {var} or {named_by}, not both")
        if path is None:
            return direct
        return read_secret_file(path, source=f"variable {named_by}", setting=self.setting or var)


def read_secret_file(path: str | Path, *, source: str, setting: str) -> str:
    """The text of the secret file ``path`` with one trailing newline dropped. Raises :class:`ConfigError` naming
    ``source`` (what named the file), the ``setting`` and the file; the text is never part of a message."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        named_by = source.split(" ", 1)[-1]
        raise ConfigError(source, setting, f"cannot read {path} (named by {named_by}): {exc.strerror}") from None
    return text[:-1] if text.endswith("\n") else text


def secret_from_env(var: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A secret from ``VAR`` or from the file ``VAR_FILE`` names (:class:`Secret`); ``None``: neither."""
    return Secret(var).read(environ)


def otlp_headers(environ: Mapping[str, str] | None = None) -> str | None:
    """The OTLP exporter's headers (``key=value,...``) as the environment gives them (:data:`OTLP_HEADERS_ENV`, each
    also from the file its ``_FILE`` form names); ``None``: none given."""
    return next((found for var in OTLP_HEADERS_ENV if (found := secret_from_env(var, environ))), None)


def _is_list(field: FieldInfo) -> bool:
    kinds = (field.annotation, *typing.get_args(field.annotation))
    return any(typing.get_origin(kind) is tuple for kind in kinds)


class Layer(PydanticBaseSettingsSource):
    """One source of settings, as pydantic-settings takes them (``Settings.settings_customise_sources``): the
    values it found, where each came from (``origins``), and what it could not read (``errors``: reported with the
    validation's, all at once). A field a source before it (a stronger one) set is not its to give: the stronger
    value is taken whole (a mapping is not merged across sources)."""

    def __init__(self, values: dict[str, Any], origins: dict[str, str], errors: list[ConfigError] | None = None):
        super().__init__(Settings)
        self.values, self.origins, self.errors = values, origins, errors or []

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k not in self.current_state}


class FlagSource(Layer):
    """The command line's flags: ``overrides`` (``None``: not given), each named by ``flags`` (``--field-name``)."""

    def __init__(self, overrides: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> None:
        given = {k: v for k, v in overrides.items() if v is not None}
        super().__init__(given, {k: f"flag {(flags or {}).get(k, '--' + k.replace('_', '-'))}" for k in given})


class SecretFileSource(Layer):
    """Every secret field from the file its ``<VARIABLE>_FILE`` names (:class:`Secret`), the first variable of
    :func:`variables` that has one."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__({}, {})
        for name in (n for n in Settings.model_fields if is_secret(n)):
            for var in variables(name):
                try:
                    found = Secret(var, name).read(environ) if environ.get(var + FILE_SUFFIX) else None
                except ConfigError as exc:
                    self.errors.append(exc)
                    break
                if found is not None:
                    self.values[name], self.origins[name] = _secret_value(name, found), f"variable {var + FILE_SUFFIX}"
                    break


class EnvironmentSource(Layer):
    """Every field set in the environment: ``CALLBRIDGE_<FIELD>`` (a list or mapping as JSON, a list also as
    ``a,b``; ``CALLBRIDGE_<FIELD>__<KEY>`` entries of a mapping), then the field's other names (:data:`ENV`)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__({}, {})
        source = EnvSettingsSource(Settings)
        for name, field in Settings.model_fields.items():
            var = variables(name)[0]
            raw, _, complex_ = source.get_field_value(field, name)
            if raw is not None and _is_list(field) and not str(raw).lstrip().startswith("["):
                self._found(name, tuple(p.strip() for p in str(raw).split(",") if p.strip()), f"variable {var}")
                continue
            try:
                value = source.prepare_field_value(name, field, raw, complex_)
            except ValueError as exc:
                self.errors.append(ConfigError(f"variable {var}", name, f"not valid JSON ({exc.__class__.__name__})"))
                continue
            if value is not None and value != {}:
                nested = raw is None  # CALLBRIDGE_<FIELD>__<KEY> entries
                self._found(name, value, f"variable {var}__*" if nested else f"variable {var}")
                continue
            other = next((v for v in variables(name)[1:] if environ.get(v)), None)
            if other is not None:
                self._found(name, environ[other], f"variable {other}")

    def _found(self, name: str, value: Any, origin: str) -> None:
        self.values[name], self.origins[name] = value, origin


class YamlFileSource(Layer):
    """The settings file (``--config``): a YAML mapping of field names to values."""

    def __init__(self, path: Path | None) -> None:
        values = _from_file(path) if path is not None else {}
        super().__init__(values, dict.fromkeys(values, f"file {path}"))


class DerivedSource(Layer):
    """Defaults that follow from the stronger sources: with a key and no URL, ``realtime_url`` is the service's."""

    def __init__(self, stronger: tuple[Layer, ...]) -> None:
        given = {k for layer in stronger for k in layer.values}
        key = any(layer.values.get("api_key") for layer in stronger)
        derived = {"realtime_url": OPENAI_URL} if key and "realtime_url" not in given else {}
        super().__init__(derived, dict.fromkeys(derived, "default"))


def _secret_value(name: str, text: str) -> Any:
    """A secret file's text as the field's value: a mapping (``user: password`` lines, YAML) for a mapping field."""
    if "dict" in str(Settings.model_fields[name].annotation):
        loaded = yaml.safe_load(text) or {}
        return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else text
    return text.strip()


def _from_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"file {source}", "(file)", f"cannot read settings: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"file {source}", "(file)", "settings must be a mapping")
    return loaded


def load_settings_with_sources(
    path: Path | None = None, flags: Mapping[str, str] | None = None, **overrides: Any
) -> tuple[Settings, dict[str, str]]:
    """The settings from every source (:data:`SOURCES`; ``None`` overrides are ignored), and where each field set
    by a source came from (also :meth:`Settings.origin`). ``flags`` names the flag of an override (default
    ``--field-name``). Raises :class:`ConfigError` (:class:`ConfigErrors` for several), each naming its source and
    field."""
    file = YamlFileSource(path)
    layers: tuple[Layer, ...] = (
        FlagSource(overrides, flags),
        SecretFileSource(os.environ),
        EnvironmentSource(os.environ),
    )
    layers += (file, DerivedSource((*layers, file)))  # the strongest first
    origin = {name: where for layer in reversed(layers) for name, where in layer.origins.items()}
    errors = [exc for layer in reversed(layers) for exc in layer.errors]  # as the variables are read
    token = _PIPELINE.set(layers)
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            where = origin.get(loc[0], "settings") if loc else "settings"
            errors.append(ConfigError(where, ".".join(loc) or "(settings)", err["msg"]))
    finally:
        _PIPELINE.reset(token)
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    settings._origins = origin
    return settings, origin


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """``--config YAML``, by default ``$CALLBRIDGE_CONFIG``: every command reads the settings file ``serve`` reads
    (then :func:`load_settings` with the command's own flags as overrides)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None,
        metavar="YAML",
        help=f"the settings file of serve (default: ${CONFIG_ENV}; CALLBRIDGE_* variables and flags win over it)",
    )


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """The settings: defaults < the file < the environment < flags (``None`` overrides are ignored)."""
    return load_settings_with_sources(path, **overrides)[0]


def masked(settings: Settings) -> dict[str, Any]:
    """Every field, safe to show: secrets as ``"***"`` when set (a Redis URL keeps its host)."""
    out: dict[str, Any] = {k: mask_urls(v) for k, v in settings.model_dump(mode="json").items()}
    for name in out:
        if is_secret(name) and out[name]:
            value = getattr(settings, name)
            if name in ("redis_url", "front_dialog_url"):
                out[name] = mask_url(str(value))
            elif isinstance(out[name], dict):
                out[name] = dict.fromkeys(out[name], "***")
            else:
                out[name] = "***"
    return out
