"""The emulator's network shell: one aiohttp app serving the model's WebSockets, the credential endpoints and a
control API on a single port.

Routes (the WebSocket and credential paths are each dialect's own, from its table)::

    GET  /v1/realtime?model=...[&setting=value...]   WebSocket; ``OpenAI-Beta: realtime=v1`` selects beta, else GA
    GET  /v1/live/sessions[?setting=value...]         WebSocket, GPT-Live (the model comes in session.start)
    POST /v1/realtime/client_secrets                  GA ephemeral key:   {"value", "expires_at", "session"}
    POST /v1/realtime/sessions                        beta ephemeral key: {..., "client_secret": {"value", ...}}
    POST /control/next                                {"count", "settings", "annotations"} for the next connections
    POST /control/defaults                            {"settings"} for every later connection
    GET  /control/sessions                            summaries of every session so far
    GET  /control/sessions/{id}                       one summary plus the event types both ways
    POST /control/sessions/{id}/fault                 {"kind": drop|error|unknown_event|malformed_json|expire|close}
    POST /control/sessions/{id}/annotations           more turns for a live session
    DELETE /control/sessions                          forget closed sessions

Each WebSocket gets a sans-I/O core, picked by the shape of its dialect's service table (an
:class:`~bridge.emulator.session.EmulatorSession` for the Realtime shapes, a
:class:`~bridge.emulator.live.LiveSession` for Live's), and a loop that feeds it frames, control requests and the
clock, and carries out its actions. Frames and deadlines that find the loop idle are handled where they arrive (see
:meth:`EmulatorServer._offer`). Fatal errors follow the service: an ``error`` event, then a close in the same
millisecond (3000 bad key, 4000 bad model or beta shape disabled).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import logging
import struct
import time
import wave
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from aiohttp import WSMsgType, web

from bridge.emulator.annotations import Annotations
from bridge.emulator.config import DialectConfig
from bridge.emulator.fastread import FastReadResponse
from bridge.emulator.faults import INJECTABLE, Settings
from bridge.emulator.live import LiveSession
from bridge.emulator.session import Abort, Action, Close, EmulatorSession, Send, SendRaw, SessionRecord
from bridge.emulator.wire import Ids, Wire
from bridge.realtime.dialects import DIALECTS, Dialect, LiveService
from bridge.realtime.dialects.schema import ClientError

log = logging.getLogger("bridge.emulator")

CLOSE_BAD_KEY = 3000  # the service's close code for a bad, missing or expired credential
CLOSE_BAD_REQUEST = 4000  # bad model, a retired dialect's shape
API_PREFIX = "/v1"  # the dialects' paths sit under it
MIN_SECRET_TTL_S, MAX_SECRET_TTL_S = 10, 7200  # expires_after.seconds bounds of the credential endpoints


@dataclass
class _Pending:
    """Settings and annotations queued by POST /control/next for the next ``count`` connections."""

    count: int
    settings: dict[str, Any]
    annotations: Any


@dataclass
class _Secret:
    expires_at: float
    # the session config it was minted with, under the dialect it was minted for: a connection in that dialect
    # starts from it
    sessions: Mapping[Dialect, dict[str, Any]]


@dataclass
class _Live:
    session: EmulatorSession | LiveSession
    ws: FastReadResponse
    transport: asyncio.Transport | None
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    idle: bool = False  # the pump awaits an empty queue: nothing is ahead of a new frame or deadline
    last_out: float = 0.0  # when something was last sent (idle pings)
    alarm: _Alarm = field(init=False)  # set by the pump

    def put(self, item: tuple[str, Any]) -> None:
        """Queue ``item`` for the pump; what arrives after it queues behind it."""
        self.idle = False
        self.queue.put_nowait(item)


class _Recorder:
    """``<id>.events.jsonl`` as events happen, ``<id>.in.wav`` (and raw G.711) when the session ends."""

    def __init__(self, directory: Path, record: SessionRecord) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.record = record
        self._events: IO[bytes] = open(directory / f"{record.id}.events.jsonl", "ab")  # noqa: SIM115 - closed in close()

    def __call__(self, direction: str, t: float, obj: Any) -> None:
        line = {"t": round(time.time(), 6), "mono": round(t, 6), "dir": direction, "event": obj}
        self._events.write(orjson.dumps(line) + b"\n")

    def close(self) -> None:
        self._events.close()
        for i, seg in enumerate(self.record.audio):
            suffix = "" if i == 0 else f".{i}"
            with wave.open(str(self.directory / f"{self.record.id}.in{suffix}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(seg.rate)
                w.writeframes(bytes(seg.pcm))
            if seg.raw:
                (self.directory / f"{self.record.id}.in{suffix}.{seg.format}").write_bytes(bytes(seg.raw))


def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


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


def _mask(key: str) -> str:
    return key[:6] + "*" * 3 + key[-4:] if len(key) > 12 else "***"


def _http_error(status: int, code: str, message: str, param: str | None = None) -> web.Response:
    err = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(err, status=status)


class EmulatorServer:
    """A local Realtime service. ``settings`` are defaults for every session (names in ``faults.Settings``)."""

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
        annotations: Any = None,
        **settings: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.models = tuple(models) if models else None  # fnmatch patterns; None accepts any non-empty model
        self.client_secret_ttl_s = client_secret_ttl_s
        self.record_dir = Path(record_dir) if record_dir else None
        self.ping_interval_s = ping_interval_s
        self.settings = Settings().with_values(settings)
        self.annotations = Annotations.parse(annotations)
        self.sessions: list[SessionRecord] = []
        self.refused: list[dict[str, Any]] = []  # upgrades refused by the refuse_models fault: t, model, status
        self._live: dict[str, _Live] = {}
        self._pending: deque[_Pending] = deque()
        self._secrets: dict[str, _Secret] = {}
        self._ids = Ids()
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
                app.router.add_post(API_PREFIX + dialect.credential_path, self._minter(dialect))
        app.router.add_post("/control/next", self._control_next)
        app.router.add_post("/control/defaults", self._control_defaults)
        app.router.add_get("/control/sessions", self._control_sessions)
        app.router.add_delete("/control/sessions", self._control_forget)
        app.router.add_get("/control/sessions/{id}", self._control_session)
        app.router.add_post("/control/sessions/{id}/fault", self._control_fault)
        app.router.add_post("/control/sessions/{id}/annotations", self._control_annotate)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("emulator listening on %s", self.base_url)

    async def stop(self) -> None:
        for live in list(self._live.values()):
            live.put(("stop", None))
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """The SDK's ``websocket_base_url`` / the bridge's Realtime base, e.g. ``ws://127.0.0.1:8765/v1``."""
        return f"ws://{self.host}:{self.port}/v1"

    @property
    def http_url(self) -> str:
        """``http://host:port``: the credential endpoints live under ``/v1``, the control API under ``/control``."""
        return f"http://{self.host}:{self.port}"

    # ---------------------------------------------------------------------------------------------------------
    # Python control API (the HTTP control API calls these)

    def queue_next(self, count: int = 1, settings: Mapping[str, Any] | None = None, annotations: Any = None) -> None:
        """Settings and annotations for the next ``count`` connections (validated now)."""
        self.settings.with_values(settings or {})
        Annotations.parse(annotations)
        self._pending.append(_Pending(max(1, int(count)), dict(settings or {}), annotations))

    def set_defaults(self, settings: Mapping[str, Any]) -> None:
        """Change the settings of every later connection (a fault such as ``refuse_models`` included)."""
        self.settings = self.settings.with_values(settings)

    def session(self, session_id: str) -> SessionRecord:
        for record in self.sessions:
            if record.id == session_id:
                return record
        raise KeyError(session_id)

    def inject(self, session_id: str, kind: str, **opts: Any) -> None:
        """A fault in a live session now (see ``EmulatorSession.inject``)."""
        if kind not in INJECTABLE:
            raise ValueError(f"unknown fault {kind!r}; expected one of {sorted(INJECTABLE)}")
        live = self._live.get(session_id)
        if live is None:
            raise KeyError(session_id)
        live.put(("inject", (kind, opts)))

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
        if not self._pending:
            return None
        head = self._pending[0]
        head.count -= 1
        if head.count <= 0:
            self._pending.popleft()
        return head

    def _model_ok(self, model: str) -> bool:
        if not model:
            return False
        return self.models is None or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def _refusal(self, dialect: Dialect, settings: Settings, key: str, model: str) -> tuple[str, str, int] | None:
        """(code, message, close code) for a connection the service would refuse."""
        retired = dialect.service.retired
        if retired is not None and settings.faults.beta_disabled:
            code, message = retired
            return code, message, CLOSE_BAD_REQUEST
        if not key:
            return (
                "invalid_api_key",
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                CLOSE_BAD_KEY,
            )
        secret = self._secrets.get(key)
        if secret is not None and secret.expires_at <= time.time():
            return "expired_client_secret", "The client secret has expired.", CLOSE_BAD_KEY
        if secret is None and self.api_key is not None and key != self.api_key:
            return (
                "invalid_api_key",
                f"Incorrect API key provided: {_mask(key)}. "
                "You can find your API key at https://platform.openai.com/account/api-keys.",
                CLOSE_BAD_KEY,
            )
        if dialect.model_in_url and not self._model_ok(model):  # else the opening command names it
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
        key = _bearer(request)
        secret = self._secrets.get(key)
        pending = self._take_pending()
        settings, bad_setting = self.settings, None
        try:
            settings = settings.with_values(pending.settings if pending else {}).with_values(query)
        except ValueError as exc:
            bad_setting = str(exc)
        annotations = Annotations.parse(pending.annotations) if pending else self.annotations.copy()
        initial = secret.sessions.get(dialect) if secret is not None else None
        if not model and initial is not None:
            model = str(initial.get("model") or "")
        status = settings.faults.refusal_status(model or dialect.default_model)
        if status is not None:  # the refuse_models fault: the upgrade itself fails, as when the service is down
            self.refused.append({"t": time.time(), "model": model, "status": status})
            return _http_error(status, "emulator_refused", f"Emulator: connections for {model!r} are refused.")
        ws = FastReadResponse(compress=False, max_msg_size=64 * 1024 * 1024, timeout=2.0)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        session: EmulatorSession | LiveSession
        if isinstance(dialect.service, LiveService):
            session = LiveSession(
                dialect, settings, now=loop.time(), wall=time.time(), annotations=annotations, model_ok=self._model_ok
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
        recorder = _Recorder(self.record_dir, record) if self.record_dir is not None else None
        record.listener = recorder
        refusal = self._refusal(dialect, settings, key, model)
        if refusal is not None:
            actions = session.refuse(*refusal)
        else:
            actions = session.open()
            if bad_setting is not None:
                err = session.wire.error("unknown_parameter", f"Emulator: {bad_setting}.", param="query")
                record.log("out", loop.time(), err)
                actions.append(Send(err))
        live = _Live(session, ws, request.transport)
        self._live[record.id] = live
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._pump(live, actions)
        finally:
            self._live.pop(record.id, None)
            if task is not None:
                self._handlers.discard(task)
            if not record.closed:
                record.closed, record.close_code = True, ws.close_code
            if recorder is not None:
                recorder.close()
        return ws

    async def _reader(self, live: _Live) -> None:
        """What aiohttp must see itself (pings, the close handshake, errors, eof) and, when the parser cannot hand
        them over directly (``fastread``: something is ahead of them, or the fallback path), client frames."""
        try:
            async for msg in live.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._offer(live, "frame", msg.data)
        finally:
            live.put(("eof", live.ws.close_code))

    def _wake(self, live: _Live) -> float | None:
        """When the session next wants the clock: its next deadline, or the next idle ping."""
        deadline = live.session.next_deadline()
        if self.ping_interval_s <= 0:
            return deadline
        ping = live.last_out + self.ping_interval_s
        return ping if deadline is None or ping < deadline else deadline

    def _offer(self, live: _Live, kind: str, data: Any) -> None:
        """A client frame (``kind`` "frame") or a due deadline ("tick"), handled on the spot when it can be, else
        queued for the pump.

        On the spot (a frame from aiohttp's parser via ``fastread`` or in the reader task, a tick in the alarm's
        timer callback) when the pump is idle and the socket has no backlog: the session handles it and its
        events go out in one transport write. Through the pump, each frame and each tick cost a queue hop (a
        future and a task switch) and each event a ``send_str``: on the spot, a load like ``bench calls``' (48
        sessions, 50 appends and 20 deltas a second each) costs the emulator about 15 % less CPU. Anything that
        must be awaited (a close, a ping, a backlog to drain) takes the pump's path, in order: the pump was idle,
        and once something is queued what follows queues behind it."""
        ws, transport = live.ws, live.transport
        if (
            not live.idle
            or transport is None
            or ws.closed
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            live.put((kind, data))
            return
        loop = asyncio.get_running_loop()
        session, now = live.session, loop.time()
        if self.ping_interval_s > 0 and now >= live.last_out + self.ping_interval_s:
            live.put((kind, data))  # the pump pings first
            return
        actions = session.advance(now) if kind == "tick" else session.receive(data, now)
        if actions:
            live.last_out = loop.time()
            frames = _frames(actions)
            if frames is None:  # a close or an abort
                live.put(("actions", actions))
                return
            transport.write(frames)
        live.alarm.arm(self._wake(live))

    def _tick(self, live: _Live) -> None:
        """The alarm's callback."""
        self._offer_outside(live, "tick", None)

    def _frame(self, live: _Live, data: str | bytes) -> None:
        """``fastread``'s sink: a client frame, from inside aiohttp's ``data_received``."""
        self._offer_outside(live, "frame", data)

    def _offer_outside(self, live: _Live, kind: str, data: Any) -> None:
        """``_offer`` from a callback outside the session's tasks. An exception here would only be logged by the
        loop (or, from the parser, fail the connection as a protocol error) and leave the session waiting: the pump
        raises it instead, as it would have had it handled the item itself."""
        try:
            self._offer(live, kind, data)
        except Exception as exc:
            live.put(("fail", exc))

    async def _pump(self, live: _Live, actions: list[Action]) -> None:
        loop = asyncio.get_running_loop()
        session, record = live.session, live.session.record
        await self._perform(live, actions)
        if session.closed:
            return
        live.last_out = loop.time()
        alarm = live.alarm = _Alarm(loop, lambda: self._tick(live))
        live.ws.attach(lambda data: self._frame(live, data))  # False: the reader task takes every frame
        reader = asyncio.create_task(self._reader(live))
        try:
            while not session.closed:
                wake = self._wake(live)
                if wake is not None and wake <= loop.time():
                    item = _TICK  # a due deadline goes before anything queued
                else:
                    alarm.arm(wake)
                    if live.queue.empty():
                        live.idle = True
                    item = await live.queue.get()
                kind, data = item
                now = loop.time()
                if kind == "tick":
                    if self.ping_interval_s > 0 and now >= live.last_out + self.ping_interval_s:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await live.ws.ping()
                        live.last_out = now
                    actions = session.advance(now)
                elif kind == "frame":
                    actions = session.receive(data, now)
                elif kind == "actions":  # produced on the spot, to be awaited here
                    actions = data
                elif kind == "inject":
                    fault, opts = data
                    actions = session.inject(fault, now, **opts)
                elif kind == "fail":
                    raise data
                elif kind == "stop":
                    actions = [Close(1001, "emulator stopping")]
                    record.closed, record.close_code, record.close_reason = True, 1001, "emulator stopping"
                else:  # eof: the client closed or the connection broke
                    record.closed, record.close_code = True, data
                    return
                if actions:
                    live.last_out = loop.time()
                    await self._perform(live, actions)
                if kind == "stop":
                    return
        finally:
            live.idle = False
            live.ws.detach()
            alarm.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _perform(self, live: _Live, actions: Sequence[Action]) -> None:
        ws = live.ws
        for action in actions:
            try:
                if isinstance(action, Send):
                    await ws.send_str(orjson.dumps(action.event).decode())
                elif isinstance(action, SendRaw):
                    await ws.send_str(action.text)
                elif isinstance(action, Close):
                    await ws.close(code=action.code, message=action.reason.encode()[:123])
                elif isinstance(action, Abort):
                    if live.transport is not None:
                        live.transport.abort()
                    return
            except (ConnectionError, RuntimeError) as exc:  # the client went away mid-send
                log.debug("emulator: send failed: %s", exc)
                live.session.closed = True
                return

    # ---------------------------------------------------------------------------------------------------------
    # Credential endpoints

    def _long_lived_ok(self, key: str) -> bool:
        if not key or key in self._secrets:
            return False
        return self.api_key is None or key == self.api_key

    async def _mint(self, request: web.Request, dialect: Dialect) -> web.Response:
        key = _bearer(request)
        if not self._long_lived_ok(key):
            return _http_error(401, "invalid_api_key", f"Incorrect API key provided: {_mask(key)}.")
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return _http_error(400, "invalid_json", "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _http_error(400, "invalid_type", "Expected a JSON object.")
        cfg = DialectConfig(dialect)
        ttl = self.client_secret_ttl_s
        read = dialect.realtime_service.mint_request(body)
        raw_session, expires_after = read.session, read.expires_after
        if read.unknown:
            name = sorted(read.unknown)[0]
            return _http_error(400, "unknown_parameter", f"Unknown parameter: '{name}'.", name)
        if isinstance(expires_after, dict) and expires_after.get("seconds") is not None:
            seconds = expires_after["seconds"]
            if not isinstance(seconds, int) or not MIN_SECRET_TTL_S <= seconds <= MAX_SECRET_TTL_S:
                return _http_error(400, "invalid_value", f"Invalid value: {seconds}.", "expires_after.seconds")
            ttl = float(seconds)
        model = str(raw_session.get("model") or dialect.default_model) if isinstance(raw_session, dict) else ""
        try:
            session = cfg.update(cfg.defaults(model), raw_session, prefix=read.param_prefix)
        except ClientError as exc:
            return _http_error(400, exc.code, exc.message, exc.param)
        now = time.time()
        value = self._ids.secret()
        self._secrets[value] = _Secret(now + ttl, {dialect: raw_session if isinstance(raw_session, dict) else {}})
        wire = Wire(dialect, self._ids)
        echo = wire.session(session, self._ids.session(), int(now + ttl))
        return web.json_response(wire.mint_response(value, int(now + ttl), echo))

    def _minter(self, dialect: Dialect) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def mint(request: web.Request) -> web.Response:
            return await self._mint(request, dialect)

        return mint

    # ---------------------------------------------------------------------------------------------------------
    # Control API

    async def _control_next(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            unknown = set(body) - {"count", "settings", "annotations"}
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}")
            self.queue_next(int(body.get("count", 1)), body.get("settings"), body.get("annotations"))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"queued": sum(p.count for p in self._pending)})

    async def _control_defaults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict) or set(body) - {"settings"} or not isinstance(body.get("settings"), dict):
                raise ValueError('expected {"settings": {...}}')
            self.set_defaults(body["settings"])
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"settings": self.settings.as_dict()})

    async def _control_sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"sessions": [r.summary() for r in self.sessions]})

    async def _control_forget(self, request: web.Request) -> web.Response:
        before = len(self.sessions)
        self.sessions = [r for r in self.sessions if not r.closed]
        return web.json_response({"forgotten": before - len(self.sessions)})

    async def _control_session(self, request: web.Request) -> web.Response:
        try:
            record = self.session(request.match_info["id"])
        except KeyError:
            return web.json_response({"error": "no such session"}, status=404)
        return web.json_response(
            {**record.summary(), "sent_types": record.types_sent(), "received_types": record.types_received()}
        )

    async def _control_fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            opts = dict(body)
            self.inject(request.match_info["id"], str(opts.pop("kind", "")), **opts)
        except KeyError:
            return web.json_response({"error": "no such live session"}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _control_annotate(self, request: web.Request) -> web.Response:
        try:
            self.annotate(request.match_info["id"], await request.json())
        except KeyError:
            return web.json_response({"error": "no such live session"}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})


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
        await server.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="callbridge emulator", description="Local OpenAI Realtime (beta + GA) and GPT-Live emulator"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
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
    p.add_argument("--log-level", default="INFO")
    return p


def options(args: argparse.Namespace) -> dict[str, Any]:
    """``EmulatorServer`` keyword arguments from parsed CLI arguments."""
    opts: dict[str, Any] = {
        "api_key": args.api_key,
        "models": args.models,
        "client_secret_ttl_s": args.client_secret_ttl,
        "ping_interval_s": args.ping_interval,
        "record_dir": args.record,
    }
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
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        opts = options(args)
        Settings().with_values({k: v for k, v in opts.items() if k not in _SERVER_OPTIONS})
    except ValueError as exc:
        print(f"callbridge emulator: {exc}")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, **opts))
    return 0


_SERVER_OPTIONS = frozenset(
    {"api_key", "models", "client_secret_ttl_s", "ping_interval_s", "record_dir", "annotations"}
)


_TICK: tuple[str, Any] = ("tick", None)

_PACK_LEN1, _PACK_LEN2, _PACK_LEN3 = struct.Struct("!BB").pack, struct.Struct("!BBH").pack, struct.Struct("!BBQ").pack


def _frames(actions: Sequence[Action]) -> bytes | None:
    """The events as WebSocket text frames, for one transport write; None if there is a close or an abort.

    aiohttp's ``send_str`` is a coroutine per frame and a write per frame; these are the bytes it would send for
    each: FIN, opcode 1, no mask (a server's frames are never masked) and no compression (the emulator
    negotiates none) (RFC 6455 §5.2)."""
    parts: list[bytes] = []
    for action in actions:
        if type(action) is Send:
            payload = orjson.dumps(action.event)
        elif type(action) is SendRaw:
            payload = action.text.encode()
        else:
            return None
        n = len(payload)
        parts.append(
            _PACK_LEN1(0x81, n) if n < 126 else _PACK_LEN2(0x81, 126, n) if n < 65536 else _PACK_LEN3(0x81, 127, n)
        )
        parts.append(payload)
    return b"".join(parts)


class _Alarm:
    """A session's next wake-up (its next deadline or idle ping) as a timer that offers a tick (``_offer``).

    One timer handle per session, re-armed only when the time moves: ``asyncio.timeout`` (or ``wait_for``)
    around every queue read cost more than the emulator's own work per append in ``bench calls``. A tick for a
    time that has since moved only makes the session check for due work (``advance`` is idempotent)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ring: Callable[[], None]) -> None:
        self._loop, self._ring = loop, ring
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def arm(self, at: float | None) -> None:
        if at != self._at:
            self.cancel()
            if at is not None:
                self._handle = self._loop.call_at(at, self._fire)
                self._at = at

    def _fire(self) -> None:
        self._handle, self._at = None, None  # a tick for the same time again must re-arm
        self._ring()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at = None, None
