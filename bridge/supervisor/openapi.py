"""The supervisor API's OpenAPI 3.1 document, drawn from the app's route table (:mod:`.routes`) and the bodies'
schemas (:mod:`.schemas`); served at ``GET /api/openapi.json`` (any credential).

Each route gives its path parameters (from ``{name}`` in its path), its query parameters, its request body, the
statuses it answers with their schemas, and who may use it (``security``, and ``x-callbridge-role``: the least role,
null for none). Every ``/api`` route also answers the errors of the door in front of it: 401 (no or a wrong
credential), 403 (a role below the route's, or a session's change without its CSRF token), 429 (too many wrong
tokens from one address) and 503 (no accounts configured, or Redis away), all with the one error body (``Error``);
every route a 500 (an error the server did not handle), and a route with a body 400 (not JSON in UTF-8) and 413
(over the size aiohttp takes).
"""

from __future__ import annotations

import dataclasses
import re
from importlib import metadata
from typing import Any

from aiohttp import web

from bridge.supervisor.http import reply, supervisor_of
from bridge.supervisor.routes import API_VERSION, Kind, Route, add, table_of
from bridge.supervisor.schemas import SCHEMAS, ref

PATH_PARAM = re.compile(r"\{(\w+)\}")
REASONS = {
    200: "OK",
    101: "Switching Protocols (a WebSocket)",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error: nothing the request carried; the server's log says where",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
DOOR = {
    401: "no credential or a wrong one",
    429: "too many wrong tokens from this address, or this token's requests past its rate limit: see Retry-After",
    503: "no accounts nor a demo token configured, or Redis away",
}
MEDIA = {
    "json": "application/json",
    "events": "text/event-stream",
    "text": "text/plain",
    "page": "text/html",
    "download": "application/json",
}


def _content(route: Route, status: int, name: str | None) -> dict[str, Any] | None:
    if route.kind is Kind.EVENTS and status < 400 and name is not None:
        return {"text/event-stream": {"schema": ref(name)}}
    if status >= 400 or name is not None:
        return {"application/json": {"schema": ref(name or "Error")}}
    if route.kind is Kind.WEBSOCKET:
        return None
    media: dict[str, Any] = {MEDIA[route.kind]: {"schema": {"type": "string"}}}
    if route.kind is Kind.DOWNLOAD:
        media = {"application/json": {"schema": {"type": "object"}}, "text/plain": {"schema": {"type": "string"}}}
    return media


def _answer(route: Route, status: int, name: str | None, about: str = "") -> dict[str, Any]:
    answer: dict[str, Any] = {"description": about or REASONS.get(status, str(status))}
    content = _content(route, status, name)
    if content is not None:
        answer["content"] = content
    if status == 429:
        answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
    return answer


def operation(route: Route) -> dict[str, Any]:
    """One route's operation object."""
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in PATH_PARAM.findall(route.path)
    ]
    for where, given in (("query", route.query), ("header", route.headers)):
        params += [{"name": p.name, "in": where, "schema": dict(p.schema), "description": p.about} for p in given]
    if route.filters is not None:  # each property its own query parameter (form, exploded)
        params.append({"name": "filters", "in": "query", "style": "form", "explode": True, "schema": route.filters})
    answers = {str(s): _answer(route, s, name) for s, name in sorted(route.answers.items())}
    op: dict[str, Any] = {
        "operationId": f"{route.method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', route.path).rstrip('_')}",
        "summary": route.summary,
        "x-callbridge-role": route.role,  # the least role; null: no credential
        "responses": answers,
    }
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(route.body)}}}
        answers.setdefault("400", _answer(route, 400, None, "a body that is not JSON in UTF-8, or not as its schema"))
        answers.setdefault("413", _answer(route, 413, None))
    answers.setdefault("500", _answer(route, 500, None))
    if route.path.startswith("/api/"):
        op["security"] = [{"bearer": []}, {"session": []}]
        for status, about in DOOR.items():
            answers.setdefault(str(status), _answer(route, status, None, about))
        if route.needs not in (None, "watch"):
            answers.setdefault("403", _answer(route, 403, None, f"a role below {route.access}"))
    else:
        op["security"] = []
    return op


def _version() -> str:
    try:
        return metadata.version("callbridge")
    except metadata.PackageNotFoundError:
        return "0"


def document(routes: list[Route], *, accounts: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``; ``accounts``: sign-in takes an account's name and password, else a
    demo token."""
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: (r.path, r.method)):
        if route.body == "SignIn" and not accounts:
            route = dataclasses.replace(route, body="SignInDemo")
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callbridge supervisor API",
            "version": API_VERSION,
            "x-callbridge-version": _version(),
            "description": "The live and ended calls, supervisors' actions on a call, listen-in, rollout flags and "
            "the node's health. Every error is a JSON object with `error` (and `field` where one field is wrong). "
            f"Every answer carries `API-Version: {API_VERSION}`; each `/api/` path is also served under "
            f"`/api/v{API_VERSION}/`. docs/operating.md, *The supervisor API* and *Versions of the API*.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an account's API token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "cb_console", "description": "the console's"},
            },
        },
    }


async def get_openapi(request: web.Request) -> web.Response:
    return reply(document(table_of(request.app), accounts=supervisor_of(request).credentials.accounts))


def add_routes(app: web.Application) -> None:
    add(app, Route("GET", "/api/openapi.json", get_openapi, "this document", answers={200: "OpenAPI"}))
