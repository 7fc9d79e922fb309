"""The supervisor app's route table: each route once, with who may use it and what it answers.

Every route group registers its routes here (:func:`add`) as :class:`Route` values, and the same values serve three
readers: the auth middleware (:mod:`.api`) refuses a role below the route's ``needs`` before the handler runs (403
naming the role it needs), the OpenAPI document (:mod:`.openapi`) is drawn from them, and docs/operating.md's route
table is checked against them (``access`` is its "token" column). A route's ``answers`` name a schema of
:mod:`.schemas` per status (``None``: a body that is not JSON, or none).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.supervisor.accounts import NEEDS
from bridge.supervisor.auth import Principal
from bridge.supervisor.http import forbidden

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Kind(enum.StrEnum):
    """What a route answers with on success."""

    JSON = "json"
    EVENTS = "events"  # server-sent events
    WEBSOCKET = "websocket"
    DOWNLOAD = "download"  # an attachment: JSON or text
    TEXT = "text"
    PAGE = "page"


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter: its name, JSON Schema and what it does."""

    name: str
    schema: Mapping[str, Any]
    about: str


@dataclass(frozen=True, slots=True)
class Route:
    """One route. ``needs``: a key of :data:`~bridge.supervisor.accounts.NEEDS` (the role it takes), ``"watch"`` for
    any credential, or None for none at all (the routes outside ``/api``). ``refused`` answers a role below it (a
    403 naming the role it needs by default). ``body``: the request body's schema name in :mod:`.schemas`."""

    method: str
    path: str
    handler: Handler
    summary: str
    needs: str | None = "watch"
    answers: Mapping[int, str | None] = field(default_factory=dict)
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()  # request headers it reads (Idempotency-Key)
    filters: Mapping[str, Any] | None = None  # its query as one object's schema (parameters that go together)
    body: str | None = None
    kind: Kind = Kind.JSON
    refused: Callable[[Principal, str], web.Response] = forbidden

    @property
    def access(self) -> str:
        """Who may use it, as the docs' route table says it: ``no`` (no credential), ``yes`` (any credential), or
        the role it takes."""
        if self.needs is None:
            return "no"
        return "yes" if self.needs == "watch" else NEEDS[self.needs]

    @property
    def role(self) -> str | None:
        """The least role that may use it (None: no credential needed)."""
        return None if self.needs is None else NEEDS[self.needs]

    def allows(self, principal: Principal) -> bool:
        return self.needs is None or principal.may(self.needs)


TABLE = web.AppKey("routes", dict[str, Route])  # every route of the app by "METHOD path"
API_VERSION = "1"  # the API's version: its API-Version header, its /api/v1 paths (docs/operating.md, Versions)
VERSIONED = f"/api/v{API_VERSION}/"


def add(app: web.Application, *routes: Route) -> None:
    """Register ``routes`` with the app's router and in its table; an ``/api/`` route also under ``/api/v1/``."""
    table = app.get(TABLE)
    if table is None:
        table = app[TABLE] = {}
    for route in routes:
        paths = [route.path]
        if route.path.startswith("/api/"):
            paths.append(VERSIONED + route.path.removeprefix("/api/"))
        for path in paths:
            if route.method == "GET":
                app.router.add_get(path, route.handler)  # and HEAD
            else:
                app.router.add_route(route.method, path, route.handler)
        table[f"{route.method} {route.path}"] = route


def of(request: web.Request) -> Route | None:
    """The route the request matched (None: no route of the table, such as an unknown path)."""
    info = request.match_info.route
    resource = info.resource
    if resource is None:
        return None
    method = "GET" if info.method == "HEAD" else info.method
    path = resource.canonical
    if path.startswith(VERSIONED):
        path = "/api/" + path.removeprefix(VERSIONED)
    return request.app.get(TABLE, {}).get(f"{method} {path}")


def table_of(app: web.Application) -> list[Route]:
    return list(app.get(TABLE, {}).values())
