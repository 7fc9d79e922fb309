"""A call's timeline as the console shows it, in a real Chromium: a worker's reports written by the real
``CallStore`` into a real Redis, and supervisors' actions written by the API's own audit writer. An agent line is
stamped when its audio began and a caller's line when they began speaking (neither when its transcript came), a line
a barge-in cut is marked as interrupted, each supervisor action is on the call's timeline with who did it (one
audited while the page is open too), the phase list follows its newest entry and draws numbers from 10 on whole, and
the actions audit has its own view, filtered by who, call and action (and the API refuses an unknown action, naming
the field)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from _cdp import Browser, Page
from _console_helpers import OPERATOR_TOKEN, needs_browser_stack, sign_in
from aiohttp.test_utils import TestServer
from fakes.clock import Clock
from redis import asyncio as aioredis

from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.store.calls import CallStore, StoreTuning
from bridge.supervisor.actions import audit
from bridge.supervisor.api import create_app

pytestmark = [needs_browser_stack, pytest.mark.asyncio(loop_scope="module")]

CALL, OTHER = "c-timeline", "c-other"
T0 = float(round(time.time()) - 60)
IDENTITY = {"caller": "+15550100", "called": "4000", "dialplan": "desk", "variant": "ga", "dialect": "ga"}
TURNS = 5  # each: LISTENING -> THINKING -> SPEAKING -> LISTENING, three phases


def say(report: Any, clock: Clock, steps: list[tuple[float, ev.Report]]) -> dict[str, float]:
    """Each report ``dt`` after the one before; the times of the named ones (by their kind and item)."""
    times: dict[str, float] = {}
    for dt, r in steps:
        clock.now += dt
        report(r)
        times.setdefault(f"{r.kind}:{getattr(r, 'item_id', '')}:{getattr(r, 'new', '')}", clock.now)
    return times


def turns(first: int, count: int) -> list[tuple[float, ev.Report]]:
    out: list[tuple[float, ev.Report]] = []
    for i in range(first, first + count):
        out += [(1.0, ev.PhaseChanged("LISTENING", "THINKING", "caller stopped speaking")),
                (0.2, ev.OutputItem(ev.ItemType.MESSAGE, f"filler-{i}")),
                (0.3, ev.PhaseChanged("THINKING", "SPEAKING", "model audio")),
                (1.5, ev.AgentSaid(f"Answer {i}.", f"filler-{i}")),
                (0.5, ev.PhaseChanged("SPEAKING", "LISTENING", "reply played out"))]  # fmt: skip
    return out


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(redis_url: str) -> AsyncIterator[tuple[CallStore, Clock, aioredis.Redis, TestServer, dict[str, float]]]:
    clock = Clock(T0)
    store = CallStore(
        redis_url, worker="w-timeline", clock=clock, tuning=StoreTuning(flush_interval_s=0.02, reap_interval_s=None)
    )
    await store.start()
    report = store.listener_for(CALL, **IDENTITY)
    times = say(report, clock, [
        (0.0, ev.Answered()), (0.0, ev.PhaseChanged("IDLE", "LISTENING", "answered")),
        # the first answer: its item is added, its audio begins (SPEAKING) 0.4 s later, its transcript 2.6 s after
        (1.0, ev.PhaseChanged("LISTENING", "THINKING", "caller stopped speaking")),
        (0.1, ev.OutputItem(ev.ItemType.MESSAGE, "item-hours")),
        (0.4, ev.PhaseChanged("THINKING", "SPEAKING", "model audio")),
        (2.6, ev.AgentSaid("We open at nine and close at five.", "item-hours")),
        (0.2, ev.PhaseChanged("SPEAKING", "LISTENING", "reply played out")),
        # the caller's line: they begin speaking, their transcript comes 0.9 s later, once they stopped
        (0.1, ev.CallerSpeechStarted(4200)),
        (0.9, ev.CallerSaid("and on Sundays?", "item-caller")),
        # the second: cut 1.2 s into its audio by the caller (the truncate names it), its transcript comes after
        (0.5, ev.PhaseChanged("LISTENING", "THINKING", "caller stopped speaking")),
        (0.1, ev.OutputItem(ev.ItemType.MESSAGE, "item-sunday")),
        (0.3, ev.PhaseChanged("THINKING", "SPEAKING", "model audio")),
        (1.2, ev.TruncateSent("item-sunday", 1200)),
        (0.0, ev.BargeIn("caller spoke", 20.0)),
        (0.0, ev.PhaseChanged("SPEAKING", "LISTENING", "barge-in")),
        (0.3, ev.AgentSaid("On Sundays we open at", "item-sunday")),
        *turns(0, TURNS),
    ])  # fmt: skip
    client = aioredis.from_url(redis_url, decode_responses=True)
    await audit(client, "whisper", "sam", CALL, worker="w-timeline", text="offer a callback")
    await audit(client, "hangup", "ada", CALL, worker="")  # no worker took it
    await audit(client, "transfer", "ada", OTHER, worker="w-2", target="sip:desk@pbx")
    assert await store.flush()
    app = create_app(token=OPERATOR_TOKEN, redis=client, rollouts=None)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield store, clock, client, server, times
    await server.close()
    await store.close()


def at(t: float) -> str:
    return f"+{t - T0:.1f} s"


async def open_call(page: Page, server: TestServer) -> None:
    await sign_in(page, str(server.make_url("/")), OPERATOR_TOKEN, name="Dana")
    row = f"#calls tbody tr[data-call-id={json.dumps(CALL)}]"
    await page.wait_for(f"document.querySelector({json.dumps(row)})", timeout=10)
    await page.wait_for("document.getElementById('plans-panel').dataset.loaded === '1'", timeout=10)
    await page.click(row)
    await page.wait_for("document.querySelectorAll('#phases li').length >= 10", timeout=10)


async def set_value(page: Page, element_id: str, value: str) -> None:
    """A filter's new value, as a person's typing or choosing leaves it (an input event)."""
    await page.eval(
        f"(() => {{ const el = document.getElementById({json.dumps(element_id)}); el.value = {json.dumps(value)};"
        " el.dispatchEvent(new Event('input')); })()"
    )


LAST_PHASE_SHOWN = """(() => {
  const list = document.getElementById('phases'), last = list.lastElementChild;
  const a = last.getBoundingClientRect(), b = list.getBoundingClientRect();
  return {shown: a.top >= b.top - 1 && a.bottom <= b.bottom + 1, scrolls: list.scrollHeight > list.clientHeight,
          text: last.textContent, marker: getComputedStyle(last).listStylePosition};
})()"""


async def test_agent_lines_cuts_actions_and_phases(stack: Any) -> None:
    store, clock, client, server, times = stack
    async with Browser(width=1400, height=900) as browser:
        page = await browser.page()
        await open_call(page, server)
        line = "document.querySelector('#transcript li.agent[data-item-id=ITEM]')"
        hours = line.replace("ITEM", "item-hours")
        await page.wait_for(f"{hours} !== null")
        # stamped when its audio began (the SPEAKING after its item), not when its transcript came 2.6 s later
        began = times["phase::SPEAKING"]
        assert await page.eval(f"{hours}.querySelector('time').textContent") == at(began)
        assert float(await page.eval(f"{hours}.dataset.t")) == pytest.approx(began, abs=0.002)
        assert await page.eval(f"{hours}.classList.contains('interrupted')") is False
        # a caller's line: stamped when they began speaking, not when its transcript came
        caller = "document.querySelector('#transcript li.caller')"
        assert await page.eval(f"{caller}.querySelector('time').textContent") == at(times["speech_started::"])
        assert await page.eval(f"{caller}.querySelector('.line').textContent") == "and on Sundays?"
        sunday = line.replace("ITEM", "item-sunday")
        assert await page.eval(f"{sunday}.classList.contains('interrupted')") is True
        assert await page.eval(f"{sunday}.querySelector('.cut').textContent") == "interrupted by the caller after 1.2 s"
        assert await page.eval(f"{sunday}.querySelector('.line').textContent") == "On Sundays we open at"

        # the supervisors' actions on this call, with who did them; another call's are not here
        acted = "[...document.querySelectorAll('#call-actions li')]"
        await page.wait_for(f"{acted}.length === 2")
        shown = await page.eval(f"{acted}.map((li) => [li.dataset.action, li.dataset.who, li.textContent])")
        assert [(a, w) for a, w, _ in shown] == [("whisper", "sam"), ("hangup", "ada")]
        assert shown[0][2].endswith("whisper: “offer a callback” (done by w-timeline)")
        assert shown[1][2].endswith("hangup (no worker took it)")
        # one audited while the page is open joins the timeline
        await audit(client, "transfer", "ada", CALL, worker="w-timeline", target="sip:desk@pbx")
        await page.wait_for(f"{acted}.length === 3 && {acted}[2].textContent.endsWith('transfer to sip:desk@pbx"
                            " (done by w-timeline)')", timeout=10)  # fmt: skip

        # the phase list: more entries than it shows at once, the newest in view, its numbers drawn whole
        phases = 1 + 3 * (2 + TURNS)
        assert await page.eval("document.querySelectorAll('#phases li').length") == phases
        state = await page.eval(LAST_PHASE_SHOWN)
        assert state["shown"] and state["scrolls"] and state["marker"] == "inside", state
        # a new phase while the page is open: it follows
        report = store.listener_for(CALL, **IDENTITY)
        say(report, clock, turns(TURNS, 1))
        assert await store.flush()
        await page.wait_for(f"document.querySelectorAll('#phases li').length === {phases + 3}", timeout=10)
        state = await page.eval(LAST_PHASE_SHOWN)
        assert state["shown"] and "SPEAKING → LISTENING" in state["text"], state
        assert page.problems == [], page.problems


async def test_the_actions_audit_view_and_its_filters(stack: Any) -> None:
    _, _, _, server, _ = stack
    rows = "[...document.querySelectorAll('#actions-audit tbody tr')]"
    async with Browser(width=1400, height=900) as browser:
        page = await browser.page()
        await sign_in(page, str(server.make_url("/")), OPERATOR_TOKEN, name="Dana")
        await page.wait_for("document.getElementById('actions-audit-panel').dataset.loaded === '1'", timeout=10)
        listed = f"{rows}.map((tr) => [tr.dataset.action, tr.querySelector('.who').textContent, tr.dataset.callId])"
        await page.wait_for(f"{rows}.length >= 3")
        everything = await page.eval(listed)
        assert everything[-3:] == [["transfer", "ada", OTHER], ["hangup", "ada", CALL], ["whisper", "sam", CALL]]
        await page.type("#actions-audit-who", "AD")  # part of the name, any case
        await page.wait_for(f"{rows}.every((tr) => tr.querySelector('.who').textContent === 'ada')")
        assert {a for a, _, _ in await page.eval(listed)} >= {"transfer", "hangup"}
        await set_value(page, "actions-audit-action", "hangup")
        await page.wait_for(f"{rows}.length === 1")
        assert await page.eval(listed) == [["hangup", "ada", CALL]]
        assert await page.text("#actions-audit tbody tr .result") == "no worker took it"
        await page.type("#actions-audit-call", OTHER)
        await page.wait_for("document.getElementById('actions-audit-note').textContent === 'No action matches.'")
        # a row's call opens it
        await set_value(page, "actions-audit-action", "")
        await set_value(page, "actions-audit-who", "")
        await page.wait_for(f"{rows}.length === 1 && {rows}[0].dataset.callId === {json.dumps(OTHER)}")
        await page.click("#actions-audit tbody tr a.call-link")
        await page.wait_for(f"document.getElementById('detail-id').textContent === {json.dumps(OTHER)}")
        assert page.problems == [], page.problems
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with http.get(server.make_url("/api/actions/audit?action=reboot"), headers=headers) as r:
            assert r.status == 400
            body = await r.json()
    assert body["field"] == "action" and "hangup" in body["error"]
