"""The emulator's network shell: one aiohttp app serving the model's WebSockets, the credential endpoints and a
control API on a single port.

Routes (the WebSocket and credential paths are each dialect's own, from its table)::

    GET  /v1/realtime?model=...[&setting=value...]   WebSocket; ``OpenAI-Beta: realtime=v1`` selects beta, else GA
    GET  /v1/live/sessions[?setting=value...]         WebSocket, GPT-Live (the model comes in session.start)
    POST /v1/realtime/client_secrets                  GA ephemeral key:   {"value", "expires_at", "session"}
    POST /v1/realtime/sessions                        beta ephemeral key: {..., "client_secret": {"value", ...}}
    POST /v1/responses                                the replay's grader, judged by a rule (``grader.py``)
    POST /control/next                                {"count", "settings", "models", "annotations"} for the next
                                                      connections ("models": model or pattern -> settings)
    POST /control/defaults                            {"settings", "models"} for every later connection
    GET  /control/sessions                            summaries of every session so far
    GET  /control/sessions/{id}                       one summary plus the event types both ways
    POST /control/sessions/{id}/fault                 {"kind": drop|error|unknown_event|malformed_json|expire|close}
    POST /control/sessions/{id}/annotations           more turns for a live session
    DELETE /control/sessions                          forget closed sessions

Each WebSocket gets a sans-I/O core, picked by the shape of its dialect's service table (an
:class:`~bridge.emulator.session.EmulatorSession` for the Realtime shapes, a
:class:`~bridge.emulator.live.LiveSession` for Live's), and a loop (``websocket.py``) that feeds it frames,
control requests and the clock, and carries out its actions. The credential endpoints and the control API are
``http_api.py``'s. Fatal errors follow the service: an ``error`` event, then a close in the same millisecond (3000
bad key, 4000 bad model or beta shape disabled).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import logging
import random
import secrets
import ssl
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.emulator.annotations import Annotations
from bridge.emulator.fastread import FastReadResponse
from bridge.emulator.faults import Fault, ModelSettings, Settings, check_model_settings, for_model
from bridge.emulator.grader import RuleGrader
from bridge.emulator.http_api import ControlApi, Credentials, bearer, http_error
from bridge.emulator.live import LiveSession
from bridge.emulator.record import Recorder, SessionRecord
from bridge.emulator.session import EmulatorSession
from bridge.emulator.websocket import Connection, Item, SocketPump
from bridge.realtime.dialects import DIALECTS, Dialect, LiveService
from bridge.runtime.service import Service

log = logging.getLogger("bridge.emulator")

CLOSE_BAD_KEY = 3000  # the service's close code for a bad, missing or expired credential
CLOSE_BAD_REQUEST = 4000  # bad model, a retired dialect's shape
API_PREFIX = "/v1"  # the dialects' paths sit under it


@dataclass
class _Pending:
    """Settings and annotations queued by POST /control/next for the next ``count`` connections."""

    count: int
    settings: dict[str, Any]
    annotations: Any
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # model or pattern -> settings, over ``settings``


def dialect_of(path: str, headers: Mapping[str, str]) -> Dialect | None:
    """The dialect a WebSocket upgrade asks for, as the service picks it: among the dialects served on ``path``, the
    one whose extra headers the request carries (a header's value may list more than the dialect's), the one with
    the most of them first. On ``/realtime``: ``OpenAI-Beta: realtime=v1`` means beta, no such header GA."""
    matching = [
        d
        for d in DIALECTS.values()
        if d.path == path and all(value in headers.get(name, "") for name, value in d.extra_headers.items())
    ]
    return max(matching, key=lambda d: len(d.extra_headers), default=None)


class EmulatorServer(Service):
    """A local Realtime service. ``settings`` are what every session starts from: the defaults of its settings (names
    in ``faults.Settings``), under ``annotations``, its call script (``annotations.Annotations``), and under
    ``model_settings`` (model or fnmatch pattern -> settings) those over them for a connection of that model."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        models: Iterable[str] | None = None,
        client_secret_ttl_s: float = 60.0,
        record_dir: str | Path | None = None,
        ping_interval_s: float = 20.0,
        tls: ssl.SSLContext | None = None,
        **settings: Any,
    ) -> None:
        annotations = settings.pop("annotations", None)
        model_settings: ModelSettings = settings.pop("model_settings", None) or {}
        self.host = host
        self.port = port
        self.tls = tls  # serve wss:// and https:// with this context (as the service does), else ws:// and http://
        self.models = tuple(models) if models else None  # fnmatch patterns; None accepts any non-empty model
        self.credentials = Credentials(api_key, client_secret_ttl_s)
        self.grader = RuleGrader(self.credentials)
        self.record_dir = Path(record_dir) if record_dir else None
        self.pump = SocketPump(ping_interval_s)
        self.settings = Settings().with_values(settings)
        self.model_settings = check_model_settings(model_settings)
        self.annotations = Annotations.parse(annotations)
        self.sessions: list[SessionRecord] = []
        self.refused: list[dict[str, Any]] = []  # upgrades refused by the refuse_models fault: t, model, status
        self._refuse_draws = random.Random(self.settings.seed)  # refuse_share's draws, one per connection
        self._spell_salt = secrets.token_hex(8)  # refuse_spell_s's draws without a seed: this server's own
        self._started = time.monotonic()
        self._live: dict[str, Connection] = {}
        self.pending: deque[_Pending] = deque()
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------------------------------------------------
    # Lifecycle

    def app(self) -> web.Application:
        app = web.Application()
        for path in sorted({d.path for d in DIALECTS.values()}):
            app.router.add_get(API_PREFIX + path, self._realtime)
        for dialect in DIALECTS.values():
            if dialect.credential_path is not None:
                app.router.add_post(API_PREFIX + dialect.credential_path, self.credentials.minter(dialect))
        app.router.add_post(API_PREFIX + "/responses", self.grader.handle)
        ControlApi(self).add_routes(app)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("emulator listening on %s", self.base_url)

    async def close(self) -> None:
        for live in list(self._live.values()):
            live.put((Item.STOP, None))
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """The SDK's ``websocket_base_url`` / the bridge's Realtime base, e.g. ``ws://127.0.0.1:8765/v1``."""
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/v1"

    @property
    def http_url(self) -> str:
        """``http://host:port``: the credential endpoints live under ``/v1``, the control API under ``/control``."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    # ---------------------------------------------------------------------------------------------------------
    # Python control API (the HTTP control API calls these)

    def queue_next(
        self,
        count: int = 1,
        settings: Mapping[str, Any] | None = None,
        annotations: Any = None,
        models: ModelSettings | None = None,
    ) -> int:
        """Settings (``models``: per model, over them) and annotations for the next ``count`` connections (validated
        now); how many are queued."""
        self.settings.with_values(settings or {})
        by_model = check_model_settings(models or {})
        Annotations.parse(annotations)
        self.pending.append(_Pending(max(1, int(count)), dict(settings or {}), annotations, by_model))
        return sum(p.count for p in self.pending)

    def set_defaults(self, settings: Mapping[str, Any], models: ModelSettings | None = None) -> dict[str, Any]:
        """Change the settings of every later connection (a fault such as ``refuse_models`` included) and, with
        ``models``, those of a model's connections (merged into the earlier ones per model); the settings now, flat,
        with the per-model ones under ``models``."""
        self.settings = self.settings.with_values(settings)
        for model, values in check_model_settings(models or {}).items():
            self.model_settings[model] = {**self.model_settings.get(model, {}), **values}
        return {**self.settings.as_dict(), "models": self.model_settings}

    def settings_for(
        self, model: str, pending: _Pending | None = None, query: Mapping[str, Any] | None = None
    ) -> Settings:
        """A connection's settings: the defaults, the model's, the queued ones and the queued model's, the URL's."""
        settings = self.settings.with_values(for_model(self.model_settings, model))
        if pending is not None:
            settings = settings.with_values(pending.settings).with_values(for_model(pending.models, model))
        return settings.with_values(query or {})

    def summaries(self) -> list[dict[str, Any]]:
        return [r.summary() for r in self.sessions]

    def forget_closed(self) -> int:
        """Forget the sessions that have closed; how many."""
        before = len(self.sessions)
        self.sessions = [r for r in self.sessions if not r.closed]
        return before - len(self.sessions)

    def session(self, session_id: str) -> SessionRecord:
        for record in self.sessions:
            if record.id == session_id:
                return record
        raise KeyError(session_id)

    def inject(self, session_id: str, kind: str, **opts: Any) -> None:
        """A fault in a live session now (see ``EmulatorSession.inject``)."""
        fault = Fault.named(kind)
        live = self._live.get(session_id)
        if live is None:
            raise KeyError(session_id)
        live.put((Item.INJECT, (fault, opts)))

    def annotate(self, session_id: str, annotations: Any) -> None:
        live = self._live.get(session_id)
        if live is None:
            raise KeyError(session_id)
        live.session.annotate(annotations)

    async def wait_for_session(self, index: int = 0, within_s: float = 5.0) -> SessionRecord:
        """The ``index``-th session record, waiting for it to exist."""
        deadline = asyncio.get_running_loop().time() + within_s
        while len(self.sessions) <= index:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no session #{index} after {within_s} s")
            await asyncio.sleep(0.005)
        return self.sessions[index]

    async def wait_closed(self, record: SessionRecord, within_s: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + within_s
        while not record.closed:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"session {record.id} still open after {within_s} s")
            await asyncio.sleep(0.005)

    # ---------------------------------------------------------------------------------------------------------
    # WebSocket

    def _take_pending(self) -> _Pending | None:
        if not self.pending:
            return None
        head = self.pending[0]
        head.count -= 1
        if head.count <= 0:
            self.pending.popleft()
        return head

    def _model_ok(self, model: str, settings: Settings | None = None) -> bool:
        if not model or (settings is not None and settings.faults.retired(model)):
            return False
        return self.models is None or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def _refusal(self, dialect: Dialect, settings: Settings, key: str, model: str) -> tuple[str, str, int] | None:
        """(code, message, close code) for a connection the service would refuse."""
        retired = dialect.service.retired
        if retired is not None and settings.faults.beta_disabled:
            code, message = retired
            return code, message, CLOSE_BAD_REQUEST
        refused = self.credentials.refusal(key)
        if refused is not None:
            return (*refused, CLOSE_BAD_KEY)
        if dialect.model_in_url and not self._model_ok(model, settings):  # else the opening command names it
            return (
                "model_not_found",
                f"The model '{model}' does not exist or you do not have access to it.",
                CLOSE_BAD_REQUEST,
            )
        return None

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        dialect = dialect_of(request.path.removeprefix(API_PREFIX), request.headers)
        assert dialect is not None  # routed here by a dialect's path, and one dialect per path needs no header
        query = dict(request.query)
        model = query.pop("model", "")
        key = bearer(request)
        secret = self.credentials.secrets.get(key)
        pending = self._take_pending()
        initial = secret.sessions.get(dialect) if secret is not None else None
        if not model and initial is not None:
            model = str(initial.get("model") or "")
        settings, bad_setting = self.settings, None
        try:
            settings = self.settings_for(model or dialect.default_model, pending, query)
        except ValueError as exc:
            bad_setting = str(exc)
        annotations = Annotations.parse(pending.annotations) if pending else self.annotations.copy()
        faults = settings.faults
        salt = self._spell_salt if settings.seed is None else str(settings.seed)  # a seed: the same spells each run
        draw = faults.refusal_draw(self._refuse_draws.random(), time.monotonic() - self._started, salt)
        status = faults.refusal_status(model or dialect.default_model, draw)
        if status is not None:  # the refuse_models fault: the upgrade itself fails, as when the service is down
            self.refused.append({"t": time.time(), "model": model, "status": status})
            return http_error(status, "emulator_refused", f"Emulator: connections for {model!r} are refused.")
        if settings.faults.upgrade_delay_ms > 0:  # the upgrade_delay_ms fault: a service slow to open a session
            await asyncio.sleep(settings.faults.upgrade_delay_ms / 1000.0)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the client gave up waiting: no session was opened
        ws = FastReadResponse(compress=False, max_msg_size=64 * 1024 * 1024, timeout=2.0)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        session: EmulatorSession | LiveSession
        if isinstance(dialect.service, LiveService):
            session = LiveSession(
                dialect,
                settings,
                now=loop.time(),
                wall=time.time(),
                annotations=annotations,
                model_ok=lambda m: self._model_ok(m, settings),
                # Live names its model in session.start: the settings are that model's from then on
                settings_for=None if bad_setting else lambda m: self.settings_for(m, pending, query),
            )
        else:
            session = EmulatorSession(
                dialect,
                settings,
                model=model or dialect.default_model,
                now=loop.time(),
                wall=time.time(),
                annotations=annotations,
                initial_session=initial,
            )
        record = session.record
        self.sessions.append(record)
        recorder = Recorder(self.record_dir, record) if self.record_dir is not None else None
        record.listener = recorder
        refusal = self._refusal(dialect, settings, key, model)
        if refusal is not None:
            actions = session.refuse(*refusal)
        else:
            actions = session.open()
            if bad_setting is not None:
                actions += session.report("unknown_parameter", f"Emulator: {bad_setting}.", loop.time(), param="query")
        live = Connection(session, ws, request.transport)
        self._live[record.id] = live
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self.pump.run(live, actions)
        finally:
            self._live.pop(record.id, None)
            if task is not None:
                self._handlers.discard(task)
            if not record.closed:
                record.closed, record.close_code = True, ws.close_code
            if recorder is not None:
                recorder.close()
        return ws


# --------------------------------------------------------------------------------------------------------------
# CLI


async def serve(host: str = "127.0.0.1", port: int = 8765, **settings: Any) -> None:
    """Run an emulator until cancelled (``callbridge emulator``)."""
    server = EmulatorServer(host, port, **settings)
    await server.start()
    print(f"Realtime emulator on {server.base_url} (control API {server.http_url}/control)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="callbridge emulator",
        description="a local model service speaking every dialect (Realtime beta and GA, GPT-Live)",
    )
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="the port (default 8765)")
    p.add_argument("--record", metavar="DIR", help="write <session>.in.wav and <session>.events.jsonl here")
    p.add_argument("--speed", type=float, help="pace as a multiple of real time (0 = as fast as possible)")
    p.add_argument("--delta-ms", type=float, help="audio per delta")
    p.add_argument("--tone-hz", type=float, help="reply tone frequency")
    p.add_argument("--wav", help="reply with this mono PCM16 WAV instead of a tone")
    p.add_argument("--api-key", help="accept only this key (and secrets minted with it)")
    p.add_argument("--model", action="append", dest="models", help="allowed model (fnmatch pattern; repeatable)")
    p.add_argument("--client-secret-ttl", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--ping-interval", type=float, default=20.0, help="seconds between idle pings (0 = off)")
    p.add_argument("--annotations", metavar="FILE", help="JSON annotations for every session")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any setting or fault")
    p.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="MODEL:NAME=VALUE",
        help="a setting or fault for the connections of one model (a name or fnmatch pattern; repeatable)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve wss:// and https:// with this certificate (and --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")
    return p


def server_tls(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server context for ``cert`` and its ``key`` (PEM files)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


def options(args: argparse.Namespace) -> dict[str, Any]:
    """``EmulatorServer`` keyword arguments from parsed CLI arguments."""
    opts: dict[str, Any] = {
        "api_key": args.api_key,
        "models": args.models,
        "client_secret_ttl_s": args.client_secret_ttl,
        "ping_interval_s": args.ping_interval,
        "record_dir": args.record,
    }
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        opts["tls"] = server_tls(args.tls_cert, args.tls_key)
    if args.annotations:
        opts["annotations"] = json.loads(Path(args.annotations).read_text())
    for name, value in (
        ("speed", args.speed),
        ("delta_ms", args.delta_ms),
        ("tone_hz", args.tone_hz),
        ("wav_path", args.wav),
    ):
        if value is not None:
            opts[name] = value
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set needs NAME=VALUE, got {item!r}")
        opts[name.strip()] = value
    by_model: dict[str, dict[str, Any]] = {}
    for item in args.model_set:
        scope, sep, assignment = item.partition(":")
        name, eq, value = assignment.partition("=")
        if not sep or not eq or not scope.strip() or not name.strip():
            raise SystemExit(f"--model-set needs MODEL:NAME=VALUE, got {item!r}")
        by_model.setdefault(scope.strip(), {})[name.strip()] = value
    if by_model:
        opts["model_settings"] = by_model
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        opts = options(args)
        Settings().with_values({k: v for k, v in opts.items() if k not in _SERVER_OPTIONS})
        check_model_settings(opts.get("model_settings", {}))
    except (ValueError, OSError) as exc:  # ssl.SSLError is an OSError: a certificate or key that does not load
        print(f"callbridge emulator: {exc}")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, **opts))
    return 0


_SERVER_OPTIONS = frozenset(
    {
        "api_key",
        "models",
        "client_secret_ttl_s",
        "ping_interval_s",
        "record_dir",
        "annotations",
        "tls",
        "model_settings",
    }
)
