"""A recorded call's consent prompt (bridge/call/consent.py), in a real session in virtual time: the bridge plays
the plan's WAV first, the model hears nothing of the caller meanwhile, the greeting is asked for only after it, and
the report says what became of it: played (through a caller talking over it), interrupted (barge-in allowed),
caller_hung_up, not_played."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _call_harness import Call, caller_wav, plan, run_call
from fakes.leg import SilentLeg

from bridge import events as ev
from bridge.audio.wav import write_wav
from bridge.call.recorder import RecordingLeg, consent_greeting, read_recording
from bridge.dialplan import Dialplan, Recording
from bridge.realtime.dialects import GA

PROMPT_HZ, GREETING_HZ = 1000, 400
WELCOME = {"greeting": {"text": "Welcome to ACME.", "tone_hz": GREETING_HZ, "duration_ms": 1000}}


def _prompt(tmp_path: Path, seconds: float = 1.0) -> Path:
    t = np.arange(int(seconds * 8000)) / 8000
    path = tmp_path / "consent.wav"
    write_wav(path, (np.sin(2 * np.pi * PROMPT_HZ * t) * 8000).astype("<i2").tobytes())
    return path


def _recorded(prompt: Path, barge_in: bool = False) -> Dialplan:
    recording = Recording(enabled=True, consent_audio=str(prompt), consent_barge_in=barge_in)
    return plan().model_copy(update={"recording": recording})


def _creates(call_result: Any) -> list[float]:
    """When each response.create reached the service (virtual seconds)."""
    return [e.t for e in call_result.trace.entries if e.who == "peer0" and e.what == "response.create"]


def _appends(call_result: Any) -> list[float]:
    return [e.t for e in call_result.trace.entries if e.who == "peer0" and e.what == "input_audio_buffer.append"]


def test_the_prompt_plays_first_through_a_caller_talking_over_it_then_the_greeting(tmp_path: Path) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.now > 0.3)
        call.phone.press("5")  # a key over the prompt: noted, passed nowhere
        call.phone.say(caller_wav()[:8000])  # half a second of voice over it
        await call.until(lambda: bool(call.phone.spans(since=1.2)), what="the greeting")
        await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, GA, dialplan=_recorded(_prompt(tmp_path)), annotations=WELCOME,
                      session_options={"consent_prompt": True})  # fmt: skip
    prompt, greeting = result.phone.spans()[:2]
    assert prompt.hz == PROMPT_HZ and prompt.ms == pytest.approx(1000, abs=25)  # all of it, first
    assert greeting.hz == GREETING_HZ and greeting.start >= prompt.end
    (asked,) = _creates(result)
    assert asked >= prompt.end - 0.05  # the greeting is asked for once the prompt has played out
    assert all(t >= prompt.end - 0.05 for t in _appends(result))  # the model heard nothing of the caller before
    report = result.report
    assert report.consent == {
        "status": "played", "played_ms": 1000, "duration_ms": 1000, "talked_over": True, "audio": "consent.wav"
    }  # fmt: skip
    assert report.dtmf == []  # the key over the prompt went nowhere
    (said,) = [r for _, r in report.reports if isinstance(r, ev.ConsentPrompt)]
    assert said.status is ev.ConsentStatus.PLAYED


def test_with_barge_in_a_key_cuts_the_prompt_and_the_call_is_not_recorded(tmp_path: Path) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.now > 0.4)
        call.phone.press("1")
        await call.until(lambda: bool(call.phone.spans(since=0.5)), what="the greeting")
        await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, GA, dialplan=_recorded(_prompt(tmp_path), barge_in=True), annotations=WELCOME,
                      session_options={"consent_prompt": True})  # fmt: skip
    prompt, greeting = result.phone.spans()[:2]
    assert prompt.hz == PROMPT_HZ and prompt.ms < 600 and greeting.hz == GREETING_HZ
    consent = result.report.consent
    assert consent is not None and consent["status"] == "interrupted" and consent["talked_over"] is True
    assert 300 <= consent["played_ms"] <= 600, consent


def test_a_caller_who_hangs_up_during_the_prompt_is_never_greeted(tmp_path: Path) -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.now > 0.5)
        call.phone.hang_up()

    result = run_call(scenario, GA, dialplan=_recorded(_prompt(tmp_path)), annotations=WELCOME,
                      session_options={"consent_prompt": True})  # fmt: skip
    consent = result.report.consent
    assert consent is not None and consent["status"] == "caller_hung_up", consent
    assert 300 <= consent["played_ms"] < 1000 and _creates(result) == []


def test_a_prompt_whose_file_is_gone_at_the_call_is_not_played_and_the_greeting_follows(tmp_path: Path) -> None:
    prompt = _prompt(tmp_path)
    recorded = _recorded(prompt)
    prompt.unlink()

    async def scenario(call: Call) -> None:
        await call.idle()
        call.phone.hang_up()

    result = run_call(scenario, GA, dialplan=recorded, annotations=WELCOME, session_options={"consent_prompt": True})
    assert result.report.consent is not None and result.report.consent["status"] == "not_played"
    (greeting,) = result.phone.spans()
    assert greeting.hz == GREETING_HZ


def test_the_model_is_told_the_prompt_was_heard_never_to_say_it() -> None:
    recorded = plan().model_copy(
        update={"recording": Recording(enabled=True, consent_audio="c.wav", consent_prompt="This call is recorded.")}
    )
    told = consent_greeting(recorded)
    assert told is not None and "First say" not in told and "Do not repeat it" in told
    assert '"This call is recorded."' in told and told.endswith(str(plan().greeting))


class _Tone:
    def pop_frame(self) -> bytes:
        return np.full(160, 3000, dtype="<i2").tobytes()


def _drive(rec: RecordingLeg, frames: int, clock: list[float]) -> None:
    leg = rec.leg
    assert isinstance(leg, SilentLeg) and leg.media is not None
    outbound, on_frame = leg.media
    for _ in range(frames):
        outbound.pop_frame()
        on_frame(np.full(160, -7, dtype="<i2").tobytes(), 0.0)
        clock[0] += 0.02


def test_a_recording_waits_for_the_prompt_and_starts_at_its_end(tmp_path: Path) -> None:
    clock = [10.0]
    rec = RecordingLeg(SilentLeg(), tmp_path / "rec", True, clock=lambda: clock[0], after_prompt=True)
    rec.start_media(_Tone(), lambda pcm, t: None)
    rec.listener(ev.Answered())
    _drive(rec, 50, clock)  # the prompt's second: nothing written, not even the directory
    assert not (tmp_path / "rec").exists()
    rec.listener(ev.ConsentPrompt(ev.ConsentStatus.PLAYED, 1000, 1000, False, "consent.wav"))
    _drive(rec, 25, clock)
    rec.listener(ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))
    caller, agent, header, notes = read_recording(tmp_path / "rec")
    assert len(caller) == len(agent) == 25 * 320  # from the prompt's end only
    assert header["consent"] == {
        "status": "played", "played_ms": 1000, "duration_ms": 1000, "talked_over": False, "audio": "consent.wav"
    }  # fmt: skip
    kinds = [(n["kind"], n["t_ms"]) for n in notes]
    assert kinds[0] == ("answered", pytest.approx(-1000.0)) and kinds[1] == ("consent", 0.0)


@pytest.mark.parametrize("status", [s for s in ev.ConsentStatus if s is not ev.ConsentStatus.PLAYED])
def test_a_prompt_not_played_out_means_no_recording(tmp_path: Path, status: ev.ConsentStatus) -> None:
    clock = [10.0]
    rec = RecordingLeg(SilentLeg(), tmp_path / "rec", True, clock=lambda: clock[0], after_prompt=True)
    rec.start_media(_Tone(), lambda pcm, t: None)
    _drive(rec, 20, clock)
    rec.listener(ev.ConsentPrompt(status, 400, 1000, True, "consent.wav"))
    _drive(rec, 20, clock)
    rec.listener(ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))
    assert rec.close() is None and not (tmp_path / "rec").exists()
