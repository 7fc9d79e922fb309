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
import re
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
from bridge.store.times import stamped
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
SINCE_UNIX: Final = r"^\s*([0-9]+\.?[0-9]*|\.[0-9]+)\s*$"
RFC3339: Final = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
CURSOR_FORMAT: Final = "callbridge-cursor"  # a former answer's `next`, as it was given
FIELDS: Final = {name: {**TEXT_PARAM, "description": f"the call's {name}"} for name in QUERY_FIELDS[1:]}
SINCE_ONLY: Final = ("since", "cursor")
PAGED_ONLY: Final = ("page", "q", "flag")


def _none_of(names: tuple[str, ...]) -> dict[str, Any]:
    return {"not": {"anyOf": [{"required": [name]} for name in names]}}


FILTERS: Final = {
    "oneOf": [
        {
            "type": "object",
            "description": "a page of ended calls, newest first",
            "properties": {
                "page": {**WHOLE, "description": "the page (1: the newest calls)"},
                "per_page": {**WHOLE, "maximum": MAX_PER_PAGE, "description": f"calls a page ({PER_PAGE})"},
                "q": {**TEXT_PARAM, "description": "text in the caller, plan, variant, end reason or transcript"},
                **FIELDS,
                "flag": {"type": "string", "enum": list(Flag), "description": "only the calls that raised it"},
            },
            **_none_of(SINCE_ONLY),
        },
        {
            "type": "object",
            "description": "the calls that ended since a point, oldest first; answers `next`, the cursor to go on from",
            "properties": {
                "since": {
                    "type": "string",
                    "anyOf": [{"pattern": SINCE_UNIX}, {"format": "date-time"}],
                    "description": "Unix seconds, or ISO 8601 with an offset (RFC 3339)",
                },
                "cursor": {"type": "string", "format": CURSOR_FORMAT, "description": "a former answer's `next`"},
                "limit": {**WHOLE, "maximum": MAX_PER_PAGE, "description": f"calls an answer ({MAX_PER_PAGE})"},
                **FIELDS,
            },
            "anyOf": [{"required": ["since"]}, {"required": ["cursor"]}],
            **_none_of(PAGED_ONLY),
        },
    ]
}


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
            filters=FILTERS,
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


def _int(request: web.Request, name: str, default: int, most: int | None = None) -> int | web.Response:
    raw = request.query.get(name, "")
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        return reply({"error": f"{name}: a whole number from 1, not {raw[:40]!r}", "field": name}, 400)
    if most is not None and int(raw) > most:
        return reply({"error": f"{name}: at most {most}, not {int(raw)}", "field": name}, 400)
    return int(raw)


def _texts(request: web.Request, names: tuple[str, ...]) -> dict[str, str] | web.Response:
    """The text filters ``names``, each at most :data:`MAX_QUERY_CHARS` (else the 400 naming it)."""
    for name in names:
        if len(request.query.get(name, "")) > MAX_QUERY_CHARS:
            return reply({"error": f"{name}: at most {MAX_QUERY_CHARS} characters", "field": name}, 400)
    return {name: request.query.get(name, "").strip() for name in names}


async def list_ended(request: web.Request) -> web.Response:
    if "since" in request.query or "cursor" in request.query:
        return await list_since(request)
    page, per_page = _int(request, "page", 1), _int(request, "per_page", PER_PAGE, MAX_PER_PAGE)
    given = _texts(request, QUERY_FIELDS)
    for value in (page, per_page, given):
        if isinstance(value, web.Response):
            return value
    assert isinstance(page, int) and isinstance(per_page, int) and isinstance(given, dict)
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
    """The point ``?cursor=`` or ``?since=`` names (the cursor when both do), or the 400 that says what is wrong."""
    since: Cursor | None = None
    if "since" in request.query:
        raw = request.query["since"].strip()
        try:
            since = Cursor(float(raw)) if re.fullmatch(SINCE_UNIX, raw) else Cursor(_iso_seconds(raw))
        except ValueError:
            error = f"since: Unix seconds or ISO 8601 with an offset (2026-01-02T03:04:05Z), not {raw[:40]!r}"
            return reply({"error": error, "field": "since"}, 400)
    if "cursor" in request.query:
        try:
            return Cursor.parse(request.query["cursor"])
        except ValueError as exc:
            return reply({"error": f"cursor: {exc}", "field": "cursor"}, 400)
    assert since is not None
    return since


def _iso_seconds(raw: str) -> float:
    if not RFC3339.fullmatch(raw):
        raise ValueError("not RFC 3339")
    when = dt.datetime.fromisoformat(raw.upper())
    if when.tzinfo is None:
        raise ValueError("no offset")
    return when.timestamp()


async def list_since(request: web.Request) -> web.Response:
    """``?since=`` or ``?cursor=`` (and ``&limit=`` and the field filters): the calls after a point, oldest first."""
    for name in ("page", "q", "flag"):
        if name in request.query:
            error = f"{name}: not with since or cursor (the field filters and limit are)"
            return reply({"error": error, "field": name}, 400)
    point, limit = _since(request), _int(request, "limit", MAX_PER_PAGE, MAX_PER_PAGE)
    given = _texts(request, QUERY_FIELDS[1:])
    for value in (point, limit, given):
        if isinstance(value, web.Response):
            return value
    assert isinstance(point, Cursor) and isinstance(limit, int) and isinstance(given, dict)
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
        body = json.dumps(stamped(export.as_json(state, entries)), indent=2, default=str)
        return web.Response(text=body, content_type="application/json", headers=headers)
    return web.Response(text=export.as_text(state, entries), content_type="text/plain", headers=headers)
