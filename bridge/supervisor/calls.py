"""The calls' routes: the live calls and one call, read once (JSON) or followed (server-sent events, :mod:`.stream`).

``GET /api/calls``, ``GET /api/calls/{id}``, ``GET /api/live/calls``, ``GET /api/live/calls/{id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bridge.store import keys
from bridge.store.connection import StoreUnavailable
from bridge.store.read import RECENT_EVENTS, as_float, read_call, read_live_calls
from bridge.store.times import stamped
from bridge.supervisor.flags import call_marks, watch_of
from bridge.supervisor.http import principal_of, reply, supervisor_of
from bridge.supervisor.masking import EventMask, mask_row, public_state
from bridge.supervisor.routes import Kind, Route, add
from bridge.supervisor.stream import Event, follow_call
from bridge.supervisor.timeline import tool_calls
from bridge.supervisor.trace_link import with_trace_url

SSE_CHECK_S = 1.0  # how often an open event stream checks that its session still holds
SSE_KEEPALIVE_S = 10.0  # a comment line this often: proxies keep the stream open, a gone page is noticed


def add_routes(app: web.Application) -> None:
    add(
        app,
        Route("GET", "/api/calls", list_calls, "live calls across all workers", answers={200: "LiveCalls"}),
        Route(
            "GET",
            "/api/calls/{call_id}",
            get_call,
            "one call: its state and recent events",
            answers={200: "CallDetail", 404: None},
        ),
        Route(
            "GET",
            "/api/live/calls",
            live_calls,
            "server-sent events: the live-calls table as it changes",
            answers={200: "LiveCallsEvents"},
            kind=Kind.EVENTS,
        ),
        Route(
            "GET",
            "/api/live/calls/{call_id}",
            live_call,
            "server-sent events: one call as it happens",
            answers={200: "CallEvents"},
            kind=Kind.EVENTS,
        ),
    )


def masked(request: web.Request) -> bool:
    """A viewer sees callers' numbers masked (:mod:`.masking`); supervisors and admins see them whole."""
    return not principal_of(request).may("act")


async def list_calls(request: web.Request) -> web.Response:
    calls = [c.to_json() for c in await read_live_calls(supervisor_of(request).need_redis())]
    return reply({"calls": stamped([mask_row(c) for c in calls] if masked(request) else calls)})


async def get_call(request: web.Request) -> web.Response:
    """The call's hash, its recent events, each business tool call (name, outcome, latency: from the whole capped
    stream), the longest the caller has waited for the agent and the longest dead air (the hash's ``longest_wait_ms``
    and ``longest_silence_ms``; None: not yet) and the call's marks (``flags``: :mod:`.flags`)."""
    sup = supervisor_of(request)
    detail = await read_call(sup.need_redis(), request.match_info["call_id"], count=keys.STREAM_MAXLEN)
    if detail is None:
        return reply({"error": "no such call"}, 404)
    body = detail.to_json()
    body["call"] = with_trace_url(sup.trace_ui_url, public_state(body["call"]))
    body["events"] = body["events"][-RECENT_EVENTS:]
    if masked(request):
        mask = EventMask()
        body = {"call": mask("call", body["call"]), "events": mask("entries", body["events"])}
    body["tools"] = tool_calls(detail.events)
    body["longest_wait_ms"] = as_float(detail.state.get("longest_wait_ms"))
    body["longest_silence_ms"] = as_float(detail.state.get("longest_silence_ms"))
    watch = watch_of(sup.dialplans.values())(detail.state.get("dialplan", ""))
    body["flags"] = call_marks(detail.events, watch, detail.state)
    return reply(stamped(body))


async def live_calls(request: web.Request) -> web.StreamResponse:
    sup = supervisor_of(request)
    live = sup.live
    if live is None:
        sup.need_redis()
    assert live is not None
    sub = await live.subscribe()

    async def events() -> AsyncIterator[Event]:
        try:
            async for event in sub.events():
                yield event
        finally:
            live.unsubscribe(sub)

    return await event_stream(request, events())


async def live_call(request: web.Request) -> web.StreamResponse:
    sup = supervisor_of(request)
    watch = watch_of(sup.dialplans.values())
    followed = follow_call(sup.need_redis(), request.match_info["call_id"], watch_of=watch)
    return await event_stream(request, linked(sup.trace_ui_url, followed))


async def linked(template: str, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """The call's events, its state (``call``) with the link to its trace (:mod:`.trace_link`) where it has one."""
    try:
        async for name, data in events:
            yield (name, with_trace_url(template, data) if name == "call" else data)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _sse(name: str, data: Any) -> bytes:
    """One event (JSON text has no raw newline, so ``data`` is one line)."""
    return f"event: {name}\ndata: {json.dumps(stamped(data), default=str)}\n\n".encode()


async def event_stream(request: web.Request, events: AsyncIterator[Event]) -> web.StreamResponse:
    """Server-sent events until the source ends, the session ends, the page goes, or the server stops."""
    sup, principal = supervisor_of(request), principal_of(request)
    mask = EventMask() if masked(request) else None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[Any] | None = None
    stop: asyncio.Future[Any] = asyncio.ensure_future(sup.stopping.wait())
    quiet_since = loop.time()
    try:
        await response.write(b"retry: 1000\n\n")
        while not sup.stopping.is_set():
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            await asyncio.wait({pending, stop}, timeout=SSE_CHECK_S, return_when=asyncio.FIRST_COMPLETED)
            if principal.session is not None and sup.sessions.get(principal.session.id) is None:
                await response.write(b"event: signed-out\ndata: {}\n\n")
                break
            if not pending.done():
                if loop.time() - quiet_since >= SSE_KEEPALIVE_S:
                    await response.write(b": keep-alive\n\n")
                    quiet_since = loop.time()
                continue
            done, pending = pending, None
            try:
                name, data = done.result()
            except StopAsyncIteration:
                break
            except StoreUnavailable as exc:
                await response.write(_sse("store", {"ok": False, "error": exc.detail}))
                break
            await response.write(_sse(name, mask(name, data) if mask is not None else data))
            quiet_since = loop.time()
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    finally:
        stop.cancel()
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending  # the generator must be at rest before it is closed
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    return response
