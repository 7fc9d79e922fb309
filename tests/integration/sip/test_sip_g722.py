"""G.722 (ITU-T G.722, 16 kHz wideband; RFC 3551 §4.5.2: ``G722/8000`` on the wire, payload type 9) is bridged:
a caller that offers nothing else is answered, and its audio goes through the 8 kHz bridge resampled both ways.

The caller is baresip (its own G.722 codec, its own SDP) offering G.722 only; the gateway plays a 600 Hz tone and
records what it hears. What baresip decoded (16 kHz) carries the tone at 600 Hz, not at 300 or 1200 Hz (a rate
mistaken by two), and the gateway heard baresip's 1 kHz tone at 1 kHz.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _baresip import BARESIP, SKIP_REASON, Baresip
from _helpers import GatewayApp, describe

from bridge.audio.wav import read_wav

pytestmark = [pytest.mark.integration, pytest.mark.skipif(BARESIP is None, reason=SKIP_REASON)]

AGENT_HZ, CALLER_HZ = 600.0, 1000.0
WIDE, NARROW = 16000, 8000
TALK_S = 3.0


def _peak_hz(pcm: bytes, rate: int) -> float:
    """The strongest frequency of ``pcm`` (PCM16 mono at ``rate``), to within a hertz."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=max(len(x), rate)))
    return float(np.argmax(spectrum) * rate / max(len(x), rate))


def _caller_wav(path: Path) -> Path:
    t = np.arange(int(120 * WIDE)) / WIDE  # outlasts the call: baresip hangs up when its file ends
    with wave.open(str(path), "wb") as out:  # at G.722's own rate: baresip resamples nothing
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WIDE)
        out.writeframes((0.2 * 32767 * np.sin(2 * np.pi * CALLER_HZ * t)).astype("<i2").tobytes())
    return path


async def _g722_call(tmp: Path, port: int) -> tuple[bytes, dict[str, Any]]:
    async with Baresip(tmp, _caller_wav(tmp / "caller.wav"), codecs=["G722/16000/1"]) as phone:
        assert (await phone.command("dial", f"sip:100@127.0.0.1:{port}"))["ok"], phone.log_tail()
        established = await phone.event("CALL_ESTABLISHED", 15)
        await asyncio.sleep(TALK_S)  # real time: the audio itself is what is tested
        heard = phone.heard()
        assert (await phone.command("hangup"))["ok"]
        await phone.event("CALL_CLOSED")
    return heard, established


async def test_a_g722_only_caller_is_answered_and_both_sides_hear_the_right_pitch(tmp_path: Path) -> None:
    recordings = tmp_path / "rec"
    recordings.mkdir()
    app = GatewayApp("--mode", "tone", "--tone-hz", str(AGENT_HZ), "--record-dir", str(recordings))
    try:
        heard, _established = await _g722_call(tmp_path, app.port)
    finally:
        gateway = app.stop()
    assert gateway.returncode == 0, describe(gateway)
    assert gateway.report is not None
    (call,) = gateway.report["calls"]
    assert call["codec"] == "G722", call
    assert gateway.report["rejected"] == {}
    # what the caller heard: the 600 Hz tone, decoded at G.722's 16 kHz (one second of it, after the start)
    second = heard[2 * WIDE : 2 * WIDE + 2 * WIDE]
    assert len(second) == 2 * WIDE, len(heard)
    assert abs(_peak_hz(second, WIDE) - AGENT_HZ) <= 5, _peak_hz(second, WIDE)
    # what the gateway heard: the caller's 1 kHz tone, at the bridge's 8 kHz
    recorded = read_wav(call["recording"])
    assert len(recorded) >= 2 * 2 * NARROW, len(recorded)
    middle = recorded[2 * NARROW : 2 * NARROW + 2 * NARROW]
    assert abs(_peak_hz(middle, NARROW) - CALLER_HZ) <= 5, _peak_hz(middle, NARROW)
