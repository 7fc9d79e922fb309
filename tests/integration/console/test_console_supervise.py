"""A supervisor acts on a real SIP call from the console, in a real Chromium, as people do: they ask, then take their
time. A whisper from the call's detail and a hang-up from its live row are each confirmed only after 10 s, during
which the call's facts were refreshed at least three times (each refresh redraws the detail: the question must stay);
each Yes ends in a line saying it was done, the call's timeline names the supervisor, the hang-up ends the call and
the page says so, and the actions audit view lists both under the account. Meanwhile a second tab asks to hang up
the other call and never answers: after 30 s the question goes, the tab says nothing was sent, the call goes on.

The layout, on the same page: the live calls and the open call side by side at 1400x900, no table wider than its
card, the phase list showing its newest entry; at 800 px the page does not scroll sideways. Screenshots of both widths
are kept in ``tests/artifacts/console/`` (their paths are printed) for a person to look at; with
``CALLBRIDGE_UPDATE_SCREENSHOT=1`` the 1400 px one replaces the README's ``docs/console.png``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

from _cdp import Browser, Page
from _console_helpers import ROOT, Stack, caller_wav, console_stack, needs_browser_stack, sign_in

from bridge.store import keys
from bridge.supervisor.accounts import Users, add_user, save_users
from bridge.supervisor.action_audit import fold

pytestmark = needs_browser_stack
SAM = ("sam", "sam-supervises-9")
WAIT_S = 10.0  # how long the supervisor thinks before answering
GOODBYE_S = 3.0  # the plans' goodbye lead: a hang-up's BYE follows within it (the plan's default: 15 s)
REFRESHES = 3  # the call's facts the page got meanwhile, at least
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
README_PICTURE = ROOT / "docs" / "console.png"
WHISPER = "Offer the caller a callback tomorrow morning."

# Every table's box against its card, and the newest phase against its list.
LAYOUT = """(() => {
  const over = [];
  for (const table of document.querySelectorAll('main table')) {
    if (!table.offsetParent) continue;
    const card = table.closest('article, section'), box = table.parentElement;
    const t = table.getBoundingClientRect(), c = card.getBoundingClientRect();
    if (t.right > c.right + 0.5 || t.left < c.left - 0.5 || box.scrollWidth > box.clientWidth + 0.5) {
      over.push(`${table.id || table.className}: ${Math.round(t.width)} px in ${Math.round(c.width)} px`);
    }
  }
  const calls = document.getElementById('calls-panel').getBoundingClientRect();
  const detail = document.getElementById('detail-panel').getBoundingClientRect();
  const phases = document.getElementById('phases'), last = phases.lastElementChild.getBoundingClientRect();
  const list = phases.getBoundingClientRect();
  return {over, sideBySide: detail.left >= calls.right && Math.abs(detail.top - calls.top) < 2,
          newestPhaseShown: last.top >= list.top - 1 && last.bottom <= list.bottom + 1,
          phasesScroll: phases.scrollHeight > phases.clientHeight,
          scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth};
})()"""


async def phone(stack: Stack, number: str, play: Path) -> asyncio.subprocess.Process:
    """A caller who keeps talking (the recording, looped) until hung up."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:{number}@127.0.0.1:{stack.sip_port}", "--play", str(play),
        "--loop", "--hangup-after", "180", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def refreshes(page: Page) -> int:
    """The call's facts the page has received (each one redraws the detail)."""
    return sum(1 for e in page.sse if e["event"] == "call")


async def answer_after_a_while(page: Page, action: str) -> None:
    """The question is up: wait WAIT_S on the page's clock (and for REFRESHES of the call), it is still up; Yes."""
    _, asked_at = await page.wait_for(
        f"!document.getElementById('action-confirm').hidden"
        f" && document.getElementById('action-confirm').dataset.action === {json.dumps(action)}"
    )
    before = refreshes(page)
    # the countdown redraws the question every second: the page's clock is read at least that often
    await page.wait_for(f"Date.now() / 1000 >= {asked_at + WAIT_S}", timeout=WAIT_S + 20)
    assert refreshes(page) - before >= REFRESHES, (refreshes(page), before)
    assert await page.eval("document.getElementById('action-confirm').hidden") is False
    assert await page.eval("document.getElementById('action-confirm').dataset.action") == action
    await page.click("#action-yes")


async def check_layout(page: Page, width: int, *, shots: bool = True) -> dict[str, object]:
    await page.send(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )
    await page.wait_for(f"innerWidth === {width}")
    await page.eval("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    layout = dict(await page.eval(LAYOUT))
    if not shots:
        return layout
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.eval("window.scrollTo(0, 0)")
    await page.wait_for("scrollY === 0")
    for shot, whole in ((ARTIFACTS / f"console-{width}.png", False), (ARTIFACTS / f"console-{width}-page.png", True)):
        await page.screenshot(shot, full_page=whole)
        print(f"console screenshot at {width} px: {shot}")
    return layout


async def audited(stack: Stack) -> list[tuple[str, str]]:
    return [(f["action"], f["who"]) for f in fold([f for _, f in await stack.client.xrange(keys.CALL_ACTIONS_AUDIT)])]


ACTED = "document.querySelector('#call-actions li[data-action=ACTION]')"


async def whisper_from_the_detail(page: Page, stack: Stack) -> None:
    await page.type("#whisper-text", WHISPER)
    await page.click("#action-whisper")
    await answer_after_a_while(page, "whisper")
    await page.wait_for("document.getElementById('action-state').textContent.startsWith('whisper: done')", 15)
    await page.wait_for(f"{ACTED.replace('ACTION', 'whisper')}?.dataset.who === 'sam'", timeout=10)
    assert WHISPER in await page.eval(f"{ACTED.replace('ACTION', 'whisper')}.textContent")
    assert await audited(stack) == [("whisper", "sam")]


async def the_layout_fits(page: Page) -> None:
    """Side by side at 1400 px, nothing wider than its card, the newest phase in view; no sideways scroll at 800."""
    await page.wait_for("document.querySelectorAll('#phases li').length >= 12", timeout=90)
    wide = await check_layout(page, 1400)
    assert wide["sideBySide"] and wide["over"] == [], wide
    assert wide["newestPhaseShown"] and wide["phasesScroll"], wide
    if os.environ.get("CALLBRIDGE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACTS / "console-1400.png", README_PICTURE)
    narrow = await check_layout(page, 800)
    assert narrow["scrollWidth"] <= narrow["innerWidth"], narrow
    assert narrow["newestPhaseShown"], narrow
    await check_layout(page, 1400, shots=False)


async def hang_up_from_the_row(page: Page, stack: Stack, caller: asyncio.subprocess.Process, call_id: str) -> None:
    row = f"#calls tbody tr[data-call-id={json.dumps(call_id)}]"
    await page.click(f"{row} button.hangup")
    await answer_after_a_while(page, "hangup")
    await page.wait_for("document.getElementById('action-state').textContent.startsWith('hangup: done')", 15)
    out, _ = await asyncio.wait_for(caller.communicate(), 40)
    assert json.loads(out.decode().strip().splitlines()[-1])["hangup_by"] == "remote"
    assert (await stack.report(call_id))["end_reason"].startswith("ended by a supervisor (")
    await page.wait_for(
        "document.getElementById('action-state').textContent.endsWith('The call has ended.')"
        " && document.getElementById('detail-state').textContent.startsWith('ended')",
        timeout=15,
    )
    assert await page.eval(f"document.querySelector({json.dumps(row)})") is None
    await page.wait_for(f"{ACTED.replace('ACTION', 'hangup')}?.dataset.who === 'sam'", timeout=10)
    assert await audited(stack) == [("whisper", "sam"), ("hangup", "sam")]


async def the_audit_view_lists_both(page: Page) -> None:
    rows = "[...document.querySelectorAll('#actions-audit tbody tr')]"
    listed = f"{rows}.map((tr) => [tr.dataset.action, tr.querySelector('.who').textContent])"
    await page.wait_for(f"{rows}.length === 2", timeout=15)
    assert await page.eval(listed) == [["hangup", "sam"], ["whisper", "sam"]]
    await page.eval(
        "(() => { const s = document.getElementById('actions-audit-action'); s.value = 'hangup';"
        " s.dispatchEvent(new Event('input')); })()"
    )
    await page.wait_for(f"{rows}.length === 1")
    assert await page.eval(listed) == [["hangup", "sam"]]


async def ask_to_hang_up(page: Page, call_id: str) -> float:
    """Hang up asked on ``call_id`` from its live row; the page's time when the question was up."""
    await page.click(f"#calls tbody tr[data-call-id={json.dumps(call_id)}] button.hangup")
    _, asked_at = await page.wait_for(
        "!document.getElementById('action-confirm').hidden"
        " && document.getElementById('action-confirm').dataset.action === 'hangup'"
    )
    return asked_at


async def a_question_left_unanswered_expires(
    page: Page, other: asyncio.subprocess.Process, other_id: str, asked_at: float
) -> None:
    """Hang up asked on the other call (in a tab of its own) and never answered: after 30 s the question goes, the
    page says nothing was sent and the call goes on (the audit holds no third action: checked once both tabs are
    done, the first tab's whisper and hang-up happen meanwhile)."""
    expired = json.dumps("No answer within 30 s: the hang-up was not sent.")
    _, expired_at = await page.wait_for(f"document.getElementById('action-state').textContent === {expired}", 45)
    assert 29.0 <= expired_at - asked_at <= 35.0, (asked_at, expired_at)
    assert await page.eval("document.getElementById('action-confirm').hidden") is True
    assert await page.eval("document.getElementById('action-state').dataset.result") == "failed"
    row = f"#calls tbody tr[data-call-id={json.dumps(other_id)}]"
    assert await page.eval(f"document.querySelector({json.dumps(row)}) !== null") is True
    assert other.returncode is None, "the call a question expired on goes on"


async def test_a_supervisor_takes_time_to_confirm_and_the_page_fits(tmp_path: Path) -> None:
    save_users(tmp_path / "users.yaml", add_user(Users(), SAM[0], "supervisor", SAM[1]))
    play = caller_wav(tmp_path / "caller.wav", lead_in_s=2.0)
    settings = {"users_file": str(tmp_path / "users.yaml")}
    callers: list[asyncio.subprocess.Process] = []
    expiring: asyncio.Task[None] | None = None
    try:
        async with (
            console_stack(tmp_path, settings=settings, goodbye_s=GOODBYE_S) as stack,
            Browser(width=1400, height=900) as browser,
        ):
            page = await browser.page()
            await sign_in(page, stack.url, SAM[1], name=SAM[0])
            callers.append(caller := await phone(stack, "4000", play))
            try:
                call_id, _ = await page.wait_for(
                    "document.querySelector('#calls tbody tr[data-call-id]')?.dataset.callId", timeout=30
                )
                callers.append(other := await phone(stack, "6000", play))  # a second call beside it, left alone
                await page.wait_for("document.querySelectorAll('#calls tbody tr').length === 2", timeout=30)
                # a second tab asks to hang up the other call and leaves the question unanswered while this one acts
                second = await browser.page(new_window=True)  # the same browser: signed in already
                await second.goto(stack.url)
                await second.wait_for("!document.getElementById('console').hidden")
                for tab in (page, second):  # both in view: the first tab's layout is drawn, their timers run as usual
                    assert await tab.eval("document.visibilityState") == "visible"
                await second.wait_for("document.querySelectorAll('#calls tbody tr').length === 2", timeout=30)
                other_id = await second.eval(
                    "[...document.querySelectorAll('#calls tbody tr[data-call-id]')].map((tr) => tr.dataset.callId)"
                    f".find((id) => id !== {json.dumps(call_id)})"
                )
                asked_at = await ask_to_hang_up(second, other_id)
                expiring = asyncio.create_task(a_question_left_unanswered_expires(second, other, other_id, asked_at))
                await page.click(f"#calls tbody tr[data-call-id={json.dumps(call_id)}]")
                await page.wait_for("document.getElementById('actions').hidden === false")
                await whisper_from_the_detail(page, stack)
                await the_layout_fits(page)
                await hang_up_from_the_row(page, stack, caller, call_id)
                await the_audit_view_lists_both(page)
                assert other.returncode is None, "the other call goes on"
                await expiring
                for tab in (page, second):  # the hung-up call is gone from both tabs, the other one is listed
                    rows = (
                        "[...document.querySelectorAll('#calls tbody tr[data-call-id]')].map((tr) => tr.dataset.callId)"
                    )
                    await tab.wait_for(f"{rows}.length === 1", timeout=15)
                    assert await tab.eval(rows) == [other_id]
                assert await audited(stack) == [("whisper", "sam"), ("hangup", "sam")]  # the expiry sent nothing
                assert page.problems == [] and second.problems == [], (page.problems, second.problems)
            finally:
                if expiring is not None and not expiring.done():
                    expiring.cancel()
                    await asyncio.gather(expiring, return_exceptions=True)
        # the stack stops with the other call up: its caller, talking on, gets the BYE after the drain and the lead
    finally:
        for proc in callers:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
