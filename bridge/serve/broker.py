"""The credential broker: the one process that holds the long-lived API key, minting short-lived credentials for
workers that never see it.

Routes (every one needs ``Authorization: Bearer <broker token>``, compared in constant time; else 401)::

    POST /v1/credentials        {"dialect": "ga"|"beta", "model"?: str, "rejected"?: fingerprint}
                                -> 200 {"value", "expires_at", "refresh_at"}
                                -> 400 {"error": {"code", "message"}}                 bad request
                                -> 502 {"error": {"code", "class", "retryable", "status"}}  the upstream mint failed
    GET  /v1/credentials/stats  counters: requests, unauthorized, issued, rotations, invalidations, failures,
                                and per (dialect, model) source

It runs inside ``callbridge serve`` (:func:`start_broker`; workers get ``CALLBRIDGE_BROKER_URL`` and
``CALLBRIDGE_BROKER_TOKEN``, not the key) or alone as ``callbridge tokens`` (:func:`main`).

Sharing (the default): one :class:`~bridge.realtime.credentials.MintingSource` per (dialect, model), so every call
of every worker shares one short-lived secret until it is 30 s from expiry (or half its life, for short TTLs). That
costs one mint per TTL instead of one per call, keeps mint latency and upstream rate limits off the call-setup path,
and survives a burst of calls. The price: a secret taken from one worker is good for any session of that model
until it expires (at most the TTL, 10 min by default on the service, 1 min on beta), and a refusal re-issues it for
everybody (once: the ``rejected`` fingerprint makes repeats no-ops). Workers are our own processes on our own
hosts, so the blast radius is the same trust domain. ``share=False`` (``--per-call``) mints one secret per request
instead: per-call isolation, at the cost of a mint on every call setup and reconnect.

The key never leaves this process except in the ``Authorization`` header of the mint request: not in responses,
logs, reprs, exceptions or stats. The access log is off (it would log nothing secret, but nothing is simpler).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from bridge.errors import BridgeError, ConfigError, ConnectError, redact
from bridge.realtime.credentials import (
    BROKER_PATH,
    BROKER_TOKEN_ENV,
    REFRESH_BEFORE_S,
    MintingSource,
    fingerprint,
    http_base,
)
from bridge.realtime.dialects import DIALECTS, Credential
from bridge.realtime.profile import AgentProfile

log = logging.getLogger("bridge.serve.broker")

DEFAULT_PORT = 8766
MAX_SOURCES = 32  # distinct (dialect, model) pairs; a token holder cannot grow the table without bound
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_FIELDS = frozenset({"dialect", "model", "rejected"})


def new_token() -> str:
    """A fresh broker token for ``callbridge serve`` to hand its workers."""
    return secrets.token_urlsafe(32)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _error(status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="callbridge-broker"'} if status == 401 else None
    body = {"error": {"code": code, "message": message, **(extra or {})}}
    return web.json_response(body, status=status, headers=headers)


class BrokerRequestError(BridgeError):
    """A request the broker will not serve (400); ``code`` is a stable identifier. Its message never quotes a value
    from the request, only field names."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class CredentialBroker:
    """Mints and caches short-lived credentials with the long-lived key; see the module docstring."""

    def __init__(
        self,
        api_key: str | SecretStr,
        upstream: str,
        *,
        token: str | SecretStr,
        refresh_before_s: float = REFRESH_BEFORE_S,
        share: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        tok = token if isinstance(token, SecretStr) else SecretStr(token)
        if not key.get_secret_value():
            raise ConfigError("environment", "OPENAI_API_KEY", "the broker needs the API key")
        if not tok.get_secret_value():
            raise ConfigError("environment", BROKER_TOKEN_ENV, "the broker needs a token")
        self._key = key
        self._token_digest = _digest(tok.get_secret_value())
        self.upstream = http_base(upstream)
        self.refresh_before_s = refresh_before_s
        self.share = share
        self._clock = clock
        self._sources: dict[tuple[str, str], MintingSource] = {}
        self.requests = 0
        self.unauthorized = 0
        self.bad_requests = 0

    # ---------------------------------------------------------------------------------------------------------
    # Core

    def authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Compare digests: constant time in the token's content and its length (hmac.compare_digest, RFC 6750 §5.2).
        return hmac.compare_digest(_digest(value.strip()), self._token_digest)

    def source(self, dialect_name: str, model: str | None) -> MintingSource:
        dialect = DIALECTS.get(dialect_name)
        if dialect is None:
            raise BrokerRequestError("invalid_dialect", f"dialect must be one of {sorted(DIALECTS)}")
        model = model or dialect.default_model
        if not _MODEL.match(model):
            raise BrokerRequestError("invalid_model", "model must be 1-100 of [A-Za-z0-9._:-]")
        key = (dialect.name, model)
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= MAX_SOURCES:
                raise BrokerRequestError("too_many_models", f"at most {MAX_SOURCES} (dialect, model) pairs")
            source = MintingSource(
                dialect,
                self.upstream,
                self._key,
                AgentProfile(model=model),
                self.refresh_before_s,
                clock=self._clock,
            )
            self._sources[key] = source
        return source

    async def issue(
        self, dialect_name: str, model: str | None = None, rejected: str | None = None
    ) -> tuple[Credential, float]:
        """A credential for (dialect, model) and when the broker will rotate it: the cached one unless it is due,
        was ``rejected`` (a fingerprint), or the broker mints per call. Raises :class:`BrokerRequestError` or
        :class:`ConnectError` (redacted)."""
        source = self.source(dialect_name, model)
        if rejected is not None:
            source.invalidate(rejected)
        if not self.share:
            source.invalidate()
        cred = await source.credential()
        if not self.share:  # tell the worker not to cache it either: its next connect asks again
            return cred, self._clock()
        return cred, source.refresh_at or cred.expires_at

    def stats(self) -> dict[str, Any]:
        per = {f"{d}/{m}": s.stats() for (d, m), s in sorted(self._sources.items())}
        totals = {k: sum(s[k] for s in per.values()) for k in ("issued", "rotations", "invalidations", "failures")}
        return {
            "requests": self.requests,
            "unauthorized": self.unauthorized,
            "bad_requests": self.bad_requests,
            **totals,
            "share": self.share,
            "refresh_before_s": self.refresh_before_s,
            "sources": per,
        }

    def __repr__(self) -> str:
        return f"CredentialBroker({self.upstream}, key=[redacted], token=[redacted], {len(self._sources)} sources)"

    __str__ = __repr__

    # ---------------------------------------------------------------------------------------------------------
    # HTTP

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024)
        app[BROKER] = self
        app.router.add_post(BROKER_PATH, self._credentials)
        app.router.add_get(f"{BROKER_PATH}/stats", self._stats)
        return app

    def _refuse(self, request: web.Request) -> web.Response | None:
        if self.authorized(request.headers.get("Authorization", "")):
            return None
        self.unauthorized += 1
        log.warning("broker: refused a request without a valid token from %s", request.remote)
        return _error(401, "unauthorized", "a valid broker token is required")

    async def _credentials(self, request: web.Request) -> web.Response:
        self.requests += 1
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            try:
                body = await request.json()
            except ValueError:
                raise BrokerRequestError("invalid_json", "the body must be a JSON object") from None
            if not isinstance(body, dict):
                raise BrokerRequestError("invalid_json", "the body must be a JSON object")
            if set(body) - _FIELDS:  # not echoed: a caller's field name could be anything, a secret included
                raise BrokerRequestError("unknown_parameter", f"unknown field; expected only {sorted(_FIELDS)}")
            dialect, model, rejected = body.get("dialect"), body.get("model"), body.get("rejected")
            if not isinstance(dialect, str):
                raise BrokerRequestError("invalid_dialect", f"dialect must be one of {sorted(DIALECTS)}")
            if model is not None and not isinstance(model, str):
                raise BrokerRequestError("invalid_model", "model must be a string")
            if rejected is not None and not (isinstance(rejected, str) and _FINGERPRINT.match(rejected)):
                raise BrokerRequestError("invalid_rejected", "rejected must be a credential fingerprint")
            cred, refresh_at = await self.issue(dialect, model, rejected)
        except BrokerRequestError as exc:
            self.bad_requests += 1
            return _error(400, exc.code, str(exc))
        except ConnectError as exc:
            detail = redact(str(exc), self._key.get_secret_value())
            log.warning("broker: mint for %s/%s failed: %s", dialect, model, detail)
            upstream = {"class": str(exc.error_class), "retryable": exc.retryable, "status": exc.code}
            return _error(502, "upstream_failed", "the upstream credential endpoint failed", upstream)
        log.debug("broker: served %s/%s credential %s", dialect, model, fingerprint(cred.value))
        return web.json_response(
            {"value": cred.value, "expires_at": cred.expires_at, "refresh_at": refresh_at},
            headers={"Cache-Control": "no-store"},
        )

    async def _stats(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        return web.json_response(self.stats(), headers={"Cache-Control": "no-store"})


BROKER = web.AppKey("broker", CredentialBroker)  # runner.app[BROKER]: the broker behind a started runner


async def start_broker(
    api_key: str | SecretStr,
    upstream: str,
    *,
    token: str | SecretStr,
    host: str = "127.0.0.1",
    port: int = 0,
    refresh_before_s: float = REFRESH_BEFORE_S,
    share: bool = True,
    clock: Callable[[], float] = time.time,
) -> tuple[web.AppRunner, str]:
    """Start a broker on ``host:port`` (0: any free port). Returns the runner (``await runner.cleanup()`` stops it)
    and the broker's URL (``http://host:port``) to give workers as ``CALLBRIDGE_BROKER_URL``."""
    broker = CredentialBroker(
        api_key, upstream, token=token, refresh_before_s=refresh_before_s, share=share, clock=clock
    )
    runner = web.AppRunner(broker.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    url = f"http://{host}:{bound}"
    with contextlib.suppress(ValueError):
        if not ipaddress.ip_address(host).is_loopback:
            log.warning("broker on %s: tokens and credentials travel in clear; put TLS in front of it", host)
    log.info(
        "credential broker on %s for %s (%s, rotation %.0f s before expiry)",
        url,
        broker.upstream,
        "shared per dialect and model" if share else "one per call",
        refresh_before_s,
    )
    return runner, url


def main(argv: list[str]) -> int:
    """``callbridge tokens``: the broker alone. The key comes from ``OPENAI_API_KEY``, the token from
    ``CALLBRIDGE_BROKER_TOKEN``."""
    from bridge.cli import build_parser
    from bridge.config import load_settings

    parser = build_parser("tokens", "the credential broker: mints short-lived Realtime credentials for workers")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the port (default {DEFAULT_PORT})")
    parser.add_argument("--upstream", help="Realtime base URL (default: CALLBRIDGE_REALTIME_URL, or OpenAI with a key)")
    parser.add_argument("--refresh-before", type=float, default=REFRESH_BEFORE_S, help="seconds before expiry")
    parser.add_argument("--per-call", action="store_true", help="mint one credential per request (no sharing)")
    args = parser.parse_args(argv)
    token = os.environ.get(BROKER_TOKEN_ENV, "")
    try:
        if not token:
            raise ConfigError("environment", BROKER_TOKEN_ENV, "required: workers authenticate with it")
        settings = load_settings(None, realtime_url=args.upstream)
        api_key = settings.credential
        http_base(settings.realtime_url)
    except (ConfigError, ValueError) as exc:
        print(f"callbridge tokens: {redact(str(exc), token)}", file=sys.stderr)
        return 2

    async def amain() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner, url = await start_broker(
            api_key,
            settings.realtime_url,
            token=token,
            host=args.host,
            port=args.port,
            refresh_before_s=args.refresh_before,
            share=not args.per_call,
        )
        print(json.dumps({"broker_url": url}), flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
        return 0

    return asyncio.run(amain())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main(sys.argv[1:]))
