"""The console for everyone, in a real Chromium over the real console app on a real Redis holding live calls (one of
them on a lost worker), ended calls (with the model's summary and failed checks), a guarded rollout with its verdicts,
a kill switch an admin holds, and every audit:

* axe-core (npm's, injected) finds no violation on any view (sign-in, the console, an open live call with a pending
  question, an open ended call, an admin's reviewed change) for a viewer, a supervisor and an admin at 800 and
  1400 px: no contrast below 4.5:1, every sideways-scrolling table reachable from the keyboard, named landmarks,
  headers with text;
* Enter on a live row opens the call and takes the focus into it, and Close gives it back to the row;
* a viewer's live rows end where their cells do (no stray "null");
* every audit says its times one way;
* at 800 px each guardrail's reading is in view in its table (not only the bar's colour);
* at 200 % zoom (a 1280x800 screen: 640x400 CSS px at two device pixels each) the header does not sit over the
  panel a jump in the views menu leads to, nor take a quarter of the screen.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from _axe import axe_missing, axe_version, run_axe, told
from _cdp import CHROMIUM, Browser, Page
from _console_helpers import sign_in
from aiohttp.test_utils import TestServer
from fakes.clock import Clock
from redis import asyncio as aioredis

from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout import records
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.store import RolloutStore
from bridge.store.calls import CallStore, StoreTuning
from bridge.supervisor import listen
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.actions import audit as action_audit
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
]

NOW = float(round(time.time()))
KEY = (b"rollout-key-for-the-a11y-test-32",)
ACCOUNTS = {"viewer": ("vic", "vic-watches-only"), "supervisor": ("sam", "sam-supervises-9"),
            "admin": ("ada", "ada-admin-pass-1")}  # fmt: skip
HALF = {"ga": 50.0, "beta": 50.0}
CANARY = Dialplan.model_validate({"name": "canary", "match": ["5000"], "dialect": "rollout"})  # ga | beta (safe)
FRESH = Dialplan.model_validate({"name": "fresh", "match": ["5001"], "dialect": "rollout"})
WIDTHS = (800, 1400)
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def _say(store: CallStore, clock: Clock, call_id: str, reports: list[ev.Report], **who: str) -> None:
    listener = store.listener_for(call_id, **who)
    for report in reports:
        clock.now += 1.0
        listener(report)


def _calls(store: CallStore, gone: CallStore, clock: Clock) -> None:
    bye = ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER)
    checks = json.dumps([{"name": "disclosure", "passed": True, "detail": "said at once"},
                         {"name": "never_say", "passed": False, "detail": "the agent said 'guaranteed'"}])  # fmt: skip
    for i in range(4):  # ended first: the live calls' durations stay short
        after = [ev.PostCallDone("ok", "refund", "The caller wants a refund for order 4417."),
                 ev.ChecksDone(2, "never_say", checks)] if i % 2 else [ev.PostCallDone("session lost")]  # fmt: skip
        _say(store, clock, f"c-ended-{i}",
             [ev.Answered(), ev.CallerSaid("I want my money back", "i1"), ev.AgentSaid("It is guaranteed.", "i2"),
              *after, bye],
             caller=f"+1555000{i:04d}", called="5000", original_called="+15550009999", dialplan="canary",
             variant="ga" if i % 2 else "beta", dialect="ga", model="gpt-realtime")  # fmt: skip
    clock.now = NOW - 30
    _say(store, clock, "c-live-desk",
         [ev.Answered(), ev.CallerSaid("what time do you open", "i1"), ev.AgentSaid("We open at nine.", "i2"),
          ev.HoldStarted()],
         caller="+15550001111", called="4000", dialplan="desk", variant="ga", dialect="ga",
         model="gpt-realtime-2.1-mini")  # fmt: skip
    _say(store, clock, "c-live-canary",
         [ev.Answered(), ev.SessionLost(None, 1006, "gone", True), ev.TransferStarted("sip:desk@pbx")],
         caller="+15550002222", called="5000", dialplan="canary", variant="beta", dialect="beta",
         model="gpt-4o-realtime-preview")  # fmt: skip
    _say(gone, clock, "c-live-lost", [ev.Answered(), ev.CallerSaid("hello?", "i1")],
         caller="+15550003333", called="4000", dialplan="desk", variant="ga", dialect="ga",
         model="gpt-realtime")  # fmt: skip


def _outcome(rng: random.Random, i: int, variant: str) -> dict[str, Any]:
    t = NOW - 86400 + 120.0 * i
    failed = rng.random() < (0.3 if variant == "ga" else 0.02)
    return {"t": t, "started": t - 30, "call_id": f"call-{i}", "caller": f"caller-{i}", "variant": variant,
            "epoch": epoch_of(HALF, False), "shares": {"ga": 0.5, "beta": 0.5},
            "outcome": "connect_failure" if failed else "ok", "transferred": False, "abandoned": False,
            "handle_time_s": 30.0, "greeting_ms": None if failed else 800 * math.exp(0.4 * rng.gauss(0, 1)),
            "first_reply_ms": None, "cost_usd": None, "repeat": False, "disposition": None}  # fmt: skip


async def _rollouts(client: aioredis.Redis, rollouts: RolloutStore) -> None:
    rng = random.Random(3)
    for plan in ("canary", "fresh"):
        await rollouts.set_flag(plan, {"weights": HALF}, "qa", "half on GA")
    for i in range(300):
        await records.append(client, "canary", _outcome(rng, i, "ga" if i % 2 else "beta"), sign_key=KEY)
    for i in range(6):
        await records.append(client, "fresh", _outcome(rng, i, "ga" if i % 2 else "beta"), sign_key=KEY)
    for outcome in ("connect_failure", "connect_failure", "ok"):  # the health window, two saved by the fallback
        await rollouts.record_call("canary", "ga", {"outcome": outcome, "fallback": outcome != "ok"})


async def _audits(client: aioredis.Redis) -> None:
    await action_audit(client, "whisper", "sam", "c-live-desk", request="r-1", text="offer the refund")
    await action_audit(client, "whisper", "sam", "c-live-desk", request="r-1", event="outcome", worker="w-a11y")
    await action_audit(client, "hangup", "sam", "c-ended-1", request="r-2")
    await listen.audit(client, "start", "sam", "c-live-desk", caller="+*******1111")
    await listen.audit(client, "stop", "sam", "c-live-desk", caller="+*******1111", seconds=12, reason="listener left")


@dataclass
class Console:
    url: str
    http: aiohttp.ClientSession
    base: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def console(redis_url: str) -> AsyncIterator[Console]:
    clock = Clock(NOW - 600)
    tuning = StoreTuning(reap_interval_s=None)
    store = CallStore(redis_url, worker="w-a11y", clock=clock, tuning=tuning)
    gone = CallStore(redis_url, worker="w-gone", clock=clock, tuning=tuning)
    await store.start()
    await gone.start()
    _calls(store, gone, clock)
    assert await store.flush() and await gone.flush()
    client = aioredis.from_url(redis_url, decode_responses=True)
    specs = {p.name: p.rollout_spec for p in (CANARY, FRESH)}
    rollouts = RolloutStore(client=client, specs=specs, rollout_keys=KEY)  # type: ignore[arg-type]
    await _rollouts(client, rollouts)
    await _audits(client)
    users, tokens = Users(), {}
    for role, (name, password) in ACCOUNTS.items():
        users = add_user(users, name, role, password)
        users, tokens[role] = add_token(users, name)
    app = create_app(token=None, redis=client, rollouts=rollouts, dialplans=[CANARY, FRESH],
                     lost_workers=lambda: {"w-gone"}, options=ConsoleOptions(users=users))  # fmt: skip
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        base = str(server.make_url("")).rstrip("/")
        kill = {"kill": True, "reason": "ga answers in the wrong language"}
        async with http.put(f"{base}/api/rollout/fresh/kill", json=kill,
                            headers={"Authorization": f"Bearer {tokens['admin']}"}) as r:  # fmt: skip
            assert r.status == 200, await r.text()
        yield Console(base + "/", http, base, tokens)
    await client.aclose()
    await store.close()
    await gone.close()


LOADED = """(() => {
  const rows = (id) => document.querySelectorAll(`#${id} tbody tr`).length;
  return rows('calls') >= 3 && rows('ended') >= 4 && rows('actions-audit') >= 2 && rows('listen-audit') >= 2
    && rows('audit') >= 3 && rows('plans') >= 1 && document.querySelector('#rollouts .experiment .verdict') !== null;
})()"""


async def _scheme(page: Page, scheme: str) -> None:
    """The browser's colour scheme (``prefers-color-scheme``), and the console following it."""
    await page.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    assert await page.eval(f"matchMedia('(prefers-color-scheme: {scheme})').matches") is True


async def _signed_in(browser: Browser, console: Console, role: str, scheme: str = "light") -> Page:
    page = await browser.page(own_context=True)
    await _scheme(page, scheme)
    name, password = ACCOUNTS[role]
    await sign_in(page, console.url, password, name=name)
    await page.wait_for(LOADED, 20)
    await page.eval("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    return page


async def _key(page: Page, key: str) -> None:
    """A key pressed on the focused element, as a keyboard does (``Enter``, ``Tab``)."""
    codes = {"Enter": 13, "Tab": 9, "Escape": 27}
    common = {"key": key, "code": key, "windowsVirtualKeyCode": codes[key]}
    down = {"type": "keyDown", **common, **({"text": "\r"} if key == "Enter" else {})}
    await page.send("Input.dispatchKeyEvent", down)
    await page.send("Input.dispatchKeyEvent", {"type": "keyUp", **common})


async def _views(page: Page, role: str, width: int) -> list[dict[str, Any]]:
    """axe on each view a person of ``role`` meets, in turn."""
    found = await run_axe(page, f"{role} at {width} px: the console")
    await page.eval("document.querySelector('#calls tbody tr[data-call-id=\"c-live-desk\"]').focus()")
    await _key(page, "Enter")
    await page.wait_for("document.getElementById('detail-state').textContent === 'live'")
    await page.wait_for("document.querySelectorAll('#transcript li').length >= 2")
    if role != "viewer":
        await page.click("#action-hangup")
        await page.wait_for("!document.getElementById('action-confirm').hidden")
    found += await run_axe(page, f"{role} at {width} px: a live call open" + ("" if role == "viewer" else ", asked"))
    if role != "viewer":
        await page.click("#action-no")
    await page.click("#ended tbody tr[data-call-id='c-ended-1']")
    await page.wait_for("document.getElementById('detail-state').textContent.startsWith('ended')")
    found += await run_axe(page, f"{role} at {width} px: an ended call open")
    await page.click("#detail-close")
    if role == "supervisor":
        kill = "article[data-dialplan=canary] form.kill"
        await page.click(f"{kill} button.ask")
        await page.wait_for(f"!document.querySelector('{kill} .confirm').hidden")
        found += await run_axe(page, f"{role} at {width} px: the kill switch asked")
        await page.click(f"{kill} button.no")
    if role == "viewer":
        await page.type("#ended-q", "no call says this")
        await page.wait_for("!document.getElementById('ended-empty').hidden")
        await page.type("#actions-audit-who", "nobody")
        await page.wait_for("document.getElementById('actions-audit-note').textContent === 'No action matches.'")
        found += await run_axe(page, f"{role} at {width} px: searches that find nothing")
    if role == "admin":
        editor = "article[data-dialplan=canary] form.editor"
        await page.type(f"{editor} input[name='weights:ga']", "30")
        await page.type(f"{editor} input[name=reason]", "less on GA")
        await page.click(f"{editor} button.review-button")
        await page.wait_for(f"document.querySelector('{editor} .review li') !== null")
        found += await run_axe(page, f"{role} at {width} px: a change reviewed")
    return found


@pytest.mark.skipif(axe_missing() is not None, reason=axe_missing() or "")
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", WIDTHS)
async def test_axe_finds_nothing_on_any_view_for_any_role(console: Console, width: int, scheme: str) -> None:
    """Every view, each role, at each width, in the browser's light and dark schemes."""
    assert axe_version().startswith("4."), axe_version()
    found: list[dict[str, Any]] = []
    problems: list[str] = []
    async with Browser(width=width, height=900) as browser:
        page = await browser.page(own_context=True)
        await _scheme(page, scheme)
        await page.goto(console.url)
        await page.wait_for("!document.getElementById('signin').hidden")
        background = await page.eval("getComputedStyle(document.body).backgroundColor")
        assert background == {"light": "rgb(246, 247, 249)", "dark": "rgb(17, 21, 26)"}[scheme], background
        found += await run_axe(page, f"at {width} px, {scheme}: sign-in")
        for role in ACCOUNTS:
            page = await _signed_in(browser, console, role, scheme)
            found += await _views(page, role, width)
            problems += page.problems
    assert not found, f"axe-core {axe_version()}:\n{told(found)}"
    assert not problems, problems


async def test_enter_on_a_live_row_takes_the_focus_into_the_call_and_close_gives_it_back(console: Console) -> None:
    row = "#calls tbody tr[data-call-id='c-live-canary']"
    async with Browser() as browser:
        page = await _signed_in(browser, console, "supervisor")
        await page.eval(f"document.querySelector({json.dumps(row)}).focus()")
        await _key(page, "Enter")
        await page.wait_for("document.getElementById('detail-state').textContent === 'live'")
        assert await page.text("#detail-id") == "c-live-canary"
        assert await page.eval("document.activeElement.id") == "detail-heading"
        await _key(page, "Tab")  # the next stop is the call's own first button
        assert await page.eval("document.activeElement.id") == "listen"
        await page.eval("document.getElementById('detail-close').focus()")
        await _key(page, "Enter")
        await page.wait_for("document.getElementById('detail-panel').hidden")
        assert await page.eval("document.activeElement.dataset.callId") == "c-live-canary"
        # Enter on a row's own button acts (whisper: type first), and the row does not open the call over it
        await page.eval(f"document.querySelector({json.dumps(row + ' button.whisper')}).focus()")
        await _key(page, "Enter")
        await page.wait_for("document.activeElement.id === 'whisper-text'")
        assert await page.text("#action-state") == "Type what the agent should do, then press Whisper."
        # a question takes the focus on its harmless answer, and Escape answers it
        await page.eval(f"document.querySelector({json.dumps(row + ' button.hangup')}).focus()")
        await _key(page, "Enter")
        await page.wait_for("!document.getElementById('action-confirm').hidden")
        assert await page.eval("document.activeElement.id") == "action-no"
        await _key(page, "Escape")
        await page.wait_for("document.getElementById('action-confirm').hidden")
        assert await page.text("#action-state") == "Not sent."
        assert page.problems == [], page.problems


async def test_a_viewers_live_rows_end_with_their_last_cell(console: Console) -> None:
    async with Browser() as browser:
        page = await _signed_in(browser, console, "viewer")
        rows = await page.eval(
            "[...document.querySelectorAll('#calls tbody tr')].map((tr) => ({id: tr.dataset.callId,"
            " text: tr.textContent, loose: [...tr.childNodes].filter((n) => n.nodeType !== 1).length,"
            " last: tr.lastElementChild.className}))"
        )
        assert len(rows) == 3 and all(not r["loose"] and r["last"] == "last-line" for r in rows), rows
        assert not [r for r in rows if "null" in r["text"]], rows


async def test_every_audit_says_its_times_one_way(console: Console) -> None:
    async with Browser() as browser:
        page = await _signed_in(browser, console, "supervisor")
        times = await page.eval(
            "Object.fromEntries(['#actions-audit td.when', '#listen-audit td.when', '#audit td.when',"
            " '#ended td.ended-at'].map((s) => [s, [...document.querySelectorAll(s)].map((td) => td.textContent)]))"
        )
        assert all(times.values()), times
        odd = {where: [t for t in found if not UTC_TIME.match(t)] for where, found in times.items()}
        assert not any(odd.values()), odd
        held = await page.text("article[data-dialplan=fresh] form.kill p.holder")
        assert re.fullmatch(r"Held by ada \(admin\) since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.", held), held
        assert await page.eval("[...document.querySelectorAll('.zone')].map((z) => z.textContent)") == ["UTC"] * 4

        # -- the one clock setting: this browser's zone, named in every header and note, on every screen
        await page.send("Emulation.setTimezoneOverride", {"timezoneId": "America/Chicago"})
        await page.eval_then_load(
            "const s = document.getElementById('clock'); s.value = 'local'; s.dispatchEvent(new Event('change'))"
        )
        await page.wait_for(LOADED, 20)
        zones = await page.eval("[...document.querySelectorAll('.zone')].map((z) => z.textContent)")
        assert zones == ["CST"] * 4, zones
        held = await page.text("article[data-dialplan=fresh] form.kill p.holder")
        assert re.fullmatch(r"Held by ada \(admin\) since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CST\.", held), held
        local = await page.eval("[...document.querySelectorAll('#audit td.when')].map((td) => td.textContent)")
        assert local and all(UTC_TIME.match(t) for t in local) and local != times["#audit td.when"], local
        await page.goto(console.url + "wallboard")
        await page.wait_for("window.__wallboard && window.__wallboard.updates > 0", 20)
        assert re.fullmatch(r"Updated \d\d:\d\d:\d\d CST", await page.text("#updated")), await page.text("#updated")


async def test_each_guardrails_reading_is_in_view_at_800_px(console: Console) -> None:
    async with Browser(width=800, height=900) as browser:
        page = await _signed_in(browser, console, "viewer")
        words = await page.eval(
            "[...document.querySelectorAll('table.guardrails td.word')].map((td) => {"
            " const r = td.getBoundingClientRect(), box = td.closest('.table-box').getBoundingClientRect();"
            " return {word: td.textContent, left: r.left, right: r.right, box: [box.left, box.right]}; })"
        )
        assert len(words) >= 4 and all(w["word"] for w in words), words
        clipped = [w for w in words if w["left"] < w["box"][0] or w["right"] > w["box"][1] + 0.5]
        assert not clipped, clipped


@pytest.mark.parametrize("zoom", [2.0, 1.25, 1.0])
async def test_zoomed_in_the_header_covers_nothing_a_jump_leads_to(console: Console, zoom: float) -> None:
    """A 1280x800 screen zoomed in: at 200 %, 640x400 CSS px of two device pixels each (the header scrolls away);
    at 125 % and 100 % the header stays in view, over nothing a jump leads to."""
    async with Browser() as browser:
        page = await browser.page(own_context=True)
        size = {"width": round(1280 / zoom), "height": round(800 / zoom), "deviceScaleFactor": zoom}
        await page.send("Emulation.setDeviceMetricsOverride", {**size, "mobile": False})
        name, password = ACCOUNTS["admin"]
        await sign_in(page, console.url, password, name=name)
        await page.wait_for(LOADED, 20)
        share = await page.eval("document.querySelector('header').getBoundingClientRect().height / innerHeight")
        assert share < 0.25, share
        # the page itself never scrolls sideways (a wide table scrolls in its own box)
        assert await page.eval("document.documentElement.scrollWidth <= innerWidth"), "the page scrolls sideways"
        for panel in ("rollout-panel", "actions-audit-panel", "ended-panel"):
            await page.eval(f"document.querySelector('#views a[href=\"#{panel}\"]').focus()")
            await _key(page, "Enter")
            await page.wait_for(f"location.hash === '#{panel}'")
            seen = await page.eval(
                f"(() => {{ const h = document.querySelector('#{panel} h2'), r = h.getBoundingClientRect();"
                " const header = document.querySelector('header').getBoundingClientRect();"
                " const x = r.left + 20, y = r.top + r.height / 2;"
                " return {top: r.top, covered: !h.contains(document.elementFromPoint(x, y)),"
                " header: Math.max(0, Math.min(header.bottom, innerHeight) - Math.max(header.top, 0)) / innerHeight};"
                " })()"
            )
            assert seen["top"] >= 0 and not seen["covered"] and seen["header"] < 0.15, (panel, seen)
        assert page.problems == [], page.problems


async def test_the_health_tables_fit_at_1400_px_without_scrolling_sideways(console: Console) -> None:
    """At 1400 px a supervisor reads every rollout's health table whole: no table box scrolls sideways there."""
    async with Browser(width=1400, height=900) as browser:
        page = await _signed_in(browser, console, "admin")
        await page.wait_for("document.querySelectorAll('#rollout-panel .table-box table').length > 0")
        wide = await page.eval(
            "[...document.querySelectorAll('#rollout-panel .table-box')]"
            ".filter((b) => b.scrollWidth > b.clientWidth + 1)"
            ".map((b) => ({name: b.getAttribute('aria-label') || b.firstElementChild.className,"
            " scroll: b.scrollWidth, client: b.clientWidth}))"
        )
        assert wide == [], wide


async def test_with_a_call_open_at_1400_px_every_rows_actions_are_in_view(console: Console) -> None:
    """A supervisor with a call open beside the table still reaches Whisper and Hang up on every row: no button lies
    outside the table's box (behind a sideways scroll) or the window."""
    async with Browser(width=1400, height=900) as browser:
        page = await _signed_in(browser, console, "supervisor")
        await page.click("#calls tbody tr[data-call-id='c-live-desk']")
        await page.wait_for("document.getElementById('detail-state').textContent === 'live'")
        hidden = await page.eval(
            "(() => { const box = document.querySelector('#calls').closest('.table-box').getBoundingClientRect();"
            " const buttons = [...document.querySelectorAll('#calls td.row-actions button')];"
            " return buttons.map((b) => [b, b.getBoundingClientRect()])"
            ".filter(([b, r]) => r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.right > innerWidth)"
            ".map(([b, r]) => [b.textContent, r.left, r.right, box.left, box.right]); })()"
        )
        assert hidden == [], hidden
        assert page.problems == [], page.problems
