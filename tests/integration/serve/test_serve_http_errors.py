"""Every error of serve's HTTP port is JSON and says nothing the client sent: a body that is not UTF-8 gets a 400 on
every route that takes a body (the sign-in included), a handler's unhandled error a 500 with one ERROR line and no
traceback, a body over the size aiohttp takes a JSON 413, a request aiohttp cannot parse (an over-long header line, a
bad request line) a JSON 400 that does not echo it, ``/api`` without its slash a JSON 404. The route table's part runs
on the real app over a real redis-server; the parser's on a real ``serve``."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _http_node import Node, serve_node
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout.store import RolloutStore
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
]
TOKEN = "http-errors-operator-token"
NOT_UTF8 = b'{"name": "ada", "password": "\xff\xfe\xfa"}'
CANARY = Dialplan.model_validate({"name": "canary", "match": ["5000"], "dialect": "rollout"})


def _broken_health() -> dict[str, Any]:
    raise RuntimeError("a secret-looking detail sk-never-shown")


@pytest.fixture
async def app_client() -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    with EmbeddedRedis() as server:
        users = add_user(Users(), "ada", "admin", "ada-admin-pass-1")
        users, token = add_token(users, "ada")
        client = aioredis.from_url(server.url, decode_responses=True)
        rollouts = RolloutStore(client=client, specs={"canary": CANARY.rollout_spec})
        options = ConsoleOptions(users=users, listen_key=b"k" * 32)
        app = create_app(token=None, redis=client, rollouts=rollouts, dialplans=[CANARY], health=_broken_health,
                         options=options)  # fmt: skip
        try:
            async with TestClient(TestServer(app)) as http:
                yield http, {"Authorization": f"Bearer {token}"}
        finally:
            await client.aclose()


async def test_a_body_not_utf8_is_a_json_400_on_every_route_with_a_body(app_client: Any) -> None:
    http, auth = app_client
    async with http.get("/api/openapi.json", headers=auth) as r:
        document = await r.json()
    with_body = [(m, p) for p, ops in document["paths"].items() for m, op in ops.items() if "requestBody" in op]
    assert ("post", "/auth/signin") in with_body and len(with_body) >= 7, with_body
    for method, path in with_body:
        url = path.replace("{call_id}", "c-1").replace("{dialplan}", "canary")
        headers = {**auth, "Content-Type": "application/json"}
        async with http.request(method, url, data=NOT_UTF8, headers=headers) as r:
            body = await r.json()
            assert (r.status, r.content_type) == (400, "application/json"), (method, path, body)
            assert body == {"error": "body must be JSON in UTF-8"}, (method, path, body)
            assert "400" in document["paths"][path][method]["responses"], (method, path)


async def test_an_unhandled_error_is_a_json_500_and_one_log_line(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    http, auth = app_client
    with caplog.at_level(logging.ERROR):
        async with http.get("/healthz", headers=auth) as r:
            assert (r.status, r.content_type) == (500, "application/json")
            body = await r.json()
    assert body == {"error": "internal error: the server's log says where"}
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, errors
    line = errors[0].getMessage()
    assert "GET /healthz: unhandled RuntimeError at " in line and "sk-never" not in line, line
    async with http.get("/api/openapi.json", headers=auth) as r:
        document = await r.json()
    assert all("500" in op["responses"] for ops in document["paths"].values() for op in ops.values())


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with serve_node(tmp_path, {}, {"CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN}) as node:
        yield node


async def _raw(node: Node, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def _status_and_body(answer: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head, body


async def test_the_live_port_answers_json_and_echoes_nothing(node: Node) -> None:
    async with aiohttp.ClientSession() as http:
        post = {"data": NOT_UTF8, "headers": {"Content-Type": "application/json"}}
        async with http.post(f"{node.url}/auth/signin", **post) as r:
            assert (r.status, await r.json()) == (400, {"error": "body must be JSON in UTF-8"})
        bearer = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with http.post(f"{node.url}/api/signin/unlock", data=NOT_UTF8, headers=bearer) as r:
            assert (r.status, await r.json()) == (400, {"error": "body must be JSON in UTF-8"})
        big = {"data": b"{" + b" " * (2 << 20) + b"}", "headers": {"Content-Type": "application/json"}}
        async with http.post(f"{node.url}/auth/signin", **big) as r:  # over aiohttp's client_max_size
            assert (r.status, r.content_type) == (413, "application/json")
            assert (await r.json())["error"].startswith("Maximum request body size"), await r.text()
        for path in ("/api", "/api/", "/no-such-page"):
            async with http.get(f"{node.url}{path}", headers=bearer) as r:
                assert (r.status, r.content_type) == (404, "application/json"), path
                assert (await r.json())["error"].startswith("not found: no route GET"), path
    marker = "X-Echo-Me-" + "q" * 9000
    for request in (
        f"GET /api/calls HTTP/1.1\r\nHost: x\r\nX-Long: {marker}\r\n\r\n".encode(),  # a header line over the limit
        f"GET /{marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),  # a request line over the limit
        b"GET /\x01\x02 HTTP/9.9 trailing\r\nHost: x\r\n\r\n",  # a bad request line
    ):
        status, head, body = _status_and_body(await _raw(node, request))
        assert status == 400 and b"Content-Type: application/json" in head, (head, body[:200])
        assert re.fullmatch(rb'\{"error": "bad request: [A-Za-z ]+"\}', body), body[:300]
        assert b"X-Echo" not in head + body and b"HTTP/9.9" not in body and b"\x01" not in body
    log = node.log.read_text()
    assert "Traceback" not in log and "X-Echo-Me" not in log, log[-2000:]
