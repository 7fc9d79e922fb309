"""After the call, in the console: ended calls written by a worker's real writer (``CallStore``) into a real
redis-server carry the model's disposition and summary (or why there is none) and the failed compliance checks; the
supervisor API and the page (Chromium) show them, filter by disposition, and the call's export includes them."""

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
CALLER = "+15550003333"
SAM = SUPERVISOR
SUMMARY = f"The caller wants a refund for order 4417 and a call back on {CALLER}."
CHECK_ROWS = [
    {"name": "disclosure", "passed": True, "detail": "said 1.0 s after the answer (within 10 s)"},
    {"name": "never_say", "passed": False, "detail": "the agent said 'guaranteed'"},
]


def _call(store: CallStore, clock: Clock, call_id: str, after: list[ev.Report], caller: str) -> None:
    listener = store.listener_for(call_id, caller=caller, called="7100", dialplan="orders", variant="ga")
    said = [ev.Answered(), ev.CallerSaid("I want my money back", "i1"), ev.AgentSaid("It is guaranteed.", "i2")]
    for report in [*said, *after, ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER)]:
        clock.now += 1.0
        listener(report)


def write_calls(store: CallStore, clock: Clock) -> None:
    fields = json.dumps({"order_number": "4417"})
    _call(store, clock, "c-refund", [
        ev.PostCallDone("ok", "refund", SUMMARY, fields),
        ev.ChecksDone(2, "never_say", json.dumps(CHECK_ROWS)),
    ], CALLER)  # fmt: skip
    _call(store, clock, "c-status", [ev.PostCallDone("ok", "order_status", "Asked where order 9 is.")], "+15550004444")
    _call(store, clock, "c-lost", [ev.PostCallDone("session lost")], "+15550005555")
    _call(store, clock, "c-plain", [], "+15550006666")  # a plan without post_call or checks


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(redis_url: str) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    async with api_on_calls(redis_url, write_calls, "w-after", T0) as served:
        yield served


get = api_get


async def test_rows_carry_the_disposition_the_summary_and_the_failed_checks(api: Any) -> None:
    status, body = await get(api, "supervisor", "/api/calls/ended")
    assert status == 200, body
    rows = {c["call_id"]: c for c in body["calls"]}
    got = {k: (r["disposition"], r["summary"], r["post_call_status"], r["failed_checks"]) for k, r in rows.items()}
    assert got == {
        "c-refund": ("refund", SUMMARY, "ok", ["never_say"]),
        "c-status": ("order_status", "Asked where order 9 is.", "ok", []),
        "c-lost": ("", "", "session lost", []),  # no summary made up: the status says why
        "c-plain": ("", "", "", []),
    }
    status, body = await get(api, "supervisor", "/api/calls/ended?disposition=refund")
    assert [c["call_id"] for c in body["calls"]] == ["c-refund"]
    assert (await get(api, "supervisor", "/api/calls/ended?disposition=ref"))[1]["calls"] == []  # exact
    # a viewer reads the caller's number masked in the model's summary too
    _, body = await get(api, "viewer", "/api/calls/ended?disposition=refund")
    assert CALLER not in json.dumps(body) and "•33." in body["calls"][0]["summary"]


async def test_the_export_includes_the_post_call_answer_and_the_checks(api: Any) -> None:
    status, body = await get(api, "supervisor", "/api/calls/c-refund/export?format=json")
    assert status == 200
    assert body["post_call"] == {
        "summary": SUMMARY,
        "disposition": "refund",
        "fields": {"order_number": "4417"},
        "status": "ok",
    }
    assert body["checks"] == CHECK_ROWS
    _, lost = await get(api, "supervisor", "/api/calls/c-lost/export?format=json")
    assert lost["post_call"] == {"summary": None, "disposition": None, "fields": None, "status": "session lost"}
    _, plain = await get(api, "supervisor", "/api/calls/c-plain/export?format=json")
    assert (plain["post_call"], plain["checks"]) == (None, [])
    _, (text, _) = await get(api, "supervisor", "/api/calls/c-refund/export?format=text")
    lines = text.splitlines()
    assert "Disposition: refund" in lines and f"Summary: {SUMMARY}" in lines
    assert "Check never_say: FAILED (the agent said 'guaranteed')" in lines
    _, (text, _) = await get(api, "viewer", "/api/calls/c-lost/export?format=text")
    assert "Summary: (none: session lost)" in text.splitlines()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_the_page_shows_them_and_filters_by_disposition(api: Any) -> None:
    client, _ = api
    rows = "document.querySelectorAll('#ended tbody tr')"
    cell = "document.querySelector('#ended tbody tr[data-call-id=ID] td.reason .WHAT').textContent"
    async with Browser() as browser:
        page = await browser.page()
        await sign_in(page, str(client.make_url("/")), SAM[1], name=SAM[0])
        await page.wait_for(f"{rows}.length === 4")

        async def shown(call_id: str, what: str) -> str:
            return str(await page.eval(cell.replace("ID", call_id).replace("WHAT", what)))

        assert (await shown("c-refund", "disposition"), await shown("c-refund", "summary")) == ("refund", SUMMARY)
        assert await shown("c-refund", "failed-checks") == "failed check: never_say"
        assert await shown("c-status", "failed-checks") == ""
        assert await shown("c-lost", "summary") == "no summary: session lost"
        plain = "document.querySelectorAll('#ended tbody tr[data-call-id=c-plain] td.reason div').length"
        assert await page.eval(plain) == 0  # a plan that asks for no summary shows none, not an empty one
        await page.type("#ended-disposition", "order_status")
        await page.wait_for(f"{rows}.length === 1 && {rows}[0].dataset.callId === 'c-status'")
        # the dispositions seen are offered in the filter
        offered = "[...document.querySelectorAll('#ended-dispositions option')].map((o) => o.value).sort()"
        assert await page.eval(offered) == ["order_status", "refund"]
