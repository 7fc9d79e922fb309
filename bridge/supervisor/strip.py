"""The per-plan strip's route: ``GET /api/plans/stats?window_s=`` (:mod:`.plan_stats` says what each figure is).

Live figures are of now; the others are over the calls that ended in the last ``window_s`` seconds (default
:data:`WINDOW_S`, at most the retention window). Answers ``{"window_s", "plans", "capped"}``; ``capped``: more calls
ended in the window than :data:`bridge.store.ended.MAX_SCAN`, and only the most recent were counted.
"""

from __future__ import annotations

import time

from aiohttp import web

from bridge.store import keys
from bridge.store.ended import ended_states
from bridge.store.read import read_live_calls
from bridge.supervisor.http import reply, supervisor_of
from bridge.supervisor.plan_stats import plan_stats
from bridge.supervisor.routes import Param, Route, add

WINDOW_S = 3600


def add_routes(app: web.Application) -> None:
    window = Param("window_s", {"type": "integer", "minimum": 60, "maximum": keys.CALL_TTL_S}, f"seconds ({WINDOW_S})")
    add(
        app,
        Route(
            "GET",
            "/api/plans/stats",
            stats,
            "each plan's figures",
            answers={200: "PlanStats", 400: None},
            query=(window,),
        ),
    )


async def stats(request: web.Request) -> web.Response:
    raw = request.query.get("window_s", str(WINDOW_S))
    if not raw.isdigit() or not 60 <= int(raw) <= keys.CALL_TTL_S:
        error = f"window_s: whole seconds from 60 to {keys.CALL_TTL_S}, not {raw!r}"
        return reply({"error": error, "field": "window_s"}, 400)
    sup = supervisor_of(request)
    client = sup.need_redis()
    live = [c.to_json() for c in await read_live_calls(client)]
    ended, capped = await ended_states(client, since=time.time() - int(raw))
    rows = plan_stats(live, ended, sup.dialplans)
    return reply({"window_s": int(raw), "plans": rows, "capped": capped})
