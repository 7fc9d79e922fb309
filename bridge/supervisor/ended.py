"""Ended calls' routes: the retention window's ended calls, paged and searched, and one call as a download.

=========================================  =========================================================================
``GET /api/calls/ended``                   ``?page=&per_page=&q=&dialplan=&variant=&caller=&reason=&disposition=``
                                           ``&flag=``: the ended calls still in Redis that match, newest first
                                           (:mod:`bridge.store.ended`; each row with the model's disposition and
                                           summary and the failed compliance checks):
                                           ``{"calls", "page", "pages", "total", "capped"}``; each row with its
                                           marks (``flags``, ``severity``: :mod:`.flags`); ``flag``: only the calls
                                           that raised that one. Or ``?since=`` (Unix seconds or ISO 8601 with
                                           an offset) or ``?cursor=``, with ``&limit=`` and the field filters: the
                                           calls after that point, oldest first, ``{"calls", "next", "more"}``
                                           (:func:`bridge.store.ended.read_since`)
``GET /api/calls/{id}/export``             ``?format=json|text``: the call's state, transcript, timeline (and, in
                                           JSON, its latency) as an attachment
=========================================  =========================================================================

A viewer gets callers' numbers masked (:mod:`.masking`) in rows and downloads alike, and cannot search by a caller's
number (the filter, or a free text found in the number, would tell the digits the mask hides).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from bridge.privacy.masking import viewer_text
from bridge.store.ended import (
    ALL_EVENTS,
    MAX_PER_PAGE,
    PER_PAGE,
    Cursor,
    EndedQuery,
    call_streams,
    read_ended,
    read_since,
)
from bridge.store.read import StreamEntry, read_call
from bridge.supervisor import export
from bridge.supervisor.calls import masked
from bridge.supervisor.flags import Flag, call_marks, watch_of, worst
from bridge.supervisor.http import reply, supervisor_of
from bridge.supervisor.masking import mask_row
from bridge.supervisor.routes import Kind, Param, Route, add

QUERY_FIELDS = ("q", "dialplan", "variant", "caller", "reason", "disposition")
MAX_QUERY_CHARS = 200


TEXT_PARAM: Final = {"type": "string", "maxLength": MAX_QUERY_CHARS}
WHOLE: Final = {"type": "integer", "minimum": 1}
QUERY: Final = (
    Param("page", WHOLE, "the page (1: the newest calls); not with since or cursor"),
    Param("per_page", {**WHOLE, "maximum": MAX_PER_PAGE}, f"calls a page ({PER_PAGE})"),
    Param(
        "since",
        {"type": "string"},
        "the calls that ended at this time or later, oldest first: Unix seconds or "
        "ISO 8601 with an offset; answers `next`, the cursor to go on from",
    ),
    Param("cursor", {"type": "string"}, "go on after a former answer's `next`"),
    Param("limit", {**WHOLE, "maximum": MAX_PER_PAGE}, f"with since or cursor: calls an answer ({MAX_PER_PAGE})"),
    Param("q", TEXT_PARAM, "text in the caller, plan, variant, end reason or transcript; not with since or cursor"),
    *(Param(name, TEXT_PARAM, f"the call's {name}") for name in QUERY_FIELDS[1:]),
    Param("flag", {"type": "string", "enum": list(Flag)}, "only the calls that raised it; not with since or cursor"),
)


def add_routes(app: web.Application) -> None:
    """Before :mod:`.calls`' routes: ``/api/calls/ended`` is not a call id."""
    add(
        app,
        Route(
            "GET",
            "/api/calls/ended",
            list_ended,
            "ended calls of the retention window, paged or since a point",
            answers={200: "EndedCalls", 400: None, 403: None},
            query=QUERY,
        ),
        Route(
            "GET",
            "/api/calls/{call_id}/export",
            export_call,
            "one call's state, transcript and timeline",
            answers={200: None, 400: None, 404: None},
            kind=Kind.DOWNLOAD,
            query=(Param("format", {"type": "string", "enum": list(export.FORMATS)}, "json (default) or text"),),
        ),
    )


def _int(request: web.Request, name: str, default: int) -> int | web.Response:
    raw = request.query.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        return reply({"error": f"{name}: a whole number from 1, not {raw!r}", "field": name}, 400)
    return int(raw)


async def list_ended(request: web.Request) -> web.Response:
    if "since" in request.query or "cursor" in request.query:
        return await list_since(request)
    page, per_page = _int(request, "page", 1), _int(request, "per_page", PER_PAGE)
    for value in (page, per_page):
        if isinstance(value, web.Response):
            return value
    assert isinstance(page, int) and isinstance(per_page, int)
    given = {name: request.query.get(name, "").strip()[:MAX_QUERY_CHARS] for name in QUERY_FIELDS}
    hide = masked(request)
    if hide and given["caller"]:
        return reply({"error": "caller: a viewer cannot search by caller number", "field": "caller"}, 403)
    flag = request.query.get("flag", "")
    if flag and flag not in set(Flag):
        return reply({"error": f"flag: one of {', '.join(Flag)}, not {flag[:MAX_QUERY_CHARS]!r}", "field": "flag"}, 400)
    sup = supervisor_of(request)
    watch = watch_of(sup.dialplans.values())

    def raised(state: Mapping[str, str], entries: list[StreamEntry]) -> bool:
        return any(m["flag"] == flag for m in call_marks(entries, watch(state.get("dialplan", "")), state))

    query = EndedQuery(**given, hide_caller=hide)
    redis = sup.need_redis()
    found = await read_ended(redis, query, page=page, per_page=per_page, keep=raised if flag else None)
    return reply(await _marked(request, found.to_json()))


async def _marked(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """``body``'s calls with their marks, and masked for a viewer."""
    watch = watch_of(supervisor_of(request).dialplans.values())
    streams = await call_streams(supervisor_of(request).need_redis(), [c["call_id"] for c in body["calls"]])
    for c in body["calls"]:
        marks = call_marks(streams.get(c["call_id"], []), watch(c["dialplan"]), c)
        c.update(flags=marks, severity=worst(marks))
    if masked(request):
        body["calls"] = [mask_row(c) for c in body["calls"]]
    return body


def _since(request: web.Request) -> Cursor | web.Response:
    """The point ``?cursor=`` or ``?since=`` names, or the 400 that says what is wrong."""
    if "cursor" in request.query:
        try:
            return Cursor.parse(request.query["cursor"])
        except ValueError as exc:
            return reply({"error": f"cursor: {exc}", "field": "cursor"}, 400)
    raw = request.query["since"].strip()
    try:
        return Cursor(float(raw)) if raw.replace(".", "", 1).isdigit() else Cursor(_iso_seconds(raw))
    except ValueError:
        error = f"since: Unix seconds or ISO 8601 with an offset (2026-01-02T03:04:05Z), not {raw[:40]!r}"
        return reply({"error": error, "field": "since"}, 400)


def _iso_seconds(raw: str) -> float:
    when = dt.datetime.fromisoformat(raw)
    if when.tzinfo is None:
        raise ValueError("no offset")
    return when.timestamp()


async def list_since(request: web.Request) -> web.Response:
    """``?since=`` or ``?cursor=`` (and ``&limit=`` and the field filters): the calls after a point, oldest first."""
    for name in ("page", "q", "flag"):
        if name in request.query:
            error = f"{name}: not with since or cursor (the field filters and limit are)"
            return reply({"error": error, "field": name}, 400)
    point, limit = _since(request), _int(request, "limit", MAX_PER_PAGE)
    for value in (point, limit):
        if isinstance(value, web.Response):
            return value
    assert isinstance(point, Cursor) and isinstance(limit, int)
    if limit > MAX_PER_PAGE:
        return reply({"error": f"limit: at most {MAX_PER_PAGE}, not {limit}", "field": "limit"}, 400)
    given = {name: request.query.get(name, "").strip()[:MAX_QUERY_CHARS] for name in QUERY_FIELDS[1:]}
    if masked(request) and given["caller"]:
        return reply({"error": "caller: a viewer cannot search by caller number", "field": "caller"}, 403)
    query = EndedQuery(**given, hide_caller=masked(request))
    found = await read_since(supervisor_of(request).need_redis(), query, point, limit=limit)
    return reply(await _marked(request, found.to_json()))


def _masked(entries: Sequence[StreamEntry], caller: str) -> list[StreamEntry]:
    return [
        StreamEntry(
            e.id, e.kind, viewer_text(e.summary, caller), e.t, {k: viewer_text(v, caller) for k, v in e.data.items()}
        )
        for e in entries
    ]


async def export_call(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "json")
    if fmt not in export.FORMATS:
        return reply({"error": f"format: one of {', '.join(export.FORMATS)}, not {fmt!r}", "field": "format"}, 400)
    call_id = request.match_info["call_id"]
    detail = await read_call(supervisor_of(request).need_redis(), call_id, count=ALL_EVENTS)
    if detail is None:
        return reply({"error": "no such call"}, 404)
    state, entries = detail.state, detail.events
    if masked(request):
        caller = state.get("caller", "")
        state = {k: str(v) for k, v in mask_row(state).items()}
        entries = _masked(entries, caller)
    headers = {
        "Content-Disposition": f'attachment; filename="{export.filename(call_id, fmt)}"',
        "Cache-Control": "no-store",
    }
    if fmt == "json":
        body = json.dumps(export.as_json(state, entries), indent=2, default=str)
        return web.Response(text=body, content_type="application/json", headers=headers)
    return web.Response(text=export.as_text(state, entries), content_type="text/plain", headers=headers)
