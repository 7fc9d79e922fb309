"""Take-over in a real Chromium with a fake microphone (a 1.4 kHz tone file) on a real SIP call: the supervisor
confirms "Take over" in the page; the caller's phone then hears the tone and no agent audio while the call is
taken over, though the caller goes on speaking, and the model hears silence; after "Hand back" the agent answers
the caller again. The audit names the account for the take-over, its audio and the hand-back. A viewer can neither
take over nor send audio. The phone's recording is what the caller heard."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import wave
from pathlib import Path

import numpy as np
from _cdp import Browser, Page
from _console_helpers import Stack, caller_wav, console_stack, fetch, needs_browser_stack, sign_in

from bridge.audio.analysis import tone
from bridge.audio.wav import read_wav
from bridge.store import keys
from bridge.supervisor.accounts import Users, add_user, save_users
from bridge.supervisor.action_audit import fold

pytestmark = needs_browser_stack
SAM, VERA = ("sam", "sam-supervises-9"), ("vera", "vera-views-only-7")
MIC_HZ = 1400.0  # the fake microphone's tone
AGENT_HZ = 600.0  # the emulator's reply tone
WINDOW = 800  # samples: 100 ms at 8 kHz
CALL_S = 15.0  # the caller hangs up then: every step below takes about half of it
TALK_SAMPLES = 16000 * 2  # the page sends 2 s of microphone before handing back


def mic_wav(path: Path) -> Path:
    """A 16 kHz mono PCM16 tone file for ``--use-file-for-fake-audio-capture`` (Chromium loops it)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(tone(MIC_HZ, 2.0, dbfs=-12.0, rate=16000))
    return path


def longest_silence_s(pcm: bytes, rate: int, cyclic: bool = False) -> float:
    """The longest run of digital silence (every sample 0) in ``pcm``, in seconds (``cyclic``: it loops)."""
    zero = np.frombuffer(pcm, dtype="<i2") == 0
    if cyclic:
        zero = np.concatenate([zero, zero])
    edges = np.flatnonzero(np.diff(np.concatenate([[0], zero.astype(np.int8), [0]])))
    runs = edges[1::2] - edges[::2]
    return float(runs.max()) / rate if len(runs) else 0.0


def windows(pcm: bytes) -> list[tuple[float, float]]:
    """Per 100 ms of what the caller heard: the spectrum's magnitude at the microphone's and at the agent's tone."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    out = []
    for at in range(0, len(samples) - WINDOW + 1, WINDOW):
        spectrum = np.abs(np.fft.rfft(samples[at : at + WINDOW] * np.hanning(WINDOW)))
        out.append((float(spectrum[round(MIC_HZ * WINDOW / 8000)]), float(spectrum[round(AGENT_HZ * WINDOW / 8000)])))
    return out


async def entries(stack: Stack, call_id: str) -> list[dict[str, str]]:
    return [fields for _, fields in await stack.client.xrange(keys.call_events(call_id))]


async def wait_entry(stack: Stack, call_id: str, after: str, kind: str, within: float = 15.0) -> None:
    """Wait for a ``kind`` entry in the call's stream after the supervisor's ``after`` entry."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen = await entries(stack, call_id)
        marks = [i for i, e in enumerate(seen) if e.get("kind") == "supervisor" and e.get("action") == after]
        if marks and any(e.get("kind") == kind for e in seen[marks[0] + 1 :]):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no {kind} after {after}: {[e.get('kind') for e in await entries(stack, call_id)]}")


async def take_over(page: Page, call_id: str) -> None:
    await page.click(f"#calls tbody tr[data-call-id='{call_id}']")
    await page.wait_for("document.getElementById('actions').hidden === false")
    await page.click("#action-takeover")
    await page.wait_for("document.getElementById('action-confirm').hidden === false")
    await page.click("#action-yes")
    await page.wait_for("document.getElementById('action-state').textContent.includes('talking to the caller')", 15)
    await page.wait_for("!document.getElementById('action-handback').hidden")


async def refusals(browser: Browser, stack: Stack, sam: Page, call_id: str) -> None:
    """A viewer may not take over nor send audio; the socket wants a known rate and an Upgrade."""
    vera = await browser.page(own_context=True)
    await sign_in(vera, stack.url, VERA[1], name=VERA[0])
    csrf = json.loads((await fetch(vera, "GET", "/auth/session"))[1])["csrf"]
    status, body = await fetch(vera, "POST", f"/api/calls/{call_id}/takeover", None, {"X-CSRF-Token": csrf})
    assert status == 403 and "needs the supervisor role" in json.loads(body)["error"], body
    assert (await fetch(vera, "GET", f"/api/calls/{call_id}/takeover/audio"))[0] == 403
    status, body = await fetch(sam, "GET", f"/api/calls/{call_id}/takeover/audio?rate=44100")
    assert status == 400 and json.loads(body)["field"] == "rate", body
    status, body = await fetch(sam, "GET", f"/api/calls/{call_id}/takeover/audio")
    assert status == 400 and "Upgrade" in json.loads(body)["error"], body
    assert vera.problems == [], vera.problems


async def test_a_supervisor_takes_over_from_the_microphone_and_hands_back(tmp_path: Path) -> None:
    users = add_user(add_user(Users(), SAM[0], "supervisor", SAM[1]), VERA[0], "viewer", VERA[1])
    save_users(tmp_path / "users.yaml", users)
    play, heard = caller_wav(tmp_path / "caller.wav", lead_in_s=1.0), tmp_path / "heard.wav"
    fake_mic = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic_wav(tmp_path / 'mic.wav')}")  # fmt: skip
    settings = {"users_file": str(tmp_path / "users.yaml")}
    async with console_stack(tmp_path, settings=settings) as stack, Browser(args=fake_mic) as browser:
        phone = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "call", f"sip:6000@127.0.0.1:{stack.sip_port}", "--play", str(play),
            "--loop", "--record", str(heard), "--hangup-after", str(CALL_S), "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        sam = await browser.page()
        await sign_in(sam, stack.url, SAM[1], name=SAM[0])
        call_id, _ = await sam.wait_for("document.querySelector('#calls tbody tr[data-call-id]')?.dataset.callId", 30)
        await stack.entry_time(call_id, "response_done")  # the agent has spoken (its greeting)

        await take_over(sam, call_id)
        taken = f"document.querySelector('#calls tr[data-call-id=\"{call_id}\"] .taken-over')"
        await sam.wait_for(f"{taken}?.textContent === ' taken over by sam'")  # every supervisor's live list says so
        deadline = time.monotonic() + 15
        while (await sam.eval("window.callbridgeTakeover.stats.samples")) < TALK_SAMPLES:
            assert time.monotonic() < deadline, await sam.eval("window.callbridgeTakeover.stats")
            await asyncio.sleep(0.2)
        await sam.click("#action-handback")
        await sam.wait_for("document.getElementById('action-state').textContent.startsWith('handback: done')")
        await sam.wait_for(f"{taken} === null")
        await wait_entry(stack, call_id, "handback", "response_done")  # the agent answered the caller again
        await refusals(browser, stack, sam, call_id)

        await asyncio.wait_for(phone.communicate(), 40)
        rows = fold([f for _, f in await stack.client.xrange(keys.CALL_ACTIONS_AUDIT)])  # each with its outcome
        audit = [(f["action"], f["who"], f.get("event", "")) for f in rows]
        model_heard = stack.emulator.sessions[0]
        timeline = [(e["kind"] + ":" + e.get("action", ""), float(e["t"])) for e in await entries(stack, call_id)]
        assert sam.problems == [], sam.problems

    assert audit[0] == ("takeover", "sam", ""), audit
    assert sorted(audit[1:]) == [("handback", "sam", ""), ("takeover-audio", "sam", "start"),
                                   ("takeover-audio", "sam", "stop")], audit  # fmt: skip
    # the model heard nothing of the caller while the call was taken over, though the caller spoke all along: its
    # input holds a run of silence longer than any the caller sent, as long as the take-over; and no speech start
    # from a second after the take-over (audio sent before it may still be judged) until the hand-back
    quiet = longest_silence_s(model_heard.input_audio, model_heard.input_rate)
    assert quiet >= longest_silence_s(read_wav(play), 8000, cyclic=True) + 1.0, quiet
    times = dict(reversed(timeline))
    taken, back = times["supervisor:takeover"], times["supervisor:handback"]
    starts = [t for kind, t in timeline if kind == "speech_started:"]
    assert not [t for t in starts if taken + 1.0 < t < back], (taken, back, starts)
    assert [t for t in starts if t > back], (back, starts)
    spectra = windows(read_wav(heard))
    mic = [i for i, (m, a) in enumerate(spectra) if m > 20 * max(a, 1.0) and m > 1e5]
    assert len(mic) >= 15, f"the caller heard {len(mic) * 0.1:.1f} s of the supervisor's tone"
    first, last = mic[0], mic[-1]
    agent_before = [i for i, (m, a) in enumerate(spectra[:first]) if a > 1e5 and a > 20 * max(m, 1.0)]
    agent_after = [i for i, (m, a) in enumerate(spectra[last + 1 :]) if a > 1e5 and a > 20 * max(m, 1.0)]
    assert agent_before and agent_after, "the agent spoke before the take-over and after the hand-back"
    inside = spectra[first + 2 : last - 1]
    leaked = [i for i, (m, a) in enumerate(inside) if a > 1e4 and a > m / 30]
    assert not leaked, f"agent audio while taken over: windows {leaked} of {len(inside)}"
