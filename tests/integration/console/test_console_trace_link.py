"""A traced call's trace in the console: calls written by a worker's real writer (``CallStore``) into a real
redis-server, one with the ``trace_id`` a traced worker keeps, and the app with ``tracing_ui_url`` set. The call's
detail (the API, and the page in a real Chromium) shows the trace id linked to the trace UI; an untraced call shows
no trace; a hash whose ``trace_id`` is no trace id (written by anyone into Redis) gets no link, its text only."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from _cdp import CHROMIUM, Browser
from _console_helpers import SUPERVISOR, api_get, api_on_calls, sign_in
from aiohttp.test_utils import TestClient
from fakes.clock import Clock

from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.store.calls import CallStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
]

T0 = float(round(time.time()) - 600)
TEMPLATE = "https://tempo.example.com/explore?trace={trace_id}&from=console"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FORGED = '"><img src=x onerror=alert(1)>'
WHO = {"caller": "+*******4567", "called": "4000", "dialplan": "desk", "variant": "ga"}


def write_calls(store: CallStore, clock: Clock) -> None:
    for call_id in ("c-traced", "c-plain", "c-forged"):
        store.listener_for(call_id, **WHO)(ev.Answered())
    store.update("c-traced", trace_id=TRACE)
    store.update("c-forged", trace_id=FORGED)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(redis_url: str) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    async with api_on_calls(redis_url, write_calls, "w-traced", T0, trace_ui_url=TEMPLATE) as served:
        yield served


async def test_the_detail_links_a_traced_calls_trace_and_nothing_else(api: Any) -> None:
    link = TEMPLATE.replace("{trace_id}", TRACE)
    for role in ("supervisor", "viewer"):
        _, traced = await api_get(api, role, "/api/calls/c-traced")
        assert (traced["call"]["trace_id"], traced["call"]["trace_url"]) == (TRACE, link), role
        _, plain = await api_get(api, role, "/api/calls/c-plain")
        assert not plain["call"]["trace_id"] and "trace_url" not in plain["call"], role
        _, forged = await api_get(api, role, "/api/calls/c-forged")
        assert forged["call"]["trace_id"] == FORGED and "trace_url" not in forged["call"], role


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_the_page_shows_the_trace_id_as_a_link_to_the_trace_ui(api: Any) -> None:
    client, _ = api
    fact = json.dumps("#detail-facts dd[data-field=trace_id]")
    async with Browser() as browser:
        page = await browser.page()
        await sign_in(page, str(client.make_url("/")), SUPERVISOR[1], name=SUPERVISOR[0])
        row = "#calls tr[data-call-id='{}']"
        await page.wait_for(f"document.querySelector({json.dumps(row.format('c-forged'))}) !== null", timeout=10)
        await page.click(row.format("c-traced"))
        await page.wait_for(f"document.querySelector({fact}) !== null", timeout=10)
        shown = await page.eval(
            f"(() => {{ const dd = document.querySelector({fact}); const a = dd.querySelector('a');"
            " return [dd.previousElementSibling.textContent, dd.textContent, a && a.href, a && a.rel]; })()"
        )
        assert shown == ["Trace", TRACE, TEMPLATE.replace("{trace_id}", TRACE), "noopener noreferrer"]
        await page.click(row.format("c-forged"))  # a trace id that is none: its text, no link, no markup
        wait = f"document.querySelector({fact}) !== null && document.querySelector({fact}).textContent === "
        await page.wait_for(wait + json.dumps(FORGED), timeout=10)
        assert await page.eval("document.querySelectorAll('#detail-facts a, #detail-facts img').length") == 0
        await page.click(row.format("c-plain"))
        await page.wait_for("document.querySelector('#detail-facts dd[data-field=dialplan]') !== null", timeout=10)
        assert await page.eval(f"document.querySelector({fact})") is None
