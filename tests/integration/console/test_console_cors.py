"""A CRM's web page calls the supervisor API from another origin, in a real Chromium: the page comes from a tiny HTTP
server on a private port (another origin than the API's) and ``fetch()``es ``/api/calls`` with
``Authorization: Bearer``, which makes the browser send a preflight first. With no ``http_cors_origins`` (the
default) the browser blocks the call, its preflight refused before any credential is asked for; with the page's
origin listed the preflight is answered 204 and the call reads the live calls; an origin listed by name may send
credentials, one let in by ``"*"`` may not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _cdp import CHROMIUM, Browser, Page
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None or redis_server_binary() is None,
        reason="needs Debian's chromium (apt-get install chromium) and a redis-server binary",
    ),
]
TOKEN = "op-cors-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
CRM_PAGE = "<!doctype html><html><head><title>CRM</title></head><body><h1>A CRM page</h1></body></html>"


@pytest.fixture
async def crm() -> AsyncIterator[str]:
    """The CRM's page, on a port of its own: its origin."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=CRM_PAGE, content_type="text/html")

    app.router.add_get("/", page)
    async with TestServer(app, host="127.0.0.1") as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with Browser() as chromium:
        yield chromium


@pytest.fixture
def redis_url() -> AsyncIterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


async def api_server(redis_url: str, origins: tuple[str, ...], seen: list[tuple[str, int]]) -> TestServer:
    """The supervisor API on its own port, allowing ``origins``; ``seen`` gets each request's method and status."""
    redis = aioredis.from_url(redis_url, decode_responses=True)
    app = create_app(token=TOKEN, redis=redis, rollouts=None, options=ConsoleOptions(cors_origins=origins))

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.method, response.status))

    app.on_response_prepare.append(record)
    app.on_cleanup.append(lambda _: redis.aclose())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def fetch_calls(page: Page, api: TestServer, credentials: str = "omit") -> Any:
    """``fetch`` the live calls from the page, as a CRM's script would: ``[status, body]`` or ``["blocked", why]``."""
    url = f"http://127.0.0.1:{api.port}/api/calls"
    init = {"headers": {"Authorization": f"Bearer {TOKEN}"}, "credentials": credentials}
    return await page.eval(
        f"fetch({json.dumps(url)}, {json.dumps(init)}).then(async (r) => [r.status, await r.text()])"
        ".catch((e) => ['blocked', String(e)])"
    )


async def test_a_page_of_an_unlisted_origin_is_blocked_and_a_listed_one_reads_the_calls(
    browser: Browser, crm: str, redis_url: str
) -> None:
    page = await browser.page()
    await page.goto(crm + "/")
    for origins, credentials, works in (
        ((), "omit", False),  # the default: no other origin
        (("https://other.example",), "omit", False),  # another origin listed, not this one
        ((crm,), "omit", True),
        ((crm,), "include", True),  # listed by name: credentials allowed
        (("*",), "omit", True),
        (("*",), "include", False),  # any origin, but never with credentials
    ):
        seen: list[tuple[str, int]] = []
        api = await api_server(redis_url, origins, seen)
        try:
            status, body = await fetch_calls(page, api, credentials)
        finally:
            await api.close()
        case = (origins, credentials, status, body, seen)
        assert seen[0][0] == "OPTIONS", case  # the browser asked first, without the token
        if works:
            assert (status, json.loads(body)) == (200, {"calls": []}), case
            assert seen == [("OPTIONS", 204), ("GET", 200)], case
        else:
            assert status == "blocked" and "Failed to fetch" in body, case
            if credentials == "omit":  # refused at the preflight: the call itself was never sent
                assert seen == [("OPTIONS", 403)], case


async def test_the_headers_say_which_origin_and_whether_credentials(redis_url: str) -> None:
    """What the browser read above, header by header: the preflight names the origin and the methods, credentials only
    for an origin listed by name; every answer of /api, an error too, names the origin and varies by it."""
    crm, other = "https://crm.example.com", "https://other.example"
    seen: list[tuple[str, int]] = []
    api = await api_server(redis_url, (crm, "*"), seen)
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    try:
        async with ClientSession() as http:
            base = f"http://127.0.0.1:{api.port}/api/calls"
            async with http.options(base, headers={"Origin": crm, **ask}) as r:
                assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == crm
                assert r.headers["Access-Control-Allow-Credentials"] == "true"
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            async with http.options(base, headers={"Origin": other, **ask}) as r:
                assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == other
                assert "Access-Control-Allow-Credentials" not in r.headers  # let in by "*": never credentials
            async with http.get(base, headers={"Origin": crm}) as r:  # no token: 401, readable by the page
                assert (r.status, await r.json()) == (401, {"error": "unauthorized"})
                assert r.headers["Access-Control-Allow-Origin"] == crm and "Origin" in r.headers.getall("Vary")
    finally:
        await api.close()
