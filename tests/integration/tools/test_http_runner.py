""":class:`bridge.tools.http.HttpTools` against a real aiohttp service: retries only where a method is idempotent,
the size cap, a non-JSON answer, an HTTP error, and a secret that is not set, each a typed error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bridge.tools.http import HttpTools
from bridge.tools.spec import HttpTool

pytestmark = pytest.mark.integration


@pytest.fixture
async def service() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []
    flaky = {"n": 0}

    async def flaky_handler(request: web.Request) -> web.Response:
        hits.append(f"{request.method} {request.path}")
        flaky["n"] += 1
        return web.json_response({"ok": True}) if flaky["n"] % 2 == 0 else web.Response(status=503)

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"blob": "x" * 5000})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="<html>not json</html>")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/flaky", flaky_handler)
    app.router.add_get("/big", big)
    app.router.add_get("/text", text)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    await runner.cleanup()


async def test_failures_are_typed_and_only_idempotent_calls_are_retried(
    service: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, hits = service
    monkeypatch.delenv("CB_TEST_TOOL_KEY", raising=False)

    def tool(name: str, path: str, **kw: Any) -> HttpTool:
        return HttpTool(name=name, url=base + path, **kw)

    tools = HttpTools((
        tool("get_flaky", "/flaky", method="GET", retries=1), tool("post_flaky", "/flaky", method="POST", retries=3),
        tool("big", "/big", method="GET", max_response_bytes=1000), tool("text", "/text", method="GET"),
        tool("missing", "/missing", method="GET"),
        tool("secret", "/flaky", method="GET", headers={"X-Key": {"env": "CB_TEST_TOOL_KEY"}}),
    ))  # fmt: skip
    try:
        got = await tools.run("get_flaky", "{}")  # 503, then the retry answers
        assert (got.ok, got.output, got.attempts) == (True, '{"ok":true}', 2)
        got = await tools.run("post_flaky", "{}")  # 503: a POST is never retried
        assert (got.error, got.status, got.attempts) == ("http_status", 503, 1)
        assert hits == ["GET /flaky", "GET /flaky", "POST /flaky"]
        assert (await tools.run("big", "{}")).error == "too_large"
        assert (await tools.run("text", "{}")).error == "not_json"
        assert (await tools.run("missing", "{}")).error == "http_status"
        assert (await tools.run("secret", "{}")).error == "unreachable"  # the env variable is not set: no request
        assert len(hits) == 3
    finally:
        await tools.close()
