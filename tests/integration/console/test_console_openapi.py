"""The supervisor API as an integrator meets it, on a real HTTP server over a real redis-server with calls written by a
worker's real writer (``CallStore``): the OpenAPI document at ``/api/openapi.json`` is valid OpenAPI 3.1
(``openapi-spec-validator``) and names every route; every route's real answers (as an admin, and as a viewer where a
role is needed) have a status the document lists and a JSON body its schema accepts (``jsonschema``); every error under
``/api`` is the one JSON shape, the router's 404 and 405 too; and ended calls are read since a time and on by a
cursor, oldest first, without a call lost or given twice."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fakes.clock import Clock
from redis import asyncio as aioredis

from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout.store import RolloutStore
from bridge.store.calls import CallStore, StoreTuning
from bridge.supervisor import routes
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
]
openapi_spec_validator = pytest.importorskip(
    "openapi_spec_validator", reason="pip install 'callbridge[test]' (openapi-spec-validator)"
)

CANARY = Dialplan.model_validate({"name": "canary", "match": ["5000"], "dialect": "rollout"})
DESK = Dialplan.model_validate({"name": "desk", "match": ["4000"], "dialect": "ga", "transfer_target": "sip:d@pbx"})
ACCOUNTS = (("ada", "admin", "ada-admin-pass-1"), ("vic", "viewer", "vic-watches-only"))
T0 = float(round(time.time()) - 1800)
ENDED = 7  # ended calls, one a second
# what each request body of the document is sent as
BODIES: dict[str, Any] = {
    "RolloutChange": {"weights": {"ga": 10, "beta": 90}, "reason": "conformance"},
    "RolloutSettings": {"weights": {"ga": 20, "beta": 80}},
    "KillChange": {"kill": True, "reason": "conformance"},
    "Whisper": {"text": "be brief"},
    "Transfer": {},
    "Unlock": {"source": "192.0.2.1"},
    "SignIn": {"name": "ada", "password": "ada-admin-pass-1"},
}
PATH_VALUES = {"call_id": "c-live", "dialplan": "canary"}

Api = tuple[TestClient[Any, Any], dict[str, dict[str, str]]]


def write_calls(store: CallStore, clock: Clock) -> None:
    for i in range(ENDED):
        listener = store.listener_for(f"c-end-{i}", caller=f"+1555000{i:04d}", called="4000", dialplan="desk")
        bye = ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER)
        ring = ev.Ringing(f"+1555000{i:04d}", "4000", "desk", "ga")
        for dt, report in ((1.0, ring), (0.0, ev.Answered()), (0.0, bye)):
            clock.now += dt
            listener(report)
    live = store.listener_for("c-live", caller="+15559990000", called="4000", dialplan="desk")
    live(ev.Answered())


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    with EmbeddedRedis() as server:
        clock = Clock(T0)
        store = CallStore(server.url, worker="w-openapi", clock=clock, tuning=StoreTuning(reap_interval_s=None))
        await store.start()
        write_calls(store, clock)
        assert await store.flush()
        users, tokens = Users(), {}
        for name, role, password in ACCOUNTS:
            users = add_user(users, name, role, password)
            users, tokens[name] = add_token(users, name)
        client = aioredis.from_url(server.url, decode_responses=True)
        audio = aioredis.from_url(server.url, decode_responses=False)  # listen-in's and take-over's audio
        rollouts = RolloutStore(client=client, specs={"canary": CANARY.rollout_spec})
        options = ConsoleOptions(users=users, listen_key=b"k" * 32)
        app = create_app(token=None, redis=client, rollouts=rollouts, dialplans=[CANARY, DESK], options=options,
                         listen_audio=audio)  # fmt: skip
        try:
            async with TestClient(TestServer(app)) as http:
                yield http, {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}
        finally:
            await client.aclose()
            await store.close()


async def openapi(api: Api) -> dict[str, Any]:
    http, auth = api
    r = await http.get("/api/openapi.json", headers=auth["vic"])
    assert r.status == 200 and r.content_type == "application/json"
    document: dict[str, Any] = await r.json()
    return document


def check(document: dict[str, Any], where: str, status: int, content_type: str, body: Any) -> None:
    """The answer's status is one the document lists for the operation, and a JSON body fits its schema."""
    path, method = where.split(" ", 1)[1], where.split(" ", 1)[0].lower()
    listed = document["paths"][path][method]["responses"]
    assert str(status) in listed, f"{where} answered {status}, the document lists {sorted(listed)}: {body}"
    content = listed[str(status)].get("content", {})
    if content_type == "application/json":
        assert "application/json" in content, f"{where} {status}: JSON the document does not promise"
        schema = {**content["application/json"]["schema"], "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(body)
    elif content:
        assert content_type in content, f"{where} {status}: {content_type} not in {sorted(content)}"


async def call(api: Api, who: str, method: str, path: str, body: Any = None) -> tuple[int, str, Any]:
    http, auth = api
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
    async with http.request(method.upper(), url, headers=auth.get(who, {}), json=body) as r:
        if r.content_type == "text/event-stream":
            return r.status, r.content_type, None  # the stream's head is the answer checked; it runs on
        text = await r.text()
        return r.status, r.content_type, (await r.json() if r.content_type == "application/json" else text)


async def upgrade(api: Api, path: str) -> int:
    """Open the WebSocket at ``path`` as the admin, and close it: 101 once the server took the upgrade."""
    http, auth = api
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
    async with http.ws_connect(url, headers=auth["ada"]) as ws:
        assert not ws.closed
        await ws.close()
    return 101


async def test_the_document_is_valid_openapi_3_1_and_names_every_route(api: Api) -> None:
    document = await openapi(api)
    openapi_spec_validator.validate(document)  # raises, naming the place, if it is not OpenAPI 3.1
    assert document["openapi"].startswith("3.1")
    http, _ = api
    served = {(r.method.lower(), r.path) for r in routes.table_of(http.app)}
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert served == documented
    assert ("get", "/api/calls/ended") in documented and len(documented) >= 25
    roles = {p: ops[m]["x-callbridge-role"] for p, ops in document["paths"].items() for m in ops if m == "put"}
    assert roles["/api/rollout/{dialplan}"] == "admin" and roles["/api/rollout/{dialplan}/kill"] == "supervisor"
    assert (await call(api, "", "get", "/api/openapi.json"))[0] == 401  # it is the API's: a credential, as the rest


async def test_every_route_answers_as_the_document_says(api: Api) -> None:
    document = await openapi(api)
    seen: dict[str, int] = {}
    for path, operations in sorted(document["paths"].items()):
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            body = BODIES[op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]] if (
                "requestBody" in op) else None  # fmt: skip
            status, content_type, answer = await call(api, "ada", method, path, body)
            check(document, where, status, content_type, answer)
            seen[where] = status
            if "101" in op["responses"]:  # a WebSocket: the plain request above was refused; the upgrade opens it
                seen[where] = await upgrade(api, path)
                check(document, where, seen[where], "", None)
            if op["x-callbridge-role"] not in (None, "viewer"):  # the viewer is refused, as the document says
                status, content_type, answer = await call(api, "vic", method, path, body)
                assert status == 403 and f"the {op['x-callbridge-role']} role" in answer["error"], (where, answer)
                check(document, where, status, content_type, answer)
            if path.startswith("/api/"):
                status, content_type, answer = await call(api, "", method, path, body)
                assert status == 401, where
                check(document, where, status, content_type, answer)
    # the routes were really served (not only refused): the main reads answered 200 with their bodies
    served = ("GET /api/calls", "GET /api/calls/{call_id}", "GET /api/calls/ended", "GET /api/rollout",
              "GET /api/plans/stats", "PUT /api/rollout/{dialplan}", "POST /api/rollout/{dialplan}/preview",
              "GET /api/live/calls", "GET /api/calls/{call_id}/export", "GET /healthz", "GET /metrics")  # fmt: skip
    assert seen["GET /api/calls/{call_id}/listen"] == seen["GET /api/calls/{call_id}/takeover/audio"] == 101
    for where in served:
        assert seen[where] == 200, (where, seen[where])
    assert seen["POST /api/calls/{call_id}/whisper"] == 504  # audited and sent; no worker holds the call here


async def test_every_error_under_api_is_the_one_json_shape(api: Api) -> None:
    document = await openapi(api)
    error = {**document["components"]["schemas"]["Error"], "components": document["components"]}
    for who, method, path, status in (
        ("ada", "GET", "/api/no/such/route", 404),
        ("ada", "DELETE", "/api/calls", 405),
        ("ada", "GET", "/api/calls/nope", 404),
        ("ada", "GET", "/api/calls/ended?page=0", 400),
        ("", "GET", "/api/no/such/route", 401),
        ("vic", "PUT", "/api/rollout/canary", 403),
    ):
        got, content_type, body = await call(api, who, method, path, {} if method == "PUT" else None)
        assert (got, content_type) == (status, "application/json"), (method, path, body)
        jsonschema.Draft202012Validator(error).validate(body)
    _, _, body = await call(api, "ada", "DELETE", "/api/calls")
    assert body["error"] == "method not allowed: DELETE /api/calls (allowed: GET, HEAD)"
    assert "no route GET /api/no/such/route" in (await call(api, "ada", "GET", "/api/no/such/route"))[2]["error"]


async def test_ended_calls_since_a_time_then_by_cursor_give_each_call_once_oldest_first(api: Api) -> None:
    document = await openapi(api)
    got: list[str] = []
    path = f"/api/calls/ended?since={T0}&limit=3"
    for _ in range(10):
        status, content_type, body = await call(api, "ada", "get", path)
        assert status == 200, body
        check(document, "GET /api/calls/ended", status, content_type, body)
        got += [c["call_id"] for c in body["calls"]]
        path = f"/api/calls/ended?cursor={body['next']}&limit=3"
        if not body["more"]:
            break
    assert got == [f"c-end-{i}" for i in range(ENDED)]
    # polling the last cursor later gives nothing new, and says so
    _, _, again = await call(api, "ada", "get", path)
    assert (again["calls"], again["more"]) == ([], False)
    # since an ISO 8601 time with an offset: the calls that ended then or later
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(T0 + 5))
    _, _, late = await call(api, "ada", "get", f"/api/calls/ended?since={iso.replace('+', '%2B')}")
    assert [c["call_id"] for c in late["calls"]] == [f"c-end-{i}" for i in range(4, ENDED)]
    # the field filters apply; the page parameters are the other way and are refused here, naming the field
    _, _, none = await call(api, "ada", "get", f"/api/calls/ended?since={T0}&dialplan=canary")
    assert none["calls"] == []
    for query, field in (("since=yesterday", "since"), ("cursor=xyz", "cursor"), (f"since={T0}&page=2", "page"),
                         (f"since={T0}&limit=500", "limit"), (f"since={T0}&q=x", "q")):  # fmt: skip
        status, _, body = await call(api, "ada", "get", f"/api/calls/ended?{query}")
        assert (status, body.get("field")) == (400, field), (query, body)
    # the pages of old still work
    status, _, paged = await call(api, "ada", "get", "/api/calls/ended?page=1&per_page=5")
    assert (status, paged["total"], paged["pages"], len(paged["calls"])) == (200, ENDED, 2, 5)
