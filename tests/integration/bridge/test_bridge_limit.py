"""A dialplan's ``max_call_s`` through ``callbridge serve``'s worker: the softphone hears the agent's goodbye
(the emulator's reply tone, found by FFT) and then gets the worker's BYE; the worker's report says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from _bridge_helpers import (
    RATE,
    BridgeStack,
    active_regions,
    assert_tone,
    call,
    read_pcm_wav,
    segment,
    silence,
    write_pcm_wav,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

GOODBYE_HZ = 700.0
SHORT = {
    "name": "short",
    "match": ["3199"],
    "dialect": "ga",
    "greeting": None,
    "max_call_s": 5,
    "max_call_goodbye_s": 3,  # the goodbye asked 2 s after the answer
    "profile": {"instructions": "Test plan short.", "voice": "alloy", "audio_format": "pcm16"},
}


async def test_a_call_reaching_max_call_s_hears_the_goodbye_then_gets_a_bye(tmp_path: Path) -> None:
    play = tmp_path / "silence.wav"
    write_pcm_wav(play, silence(20.0))
    heard_wav = tmp_path / "heard.wav"
    async with BridgeStack(tmp_path, extra_plans=[SHORT]) as stack:
        stack.emu.queue_next(settings={"speed": 4.0, "tone_hz": GOODBYE_HZ, "min_reply_ms": 1000, "max_reply_ms": 1000})
        done = await call(stack.uri("3199"), play=play, record=heard_wav, timeout=30)
        assert done.returncode == 0, done.describe()
        assert done.report is not None
        report = await stack.report(done.report["call_id"])

    assert done.report["hangup_by"] == "remote"  # the worker's BYE, not the softphone's
    assert done.report["duration_s"] < 5.5
    assert report["end_reason"] == "max call duration"
    heard, rate = read_pcm_wav(heard_wav)
    assert rate == RATE
    (goodbye,) = active_regions(heard, rate)
    assert goodbye.start_s >= 1.8 and goodbye.end_s - goodbye.start_s >= 0.8
    assert_tone(segment(heard, rate, goodbye.start_s + 0.1, goodbye.end_s - 0.1), rate, GOODBYE_HZ)
    assert done.report["duration_s"] >= goodbye.end_s - 0.1  # the BYE came after the goodbye had played
