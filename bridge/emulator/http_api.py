"""The emulator's HTTP endpoints beside its WebSockets: each dialect's credential endpoint (short-lived keys, as the
service mints them) and the control API (tests and QA steer the emulator through it)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from bridge.emulator.config import DialectConfig
from bridge.emulator.record import SessionRecord
from bridge.emulator.wire import Id, Ids, Wire
from bridge.privacy.masking import mask_api_key
from bridge.realtime.dialects import Dialect
from bridge.realtime.dialects.schema import ClientError

MIN_SECRET_TTL_S, MAX_SECRET_TTL_S = 10, 7200  # expires_after.seconds bounds of the credential endpoints


@dataclass
class Secret:
    expires_at: float
    # the session config it was minted with, under the dialect it was minted for: a connection in that dialect
    # starts from it
    sessions: Mapping[Dialect, dict[str, Any]]


def bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def http_error(status: int, code: str, message: str, param: str | None = None) -> web.Response:
    err = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(err, status=status)


class Credentials:
    """The keys a connection may bring: the long-lived one (``api_key``; None accepts any) and the short-lived ones
    minted here, each valid for ``ttl_s`` unless the request asks otherwise."""

    def __init__(self, api_key: str | None, ttl_s: float) -> None:
        self.api_key = api_key
        self.ttl_s = ttl_s
        self.secrets: dict[str, Secret] = {}
        self.ids = Ids()

    def refusal(self, key: str) -> tuple[str, str] | None:
        """(code, message) for a key the service would refuse a connection with."""
        if not key:
            return (
                "invalid_api_key",
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        secret = self.secrets.get(key)
        if secret is not None and secret.expires_at <= time.time():
            return "expired_client_secret", "The client secret has expired."
        if secret is None and self.api_key is not None and key != self.api_key:
            return (
                "invalid_api_key",
                f"Incorrect API key provided: {mask_api_key(key)}. "
                "You can find your API key at https://platform.openai.com/account/api-keys.",
            )
        return None

    def long_lived_ok(self, key: str) -> bool:
        if not key or key in self.secrets:
            return False
        return self.api_key is None or key == self.api_key

    async def mint(self, request: web.Request, dialect: Dialect) -> web.Response:
        key = bearer(request)
        if not self.long_lived_ok(key):
            return http_error(401, "invalid_api_key", f"Incorrect API key provided: {mask_api_key(key)}.")
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return http_error(400, "invalid_json", "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return http_error(400, "invalid_type", "Expected a JSON object.")
        cfg = DialectConfig(dialect)
        ttl = self.ttl_s
        read = dialect.realtime_service.mint_request(body)
        raw_session, expires_after = read.session, read.expires_after
        if read.unknown:
            name = sorted(read.unknown)[0]
            return http_error(400, "unknown_parameter", f"Unknown parameter: '{name}'.", name)
        if isinstance(expires_after, dict) and expires_after.get("seconds") is not None:
            seconds = expires_after["seconds"]
            if not isinstance(seconds, int) or not MIN_SECRET_TTL_S <= seconds <= MAX_SECRET_TTL_S:
                return http_error(400, "invalid_value", f"Invalid value: {seconds}.", "expires_after.seconds")
            ttl = float(seconds)
        model = str(raw_session.get("model") or dialect.default_model) if isinstance(raw_session, dict) else ""
        try:
            session = cfg.update(cfg.defaults(model), raw_session, prefix=read.param_prefix)
        except ClientError as exc:
            return http_error(400, exc.code, exc.message, exc.param)
        now = time.time()
        value = self.ids.secret()
        self.secrets[value] = Secret(now + ttl, {dialect: raw_session if isinstance(raw_session, dict) else {}})
        wire = Wire(dialect, self.ids)
        echo = wire.session(session, self.ids.new(Id.SESSION), int(now + ttl))
        return web.json_response(wire.mint_response(value, int(now + ttl), echo))

    def minter(self, dialect: Dialect) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def mint(request: web.Request) -> web.Response:
            return await self.mint(request, dialect)

        return mint


class Controlled(Protocol):
    """What the control API steers: the server's Python control API (``EmulatorServer``)."""

    def queue_next(
        self,
        count: int = 1,
        settings: Mapping[str, Any] | None = None,
        annotations: Any = None,
        models: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Queue settings (``models``: per model, over them) and annotations for the next ``count`` connections; how
        many are queued now."""
        ...

    def set_defaults(
        self, settings: Mapping[str, Any], models: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Change every later connection's settings (``models``: a model's connections'); the settings now, flat."""
        ...

    def summaries(self) -> list[dict[str, Any]]: ...

    def session(self, session_id: str) -> SessionRecord: ...

    def forget_closed(self) -> int:
        """Forget the closed sessions; how many."""
        ...

    def inject(self, session_id: str, kind: str, **opts: Any) -> None: ...

    def annotate(self, session_id: str, annotations: Any) -> None: ...


class ControlApi:
    """The control API over the server's Python one (:class:`Controlled`)."""

    def __init__(self, server: Controlled) -> None:
        self.server = server

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/control/next", self._next)
        app.router.add_post("/control/defaults", self._defaults)
        app.router.add_get("/control/sessions", self._sessions)
        app.router.add_delete("/control/sessions", self._forget)
        app.router.add_get("/control/sessions/{id}", self._session)
        app.router.add_post("/control/sessions/{id}/fault", self._fault)
        app.router.add_post("/control/sessions/{id}/annotations", self._annotate)

    async def _next(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            unknown = set(body) - {"count", "settings", "annotations", "models"}
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}")
            count, settings, annotations = int(body.get("count", 1)), body.get("settings"), body.get("annotations")
            queued = self.server.queue_next(count, settings, annotations, body.get("models"))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"queued": queued})

    async def _defaults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if (
                not isinstance(body, dict)
                or not body
                or set(body) - {"settings", "models"}
                or not isinstance(body.get("settings", {}), dict)
            ):
                raise ValueError('expected {"settings": {...}, "models": {MODEL: {...}}} (either or both)')
            settings = self.server.set_defaults(body.get("settings", {}), body.get("models"))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"settings": settings})

    async def _sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"sessions": self.server.summaries()})

    async def _forget(self, request: web.Request) -> web.Response:
        return web.json_response({"forgotten": self.server.forget_closed()})

    async def _session(self, request: web.Request) -> web.Response:
        try:
            record = self.server.session(request.match_info["id"])
        except KeyError:
            return web.json_response({"error": "no such session"}, status=404)
        return web.json_response(
            {**record.summary(), "sent_types": record.types_sent(), "received_types": record.types_received()}
        )

    async def _fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            opts = dict(body)
            self.server.inject(request.match_info["id"], str(opts.pop("kind", "")), **opts)
        except KeyError:
            return web.json_response({"error": "no such live session"}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _annotate(self, request: web.Request) -> web.Response:
        try:
            self.server.annotate(request.match_info["id"], await request.json())
        except KeyError:
            return web.json_response({"error": "no such live session"}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})
