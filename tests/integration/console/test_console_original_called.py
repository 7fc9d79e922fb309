"""A forwarded call's original called number in the console: calls written by a worker's real writer
(``CallStore``, the identity the worker gives it: the number masked as the plan keeps callers) into a real
redis-server; the live and ended rows, a call's detail and its download carry ``original_called``, a viewer sees it
masked as a caller (its last two digits), and the page in a real Chromium shows it beside the called number and
among the call's facts. A call that was not forwarded shows nothing more."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from _cdp import CHROMIUM, Browser
from _console_helpers import SUPERVISOR, VIEWER, api_get, api_on_calls, sign_in
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
STORED = "+*******1111"  # +15550001111 as the worker keeps it (privacy.caller_visible_digits: 4)
VIEWER_SEES = "••••••••••11"  # what a viewer sees of the stored form: one glyph, the last two digits
WHO = {"caller": "+*******4567", "called": "4000", "dialplan": "desk", "variant": "ga"}


def write_calls(store: CallStore, clock: Clock) -> None:
    forwarded = store.listener_for("c-forwarded", original_called=STORED, **WHO)
    forwarded(ev.Answered())
    plain = store.listener_for("c-plain", **WHO)
    plain(ev.Answered())
    ended = store.listener_for("c-ended", original_called=STORED, **WHO)
    ended(ev.Answered())
    clock.now += 3.0
    ended(ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(redis_url: str) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    async with api_on_calls(redis_url, write_calls, "w-forwarded", T0) as served:
        yield served


async def _rows(api: Any, role: str, path: str) -> dict[str, dict[str, Any]]:
    status, body = await api_get(api, role, path)
    assert status == 200, body
    return {c["call_id"]: c for c in body["calls"]}


async def test_rows_detail_and_downloads_carry_it_masked_for_a_viewer(api: Any) -> None:
    for role, shown in (("supervisor", STORED), ("viewer", VIEWER_SEES)):
        live = await _rows(api, role, "/api/calls")
        assert (live["c-forwarded"]["original_called"], live["c-plain"]["original_called"]) == (shown, ""), role
        ended = await _rows(api, role, "/api/calls/ended")
        assert ended["c-ended"]["original_called"] == shown, role
        _, detail = await api_get(api, role, "/api/calls/c-forwarded")
        assert detail["call"]["original_called"] == shown and detail["call"]["called"] == "4000", role
        _, (text, _) = await api_get(api, role, "/api/calls/c-ended/export?format=text")
        assert f"Originally called: {shown}" in text.splitlines(), role
        _, (text, _) = await api_get(api, role, "/api/calls/c-plain/export?format=text")
        assert "Originally called" not in text, role
    _, body = await api_get(api, "viewer", "/api/calls/c-ended/export?format=json")
    assert body["call"]["original_called"] == VIEWER_SEES and "1111" not in json.dumps(body)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
@pytest.mark.parametrize(("who", "shown"), [(SUPERVISOR, STORED), (VIEWER, VIEWER_SEES)])
async def test_the_page_shows_it_beside_the_called_number_and_among_the_facts(
    api: Any, who: tuple[str, str], shown: str
) -> None:
    client, _ = api
    async with Browser() as browser:
        page = await browser.page()
        await sign_in(page, str(client.make_url("/")), who[1], name=who[0])
        live = "#calls tr[data-call-id='{}'] td.called"
        await page.wait_for(f"document.querySelector({json.dumps(live.format('c-plain'))}) !== null", timeout=10)
        assert await page.text(live.format("c-forwarded")) == f"4000 from {shown}"
        assert await page.text(live.format("c-plain")) == "4000"
        ended = "#ended tr[data-call-id='c-ended'] td.called"
        await page.wait_for(f"document.querySelector({json.dumps(ended)}) !== null", timeout=10)
        assert await page.text(f"{ended} .original-called") == f" from {shown}"
        await page.click("#calls tr[data-call-id='c-forwarded']")
        fact = "#detail-facts dd[data-field=original_called]"
        await page.wait_for(f"document.querySelector({json.dumps(fact)}) !== null", timeout=10)
        assert await page.text(fact) == shown
        label = await page.eval(f"document.querySelector({json.dumps(fact)}).previousElementSibling.textContent")
        assert label == "Originally called"
