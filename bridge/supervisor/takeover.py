"""Take-over, the console's side: the supervisor's microphone to a taken-over call, over a WebSocket.

``GET /api/calls/{id}/takeover/audio?rate=16000`` (a WebSocket upgrade) wants the ``supervisor`` role (a viewer
gets 403) and this server's own page (``Origin``, as for listen-in); the call must be live (404 unknown, 409
ended). The page first takes the call over (``POST /api/calls/{id}/takeover``, ``bridge.supervisor.actions``:
the worker checks the signed action and mutes the model), then opens this socket and sends its microphone as
binary messages: PCM16 little-endian mono at ``rate`` (8000 or 16000 Hz; any whole number of samples a message).
The server resamples it to the call's 8 kHz with the project's resampler (:class:`bridge.audio.Downsampler16k`)
and publishes it on the call's take-over channel (:func:`~bridge.store.keys.takeover_audio`), each message sealed
with the node's listen key for this call and this supervisor (:func:`bridge.supervisor.listen_token.seal`),
where the call's worker feeds it to the caller (``bridge.serve.takeover``; it plays nothing else). To hear the
caller the page listens in as usual.

The start is audited (``takeover-audio`` in :data:`~bridge.store.keys.CALL_ACTIONS_AUDIT`: who, which call) before
the first audio is relayed: no audit, no audio. So is the end (how long, how much audio, why). The page gets
``{"type": "talking", "call_id", "sample_rate"}`` when audio is relayed, and the socket closes when the call is no
longer taken over (no worker took the audio for :data:`UNHEARD_S`: handed back, or ended), the call ends, the
session ends or the server stops. Handing back is ``POST /api/calls/{id}/handback``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Final

from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from bridge.audio import Downsampler16k
from bridge.call.state import Phase
from bridge.store import keys
from bridge.store.channels import publish
from bridge.store.read import read_call
from bridge.supervisor.action_audit import TAKEOVER_AUDIO
from bridge.supervisor.http import forbidden, principal_of, reply, same_origin, supervisor_of
from bridge.supervisor.listen import call_ended
from bridge.supervisor.listen_token import seal
from bridge.supervisor.routes import Kind, Param, Route, add

log = logging.getLogger("bridge.supervisor")

RATES: Final = (8000, 16000)
UNHEARD_S: Final = 3.0  # audio no worker took for this long: the call is not taken over (any more)
RECEIVE_S: Final = 1.0  # one wait for the page's audio before the call, session and server are checked again
MAX_MESSAGE: Final = 64 * 1024


def add_routes(app: web.Application) -> None:
    rate = Param("rate", {"type": "integer", "enum": list(RATES)}, "the microphone's sample rate (16000)")
    answers = {101: None, 400: None, 403: None, 404: None, 409: None}
    about = "take-over's WebSocket: the supervisor's microphone"
    path = "/api/calls/{call_id}/takeover/audio"
    add(
        app, Route("GET", path, takeover_audio, about, needs="act", answers=answers, kind=Kind.WEBSOCKET, query=(rate,))
    )


async def _audit(request: web.Request, who: str, call_id: str, **fields: object) -> bool:
    entry: dict[FieldT, EncodableT] = {
        "action": TAKEOVER_AUDIO,
        "who": who,
        "call_id": call_id,
        "at": f"{time.time():.3f}",
    }
    entry.update({k: str(v) for k, v in fields.items()})
    try:
        await (
            supervisor_of(request)
            .need_redis()
            .xadd(keys.CALL_ACTIONS_AUDIT, entry, maxlen=keys.AUDIT_MAXLEN, approximate=True)
        )
    except (RedisError, OSError) as exc:
        log.error("take-over audit of call %s by %s could not be written: %s", call_id, who, exc)
        return False
    return True


async def takeover_audio(request: web.Request) -> web.StreamResponse:
    """The take-over socket of one call (module docstring)."""
    sup, principal = supervisor_of(request), principal_of(request)
    if not principal.may("act"):
        return forbidden(principal, "act")
    if not same_origin(request):
        return reply({"error": "forbidden: the page is not this server's (Origin)"}, 403)
    rate = request.query.get("rate", "16000")
    if not rate.isdigit() or int(rate) not in RATES:
        return reply({"error": f"rate: one of {', '.join(map(str, RATES))} (Hz)", "field": "rate"}, 400)
    redis, audio, key = sup.need_redis(), sup.listen_audio, sup.listen_key
    if audio is None or key is None:
        return reply({"error": "take-over needs Redis and the node's listen key (not configured)"}, 503)
    call_id = request.match_info["call_id"]
    detail = await read_call(redis, call_id, count=1)
    if detail is None:
        return reply({"error": "no such call"}, 404)
    if detail.state.get("phase") == Phase.ENDED:
        return reply({"error": "the call has ended"}, 409)
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20.0)
    if not ws.can_prepare(request).ok:
        return reply({"error": "take-over audio is a WebSocket: send an Upgrade request"}, 400)
    await ws.prepare(request)
    who = principal.who
    if not await _audit(request, who, call_id, event="start", rate=rate):  # audited before any audio flows
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"take-over could not be audited")
        return ws
    log.info("console: %s talks to the caller of call %s", who, call_id)
    started, frames, why = time.monotonic(), 0, "the page closed"
    down = Downsampler16k() if rate == "16000" else None
    channel = keys.takeover_audio(call_id)
    unheard_since: float | None = None
    await ws.send_json({"type": "talking", "call_id": call_id, "sample_rate": int(rate)})
    try:
        while True:
            if sup.stopping.is_set() or not sup.credentials.still_signed_in(principal, sup.sessions):
                why = "server stopping" if sup.stopping.is_set() else "session ended"
                break
            try:
                msg = await ws.receive(timeout=RECEIVE_S)
            except TimeoutError:
                msg = None
            if msg is not None and msg.type is not WSMsgType.BINARY:
                if msg.type is WSMsgType.TEXT:
                    continue  # the page's own notes; nothing to do
                break  # closed by the page, or an error
            pcm = msg.data if msg is not None else b""
            if len(pcm) % 2:
                why = "the page sent an odd number of bytes (PCM16 expected)"
                break
            pcm = down.process(pcm) if down is not None and pcm else pcm
            heard = await publish(audio, channel, seal(key, call_id, who, pcm)) if pcm else 1
            frames += len(pcm) // 320
            now = time.monotonic()
            unheard_since = None if heard else (unheard_since or now)
            if unheard_since is not None and now - unheard_since >= UNHEARD_S:
                why = "the call is not taken over"
                break
            if msg is None and await call_ended(redis, call_id):
                why = "call ended"
                break
    except (RedisError, OSError) as exc:
        why = f"stopped: {type(exc).__name__}"
    finally:
        with contextlib.suppress(Exception):
            await ws.close(message=why.encode()[:120])
        seconds = round(time.monotonic() - started, 1)
        log.info("console: %s stopped talking on call %s after %.1f s (%s)", who, call_id, seconds, why)
        await _audit(request, who, call_id, event="stop", seconds=seconds, audio_ms=frames * 20, reason=why)
    return ws
