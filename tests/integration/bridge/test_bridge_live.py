"""A real SIP call on GPT-Live through the whole stack (pjsua2 caller, a worker, the emulator's Live session), with
PCM at 16 kHz and with G.711 μ-law passthrough: the greeting is heard soon after the answer, the caller's words
reach the model, and the reply is heard at the pitch and level the emulator sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from _bridge_helpers import (
    LIVE_XFER_NUMBER,
    LOCALHOST,
    NUMBER,
    RATE,
    SINE_PEAK_TO_RMS_DB,
    BridgeStack,
    active_regions,
    assert_tone,
    call,
    dbfs,
    finish,
    free_port,
    listener,
    one_session,
    read_pcm_wav,
    segment,
    silence,
    speech,
    stop,
    tone,
    write_pcm_wav,
)
from _live_script import (
    GREETING_HZ,
    GREETING_MS,
    HEARS,
    LINE_HZ,
    PEAK_DBFS,
    REPLY_HZ,
    REPLY_MS,
    assert_live_transfer,
    greet_and_answer,
    long_greeting,
)

pytestmark = pytest.mark.integration


@pytest.mark.xdist_group("cpu")  # measures the reply and the barge-in to a few frames (tests/conftest.py)
@pytest.mark.parametrize("fmt", ["pcm16_16k", "g711_ulaw"])
async def test_a_live_call_greets_hears_the_caller_and_answers(tmp_path: Path, fmt: str) -> None:
    play = tmp_path / "caller.wav"
    # quiet while the greeting plays, then a question (a tone the emulator's VAD hears), then quiet for the reply
    write_pcm_wav(play, silence(2.5), tone(1020.0, 1.0, -10.0), silence(3.5))
    heard_wav = tmp_path / "heard.wav"

    async with BridgeStack(tmp_path) as stack:
        emu = stack.emu
        emu.queue_next(**greet_and_answer())
        before = len(emu.sessions)
        done = await call(stack.uri(NUMBER[("live", fmt)]), play=play, record=heard_wav, hangup_after=7.0)
        assert done.returncode == 0, done.describe()
        assert done.report is not None
        report = await stack.report(done.report["call_id"])
        record = one_session(emu, before)
        await emu.wait_closed(record)

    assert report["dialect"] == "live" and report["answered"] is True and report["errors"] == []
    received = record.types_received()
    assert received[:2] == ["session.start", "session.commentary.append"], received[:5]
    assert received[-1] == "session.close"  # a clean end
    assert "response.create" not in received and "session.input_audio.append" in received
    assert report["caller_transcript"] == [HEARS]
    assert report["agent_transcript"] == ["Welcome.", "From nine."]

    heard, heard_rate = read_pcm_wav(heard_wav)
    assert heard_rate == RATE
    regions = active_regions(heard, RATE, floor_dbfs=-45.0)
    playout = [e for e in report.get("timeline", []) if e[1] in ("playout", "phase")]
    assert len(regions) == 2, (regions, playout)  # a gap inside an answer (dead air) would split it
    greeting, reply = regions
    assert greeting.start_s < 1.5, greeting  # the recording starts at the answer
    for region, hz, ms in ((greeting, GREETING_HZ, GREETING_MS), (reply, REPLY_HZ, REPLY_MS)):
        assert region.seconds == pytest.approx(ms / 1000, abs=0.08), region
        body = segment(heard, RATE, region.start_s + 0.05, region.end_s - 0.05)
        assert_tone(body, RATE, hz)
        assert dbfs(body) == pytest.approx(PEAK_DBFS - SINE_PEAK_TO_RMS_DB, abs=1.5)
    assert reply.start_s > 3.5  # after the caller's question (2.5 s to 3.5 s of the call)


@pytest.mark.xdist_group("cpu")  # measures the reply and the barge-in to a few frames (tests/conftest.py)
async def test_a_live_barge_in_silences_the_agent_within_one_playout_buffer(tmp_path: Path) -> None:
    speaks_at = 2.0
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, silence(speaks_at), tone(1020.0, 1.0, -10.0), silence(2.0))
    heard_wav = tmp_path / "heard.wav"
    async with BridgeStack(tmp_path) as stack:
        emu = stack.emu
        emu.queue_next(**long_greeting())
        before = len(emu.sessions)
        done = await call(stack.uri(NUMBER[("live", "pcm16_16k")]), play=play, record=heard_wav, hangup_after=4.5)
        assert done.returncode == 0, done.describe()
        assert done.report is not None
        report = await stack.report(done.report["call_id"])
        record = one_session(emu, before)
        await emu.wait_closed(record)

    # the caller heard the greeting until shortly after they spoke, not its 6 s: the bridge's own voice detection
    # flushed the playout (Live has no cancel or truncate: nothing but the flush was sent)
    heard, _ = read_pcm_wav(heard_wav)
    cut = active_regions(heard, RATE, floor_dbfs=-45.0)[0]
    assert_tone(segment(heard, RATE, cut.start_s + 0.05, cut.end_s - 0.05), RATE, GREETING_HZ)
    assert speaks_at - 0.05 < cut.end_s < speaks_at + 0.3, cut
    assert report["barge_ins"] == 1 and report["truncates"] == []
    assert len(report["talk_over_ms"]) == 1
    received = record.types_received()
    assert "response.cancel" not in received and "conversation.item.truncate" not in received
    assert report["errors"] == []


async def test_a_live_transfer_to_human_refers_the_caller_after_the_line(tmp_path: Path) -> None:
    agent_port = free_port()
    target = f"sip:agent@{LOCALHOST}:{agent_port}"
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(5.0))
    heard_wav, agent_wav = tmp_path / "heard.wav", tmp_path / "agent.wav"
    async with BridgeStack(tmp_path, transfer_target=target) as stack:
        emu = stack.emu
        emu.queue_next(
            settings={"tone_hz": LINE_HZ, "min_reply_ms": 800, "max_reply_ms": 800},
            annotations=[
                {
                    "hears": "Can I talk to a human agent, please?",
                    "reply": {"tool_call": {"name": "transfer_to_human", "arguments": {"reason": "caller asked"}}},
                }
            ],
        )
        agent = await listener(agent_port, agent_wav, duration=15)
        try:
            before = len(emu.sessions)
            done = await call(stack.uri(LIVE_XFER_NUMBER), play=play, record=heard_wav, hangup_after=6.0)
        finally:
            await finish(agent, timeout=5) if agent.returncode is None else await stop(agent)
        assert done.returncode == 0, done.describe()
        assert done.report is not None
        phone = done.report
        report = await stack.report(phone["call_id"])
        record = one_session(emu, before)

    assert_live_transfer(report, record, target)
    # the line was heard before the caller followed the REFER
    heard, _ = read_pcm_wav(heard_wav)
    line = active_regions(heard, RATE, floor_dbfs=-45.0)[0]
    assert_tone(segment(heard, RATE, line.start_s + 0.05, line.end_s - 0.05), RATE, LINE_HZ)
    transfer = phone["transfer"]
    assert transfer is not None and transfer["sip_status"] == 200 and transfer["answered"] is True
