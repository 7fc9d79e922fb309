"""The wallboard: ``GET /wallboard`` (the page, ``static/wallboard.html``) and ``GET /api/wallboard?plan=`` (its
tiles, :mod:`.board` says what each counts; the rollout's rows, :mod:`.wall_rollout`). Any signed-in role may read
it, as it may the live calls.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from bridge.store.ended import ended_states
from bridge.store.read import read_live_calls, read_refused
from bridge.supervisor.board import REFUSED_WINDOW_S, WINDOW_S, board
from bridge.supervisor.console import STATIC
from bridge.supervisor.http import reply, supervisor_of
from bridge.supervisor.routes import Kind, Param, Route, add
from bridge.supervisor.wall_rollout import read as rollout_rows


def add_routes(app: web.Application) -> None:
    plan = Param("plan", {"type": "string"}, "one dialplan's calls and thresholds (every plan when empty)")
    add(app, Route("GET", "/wallboard", page, "the wallboard", needs=None, answers={200: None}, kind=Kind.PAGE))
    add(
        app,
        Route(
            "GET",
            "/api/wallboard",
            tiles,
            "the wallboard's tiles",
            answers={200: "Wallboard", 404: None},
            query=(plan,),
        ),
    )


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "wallboard.html")


def capacity(health: dict[str, Any]) -> int:
    """The calls this node's ready workers can hold (what each reported at start)."""
    return sum(int(w.get("max_calls") or 0) for w in health.get("workers", []) if w.get("ready"))


async def tiles(request: web.Request) -> web.Response:
    sup = supervisor_of(request)
    plan = request.query.get("plan", "")
    if plan and plan not in sup.dialplans:
        return reply({"error": f"plan: no dialplan named {plan!r}", "field": "plan"}, 404)
    client = sup.need_redis()
    now = time.time()
    live = [c.to_json() for c in await read_live_calls(client, now=now)]
    ended, capped = await ended_states(client, since=now - WINDOW_S)
    refused = await read_refused(client, now - REFUSED_WINDOW_S, now)
    thresholds = sup.dialplans[plan].wallboard.model_dump() if plan else {}
    shown = board(
        live, ended, refused=refused, capacity=capacity(sup.health()), thresholds=thresholds, now=now, plan=plan
    )
    rollouts = await rollout_rows(sup.rollouts, sup.plans, live, ended, plan) if sup.rollouts is not None else []
    return reply({**shown, "rollouts": rollouts, "plans": sorted(sup.dialplans), "capped": capped})
