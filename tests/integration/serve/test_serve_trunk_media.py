"""A trunk that moves its media mid-call (an SBC's failover, Asterisk's direct_media), against a real `callbridge
serve`: SIPp sets a call up with its media at its signalling host (127.0.0.1), then sends a re-INVITE naming a new
media host (127.0.0.5, SIPp's -mi) and plays speech from there. From a trusted source (in ``sip_allowed_sources``)
the re-INVITE gets 200, the call latches to the new host and the model hears the speech; from a source that is only
let in (the closed default's loopback), it gets ``488 (media address not the caller's)`` and the new host's packets
are dropped: the model hears nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _serve_start import ROOT, Started, clean_env, port_block
from _sipp import PCAP_DIR, SIPP, run_sipp, sipp_work, wait_reports

from bridge.devkit.ports import free_port
from bridge.emulator import EmulatorServer

SIGNALLING, NEW_MEDIA = "127.0.0.1", "127.0.0.5"

pytestmark = [
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian: sip-tester)"),
    pytest.mark.skipif(PCAP_DIR is None, reason="the sip-tester pcaps are not installed"),
]


def loudest_rms(pcm16: bytes, rate: int) -> float:
    """The loudest 20 ms of a PCM16 stream, as RMS."""
    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float64)
    frame = max(1, rate // 50)
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    return float(np.sqrt(np.mean(np.square(frames), axis=1)).max()) if len(frames) else 0.0


async def moved_call(tmp: Path, scenario: str, allowed: str) -> tuple[dict[str, Any], float, str]:
    """One SIPp call of ``scenario`` against a serve whose ``sip_allowed_sources`` is ``allowed`` ("": unset):
    its report line, the loudest caller audio the model heard, serve's log."""
    reports = tmp / "calls.jsonl"
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        sip_port, http_port = port_block(1), free_port()
        args = [
            "--workers", "1", "--sip-port", str(sip_port), "--realtime-url", emulator.base_url,
            "--http-port", str(http_port), "--dialplans", str(ROOT / "dialplans"), "--report-file", str(reports),
        ]  # fmt: skip
        extra = {"CALLBRIDGE_SIP_ALLOWED_SOURCES": allowed} if allowed else {}
        env = clean_env(OPENAI_API_KEY="sk-test", XDG_STATE_HOME=str(tmp / "state"), **extra)
        serve = Started(tmp, "serve", args, env, ROOT)
        try:
            await serve.ready("127.0.0.1", http_port, workers=1)
            failed = await run_sipp(scenario, f"127.0.0.1:{sip_port}", sipp_work(tmp), media_host=NEW_MEDIA)
            assert not failed, failed + serve.stderr()
            (line,) = await wait_reports(reports, 1)
        finally:
            assert serve.stop() == 0, serve.stderr()
        (session,) = emulator.sessions
        return line, loudest_rms(session.input_audio, session.input_rate), serve.stderr(200_000)


async def test_trusted_trunk_moves_its_media_and_is_heard_there(tmp_path: Path) -> None:
    line, heard, log = await moved_call(tmp_path, "uac_reinvite_moves_media.xml", f"{SIGNALLING}/32")
    assert line["answered"] is True and line["ended_by"] == "caller", line
    assert line["media"]["rtp_dropped"] == 0, line["media"]  # the new host's packets were admitted
    assert heard > 1000, heard  # the speech SIPp played from the new host reached the model
    assert f"moves media to {NEW_MEDIA} from {SIGNALLING}" in log and "(a trusted source)" in log, log[-3000:]
    assert " INFO bridge.sip: INVITE of " in log


async def test_stranger_moving_its_media_gets_488_and_is_not_heard(tmp_path: Path) -> None:
    line, heard, log = await moved_call(tmp_path, "uac_reinvite_moves_media_refused.xml", "")
    assert line["answered"] is True and line["ended_by"] == "caller", line
    assert line["media"]["rtp_dropped"] > 50, line["media"]  # 4 s of the new host's RTP, dropped
    assert heard < 100, heard
    assert f"moves media to {NEW_MEDIA}, not to {SIGNALLING}" in log, log[-3000:]
