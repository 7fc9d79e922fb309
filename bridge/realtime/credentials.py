"""Credential sources for :class:`~bridge.realtime.client.RealtimeClient`: ``await source()`` gives the bearer
credential for the next connect, ``source.invalidate()`` drops it after the service refused it.

::

    CredentialSource (protocol: async __call__() -> str, invalidate(rejected=None))
    ├── StaticKey          the long-lived key itself; never in repr, str or logs
    └── CachingSource      caches a short-lived Credential, rotates it before expiry, single-flight fetches
        ├── MintingSource  mints from the dialect's endpoint with the long-lived key
        │                  (GA ``POST {base}/realtime/client_secrets``, beta ``POST {base}/realtime/sessions``)
        └── BrokerClient   asks the credential broker (``bridge.serve.broker``); holds only the broker token

Rotation: a credential received with ``lifetime`` seconds left is used until ``refresh_before_s`` (30 s) before it
expires; a credential that lives no longer than twice that is used for half its life instead, so a short TTL (or a
skewed clock) never turns every connect into a fetch. The broker sends its own rotation time (``refresh_at``) and a
:class:`BrokerClient` follows it, so workers move to the new secret when the broker does.

``invalidate()`` (after a 401/403 or a close 3000) forces the next call to fetch; given the :func:`fingerprint` of
the refused credential it is a no-op when the source has already moved on, so many calls refused with the same
secret cause one re-issue, not many. A freshly fetched credential is returned as is, even if it is already "due": a
fetch never loops.

Failures raise :class:`~bridge.errors.ConnectError`, classified with ``classify_http_status`` (HTTP) or as NETWORK,
with every secret redacted and no chained cause. The counters ``issued``, ``rotations``, ``invalidations`` and
``failures`` are plain attributes (and :meth:`CachingSource.stats`).
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
from pydantic import SecretStr

from bridge.errors import ConfigError, ConnectError, classify_http_status, redact
from bridge.events import ErrorClass
from bridge.realtime.dialects import Credential, Dialect, get_dialect
from bridge.realtime.profile import AgentProfile

log = logging.getLogger("bridge.credentials")

BROKER_URL_ENV = "CALLBRIDGE_BROKER_URL"
BROKER_TOKEN_ENV = "CALLBRIDGE_BROKER_TOKEN"
REFRESH_BEFORE_S = 30.0
BROKER_PATH = "/v1/credentials"

_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_CODE = re.compile(r"^[a-z0-9_.]{1,64}$")  # an upstream error code worth repeating: an identifier, never a message


class CredentialSource(Protocol):
    async def __call__(self) -> str: ...

    def invalidate(self, rejected: str | None = None) -> None: ...


def fingerprint(secret: str) -> str:
    """A short, one-way name for a secret: safe to log, to compare, and to send to the broker."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def http_base(url: str) -> str:
    """The HTTP base of a Realtime base URL: ``ws://h:p/v1?x=1`` -> ``http://h:p/v1``, ``wss`` -> ``https``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {redact(url)!r}")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    return f"{_SCHEMES[scheme.lower()]}://{rest.rstrip('/')}"


def _secret(value: str | SecretStr) -> SecretStr:
    secret = value if isinstance(value, SecretStr) else SecretStr(value)
    if not secret.get_secret_value():
        raise ValueError("empty credential")
    return secret


def _json(raw: bytes) -> Any:
    """A response body as JSON, or None: a proxy's HTML error page is judged by its status alone."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None


async def _post(
    endpoint: str, body: Any, bearer: str, limits: aiohttp.ClientTimeout, unreachable: str, code: str
) -> tuple[int, Any]:
    """POST ``body`` as JSON with ``bearer``: the status and the answer's JSON (:func:`_json`). No answer at all is
    a retryable NETWORK :class:`ConnectError` with ``code``, saying ``unreachable`` and why, the bearer redacted."""
    try:
        async with (
            aiohttp.ClientSession(timeout=limits) as http,
            http.post(endpoint, json=body, headers={"Authorization": f"Bearer {bearer}"}) as resp,
        ):
            status, raw = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        message = redact(f"{unreachable}: {type(exc).__name__}: {exc}", bearer)
        raise ConnectError(ErrorClass.NETWORK, message, retryable=True, code=code) from None
    return status, _json(raw)


def _refused(what: str, status: int, payload: Any) -> ConnectError:
    """``what`` answered HTTP ``status`` (classified: auth, rate, server, ...), with the service's error code if its
    ``payload`` names one."""
    cls, retryable = classify_http_status(status)
    code = _upstream_code(payload)
    return ConnectError(
        cls, f"{what}: HTTP {status}" + (f" ({code})" if code else ""), retryable=retryable, code=str(status)
    )


def _upstream_code(payload: Any) -> str:
    """``error.code`` of an OpenAI-style error body, if it is a plain identifier (never the message: the service
    quotes the key it refused)."""
    err = payload.get("error") if isinstance(payload, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, str) and _CODE.match(code) else ""


class StaticKey:
    """The long-lived key as a source. ``invalidate()`` is a no-op: there is nothing fresher to fetch."""

    __slots__ = ("_key",)

    def __init__(self, secret: str | SecretStr) -> None:
        self._key = _secret(secret)

    async def __call__(self) -> str:
        return self._key.get_secret_value()

    def invalidate(self, rejected: str | None = None) -> None:
        return None

    def __repr__(self) -> str:
        return "StaticKey([redacted])"

    __str__ = __repr__


class CachingSource(abc.ABC):
    """A short-lived credential, cached and rotated; subclasses say how to fetch one (:meth:`_fetch`)."""

    def __init__(self, label: str, *, refresh_before_s: float, clock: Callable[[], float]) -> None:
        if refresh_before_s < 0:
            raise ValueError(f"refresh_before_s must be >= 0, got {refresh_before_s}")
        self.label = label  # e.g. "ga/gpt-realtime": for logs and stats, never a secret
        self.refresh_before_s = refresh_before_s
        self._clock = clock
        self._current: Credential | None = None
        self._refresh_at = 0.0
        self._rejected: str | None = None  # fingerprint of the last credential the service refused
        self._lock = asyncio.Lock()
        self.issued = 0
        self.rotations = 0  # fetches because the cached credential neared expiry
        self.invalidations = 0  # credentials dropped by invalidate()
        self.failures = 0  # failed fetches

    @abc.abstractmethod
    async def _fetch(self, rejected: str | None) -> tuple[Credential, float | None]:
        """Fetch a fresh credential and, if the issuer decides it, when to rotate it (unix seconds; None: our own
        rule). Raise :class:`ConnectError` (redacted) on failure."""

    def _fresh(self, cred: Credential | None) -> bool:
        return cred is not None and self._clock() < self._refresh_at

    async def __call__(self) -> str:
        return (await self.credential()).value

    async def credential(self) -> Credential:
        """The cached credential, or a fresh one when there is none, it is due, or it was invalidated."""
        current = self._current
        if current is not None and self._fresh(current):
            return current
        async with self._lock:  # single flight: concurrent connects share one fetch
            current = self._current
            if current is not None and self._fresh(current):
                return current
            rotation = current is not None
            try:
                fresh, refresh_at = await self._fetch(self._rejected)
            except ConnectError as exc:
                self.failures += 1
                log.warning(
                    "credential %s: fetch failed (%s, retryable=%s): %s",
                    self.label,
                    exc.error_class,
                    exc.retryable,
                    exc,
                )
                raise
            now = self._clock()
            lifetime = max(0.0, fresh.expires_at - now)
            if refresh_at is None:
                refresh_at = fresh.expires_at - min(self.refresh_before_s, lifetime / 2)
            self._current, self._refresh_at, self._rejected = fresh, refresh_at, None
            self.issued += 1
            self.rotations += rotation
            log.info(
                "credential %s: issued %s (%s), expires in %.0f s, rotates in %.0f s",
                self.label,
                fingerprint(fresh.value),
                "rotation" if rotation else "new",
                lifetime,
                self._refresh_at - now,
            )
            return fresh

    def invalidate(self, rejected: str | None = None) -> None:
        """Drop the cached credential so the next call fetches. ``rejected``: the :func:`fingerprint` of the credential
        the service refused; when it is not the cached one (already replaced), nothing happens."""
        current = self._current
        if current is None:
            return
        fp = fingerprint(current.value)
        if rejected is not None and rejected != fp:
            return
        self._current, self._rejected = None, fp
        self.invalidations += 1
        log.info("credential %s: %s invalidated", self.label, fp)

    @property
    def expires_at(self) -> float | None:
        return self._current.expires_at if self._current is not None else None

    @property
    def refresh_at(self) -> float | None:
        """When the cached credential will be replaced (unix seconds), if there is one."""
        return self._refresh_at if self._current is not None else None

    def stats(self) -> dict[str, Any]:
        expires_at = self.expires_at
        return {
            "issued": self.issued,
            "rotations": self.rotations,
            "invalidations": self.invalidations,
            "failures": self.failures,
            "expires_in_s": None if expires_at is None else round(expires_at - self._clock(), 1),
        }


class MintingSource(CachingSource):
    """Mints short-lived secrets with the long-lived key from ``dialect.credential_path`` under the HTTP base of
    ``base_url`` (a ``ws(s)://`` Realtime base or its ``http(s)://`` twin). A dialect with no credential endpoint
    (Live) raises :class:`~bridge.errors.ConfigError`: it connects with the long-lived key."""

    def __init__(
        self,
        dialect: Dialect,
        base_url: str,
        api_key: str | SecretStr,
        profile: AgentProfile | None = None,
        refresh_before_s: float = REFRESH_BEFORE_S,
        *,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 10.0,
    ) -> None:
        if dialect.credential_path is None:
            raise ConfigError(f"dialect {dialect.name}", "credentials", "no short-lived credentials: use the API key")
        self.dialect = dialect
        self.profile = profile or AgentProfile()
        self.endpoint = http_base(base_url) + dialect.credential_path
        self._key = _secret(api_key)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        model = self.profile.model or dialect.default_model
        super().__init__(f"{dialect.name}/{model}", refresh_before_s=refresh_before_s, clock=clock)

    async def _fetch(self, rejected: str | None) -> tuple[Credential, float | None]:
        key = self._key.get_secret_value()
        body = self.dialect.build_credential_request(self.profile)
        unreachable = f"credential request to {self.endpoint} failed"
        status, payload = await _post(self.endpoint, body, key, self._timeout, unreachable, "network")
        if status != 200:
            raise _refused(f"credential request to {self.endpoint} refused", status, payload)
        try:
            if not isinstance(payload, Mapping):
                raise TypeError("not a JSON object")
            return self.dialect.parse_credential(payload), None
        except (KeyError, TypeError, ValueError):
            raise ConnectError(
                ErrorClass.PROTOCOL, f"credential response from {self.endpoint} is malformed", retryable=False
            ) from None

    def __repr__(self) -> str:
        return f"MintingSource({self.label}, {self.endpoint}, key=[redacted])"

    __str__ = __repr__


class BrokerClient(CachingSource):
    """Short-lived credentials from the credential broker (``bridge.serve.broker``), for workers that never hold the
    long-lived key. Sends the broker token, the dialect and model, and on a re-issue the fingerprint of the refused
    credential, so the broker re-mints once however many workers report the same secret."""

    def __init__(
        self,
        broker_url: str,
        dialect_name: str,
        model: str | None,
        token: str | SecretStr,
        *,
        refresh_before_s: float = REFRESH_BEFORE_S,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
    ) -> None:
        dialect = get_dialect(dialect_name)
        self.dialect_name = dialect.name
        self.model = model or dialect.default_model
        self.endpoint = http_base(broker_url) + BROKER_PATH
        self._token = _secret(token)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        super().__init__(f"{self.dialect_name}/{self.model}", refresh_before_s=refresh_before_s, clock=clock)

    async def _fetch(self, rejected: str | None) -> tuple[Credential, float | None]:
        token = self._token.get_secret_value()
        body: dict[str, Any] = {"dialect": self.dialect_name, "model": self.model}
        if rejected is not None:
            body["rejected"] = rejected
        unreachable = f"credential broker {self.endpoint} unreachable"
        status, payload = await _post(self.endpoint, body, token, self._timeout, unreachable, "broker")
        if status == 200:
            try:
                cred = Credential(value=str(payload["value"]), expires_at=float(payload["expires_at"]))
                hint = payload.get("refresh_at")  # the broker's rotation time: rotate in step with it
                return cred, float(hint) if hint is not None else None
            except (KeyError, TypeError, ValueError):
                raise ConnectError(
                    ErrorClass.PROTOCOL, "credential broker answered a malformed body", retryable=False
                ) from None
        err = payload.get("error") if isinstance(payload, dict) else None
        err = err if isinstance(err, dict) else {}
        if status == 401:  # our broker token is wrong: configuration, no retry helps
            raise ConnectError(
                ErrorClass.AUTH, "credential broker refused the broker token", retryable=False, code="401"
            )
        if status == 502 and err.get("class") in set(ErrorClass):  # the upstream mint failed; keep its class
            raise ConnectError(
                ErrorClass(err["class"]),
                f"credential broker: upstream refused ({err.get('status', '?')})",
                retryable=bool(err.get("retryable")),
                code=str(err.get("status", "502")),
            )
        raise _refused("credential broker refused", status, payload)

    def __repr__(self) -> str:
        return f"BrokerClient({self.label}, {self.endpoint}, token=[redacted])"

    __str__ = __repr__


class Sources:
    """One credential source per (dialect, model), shared by every call of a process, so calls share a cached
    short-lived credential and a refusal seen by one call re-issues it for all."""

    def __init__(self, factory: Callable[[Dialect, str], CredentialSource], mode: str) -> None:
        self._factory = factory
        self.mode = mode  # "broker" | "mint" | "static": for logs and health
        self._sources: dict[tuple[str, str], CredentialSource] = {}

    def get(self, dialect: Dialect, model: str | None = None) -> CredentialSource:
        model = model or dialect.default_model
        key = (dialect.name, model)
        if key not in self._sources:
            self._sources[key] = self._factory(dialect, model)
        return self._sources[key]

    def stats(self) -> dict[str, Any]:
        return {f"{d}/{m}": s.stats() for (d, m), s in self._sources.items() if isinstance(s, CachingSource)}

    @classmethod
    def from_environment(
        cls,
        realtime_url: str,
        api_key: str | SecretStr | None,
        *,
        mint: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Sources:
        """Broker mode when ``CALLBRIDGE_BROKER_URL`` is set (the key, if any, is ignored); otherwise the key itself
        (``static``), or short-lived secrets minted with it (``mint=True``)."""
        env = os.environ if env is None else env
        broker_url = env.get(BROKER_URL_ENV)
        if broker_url:
            token = env.get(BROKER_TOKEN_ENV)
            if not token:
                raise ConfigError("environment", BROKER_TOKEN_ENV, f"required with {BROKER_URL_ENV}")
            if api_key is not None:
                log.warning("broker mode: this process holds an API key it does not need; it is not used")
            http_base(broker_url)  # fail now, not at the first call
            return cls(lambda d, m: BrokerClient(broker_url, d.name, m, token), "broker")
        if api_key is None:
            raise ConfigError(
                "environment", "OPENAI_API_KEY", f"no API key and no credential broker ({BROKER_URL_ENV})"
            )
        key = _secret(api_key)
        if mint:
            return cls(lambda d, m: MintingSource(d, realtime_url, key, AgentProfile(model=m)), "mint")
        static = StaticKey(key)
        return cls(lambda d, m: static, "static")

    def __repr__(self) -> str:
        return f"Sources({self.mode}, {sorted(self._sources)})"
