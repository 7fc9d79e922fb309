"""Ended calls' routes: the retention window's ended calls, paged and searched, and one call as a download.

=========================================  =========================================================================
``GET /api/calls/ended``                   ``?page=&per_page=&q=&dialplan=&variant=&caller=&reason=&disposition=``
                                           ``&flag=``: the ended calls still in Redis that match, newest first
                                           (:mod:`bridge.store.ended`; each row with the model's disposition and
                                           summary and the failed compliance checks):
                                           ``{"calls", "page", "pages", "total", "capped"}``; each row with its
                                           marks (``flags``, ``severity``: :mod:`.flags`); ``flag``: only the calls
                                           that raised that one
``GET /api/calls/{id}/export``             ``?format=json|text``: the call's state, transcript, timeline (and, in
                                           JSON, its latency) as an attachment
=========================================  =========================================================================

A viewer gets callers' numbers masked (:mod:`.masking`) in rows and downloads alike, and cannot search by a caller's
number (the filter, or a free text found in the number, would tell the digits the mask hides).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aiohttp import web

from bridge.privacy.masking import viewer_text
from bridge.store.ended import ALL_EVENTS, PER_PAGE, EndedQuery, call_streams, read_ended
from bridge.store.read import StreamEntry, read_call
from bridge.supervisor import export
from bridge.supervisor.calls import masked
from bridge.supervisor.flags import Flag, call_marks, watch_of, worst
from bridge.supervisor.http import reply, supervisor_of
from bridge.supervisor.masking import mask_row

QUERY_FIELDS = ("q", "dialplan", "variant", "caller", "reason", "disposition")
MAX_QUERY_CHARS = 200


def add_routes(app: web.Application) -> None:
    """Before :mod:`.calls`' routes: ``/api/calls/ended`` is not a call id."""
    app.router.add_get("/api/calls/ended", list_ended)
    app.router.add_get("/api/calls/{call_id}/export", export_call)


def _int(request: web.Request, name: str, default: int) -> int | web.Response:
    raw = request.query.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        return reply({"error": f"{name}: a whole number from 1, not {raw!r}", "field": name}, 400)
    return int(raw)


async def list_ended(request: web.Request) -> web.Response:
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
    body = found.to_json()
    streams = await call_streams(redis, [c["call_id"] for c in body["calls"]])
    for c in body["calls"]:
        marks = call_marks(streams.get(c["call_id"], []), watch(c["dialplan"]), c)
        c.update(flags=marks, severity=worst(marks))
    if hide:
        body["calls"] = [mask_row(c) for c in body["calls"]]
    return reply(body)


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
