"""Listen-in in a real Chromium with a real SIP call: an operator hears both sides of the call mixed (the agent's
tone and, quieter, the caller's, each at its own frequency, in the samples the page received), the audit shows who
listened to which call and when it stopped, the tap stops when the listener leaves, the page can send nothing to the
call, and the end of the call ends the listen-in. A read-only supervisor has no listen button and the server refuses
them, and a page of another origin, too."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
from _cdp import Browser, Page
from _console_helpers import (
    OPERATOR_TOKEN,
    READONLY_TOKEN,
    Stack,
    console_stack,
    fetch,
    needs_browser_stack,
    sign_in,
    softphone,
)

from bridge.audio.analysis import peak_frequency, tone
from bridge.audio.wav import write_wav

pytestmark = needs_browser_stack
AGENT_HZ = 700.0  # the emulator's reply tone, at its default -12 dBFS peak
CALLER_HZ = 1300.0  # the caller's tone, at -40 dBFS: under the emulator's voice detection (-35 dBFS)
ELSEWHERE_HZ = 1900.0  # neither side's
TAPS = re.compile(r"^callbridge_listen_taps_active (\S+)$", re.M)
STATS = "window.callbridgeListen.stats"
STOPPED = "#listen-audit tbody tr[data-action=stop] .what"
CALL_S = 14.0  # long enough for every step below before the caller hangs up


def magnitude(samples: np.ndarray, hz: float) -> float:
    """The Hann-windowed spectrum's magnitude at ``hz`` (8 kHz samples)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(spectrum[round(hz * len(samples) / 8000)])


async def taps_active(stack: Stack) -> float:
    status, text = await stack.get("/metrics")
    assert status == 200
    found = TAPS.search(text)
    return float(found.group(1)) if found else 0.0


async def wait_taps(stack: Stack, value: float, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (now := await taps_active(stack)) != value:
        assert time.monotonic() < deadline, f"callbridge_listen_taps_active is {now}, not {value}"
        await asyncio.sleep(0.1)


async def api_audit(stack: Stack, match: Callable[[dict[str, str]], bool], within: float = 5.0) -> dict[str, str]:
    """The newest listen-in audit entry that ``match`` accepts, through the API."""
    deadline = time.monotonic() + within
    while True:
        status, body = await stack.get("/api/listen/audit", token=OPERATOR_TOKEN)
        assert status == 200, body
        found = [a for a in body["audit"] if match(a)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def open_call(page: Page) -> str:
    call_id, _ = await page.wait_for("document.querySelector('#calls tbody tr[data-call-id]')?.dataset.callId", 30)
    await page.click(f"#calls tbody tr[data-call-id='{call_id}']")
    await page.wait_for("document.getElementById('detail-state').textContent === 'live'")
    return str(call_id)


async def audit_row(page: Page, call_id: str, action: str) -> str:
    selector = f"#listen-audit tbody tr[data-call-id={json.dumps(call_id)}][data-action={action}]"
    await page.wait_for(f"document.querySelector('{selector}')")
    return await page.text(selector)


async def test_listen_in_plays_both_sides_audits_and_stops(tmp_path: Path) -> None:
    play = tmp_path / "caller.wav"
    write_wav(play, tone(CALLER_HZ, CALL_S, dbfs=-40.0))
    async with console_stack(tmp_path) as stack, Browser() as browser:
        operator = await browser.page()
        await sign_in(operator, stack.url, OPERATOR_TOKEN, name="Dana")
        watcher = await browser.page(own_context=True)
        await sign_in(watcher, stack.url, READONLY_TOKEN, name="Sam")
        # the agent greets with a long tone; the caller's tone goes on to the hang-up
        stack.emulator.queue_next(settings={"tone_hz": AGENT_HZ, "min_reply_ms": 6000, "max_reply_ms": 6000})
        call = asyncio.create_task(softphone(stack, "6000", play, seconds=CALL_S))
        call_id = await open_call(operator)
        assert await taps_active(stack) == 0  # nobody listens: no tap runs

        # -- the operator listens: samples arrive, the agent's tone dominates, the caller's is in the mix
        assert await operator.eval("document.getElementById('listen').hidden") is False
        await operator.click("#listen")
        await operator.wait_for(f"{STATS}.state === 'listening' && {STATS}.frames >= 40", timeout=10)
        samples = np.array(await operator.eval("window.callbridgeListen.samples(4000)"), dtype=np.float64)
        assert len(samples) == 4000
        peak = peak_frequency(samples)
        assert peak is not None and abs(peak - AGENT_HZ) < 10, peak
        rms_dbfs = 20 * np.log10(np.sqrt(np.mean(samples**2)))
        assert -20 < rms_dbfs < -10, rms_dbfs  # the agent's -12 dBFS peak tone, not a whisper, not clipped
        assert magnitude(samples, CALLER_HZ) > 10 * magnitude(samples, ELSEWHERE_HZ)  # both sides, mixed
        stats = await operator.eval(STATS)
        assert stats["sides"] == {"type": "sides", "caller": True, "agent": True, "caller_offloaded": False}, stats
        assert stats["context"] == "running", stats  # played through Web Audio, not only received
        assert "caller + agent" in await operator.text("#listen-state")
        await wait_taps(stack, 1)
        started = await audit_row(operator, call_id, "start")
        assert "Dana (admin, console)" in started and "started" in started

        # -- the read-only supervisor: no button, and the server refuses them (plain GET and WebSocket alike)
        await watcher.click(f"#calls tbody tr[data-call-id='{call_id}']")
        await watcher.wait_for("document.getElementById('detail-state').textContent === 'live'")
        assert await watcher.eval("document.getElementById('listen').hidden") is True
        status, body = await fetch(watcher, "GET", f"/api/calls/{call_id}/listen")
        refusal = {"error": "forbidden: to listen in needs the supervisor role (viewer here)"}
        assert (status, json.loads(body)) == (403, refusal)
        refused = await watcher.eval(f"""new Promise((resolve) => {{
            const ws = new WebSocket(`ws://${{location.host}}/api/calls/{call_id}/listen`);
            ws.onopen = () => resolve('opened'); ws.onclose = (e) => resolve(`closed ${{e.code}}`); }})""")
        assert refused == "closed 1006", refused
        # ... and a page of another origin, with the operator's cookie
        cookie = {c["name"]: c["value"] for c in await operator.cookies()}
        async with aiohttp.ClientSession(cookies=cookie) as http:
            url = f"{stack.url}api/calls/{call_id}/listen"
            async with http.get(url, headers={"Origin": "http://evil.example"}) as r:
                assert r.status == 403 and "Origin" in (await r.json())["error"]

        # -- nothing from a page reaches the call: a listen-in that sends is closed at once
        sent = await operator.eval(f"""new Promise((resolve) => {{
            const ws = new WebSocket(`ws://${{location.host}}/api/calls/{call_id}/listen`);
            ws.onopen = () => ws.send(new Uint8Array(320).buffer);
            ws.onclose = (e) => resolve(`${{e.code}} ${{e.reason}}`); }})""")
        assert sent == "1008 listen-in is receive-only", sent
        audit = await api_audit(stack, lambda a: a["action"] == "stop" and "receive-only" in a["reason"])
        assert audit["who"] == "Dana (admin, console)" and audit["call_id"] == call_id, audit

        # -- the operator stops: the tap stops (nobody listens any more), the audit says so
        frames = (await operator.eval(STATS))["frames"]
        await operator.click("#listen")
        assert await operator.text("#listen") == "Listen"
        await wait_taps(stack, 0)
        stops = f"[...document.querySelectorAll('{STOPPED}')].map((e) => e.textContent)"
        await operator.wait_for(f"{stops}.some((text) => /listener left/.test(text))")
        assert (await operator.eval(STATS))["frames"] <= frames + 25  # nothing after the socket closed, give or take

        # -- listening again until the caller hangs up: the page is told, the audit says why it stopped
        await operator.click("#listen")
        await operator.wait_for(f"{STATS}.state === 'listening'")
        phone = await call
        assert phone["answered"], phone
        await operator.wait_for(f"{STATS}.state === 'ended'", timeout=10)
        await operator.wait_for("document.getElementById('listen-state').textContent === 'the call ended'")
        await operator.wait_for(f"{stops}.some((text) => /call ended/.test(text))")
        await wait_taps(stack, 0)
        assert await operator.eval("document.getElementById('listen').disabled") is True
        report = await stack.report(call_id)
        media = report["media"]
        if media["port"] == "native":  # the caller's audio went to the model from the media clock thread: the page
            assert media["uplink"]["clock_thread"] > 0, media  # heard it through the uplink's mirror
            # and no mirrored copy was sent to the model again: the loop sent only the frames of the echo guard's
            # pauses (the caller's tone over the agent's is an onset: judged frame by frame on the loop, one
            # resume_ms window at most per answer, 35 frames at the default 700 ms)
            pauses = report["echo"].get("paused", 0)
            assert pauses <= 2 and media["uplink"]["loop"] <= 40 * pauses, (media, report["echo"])
        assert operator.problems == [], operator.problems  # no CSP violation, no error
