"""A call's business tools and its longest silence in the console: a worker's reports written by the real
``CallStore`` into a real Redis; ``GET /api/calls/{id}`` returns each tool call (name, outcome, latency) and the
call's longest silence from that record, and the detail view in a real Chromium shows them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from _cdp import Browser
from _console_helpers import OPERATOR_TOKEN, needs_browser_stack, sign_in
from aiohttp.test_utils import TestServer
from redis import asyncio as aioredis

from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.store.calls import CallStore, StoreTuning
from bridge.supervisor.api import create_app

IDENTITY = {"caller": "+15550100", "called": "4000", "dialplan": "desk", "variant": "ga", "dialect": "ga",
            "model": "gpt-realtime-2.1", "voice": "marin"}  # fmt: skip
TOOLS = [  # (name, outcome, latency_ms, the tool's own longest silence)
    ("order_status", "ok", 5012.4, 1020.0),
    ("refund", "timeout", 8000.0, 1140.0),
    ("order_status", "http_status", 312.0, 0.0),
]


@pytest.fixture(scope="module")
def redis_url() -> AsyncIterator[str]:
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    with EmbeddedRedis() as server:
        yield server.url


async def record_call(url: str, call_id: str) -> None:
    """What a worker's session reports for such a call, through the store's listener (the worker's wiring)."""
    async with CallStore(
        url, worker="w-quality", tuning=StoreTuning(flush_interval_s=0.01, reap_interval_s=None)
    ) as store:
        report = store.listener_for(call_id, **IDENTITY)
        report(ev.Answered())
        report(ev.PhaseChanged("IDLE", "LISTENING", "answered"))
        report(ev.LongestSilence(980.0))  # a first slow turn ...
        report(ev.LongestWait(3640.0))  # ... whose soft hold kept the dead air short
        for i, (name, outcome, latency_ms, silence_ms) in enumerate(TOOLS):
            report(ev.ToolStarted(name, f"call-{i}", "{}"))
            report(ev.ToolFinished(name, f"call-{i}", "{}", "{}", outcome, latency_ms, silence_ms))
            if silence_ms > 980.0:
                report(ev.LongestSilence(max(s for *_, s in TOOLS[: i + 1])))
        assert await store.flush()


async def test_the_api_returns_each_tool_call_and_the_longest_silence(redis_url: str) -> None:
    await record_call(redis_url, "quality-api")
    app = create_app(token=OPERATOR_TOKEN, redis=aioredis.from_url(redis_url, decode_responses=True), rollouts=None)
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with http.get(server.make_url("/api/calls/quality-api"), headers=headers) as r:
            assert r.status == 200
            body = await r.json()
    tools = [(t["name"], t["outcome"], t["latency_ms"], t["longest_silence_ms"]) for t in body["tools"]]
    assert tools == TOOLS
    assert all(isinstance(t["t_unix"], float) and t["t"].endswith("Z") for t in body["tools"])  # ISO 8601, UTC
    # the call's longest: the largest of its waits, not the last tool's own (0 ms)
    assert body["longest_silence_ms"] == 1140.0
    assert body["call"]["longest_silence_ms"] == "1140"
    assert body["longest_wait_ms"] == 3640.0 and body["call"]["longest_wait_ms"] == "3640"


@needs_browser_stack
async def test_the_detail_view_shows_the_tools_and_the_longest_silence(redis_url: str) -> None:
    await record_call(redis_url, "quality-page")
    app = create_app(token=OPERATOR_TOKEN, redis=aioredis.from_url(redis_url, decode_responses=True), rollouts=None)
    async with TestServer(app, host="127.0.0.1") as server, Browser() as browser:
        page = await browser.page()
        await sign_in(page, str(server.make_url("/")), OPERATOR_TOKEN, name="Dana")
        call_row = "#calls tbody tr[data-call-id='quality-page']"
        await page.wait_for(f"document.querySelector({json.dumps(call_row)})", timeout=10)
        await page.wait_for("document.getElementById('plans-panel').dataset.loaded === '1'", timeout=10)
        await page.click(call_row)
        results = "[...document.querySelectorAll('#tools li[data-tool]')]"
        await page.wait_for(f"{results}.length === {len(TOOLS)}", timeout=10)
        shown = await page.eval(f"{results}.map((li) => [li.dataset.tool, li.dataset.outcome, li.textContent])")
        assert [(name, outcome) for name, outcome, _ in shown] == [(n, o) for n, o, *_ in TOOLS]
        assert shown[0][2].endswith("order_status ok in 5012 ms")
        assert shown[1][2].endswith("refund timeout in 8000 ms")
        await page.wait_for("document.getElementById('longest-silence').textContent === '1140 ms'", timeout=10)
        assert await page.text("#longest-wait") == "3640 ms"
