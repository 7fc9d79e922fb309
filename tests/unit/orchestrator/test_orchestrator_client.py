"""The orchestrator's HTTP client against a real aiohttp server on a loopback port: what it sends, and every
fault named by its kind (never the body or the URL's path in the message)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from bridge.orchestrator.client import Fault, OrchestratorClient
from bridge.orchestrator.models import TurnRequest

REQUEST = TurnRequest(
    call_id="c1", caller="+1555", called="3000", dialplan="orders", variant="ga", dialect="ga",
    turn="Where is my order?", transcript=[{"role": "caller", "text": "Where is my order?"}], sequence=1,
)  # fmt: skip
Handler = Callable[[web.Request], Any]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Any]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/turn/secret-token", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started: it has sockets
        return f"http://127.0.0.1:{port}/turn/secret-token"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_decision_comes_back_and_the_request_is_the_turn(server: Callable[[Handler], Any]) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"action": "say", "text": "Your order ships today."})

    url = await server(handler)
    client = OrchestratorClient()
    try:
        decision = await client.ask(url, REQUEST, 2.0)
        again = await client.ask(url, REQUEST, 2.0)  # the same session, kept alive
    finally:
        await client.close()
    assert (decision.action, decision.text) == ("say", "Your order ships today.") and again == decision
    assert seen[0] == json.loads(REQUEST.model_dump_json()) and seen[0]["version"] == "1"


@pytest.mark.parametrize(
    ("respond", "kind", "words"),
    [
        (lambda: web.Response(status=503, text="overloaded"), "http_5xx", "HTTP 503"),
        (lambda: web.Response(status=404), "http_4xx", "HTTP 404"),
        (lambda: web.Response(text="{not json", content_type="application/json"), "invalid_json", "invalid JSON"),
        (lambda: web.json_response({"action": "say"}), "invalid_answer", "needs 'text'"),
    ],
)
async def test_faults_are_named_by_kind(
    server: Callable[[Handler], Any], respond: Callable[[], web.Response], kind: str, words: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return respond()

    url = await server(handler)
    client = OrchestratorClient()
    try:
        with pytest.raises(Fault) as caught:
            await client.ask(url, REQUEST, 2.0)
    finally:
        await client.close()
    assert caught.value.kind == kind and words in str(caught.value)
    assert "secret-token" not in str(caught.value) and str(caught.value).startswith("http://127.0.0.1:")


async def test_a_slow_peer_times_out_and_a_closed_port_is_down(server: Callable[[Handler], Any]) -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"action": "nothing"})

    url = await server(handler)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/turn"  # bound, never listening: refused
        client = OrchestratorClient()
        try:
            with pytest.raises(Fault) as slow:
                await client.ask(url, REQUEST, 0.2)
            with pytest.raises(Fault) as down:
                await client.ask(closed, REQUEST, 2.0)
        finally:
            release.set()
            await client.close()
    assert (slow.value.kind, down.value.kind) == ("timeout", "down")
