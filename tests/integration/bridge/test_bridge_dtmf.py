"""Done-when 4: DTMF. An RFC 4733 digit from the caller reaches the call session as an event (the worker report's
``dtmf`` list and timeline) and the model as a conversation item that names the digit, followed by
``response.create``; the model's answer to it then reaches the caller (600 Hz, found by FFT).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _bridge_helpers import (
    NUMBER,
    RATE,
    BridgeStack,
    active_regions,
    assert_tone,
    call,
    one_session,
    read_pcm_wav,
    segment,
    silence,
    timeline,
    write_pcm_wav,
)

# It measures audio timing to the frame: xdist group "cpu", never next to a CPU-heavy test (tests/conftest.py).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

DIGIT, AT_S = "7", 0.8
REPLY_HZ = 600.0


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_dtmf_digit_becomes_an_event_and_a_conversation_item(tmp_path: Path, dialect: str) -> None:
    play = tmp_path / "silence.wav"
    write_pcm_wav(play, silence(3.0))
    heard_wav = tmp_path / "heard.wav"
    async with BridgeStack(tmp_path) as stack:
        emu = stack.emu
        emu.queue_next(settings={"speed": 4.0, "tone_hz": REPLY_HZ, "max_reply_ms": 800, "min_reply_ms": 800})
        before = len(emu.sessions)
        done = await call(
            stack.uri(NUMBER[(dialect, "pcm16")]),
            play=play,
            record=heard_wav,
            dtmf=[f"{DIGIT}@{AT_S}"],
            hangup_after=2.6,
        )
        assert done.returncode == 0, done.describe()
        assert done.report is not None
        assert done.report["dtmf_sent"] == DIGIT
        report = await stack.report(done.report["call_id"])
        record = one_session(emu, before)
        await emu.wait_closed(record)

    # The session saw the digit once, as an event from the phone (not a second time from the model).
    assert report["dtmf"] == [DIGIT]
    assert [s for _, s in timeline(report, "dtmf")] == [DIGIT]
    (t_dtmf, _), *_ = timeline(report, "dtmf")
    assert report["phases"][:4] == ["IDLE", "LISTENING", "THINKING", "SPEAKING"], report["phases"]

    # The model got a user text item naming the digit, then response.create, and no caller speech (silence).
    events = [e for e in record.received if e.get("type") != "input_audio_buffer.append"]
    kinds = [e["type"] for e in events]
    i = kinds.index("conversation.item.create")
    assert kinds[i : i + 2] == ["conversation.item.create", "response.create"], kinds
    item = events[i]["item"]
    assert item["type"] == "message"
    texts = [c.get("text", "") for c in item["content"]]
    assert any(DIGIT in text and "key" in text for text in texts), item
    assert "input_audio_buffer.speech_started" not in record.types_sent()
    responses = [t for t, s in timeline(report, "response_started")]
    assert responses and responses[0] > t_dtmf

    # ...and answered it: the caller heard the reply tone after the digit.
    heard, _ = read_pcm_wav(heard_wav)
    (reply,) = active_regions(heard, RATE, floor_dbfs=-45.0)
    assert reply.start_s > AT_S
    assert reply.seconds == pytest.approx(0.8, abs=0.06)
    body = segment(heard, RATE, reply.start_s + 0.05, reply.end_s - 0.05)
    assert_tone(body, RATE, REPLY_HZ)
