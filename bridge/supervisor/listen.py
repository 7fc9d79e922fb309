"""Listen-in, the console's side: one call's live audio, both sides mixed, to a supervisor's page over a WebSocket.

``GET /api/calls/{id}/listen`` (a WebSocket upgrade, :func:`handle`) wants a supervisor's session (or bearer token):
a viewer gets 403, and so does a request whose ``Origin`` is not this server (a page of another site
can open a WebSocket with a supervisor's cookie; the browser always says whose page it is). The call must be live
(404 unknown, 409 ended). Then, until the page closes the socket, the call ends, the session ends or the server stops:

* the server subscribes to the call's audio channel and asks every worker for the call (:mod:`bridge.serve.listen`
  describes the worker's side and the message format), repeating the request every
  :data:`~bridge.store.keys.LISTEN_RENEW_S`;
* the page gets a text message ``{"type": "listening", "call_id", "sample_rate": 8000, "format": "s16le"}``, then
  each piece of audio as a binary message (PCM16 little-endian, 8 kHz mono, whole 20 ms frames), a text
  ``{"type": "sides", "caller", "agent", "caller_offloaded"}`` whenever the sides heard change, and
  ``{"type": "ended"}`` when the call is over;
* nothing the page sends reaches the call: the first message it sends closes the socket (1008, "listen-in is
  receive-only"); the server has no path from a listener to a call at all.

The request to the workers is signed with the node's listen key (:mod:`bridge.supervisor.listen_token`) and
published only once the audit entry of the start is written: no audit, no audio. Every listen-in is audited
(:data:`~bridge.store.keys.LISTEN_AUDIT`, ``GET /api/listen/audit``, and a log line): who, which call (with its
caller and called number), when it started, and when it stopped, how long, how much audio went out and why it
stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from bridge import metrics
from bridge.audio.frames import SAMPLE_RATE
from bridge.call.state import Phase
from bridge.call.tap import AGENT, CALLER, CALLER_OFFLOADED, ENDED
from bridge.store import keys
from bridge.store.channels import Subscriber, publish
from bridge.store.connection import StoreUnavailable
from bridge.store.read import read_call
from bridge.store.times import stamped
from bridge.supervisor.auth import Principal
from bridge.supervisor.http import forbidden, principal_of, reply, same_origin, supervisor_of
from bridge.supervisor.listen_token import sign
from bridge.supervisor.masking import mask_row
from bridge.supervisor.routes import Kind, Route, add

log = logging.getLogger("bridge.supervisor")

RECEIVE_ONLY = 1008  # RFC 6455 §7.4.1: policy violation
AUDIT_SHOWN = 50
MESSAGE_TIMEOUT_S = 0.5  # how long one wait for audio lasts before the session and the server are checked again
STATE_EVERY_S = 2.0  # how often the call's hash is read to notice an end the worker could not announce (it died)


@dataclass(frozen=True, slots=True)
class Piece:
    """One message from the call's worker: the flags (:mod:`bridge.call.tap`) and the PCM that came with them."""

    flags: int
    pcm: bytes


async def audit(redis: aioredis.Redis, action: str, who: str, call_id: str, **fields: Any) -> bool:
    """Write one audit entry; False (and an error logged) if it could not be written."""
    entry: dict[FieldT, EncodableT] = {"action": action, "who": who, "call_id": call_id, "at": f"{time.time():.3f}"}
    entry.update({k: str(v) for k, v in fields.items()})
    try:
        await redis.xadd(keys.LISTEN_AUDIT, entry, maxlen=keys.AUDIT_MAXLEN, approximate=True)
    except (RedisError, OSError) as exc:
        log.error("listen-in audit of call %s by %s could not be written: %s", call_id, who, exc)
        return False
    return True


async def read_audit(redis: aioredis.Redis, count: int = AUDIT_SHOWN) -> list[dict[str, str]]:
    """The latest listen-in audit entries, newest first."""
    try:
        rows = await redis.xrevrange(keys.LISTEN_AUDIT, count=count)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("listen-in audit", str(exc)) from exc
    return [
        {"id": str(entry_id), **{str(k): str(v) for k, v in (fields or {}).items()}} for entry_id, fields in rows or ()
    ]


async def pieces(
    audio: aioredis.Redis, control: aioredis.Redis, call_id: str, who: str, key: bytes
) -> AsyncGenerator[Piece | None]:
    """The call's audio as its worker publishes it; None now and then when nothing came (a chance to check on the
    listener). Subscribes first, then asks the workers (each request signed afresh with ``key``), so the first piece
    finds this subscriber."""
    pubsub = Subscriber(audio)
    try:
        await pubsub.subscribe(keys.listen_audio(call_id))
        renew_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= renew_at:
                await publish(control, keys.LISTEN_CONTROL, sign(key, call_id, who))
                renew_at = loop.time() + keys.LISTEN_RENEW_S
            message = await pubsub.get_message(MESSAGE_TIMEOUT_S)
            data = message.get("data") if message is not None else None
            if isinstance(data, bytes) and data:
                yield Piece(data[0], data[1:])
            else:
                yield None
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()


async def call_ended(redis: aioredis.Redis, call_id: str) -> bool:
    """Whether the call's hash says it is over (or is gone): the check for an end no worker announced."""
    fresh = await read_call(redis, call_id, count=1)
    return fresh is None or fresh.state.get("phase") == Phase.ENDED


def sides(flags: int) -> dict[str, Any]:
    return {
        "type": "sides",
        "caller": bool(flags & CALLER),
        "agent": bool(flags & AGENT),
        "caller_offloaded": bool(flags & CALLER_OFFLOADED),
    }


def _refused(principal: Principal, what: str) -> web.Response:
    metrics.LISTEN_SESSIONS.labels("read_only").inc()
    return forbidden(principal, what)


def add_routes(app: web.Application) -> None:
    add(
        app,
        Route(
            "GET",
            "/api/calls/{call_id}/listen",
            listen_in,
            "listen-in: a WebSocket of the call's audio",
            needs="listen",
            answers={101: None, 400: None, 403: None, 404: None, 409: None},
            kind=Kind.WEBSOCKET,
            refused=_refused,
        ),
        Route(
            "GET",
            "/api/listen/audit",
            listen_audit,
            "who listened to which call, newest first",
            answers={200: "ListenAudit"},
        ),
    )


async def listen_in(request: web.Request) -> web.StreamResponse:
    """A supervisor's (or admin's) page only, and only from this server's own page (``Origin``); then :func:`handle`."""
    sup, principal = supervisor_of(request), principal_of(request)
    if not principal.may("listen"):
        metrics.LISTEN_SESSIONS.labels("read_only").inc()
        return forbidden(principal, "listen")
    if not same_origin(request):
        metrics.LISTEN_SESSIONS.labels("origin").inc()
        return reply({"error": "forbidden: the page is not this server's (Origin)"}, 403)
    client = sup.need_redis()
    if sup.listen_audio is None or sup.listen_key is None:
        return reply({"error": "listen-in needs Redis and the node's listen key (not configured)"}, 503)

    def alive() -> bool:  # ends with its session, or when its account loses its token or role
        return sup.credentials.still_signed_in(principal, sup.sessions)

    return await handle(
        request, principal, client, sup.listen_audio, session_alive=alive, stopping=sup.stopping, key=sup.listen_key
    )


async def listen_audit(request: web.Request) -> web.Response:
    entries = await read_audit(supervisor_of(request).need_redis())
    if not principal_of(request).may("act"):  # a viewer sees callers' numbers masked
        entries = [mask_row(e) for e in entries]
    return reply({"audit": stamped(entries)})


async def handle(
    request: web.Request,
    principal: Principal,
    redis: aioredis.Redis,
    audio: aioredis.Redis,
    *,
    session_alive: Callable[[], bool],
    stopping: asyncio.Event,
    key: bytes,
) -> web.StreamResponse:
    """The listen-in WebSocket of one call (module docstring); the caller of this checked the role and origin."""
    call_id = request.match_info["call_id"]
    detail = await read_call(redis, call_id, count=1)
    if detail is None:
        metrics.LISTEN_SESSIONS.labels("unknown_call").inc()
        return web.json_response({"error": "no such call"}, status=404)
    if detail.state.get("phase") == Phase.ENDED:
        metrics.LISTEN_SESSIONS.labels("ended_call").inc()
        return web.json_response({"error": "the call has ended"}, status=409)
    ws = web.WebSocketResponse(max_msg_size=1024, heartbeat=20.0)
    if not ws.can_prepare(request).ok:
        return web.json_response({"error": "listen-in is a WebSocket: send an Upgrade request"}, status=400)
    await ws.prepare(request)
    who = principal.who
    facts = {"caller": detail.state.get("caller", ""), "called": detail.state.get("called", "")}
    metrics.LISTEN_SESSIONS.labels("opened").inc()
    metrics.LISTENERS_ACTIVE.inc()
    log.info("console: %s listens to call %s", who, call_id)
    if not await audit(redis, "start", who, call_id, **facts):  # audited before any audio flows, or none flows
        metrics.LISTENERS_ACTIVE.dec()
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"listen-in could not be audited")
        return ws
    started = time.monotonic()
    relay = _Relay(ws, redis, call_id, pieces(audio, redis, call_id, who, key), session_alive, stopping)
    try:
        await relay.run()
    except ConnectionError:
        pass  # the page went away while audio was on its way: the listener left
    except (RedisError, OSError, StoreUnavailable) as exc:
        relay.why = f"stopped: {type(exc).__name__}"
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"listen-in lost its audio source")
    finally:
        await relay.close()
        metrics.LISTENERS_ACTIVE.dec()
        seconds = round(time.monotonic() - started, 1)
        log.info("console: %s stopped listening to call %s after %.1f s (%s)", who, call_id, seconds, relay.why)
        await audit(redis, "stop", who, call_id, seconds=seconds, audio_ms=relay.frames * 20, reason=relay.why, **facts)
    return ws


class _Relay:
    """The call's audio to one listener's socket, until one side stops; ``why`` and ``frames`` for the audit."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        redis: aioredis.Redis,
        call_id: str,
        source: AsyncGenerator[Piece | None],
        session_alive: Callable[[], bool],
        stopping: asyncio.Event,
    ) -> None:
        self.ws, self.redis, self.call_id, self.source = ws, redis, call_id, source
        self.session_alive, self.stopping = session_alive, stopping
        self.frames, self.why = 0, "listener left"
        self.heard = -1  # the sides last announced to the page
        self.inbound = asyncio.ensure_future(ws.receive())  # the page never sends: anything it does ends listen-in

    async def run(self) -> None:
        await self.ws.send_json(
            {"type": "listening", "call_id": self.call_id, "sample_rate": SAMPLE_RATE, "format": "s16le"}
        )
        next_state = time.monotonic() + STATE_EVERY_S
        while not await self._stopped():
            piece = await anext(self.source)
            if piece is not None and piece.flags & ENDED:
                return await self._ended()
            if piece is not None and piece.pcm:
                await self._forward(piece)
            if time.monotonic() >= next_state:
                next_state = time.monotonic() + STATE_EVERY_S
                if await call_ended(self.redis, self.call_id):
                    return await self._ended()

    async def _stopped(self) -> bool:
        """The page, the server or the session ended listen-in (``why`` says which)."""
        if self.inbound.done():
            msg = self.inbound.result()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                self.why = "the page sent data (refused: listen-in is receive-only)"
                await self.ws.close(code=RECEIVE_ONLY, message=b"listen-in is receive-only")
            elif await call_ended(self.redis, self.call_id):
                self.why = "call ended"  # the page saw the end in its table before this socket said so
            return True  # closed by the page, or an error
        if self.stopping.is_set():
            self.why = "server stopping"
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
            return True
        if not self.session_alive():
            self.why = "session ended"
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"signed out")
            return True
        return False

    async def _forward(self, piece: Piece) -> None:
        flags = piece.flags & (CALLER | AGENT | CALLER_OFFLOADED)
        if flags != self.heard:
            self.heard = flags
            await self.ws.send_json(sides(flags))
        await self.ws.send_bytes(piece.pcm)
        self.frames += len(piece.pcm) // 320

    async def _ended(self) -> None:
        self.why = "call ended"
        await self.ws.send_json({"type": "ended"})
        await self.ws.close()

    async def close(self) -> None:
        self.inbound.cancel()
        with contextlib.suppress(BaseException):
            await self.inbound
        await self.source.aclose()
