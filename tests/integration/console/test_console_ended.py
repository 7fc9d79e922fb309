"""Ended calls through the supervisor API: calls written by a worker's real writer (``CallStore``) into a real
redis-server, then paged, searched, exported and masked as a viewer and a supervisor see them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from _cdp import CHROMIUM, Browser
from _console_helpers import SUPERVISOR, api_get, api_on_calls, fetch, sign_in
from aiohttp.test_utils import TestClient
from fakes.clock import Clock
from redis import asyncio as aioredis

from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.store import keys
from bridge.store.calls import CallStore, mark_ended
from bridge.store.record import iso

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
]

T0 = float(round(time.time()) - 1800)  # inside the strip's window of an hour
REFUND = "+15550002222"
SAM = SUPERVISOR
FILLERS = 23  # with the two named calls: two pages of 20, the second with 5


def say(store: CallStore, clock: Clock, call_id: str, reports: list[tuple[float, ev.Report]], **who: str) -> None:
    """One call as a worker reports it: each report ``dt`` seconds after the previous one."""
    listener = store.listener_for(call_id, **who)
    for dt, report in reports:
        clock.now += dt
        listener(report)


def write_calls(store: CallStore, clock: Clock) -> None:
    say(store, clock, "c-hours", [
        (0.0, ev.Ringing("+15550001111", "4000", "desk", "ga")), (0.1, ev.Answered()),
        (0.0, ev.Latency("first_reply", 420.0)), (0.0, ev.Latency("first_reply", 999.0)),
        (1.0, ev.CallerSaid("what time do you open", "i1")), (1.5, ev.AgentSaid("We open at nine.", "i2")),
        (2.0, ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER)),
    ], caller="+15550001111", called="4000", dialplan="desk", variant="ga")  # fmt: skip
    say(store, clock, "c-refund", [
        (5.0, ev.Answered()),
        (1.0, ev.CallerSaid(f"I want a refund, call me back on {REFUND}", "i1")),
        (1.0, ev.AgentSaid("Let me get someone for you.", "i2")), (0.0, ev.SupervisorActed("transfer", "sam")),
        (0.5, ev.TransferStarted("sip:desk@pbx")),
        (0.5, ev.CallEnded("transferred", ev.CallOutcome.TRANSFERRED, ev.EndedBy.AGENT)),
    ], caller=REFUND, called="5000", dialplan="canary", variant="beta")  # fmt: skip
    for i in range(FILLERS):
        bye = ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER)
        first: list[tuple[float, ev.Report]] = [(0.0, ev.Latency("greeting", 100.0 + 10 * i))]
        away = [(0.0, ev.SessionLost(None, 1006, "gone", True)), (0.0, ev.OutageEnded(0.5))] if i == 0 else []
        say(store, clock, f"c-fill-{i:02d}", [(1.0, ev.Answered()), *first, *away, (1.0, bye)],
            caller=f"+1555100{i:04d}", called="6000", dialplan="line", variant="ga")  # fmt: skip
    briefing: list[tuple[float, ev.Report]] = [
        (1.0, ev.Answered()),
        (0.5, ev.TransferStarted("sip:desk@pbx")),
        (0.5, ev.TransferStepped(ev.TransferStep.BRIEFING)),
    ]
    say(store, clock, "c-live", briefing, caller="+15559990000", called="6000", dialplan="line")
    say(store, clock, "c-held", [(1.0, ev.Answered()), (0.5, ev.SessionLost(None, 1006, "gone", True)),
        (2.0, ev.HoldStarted())], caller="+15559990001", called="6000", dialplan="line")  # fmt: skip


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(redis_url: str) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    async with api_on_calls(redis_url, write_calls, "w-ended", T0) as served:
        yield served


get = api_get


async def test_ended_calls_are_paged_newest_first_and_live_calls_are_not_among_them(api: Any, redis_url: str) -> None:
    status, first = await get(api, "supervisor", "/api/calls/ended")
    assert status == 200, first
    assert (first["total"], first["pages"], first["page"], first["capped"]) == (FILLERS + 2, 2, 1, False)
    ids = [c["call_id"] for c in first["calls"]]
    assert ids[:3] == ["c-fill-22", "c-fill-21", "c-fill-20"] and len(ids) == 20
    _, second = await get(api, "supervisor", "/api/calls/ended?page=2")
    assert [c["call_id"] for c in second["calls"]][-2:] == ["c-refund", "c-hours"]
    assert not set(ids) & {c["call_id"] for c in second["calls"]}
    hours = second["calls"][-1]
    assert (hours["dialplan"], hours["variant"], hours["end_reason"], hours["duration_s"]) == (
        "desk",
        "ga",
        "caller hung up",
        4.5,  # from the answer, as every record of a call says it
    )
    # the record's times in ISO 8601, the Unix times the API gave before beside them
    assert hours["started_at"] == iso(hours["started_at_unix"]) and hours["ended_at"] == iso(hours["ended_at_unix"])
    assert hours["ended_at_unix"] - hours["started_at_unix"] == pytest.approx(4.6)
    assert (hours["answered_at"], hours["ended_by"], hours["outcome"]) == (iso(T0 + 0.1), "caller", "completed")
    raw = aioredis.from_url(redis_url, decode_responses=True)
    try:  # the index holds ended calls only, and lives as long as they do
        assert await raw.zcard(keys.ENDED_CALLS) == FILLERS + 2
        assert 0 < await raw.ttl(keys.ENDED_CALLS) <= keys.CALL_TTL_S
    finally:
        await raw.aclose()
    assert (await get(api, "supervisor", "/api/calls/ended?page=0"))[0] == 400


async def test_search_by_plan_variant_reason_and_transcript_text(api: Any) -> None:
    async def found(query: str) -> list[str]:
        status, body = await get(api, "supervisor", f"/api/calls/ended?{query}")
        assert status == 200, body
        return [c["call_id"] for c in body["calls"]]

    assert await found("q=OPEN+AT+NINE") == ["c-hours"]  # the agent's words, any case
    assert await found("q=refund") == ["c-refund"]  # the caller's words
    assert await found("dialplan=canary") == ["c-refund"]
    assert await found("dialplan=desk&variant=beta") == []
    assert await found("reason=transferred") == ["c-refund"]
    assert await found("caller=0001111") == ["c-hours"]
    assert len(await found("variant=ga&per_page=50")) == FILLERS + 1


async def test_a_viewer_sees_numbers_masked_in_rows_and_downloads(api: Any) -> None:
    _, body = await get(api, "viewer", "/api/calls/ended?q=refund")
    (row,) = body["calls"]
    assert row["caller"] == "•" * (len(REFUND) - 2) + "22"
    assert (await get(api, "viewer", "/api/calls/ended?caller=2222"))[0] == 403
    # nor by a free text found only in the number, in the call's fields or where the caller said it
    assert (await get(api, "viewer", "/api/calls/ended?q=0002222"))[1]["calls"] == []
    assert [c["call_id"] for c in (await get(api, "supervisor", "/api/calls/ended?q=0002222"))[1]["calls"]] == [
        "c-refund"
    ]
    status, (text, _) = await get(api, "viewer", "/api/calls/c-refund/export?format=text")
    assert status == 200 and REFUND not in text and "•22" in text
    assert "I want a refund, call me back on " in text
    status, body = await get(api, "viewer", "/api/calls/c-refund/export?format=json")
    assert REFUND not in json.dumps(body)


async def test_export_as_json_and_text_has_the_transcript_and_timeline(api: Any) -> None:
    status, body = await get(api, "supervisor", "/api/calls/c-hours/export?format=json")
    assert status == 200
    assert body["call"]["caller"] == "+15550001111" and "sip_dialog" not in body["call"]
    assert [(line["who"], line["text"]) for line in body["transcript"]] == [
        ("caller", "what time do you open"), ("agent", "We open at nine.")]  # fmt: skip
    assert [e["kind"] for e in body["timeline"]] == [
        "ringing",
        "answered",
        "caller_transcript",
        "agent_transcript",
        "ended",
    ]
    status, (text, headers) = await get(api, "supervisor", "/api/calls/c-hours/export?format=text")
    assert headers["Content-Disposition"] == 'attachment; filename="call-c-hours.txt"'
    lines = text.splitlines()
    assert lines.index("Transcript") < lines.index("[00:01.1] Caller: what time do you open") < lines.index(
        "[00:02.6] Agent: We open at nine.") < lines.index("Timeline")  # fmt: skip
    assert "End reason: caller hung up" in lines and "[00:04.6] ended: caller hung up" in lines
    assert (await get(api, "supervisor", "/api/calls/c-hours/export?format=pdf"))[0] == 400
    assert (await get(api, "supervisor", "/api/calls/nope/export"))[0] == 404


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_the_page_pages_searches_and_offers_downloads(api: Any) -> None:
    client, _ = api
    rows = "document.querySelectorAll('#ended tbody tr')"
    async with Browser() as browser:
        page = await browser.page()
        await sign_in(page, str(client.make_url("/")), SAM[1], name=SAM[0])
        await page.wait_for(f"{rows}.length === 20")
        # the per-plan strip at the top
        await page.wait_for("document.querySelector('#plans tr[data-dialplan=desk]') !== null")
        cells = "[...document.querySelectorAll('#plans tr[data-dialplan=DP] td')].map((c) => c.textContent)"
        assert await page.eval(cells.replace("DP", "desk")) == [
            "0",
            "0",
            "0",
            "1",
            "0:04",
            "0 %",
            "1 (100 %)",
            "–",  # desk: the caller speaks first, no greeting
            "420 ms",
            "0",
        ]
        line = await page.eval(cells.replace("DP", "line"))
        assert line[:3] == ["2", "1", "1"] and line[6:] == [f"{FILLERS} (100 %)", "310 ms", "–", "1"]
        assert (
            await page.eval("document.querySelector('#plans tr[data-dialplan=line] td.on-hold').className")
            == "on-hold warn"
        )
        # a live call's warm transfer: where it is, beside the call's phase
        live = "document.querySelector('#calls tr[data-call-id=c-live] td.phase .transfer')"
        await page.wait_for(f"{live} !== null")
        assert await page.eval(f"{live}.textContent") == " transfer: briefing"
        assert (await page.text("#ended-count"), await page.text("#ended-page")) == (f"({FILLERS + 2})", "page 1 of 2")
        assert await page.eval(f"{rows}[0].dataset.callId") == "c-fill-22"
        await page.click("#ended-older")
        await page.wait_for("document.getElementById('ended-page').textContent === 'page 2 of 2'")
        assert await page.eval(f"[...{rows}].map((r) => r.dataset.callId).slice(-2)") == ["c-refund", "c-hours"]
        await page.type("#ended-q", "refund")
        await page.wait_for(f"{rows}.length === 1 && {rows}[0].dataset.callId === 'c-refund'")
        assert await page.text("#ended tbody tr .caller") == REFUND  # a supervisor sees the number whole
        (refund,) = (await get(api, "supervisor", "/api/calls/ended?q=refund"))[1]["calls"]
        assert await page.text("#ended tbody tr .ended-at") == refund["ended_at"][:19].replace("T", " ")
        href = await page.eval("document.querySelector('#ended tbody tr a.export.text').getAttribute('href')")
        assert href == "/api/calls/c-refund/export?format=text"
        status, text = await fetch(page, "GET", href)
        assert status == 200 and "Caller: I want a refund" in text
        await page.click("#ended tbody tr")  # the row opens the call's record: its transcript
        await page.wait_for("document.getElementById('transcript').textContent.includes('Let me get someone')")


async def test_the_plan_strip_counts_live_and_ended_calls(api: Any) -> None:
    status, body = await get(api, "viewer", "/api/plans/stats")
    assert status == 200, body
    plans = {p["dialplan"]: p for p in body["plans"]}
    assert set(plans) == {"desk", "canary", "line"} and body["window_s"] == 3600
    assert plans["desk"] == {
        "dialplan": "desk", "active": 0, "on_hold": 0, "in_outage": 0, "ended": 1, "avg_handle_s": 4.6,
        "transfer_rate": 0.0, "resolved_alone": 1, "resolved_alone_rate": 1.0, "greeting_p95_ms": None,
        "first_reply_p95_ms": 420.0, "had_outage": 0,
    }  # fmt: skip
    canary = plans["canary"]
    assert (canary["ended"], canary["transfer_rate"], canary["resolved_alone"]) == (1, 1.0, 0)
    line = plans["line"]
    assert (line["active"], line["on_hold"], line["in_outage"]) == (2, 1, 1)  # c-live, and c-held in its outage
    assert (line["ended"], line["avg_handle_s"], line["resolved_alone"], line["had_outage"]) == (
        FILLERS,
        2.0,
        FILLERS,
        1,
    )
    assert line["greeting_p95_ms"] == 100.0 + 10 * 21  # nearest rank: the 22nd of 23
    assert line["first_reply_p95_ms"] is None
    assert (await get(api, "viewer", "/api/plans/stats?window_s=5"))[0] == 400


async def test_a_call_the_reaper_ends_joins_the_ended_calls(api: Any, redis_url: str) -> None:
    raw = aioredis.from_url(redis_url, decode_responses=True)
    try:
        assert await mark_ended(raw, ["c-live"], "worker died", now=T0 + 3600) == ["c-live"]
    finally:
        await raw.aclose()
    _, body = await get(api, "supervisor", "/api/calls/ended?per_page=1")
    assert [(c["call_id"], c["end_reason"]) for c in body["calls"]] == [("c-live", "worker died")]
