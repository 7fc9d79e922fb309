"""The console with real SIP calls, in a real Chromium: a call appears in the live table within a second of its
answer, its transcript (hostile markup included) shows as text while it is said, it leaves within a second of the
hang-up and its record stays readable; an operator moves the rollout's weights with a reason after reviewing the
change, the audit shows it and the next call gets the GA variant; a worker killed mid-call has its call's record
closed by the pool at once ("worker died"), and the row leaves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from _cdp import Browser
from _console_helpers import OPERATOR_TOKEN, caller_wav, console_stack, needs_browser_stack, sign_in, softphone

pytestmark = needs_browser_stack
PUSH_WITHIN_S = 1.0  # the bound: a change reaches the page within a second
CALLER_SAYS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> what are your hours?'
AGENT_SAYS = 'We are open <b>nine</b> to five & <img src=y onerror="window.__xss = 3"> on weekdays.'


# Runs in the page before its own scripts: notes where the live calls panel stood when its first snapshot arrived.
WATCH_CALLS_PANEL = """
new MutationObserver((_, observer) => {
  const panel = document.getElementById("calls-panel");
  if (!panel || panel.dataset.loaded !== "1") return;
  window.__callsShown = {
    top: panel.getBoundingClientRect().top,
    stripRows: document.querySelectorAll("#plans tbody tr").length,
  };
  observer.disconnect();
}).observe(document, { subtree: true, childList: true, attributes: true });
"""


def row(call_id: str, cell: str = "") -> str:
    """A JavaScript expression: the row of a call (or one of its cells), or null."""
    return f"document.querySelector('#calls tbody tr[data-call-id={json.dumps(call_id)}] {cell}')"


async def test_live_calls_transcripts_rollout_and_lost_worker(tmp_path: Path) -> None:
    play = caller_wav(tmp_path / "caller.wav")
    async with console_stack(tmp_path) as stack, Browser() as browser:
        page = await browser.page()
        await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_CALLS_PANEL})
        await sign_in(page, stack.url, OPERATOR_TOKEN, name="Dana")
        # the per-plan strip above the live calls has its rows before the calls show: no row moves when it fills
        shown, _ = await page.wait_for("window.__callsShown")
        assert shown["stripRows"] > 0, shown
        assert shown["top"] == await page.eval("document.getElementById('calls-panel').getBoundingClientRect().top")
        await page.wait_for("document.querySelector('article[data-dialplan=canary] tr[data-variant=ga] .share')")
        assert await page.text("article[data-dialplan=canary] tr[data-variant=ga] .share") == "0 %"
        assert await page.text("article[data-dialplan=canary] tr[data-variant=beta] .name") == "beta (safe)"
        calls_cell = "article[data-dialplan=canary] tr[data-variant=beta] td[data-key=calls]"
        assert await page.text(calls_cell) == "0"  # the health of each variant, in its row
        assert await page.eval("document.getElementById('calls-empty').hidden") is False

        # -- a call on the rollout dialplan (no flag stored: the safe variant, beta) whose caller and agent say markup
        stack.emulator.queue_next(annotations=[{"hears": CALLER_SAYS, "reply": {"text": AGENT_SAYS}}])
        call = asyncio.create_task(softphone(stack, "5000", play, seconds=10.0))
        call_id, appeared_at = await page.wait_for(
            "document.querySelector('#calls tbody tr[data-call-id]')?.dataset.callId", timeout=30
        )
        answered_at = await stack.entry_time(call_id, "answered")
        assert appeared_at - answered_at <= PUSH_WITHIN_S, (appeared_at, answered_at)
        assert await page.text(f"#calls tr[data-call-id='{call_id}'] .called") == "5000"
        assert await page.text(f"#calls tr[data-call-id='{call_id}'] .dialplan") == "canary"
        assert (await page.text(f"#calls tr[data-call-id='{call_id}'] .dialect")).startswith("beta")
        assert await page.text(f"#calls tr[data-call-id='{call_id}'] .status") == "live"

        # the detail, opened with a click while the call is live: both sides' lines arrive as they are said
        await page.click(f"#calls tbody tr[data-call-id='{call_id}']")
        await page.wait_for("document.getElementById('detail-state').textContent === 'live'")
        said = "[...document.querySelectorAll('#transcript li.{who} .line')].map((e) => e.textContent)"
        await page.wait_for(f"{said.format(who='caller')}.includes({json.dumps(CALLER_SAYS)})", timeout=20)
        await page.wait_for(f"{said.format(who='agent')}.includes({json.dumps(AGENT_SAYS)})", timeout=20)
        assert not call.done(), "the lines must show while the call is still going"
        assert await page.eval(row(call_id)) is not None
        last_line = await page.text(f"#calls tr[data-call-id='{call_id}'] .last-line")
        assert last_line in (f"Caller: {CALLER_SAYS}", f"Agent: {AGENT_SAYS}")
        # markup said on the phone is shown as text, never run or parsed
        assert await page.eval("document.querySelectorAll('main script, main img, main b').length") == 0
        assert await page.eval("window.__xss") is None
        # the phase timeline, the first reply (a caller-first plan: no greeting) and the per-turn latency
        phases = "[...document.querySelectorAll('#phases li')].map((li) => li.textContent)"
        await page.wait_for(f"{phases}.some((text) => text.includes('→ SPEAKING'))")
        first_reply = "document.getElementById('first-reply').textContent"
        found, _ = await page.wait_for(f"/^\\d+ ms$/.test({first_reply}) && {first_reply}")
        assert 0 < int(found.split()[0]) < 30_000
        assert await page.text("#greeting") == "–"
        turn = "document.querySelector('#latency tr[data-segment=turn] td:nth-child(2)')?.textContent"
        await page.wait_for(f"/\\d+ ms/.test({turn})")
        shot = await page.screenshot(tmp_path / "console.png", full_page=True)
        assert shot.startswith(b"\x89PNG") and len(shot) > 20_000

        # -- the hang-up: the row leaves within a second; the detail keeps the record from Redis
        gone = asyncio.create_task(page.wait_for(f"{row(call_id)} === null", timeout=30))  # watching from now on
        phone = await call
        assert phone["answered"], phone
        ended_at = float(await stack.call_field(call_id, "ended_at"))
        _, gone_at = await gone
        assert gone_at - ended_at <= PUSH_WITHIN_S, (gone_at, ended_at)
        await page.wait_for("document.getElementById('detail-state').textContent === 'ended: record from Redis'")
        assert await page.text("#detail-facts dd[data-field=phase]") == "ENDED"
        assert await page.text("#detail-facts dd[data-field=end_reason]")
        # closed and opened again from "Recently ended" (read from Redis, as every tab sees it): the record
        await page.click("#detail-close")
        ended_row = f"#ended tbody tr[data-call-id={json.dumps(call_id)}]"
        await page.wait_for(f"document.querySelector({json.dumps(ended_row)}) !== null", timeout=10)
        await page.click(ended_row)
        await page.wait_for("document.getElementById('detail-state').textContent === 'ended: record from Redis'")
        assert CALLER_SAYS in await page.eval(f"{said.format(who='caller')}")
        assert await page.text("#detail-id") == call_id

        # the finished call shows in the safe variant's health
        await page.wait_for(f"document.querySelector('{calls_cell}').textContent === '1'", timeout=10)

        # -- the operator moves canary's weights to the GA variant: a reason, a review of the change, then save
        card = "article[data-dialplan=canary]"
        await page.type(f"{card} input[name='weights:ga']", "100")
        await page.type(f"{card} input[name='weights:beta']", "0")
        await page.click(f"{card} button.review-button")
        await page.wait_for(f"document.querySelector('{card} .message').textContent === 'A reason is required.'")
        await page.type(f"{card} input[name=reason]", "canary <b>looks</b> healthy")
        await page.click(f"{card} button.review-button")
        reviewed = f"document.querySelector('{card} .review li[data-setting=weights]')?.textContent"
        review, _ = await page.wait_for(reviewed)
        assert review == "weights: ga: 0; beta: 100 → ga: 100; beta: 0"
        assert await page.text(f"{card} .review .shares") == "Shares after: ga 100 %, beta 0 %"
        _, flags = await stack.get("/api/rollout", token=OPERATOR_TOKEN)
        assert "canary" not in flags["flags"], "reviewing a change must not save it"
        await page.click(f"{card} button.save")
        audit = "document.querySelector('#audit tbody tr')"
        await page.wait_for(f"{audit}?.querySelector('.reason').textContent === 'canary <b>looks</b> healthy'")
        assert await page.eval(f"{audit}.querySelector('.who').textContent") == "Dana (admin, console)"
        assert "weights: ga: 0; beta: 100 → ga: 100; beta: 0" in await page.eval(f"{audit}.textContent")
        await page.wait_for(f"document.querySelector('{card} tr[data-variant=ga] .share').textContent === '100 %'")

        # -- the next call on canary gets GA; its worker dies mid-call: the pool closes its record, the row leaves
        call = asyncio.create_task(softphone(stack, "5000", play, seconds=30.0))
        second, _ = await page.wait_for(
            f"[...document.querySelectorAll('#calls tbody tr')].map((tr) => tr.dataset.callId)"
            f".find((id) => id !== {json.dumps(call_id)})",
            timeout=30,
        )
        assert (await page.text(f"#calls tr[data-call-id='{second}'] .dialect")).startswith("ga")
        talking = json.dumps(["listening", "caller speaking", "waiting for the agent", "agent speaking"])
        await page.wait_for(f"{talking}.includes({row(second, '.phase')}?.textContent)", timeout=20)
        await stack.call_field(second, "sip_dialog")  # stored: the restarted worker can hang the caller up
        os.kill(await stack.worker_pid(), signal.SIGKILL)
        await page.wait_for(f"{row(second)} === null", timeout=30)
        assert await stack.call_field(second, "end_reason") == "worker died"  # closed by the pool (serve/lost.py)
        phone = await call
        assert phone["answered"], phone
        assert page.problems == [], page.problems
