"""Typed settings for ``callbridge serve`` and its workers: a YAML file, then the environment, then flags.

Secrets come only from the environment (``OPENAI_API_KEY``) and are never written back anywhere: ``Settings``
keeps the key out of its ``repr`` and out of :meth:`Settings.public`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bridge.audio.frames import BEAT_FRAMES, MAX_BEAT_FRAMES
from bridge.errors import ConfigError

OPENAI_URL = "wss://api.openai.com/v1"
EMULATOR_URL = "ws://127.0.0.1:8765/v1"
ENV = {
    "realtime_url": "CALLBRIDGE_REALTIME_URL",
    "redis_url": "REDIS_URL",
    "api_key": "OPENAI_API_KEY",
    "credentials": "CALLBRIDGE_CREDENTIALS",
    "media_beat_frames": "CALLBRIDGE_MEDIA_BEAT",
    "front": "CALLBRIDGE_FRONT",
    "sip_auth_nonce_secret": "CALLBRIDGE_SIP_NONCE_SECRET",
}
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
URL_FORMS = "wss://api.openai.com/v1 or wss://api.openai.com/v1/realtime (ws:// for the emulator)"


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


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sip_host: str = "127.0.0.1"
    sip_port: int = Field(5060, ge=0, le=65535)  # worker i listens on sip_port + i (UDP and TCP)
    workers: int = Field(1, ge=1, le=64)
    rtp_port: int = Field(20000, ge=0, le=65535)  # worker i uses rtp_port + i*rtp_ports_per_worker ...
    rtp_ports_per_worker: int = Field(100, ge=8)
    realtime_url: str = EMULATOR_URL
    api_key: SecretStr | None = None  # None with the emulator; required for api.openai.com
    redis_url: str | None = None
    realtime_max_session_s: float | None = Field(None, gt=1)  # None: each dialect's own cap (its capabilities)
    # static: workers use the key; mint: workers mint short-lived secrets with it; broker: only the serve process
    # holds the key and workers fetch short-lived secrets from its broker (they never see the key)
    credentials: Literal["static", "mint", "broker"] = "static"
    broker_port: int | None = Field(None, ge=0, le=65535)  # the service's session cap: calls roll over before it
    http_port: int | None = Field(None, ge=0, le=65535)
    dialplans: Path = Path("dialplans")
    report_file: Path | None = None  # append one JSON line per finished call (demo, tests)
    recordings_dir: Path = Path("recordings")  # calls of dialplans with recording enabled (and consent) go here
    price_table: Path | None = None  # model prices for the cost per call (None: bridge/rollout/data/prices.yaml)
    pjsua_log_level: int = Field(1, ge=0, le=6)
    # workers run SCHED_RR at this priority (bridge/runtime/sched.py: needs CAP_SYS_NICE); 0 keeps ordinary scheduling
    realtime_priority: int = Field(0, ge=0, le=99)
    # the event loop wakes once every this many 20 ms media ticks (bridge.runtime.metronome): fewer wake-ups, less CPU;
    # the Realtime socket is read and a barge-in seen up to one beat later
    media_beat_frames: int = Field(BEAT_FRAMES, ge=1, le=MAX_BEAT_FRAMES)
    sip_allowed_sources: tuple[str, ...] = ()  # CIDRs allowed to send INVITEs to any worker (empty: any); 403 else
    sip_auth_users: dict[str, SecretStr] = Field(default_factory=dict)  # trunk digest auth (RFC 7616); empty: off
    sip_auth_realm: str = "callbridge"
    # the key of the digest nonces: every worker behind one front must share it, so that a challenge answered on
    # another worker still counts (None: one random key per serve node; set it when several nodes share a front)
    sip_auth_nonce_secret: SecretStr | None = None
    # The front door (bridge/serve/front.py). "kamailio": Kamailio answers on sip_host:sip_port, the one address
    # callers and trunks use, and worker i listens on sip_port + 1 + i behind it. "none": worker i on sip_port + i.
    front: Literal["none", "kamailio"] = "none"
    # more workers for the front to dispatch to, from other `serve` nodes: "host:port" or "host:port/max_calls"
    # (without /max_calls: the cap this node's workers report)
    front_peers: tuple[str, ...] = ()
    front_dir: Path | None = None  # the front's config, dispatcher list and control socket; None: see front_run_dir()
    front_retry_after_s: int = Field(5, ge=1, le=3600)  # Retry-After of the front's 503 when every worker is full
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

    def public(self) -> dict[str, Any]:
        """Safe to log and to show a supervisor: no secret."""
        return self.model_dump(mode="json", exclude={"api_key"}) | {"api_key_set": self.api_key is not None}


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """File < environment < flags (``None`` overrides are ignored). Errors name the file and the field."""
    data: dict[str, Any] = {}
    source = "settings"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(source, "(file)", f"cannot read settings: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(source, "(file)", "settings must be a mapping")
        data.update(loaded)
    for key, var in ENV.items():
        if os.environ.get(var):
            data[key] = os.environ[var]
            source = source if path else "environment"
    data.update({k: v for k, v in overrides.items() if v is not None})
    if "realtime_url" not in data and data.get("api_key"):
        data["realtime_url"] = OPENAI_URL
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(source, field, err["msg"]) from None
