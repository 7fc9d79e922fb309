"""SIPp calls on GPT-Live through the whole stack (SIPp as the caller, a worker, the emulator's Live session), with
PCM at 16 kHz and with G.711 μ-law passthrough.

SIPp plays the caller's words from a pcap (PCMU RTP built here) and keeps no recording of what it receives, so
the test captures SIPp's side off the loopback wire (``_sipp_media.LoopbackCapture``, a raw socket): the bridge's
200 OK (the moment of the answer), its RTP to SIPp (decoded: what the SIPp caller heard), SIPp's RTP to the
bridge (when the caller's words went out) and the bridge's REFER. The emulator's record says what reached the
model."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
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
    dbfs,
    free_port,
    one_session,
    pcm,
    run,
    segment,
    silence,
    tone,
    wait_reports,
)
from _live_script import (
    CALLER_HZ,
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
from _sipp_media import Datagram, LoopbackCapture, raw_capture_allowed, write_rtp_pcap
from numpy.typing import NDArray

from bridge.emulator.session import SessionRecord

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
    pytest.mark.skipif(not raw_capture_allowed(), reason="capturing SIPp's RTP needs a raw socket (CAP_NET_RAW)"),
]


async def sipp_call(
    stack: BridgeStack, number: str, caller: NDArray[np.float64], work: Path, scenario: str, stay_s: float
) -> tuple[LoopbackCapture, int, int]:
    """One SIPp call to ``number`` that plays ``caller`` (8 kHz) and captures both directions of its media."""
    assert SIPP is not None
    (work / "pcap").mkdir(parents=True, exist_ok=True)
    write_rtp_pcap(work / "pcap" / "caller.pcap", caller)
    sip_port, media_port = free_port(), free_port()
    with LoopbackCapture() as capture:
        done = await run(
            SIPP, "-sf", str(SCENARIOS / scenario), "-s", number, "-m", "1", "-i", LOCALHOST, "-mi", LOCALHOST,
            "-p", str(sip_port), "-mp", str(media_port), "-d", str(round(stay_s * 1000)),
            "-timeout", "20", "-timeout_error", "-nostdin", "-trace_err", "-trace_msg", f"{LOCALHOST}:{stack.sip_port}",
            timeout=40, cwd=work,
        )  # fmt: skip
    messages = "".join(p.read_text(errors="replace") for p in work.glob("*_messages.log"))
    assert done.returncode == 0, done.stderr[-2000:] + messages[-6000:]
    return capture, sip_port, media_port


def caller_start(capture: LoopbackCapture, bridge_rtp_port: int) -> float:
    """When SIPp's first RTP packet (the pcap's first) reached the bridge's RTP port."""
    sent = [d for d in capture.datagrams if d.dst_port == bridge_rtp_port]
    assert sent, "SIPp's RTP never reached the bridge"
    return sent[0].t


def refers(capture: LoopbackCapture, sip_port: int) -> list[Datagram]:
    return [d for d in capture.datagrams if d.dst_port == sip_port and d.payload.startswith(b"REFER ")]


def reached_the_model(record: SessionRecord, hz: float, seconds: float) -> None:
    """The caller's tone is in what the emulator received: about ``seconds`` of it, at its pitch."""
    heard = pcm(record.input_audio)
    regions = active_regions(heard, record.input_rate, floor_dbfs=-40.0)
    assert len(regions) == 1, regions
    (words,) = regions
    assert words.seconds == pytest.approx(seconds, abs=0.1), words
    assert_tone(segment(heard, record.input_rate, words.start_s + 0.05, words.end_s - 0.05), record.input_rate, hz)


@pytest.mark.xdist_group("cpu")  # measures the reply and the barge-in to a few frames (tests/conftest.py)
@pytest.mark.parametrize("fmt", ["pcm16_16k", "g711_ulaw"])
async def test_a_sipp_call_on_live_is_greeted_heard_and_answered(tmp_path: Path, fmt: str) -> None:
    # quiet while the greeting plays, then a question (a tone the emulator's VAD hears), then quiet for the reply
    caller = np.concatenate([silence(2.5), tone(CALLER_HZ, 1.0, -10.0), silence(0.5)])
    async with BridgeStack(tmp_path) as stack:
        emu = stack.emu
        emu.queue_next(**greet_and_answer())
        before = len(emu.sessions)
        capture, sip_port, media_port = await sipp_call(
            stack, NUMBER[("live", fmt)], caller, tmp_path / "sipp", "uac_live_call.xml", stay_s=7.0
        )
        (report,) = await wait_reports(stack.reports_path, 1)
        record = one_session(emu, before)
        await emu.wait_closed(record)

    assert report["dialect"] == "live" and report["answered"] is True and report["errors"] == []
    assert report["end_reason"].startswith("caller hung up")
    received = record.types_received()
    assert received[:2] == ["session.start", "session.commentary.append"], received[:5]
    assert received[-1] == "session.close"  # a clean end
    assert "response.create" not in received
    # the caller's words reached the model, at the plan's rate, and came back as the caller's turn
    assert record.input_rate == (16000 if fmt == "pcm16_16k" else RATE)
    reached_the_model(record, CALLER_HZ, 1.0)
    assert report["caller_transcript"] == [HEARS]
    assert report["agent_transcript"] == ["Welcome.", "From nine."]

    # what SIPp received: the greeting soon after the 200 OK, then the reply after the question, each at the
    # pitch and level the emulator sent
    heard = capture.heard(sip_port, media_port)
    assert heard.payload_types == {0}
    greeting, reply = active_regions(heard.audio, RATE, floor_dbfs=-45.0)
    assert heard.first_packet_s + greeting.start_s < 1.5, (heard.first_packet_s, greeting)
    for region, hz, ms in ((greeting, GREETING_HZ, GREETING_MS), (reply, REPLY_HZ, REPLY_MS)):
        assert region.seconds == pytest.approx(ms / 1000, abs=0.08), region
        body = segment(heard.audio, RATE, region.start_s + 0.05, region.end_s - 0.05)
        assert_tone(body, RATE, hz)
        assert dbfs(body) == pytest.approx(PEAK_DBFS - SINE_PEAK_TO_RMS_DB, abs=1.5)
    # the reply came after the question ended (2.5 s to 3.5 s into SIPp's stream), on one clock: the capture's
    _, bridge_rtp = capture.answer(sip_port)
    question_end = caller_start(capture, bridge_rtp) + 3.5
    answered = capture.answer(sip_port)[0]
    assert answered + heard.first_packet_s + reply.start_s > question_end


@pytest.mark.xdist_group("cpu")  # measures the reply and the barge-in to a few frames (tests/conftest.py)
async def test_a_sipp_callers_barge_in_silences_the_live_agent_within_one_playout_buffer(tmp_path: Path) -> None:
    speaks_at = 2.0
    caller = np.concatenate([silence(speaks_at), tone(CALLER_HZ, 1.0, -10.0), silence(0.5)])
    async with BridgeStack(tmp_path) as stack:
        emu = stack.emu
        emu.queue_next(**long_greeting())
        before = len(emu.sessions)
        capture, sip_port, media_port = await sipp_call(
            stack, NUMBER[("live", "pcm16_16k")], caller, tmp_path / "sipp", "uac_live_call.xml", stay_s=4.5
        )
        (report,) = await wait_reports(stack.reports_path, 1)
        record = one_session(emu, before)
        await emu.wait_closed(record)

    # SIPp heard the greeting until shortly after its caller spoke, not its 6 s: the bridge's own voice detection
    # flushed the playout (Live has no cancel or truncate: nothing but the flush was sent)
    heard = capture.heard(sip_port, media_port)
    cut = active_regions(heard.audio, RATE, floor_dbfs=-45.0)[0]
    assert_tone(segment(heard.audio, RATE, cut.start_s + 0.05, cut.end_s - 0.05), RATE, GREETING_HZ)
    answered, bridge_rtp = capture.answer(sip_port)
    spoke = caller_start(capture, bridge_rtp) + speaks_at
    silenced = answered + heard.first_packet_s + cut.end_s
    assert spoke - 0.05 < silenced < spoke + 0.3, (silenced - spoke, cut)
    assert report["barge_ins"] == 1 and report["truncates"] == [] and len(report["talk_over_ms"]) == 1
    received = record.types_received()
    assert "response.cancel" not in received and "conversation.item.truncate" not in received
    assert report["errors"] == []


async def test_transfer_to_human_refers_the_sipp_caller_on_live(tmp_path: Path) -> None:
    target = f"sip:agent@{LOCALHOST}:{free_port()}"
    caller = np.concatenate([silence(0.3), tone(CALLER_HZ, 1.2, -10.0), silence(0.5)])
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
        before = len(emu.sessions)
        capture, sip_port, media_port = await sipp_call(
            stack, LIVE_XFER_NUMBER, caller, tmp_path / "sipp", "uac_live_refer.xml", stay_s=0.0
        )
        (report,) = await wait_reports(stack.reports_path, 1)
        record = one_session(emu, before)

    assert_live_transfer(report, record, target)
    # SIPp was asked to call the target, after it had heard the line (at its pitch)
    (refer,) = refers(capture, sip_port)
    refer_to = re.search(r"^Refer-To:\s*<?([^>\r\n]+)", refer.payload.decode("latin-1"), re.MULTILINE | re.I)
    assert refer_to is not None and refer_to.group(1).strip() == target
    heard = capture.heard(sip_port, media_port)
    line = active_regions(heard.audio, RATE, floor_dbfs=-45.0)[0]
    assert_tone(segment(heard.audio, RATE, line.start_s + 0.05, line.end_s - 0.05), RATE, LINE_HZ)
    assert capture.answer(sip_port)[0] + heard.first_packet_s + line.end_s < refer.t
