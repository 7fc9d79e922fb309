"""HTTP answers as real servers send them: an HTTP tool (:class:`bridge.tools.http.HttpTools`) and the
orchestrator's client (:class:`bridge.orchestrator.client.OrchestratorClient`) against an aiohttp server the test
starts on a loopback port, whose answer comes in two writes 100 ms apart, in chunks (``Transfer-Encoding:
chunked``) with a pause between them, or a few bytes at a time. Each is read whole; an answer over the cap, declared
or streamed, is refused by name, and one that trickles past the time limit is a timeout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bridge.orchestrator.client import MAX_BODY, Fault, OrchestratorClient
from bridge.orchestrator.models import TurnRequest
from bridge.tools.http import HttpTools
from bridge.tools.spec import HttpTool

pytestmark = pytest.mark.integration

ANSWER = {"action": "say", "text": "Your order A-42 shipped on Friday; it arrives on Monday before noon."}
BODY = json.dumps(ANSWER).encode()
HUGE = json.dumps({"action": "say", "text": "x" * (MAX_BODY + 1000)}).encode()
REQUEST = TurnRequest(
    call_id="c1", caller="+1555", called="3000", dialplan="orders", variant="ga", dialect="ga",
    turn="Where is my order?", transcript=[{"role": "caller", "text": "Where is my order?"}], sequence=1,
)  # fmt: skip
SHAPES = ("two_writes", "chunked", "trickle")


async def _send(request: web.Request, parts: list[bytes], pause_s: float, *, chunked: bool) -> web.StreamResponse:
    """``parts`` written one by one, ``pause_s`` apart: with a Content-Length, or chunked (one chunk each)."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    if chunked:
        resp.enable_chunked_encoding()
    else:
        resp.content_length = sum(len(p) for p in parts)
    await resp.prepare(request)
    try:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(pause_s)
            await resp.write(part)
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client stopped reading (over its cap, past its time)
    return resp


def app() -> web.Application:
    shapes = {
        "two_writes": lambda r: _send(r, [BODY[:20], BODY[20:]], 0.1, chunked=False),
        "chunked": lambda r: _send(r, [BODY[:15], BODY[15:40], BODY[40:]], 0.1, chunked=True),
        "trickle": lambda r: _send(r, [BODY[i : i + 8] for i in range(0, len(BODY), 8)], 0.05, chunked=False),
        "huge_chunked": lambda r: _send(r, [HUGE[i : i + 4096] for i in range(0, len(HUGE), 4096)], 0.01, chunked=True),
        "huge_declared": lambda r: _send(r, [HUGE], 0, chunked=False),
        "past_limit": lambda r: _send(r, [BODY[i : i + 1] for i in range(len(BODY))], 0.2, chunked=True),
    }  # fmt: skip

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await shapes[request.match_info["shape"]](request)

    application = web.Application()
    application.router.add_route("*", "/{shape}", handle)
    return application


@pytest.fixture
async def server() -> AsyncIterator[str]:
    runner = web.AppRunner(app(), shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def tools(base: str, **kw: Any) -> HttpTools:
    shapes = (*SHAPES, "huge_chunked", "huge_declared", "past_limit")
    return HttpTools(tuple(HttpTool(name=s, url=f"{base}/{s}", **kw) for s in shapes))


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_tools_answer_in_pieces_is_read_whole(server: str, method: str) -> None:
    http = tools(server, method=method, timeout_s=10)
    try:
        for shape in SHAPES:
            got = await http.run(shape, "{}")
            assert (shape, got.error, json.loads(got.output)) == (shape, None, ANSWER)
    finally:
        await http.close()


async def test_a_tools_answer_over_its_cap_or_past_its_time_is_refused_by_name(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    http = tools(server, method="GET", max_response_bytes=1000, timeout_s=2, retries=0)
    try:
        with caplog.at_level("WARNING", logger="bridge.tools"):
            chunked, declared = await http.run("huge_chunked", "{}"), await http.run("huge_declared", "{}")
            late = await http.run("past_limit", "{}")
            fits = await http.run("chunked", "{}")  # the same tool's limits, an answer within them
    finally:
        await http.close()
    assert (chunked.error, chunked.status, declared.error) == ("too_large", 200, "too_large")
    assert json.loads(chunked.output)["error"] == {"type": "too_large", "message": "the huge chunked service did not "
                                                   "answer"}  # fmt: skip
    assert f"{server}/huge_chunked answered more than max_response_bytes (1000)" in caplog.text
    assert f"{server}/huge_declared answered more than max_response_bytes (1000)" in caplog.text
    assert late.error == "timeout" and f"no answer from {server}/past_limit within 2 s" in caplog.text
    assert fits.ok and json.loads(fits.output) == ANSWER


async def test_the_orchestrators_answer_in_pieces_is_read_whole(server: str) -> None:
    client = OrchestratorClient()
    try:
        for shape in SHAPES:
            decision = await client.ask(f"{server}/{shape}", REQUEST, 10.0)
            assert (shape, decision.action, decision.text) == (shape, "say", ANSWER["text"])
    finally:
        await client.close()


async def test_the_orchestrators_answer_over_the_cap_or_past_the_limit_is_a_fault(server: str) -> None:
    client = OrchestratorClient()
    faults = []
    try:
        for shape, limit in (("huge_chunked", 10.0), ("huge_declared", 10.0), ("past_limit", 1.0)):
            with pytest.raises(Fault) as caught:
                await client.ask(f"{server}/{shape}", REQUEST, limit)
            faults.append((caught.value.kind, str(caught.value)))
    finally:
        await client.close()
    too_large = f"{server}: an answer of more than {MAX_BODY} bytes (a decision's most)"
    assert faults == [("invalid_answer", too_large), ("invalid_answer", too_large),
                      ("timeout", f"{server}: no answer within 1.0 s")]  # fmt: skip
