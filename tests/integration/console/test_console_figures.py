"""Numbers that agree, in a real Chromium (real ``serve``, Redis, the emulator and the softphone): the open call's
greeting, first reply, longest wait and longest dead air are its worker's own figures (its report line, its hash), the
plan strip's p95s are the same numbers, a caller-first plan has no greeting, a wait filled by the soft hold counts
whole, and the open call shows its marks as its stream raises them."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

from _console_helpers import (
    OPERATOR_TOKEN,
    Browser,
    Page,
    Stack,
    caller_wav,
    console_stack,
    needs_browser_stack,
    sign_in,
    softphone,
)

from bridge.store import keys

DETAIL_MARK = "document.querySelector('#detail-marks .mark[data-flag={flag}]')"


async def new_row(page: Page, seen: set[str], within: float = 30) -> str:
    ids = "[...document.querySelectorAll('#calls tbody tr')].map((tr) => tr.dataset.callId)"
    found, _ = await page.wait_for(f"{ids}.find((id) => !{json.dumps(sorted(seen))}.includes(id))", timeout=within)
    seen.add(found)
    return str(found)


def shown(ms: Any) -> str:
    """A figure as the page shows it (dom.js ``ms``: JavaScript's ``Math.round`` takes a half up, where Python's
    ``round`` takes it to the even neighbour, so 460.5 is "461 ms" on the page)."""
    return "–" if ms is None else f"{math.floor(float(ms) + 0.5)} ms"


async def first_reply_from_the_stream(stack: Stack, call_id: str) -> float:
    """The caller's first ``speech_stopped`` -> the next phase SPEAKING, from the call's stream entries."""
    stopped = None
    for _, fields in await stack.client.xrange(keys.call_events(call_id)):
        if fields.get("kind") == "speech_stopped" and stopped is None:
            stopped = float(fields["t"])
        elif fields.get("kind") == "phase" and fields.get("new") == "SPEAKING" and stopped is not None:
            return (float(fields["t"]) - stopped) * 1000
    raise AssertionError(f"no answered turn in {call_id}'s stream")


async def open_call(page: Page, call_id: str) -> None:
    await page.click(f"#calls tbody tr[data-call-id={json.dumps(call_id)}]")
    await page.wait_for("document.getElementById('detail-state').textContent === 'live'", timeout=10)


async def ended(page: Page) -> None:
    state = "document.getElementById('detail-state').textContent"
    await page.wait_for(f"{state} === 'ended: record from Redis' || {state} === 'ended'", timeout=30)


async def figures_shown(page: Page, report: dict[str, Any]) -> None:
    """The detail's figures are the report's (the hash's) numbers."""
    for element, field in (("greeting", "greeting_ms"), ("first-reply", "first_reply_ms"),
                           ("longest-wait", "longest_wait_ms"), ("longest-silence", "longest_silence_ms")):  # fmt: skip
        want = json.dumps(shown(report.get(field)))
        await page.wait_for(f"document.getElementById('{element}').textContent === {want}", timeout=10)


async def strip_shows(page: Page, plan: str, greeting: Any, first_reply: Any) -> None:
    cell = "document.querySelector('#plans tr[data-dialplan={plan}] td.{name}')?.textContent === {want}"
    both = (("greeting-p95", greeting), ("first-reply-p95", first_reply))
    await page.wait_for(" && ".join(cell.format(plan=plan, name=n, want=json.dumps(shown(ms))) for n, ms in both), 20)


@needs_browser_stack
async def test_greeting_first_reply_and_longest_wait_agree_everywhere_and_the_detail_shows_marks(
    tmp_path: Path,
) -> None:
    play = caller_wav(tmp_path / "caller.wav")
    late = caller_wav(tmp_path / "late.wav", lead_in_s=3.0)  # the caller lets the greeting finish
    seen: set[str] = set()
    async with console_stack(tmp_path) as stack, Browser() as browser:
        page = await browser.page()
        await sign_in(page, stack.url, OPERATOR_TOKEN, name="Dana")
        await page.wait_for("document.getElementById('calls-panel').dataset.loaded === '1'", timeout=20)

        # -- a caller-first plan (desk) whose answer comes 6 s late: the soft hold fills the wait
        stack.emulator.queue_next(1, {"delay_first_delta_ms": 6000})
        phone = asyncio.create_task(softphone(stack, "4000", play, seconds=16.0))
        slow = await new_row(page, seen)
        await open_call(page, slow)
        # the open call's marks come with its stream, as they are raised
        await page.wait_for(f"{DETAIL_MARK.format(flag='on_hold')} !== null", timeout=30)
        await page.wait_for(f"{DETAIL_MARK.format(flag='slow_agent')} !== null", timeout=30)
        assert (await phone)["answered"]
        report = await stack.report(slow)
        await ended(page)
        # no greeting; the first reply is the caller's end of turn -> the agent's audio, not the answer -> it
        assert report["greeting_ms"] is None and report["first_reply_ms"] is not None
        assert abs(report["first_reply_ms"] - await first_reply_from_the_stream(stack, slow)) < 250
        assert report["first_audio_ms"] - report["first_reply_ms"] > 500  # the caller's own turn is not in it
        # the longest wait is the whole wait, the hold included; the dead air stopped at the hold
        assert report["longest_wait_ms"] >= report["first_reply_ms"]
        assert report["longest_wait_ms"] - report["longest_silence_ms"] > 2000
        await figures_shown(page, report)
        assert await page.text("#detail-marks .mark[data-flag=on_hold]") == "on hold"
        for field in ("first_reply_ms", "longest_wait_ms", "longest_silence_ms"):
            assert float(await stack.call_field(slow, field)) == report[field], field
        assert not await stack.client.hget(keys.call(slow), "greeting_ms")
        await strip_shows(page, "desk", None, report["first_reply_ms"])
        await page.click("#detail-close")

        # -- an agent-first plan (line): the greeting, then the first reply to the caller's turn
        phone = asyncio.create_task(softphone(stack, "6000", late, seconds=12.0))
        greeted = await new_row(page, seen)
        await open_call(page, greeted)
        assert (await phone)["answered"]
        report = await stack.report(greeted)
        await ended(page)
        assert report["greeting_ms"] is not None and report["first_reply_ms"] is not None
        assert report["greeting_ms"] == report["first_audio_ms"]
        assert report["longest_wait_ms"] >= max(report["greeting_ms"], report["first_reply_ms"])
        await figures_shown(page, report)
        await strip_shows(page, "line", report["greeting_ms"], report["first_reply_ms"])
        await page.screenshot(tmp_path / "figures.png", full_page=True)
        assert page.problems == [], page.problems
