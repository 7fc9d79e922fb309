"""Interop with SIPp (Debian package sip-tester): a G729-only offer (no codec of ours), and a PCMA call that plays a
pcap and a digit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _audio import pieces_heard
from _helpers import LOCALHOST, SCENARIOS, GatewayApp, describe, free_port, pcap_rtp_payloads

from bridge.audio.wav import alaw_decode, read_wav

SIPP = shutil.which("sipp")
PCAP_DIRS = [Path("/usr/share/sip-tester"), Path("/usr/share/doc/sip-tester/examples/pcap")]
PCAP_DIR = next((d for d in PCAP_DIRS if (d / "g711a.pcap").exists()), None)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]


def _sipp(scenario: str, target_port: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SIPP is not None
    # SIPp looks for pcap/ next to the scenario first: run a copy of it from the directory holding pcap/.
    local = cwd / scenario
    shutil.copy(SCENARIOS / scenario, local)
    return subprocess.run(
        [
            SIPP,
            "-sf",
            str(local),
            "-m",
            "1",
            "-i",
            LOCALHOST,
            "-mi",
            LOCALHOST,
            "-p",
            str(free_port()),
            "-mp",
            str(free_port()),
            "-timeout",
            "20",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-s",
            "100",
            f"{LOCALHOST}:{target_port}",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=40,
    )


def test_sipp_g729_only_offer_gets_488(tmp_path: Path) -> None:
    app = GatewayApp("--mode", "silent")
    try:
        result = _sipp("uac_g729_only.xml", app.port, tmp_path)
    finally:
        gateway = app.stop()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert gateway.returncode == 0, describe(gateway)
    assert gateway.report is not None
    assert gateway.report["rejected"] == {"488": 1}
    assert gateway.report["calls"] == []


@pytest.mark.skipif(PCAP_DIR is None, reason="the sip-tester pcaps are not installed")
def test_sipp_pcap_call_audio_and_digit_arrive(tmp_path: Path) -> None:
    assert PCAP_DIR is not None
    (tmp_path / "pcap").mkdir()
    for name in ("g711a.pcap", "dtmf_2833_1.pcap"):
        shutil.copy(PCAP_DIR / name, tmp_path / "pcap" / name)
    recordings = tmp_path / "rec"
    recordings.mkdir()
    app = GatewayApp("--mode", "silent", "--record-dir", str(recordings))
    try:
        result = _sipp("uac_pcap_short.xml", app.port, tmp_path)
    finally:
        gateway = app.stop()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert gateway.returncode == 0, describe(gateway)
    assert gateway.report is not None
    (call,) = gateway.report["calls"]
    assert call["caller"] == "sipp"
    assert call["codec"] == "PCMA"
    assert call["dtmf"] == "1"  # RFC 4733 event from dtmf_2833_1.pcap
    assert call["received"]["active_ms"] >= 2000

    # What arrived is the pcap's audio: align the decoded A-law payload with the recording and correlate.
    sent = np.frombuffer(
        alaw_decode(b"".join(p for pt, p in pcap_rtp_payloads(tmp_path / "pcap" / "g711a.pcap") if pt == 8)),
        dtype="<i2",
    ).astype(np.float64)
    heard = np.frombuffer(read_wav(call["recording"]), dtype="<i2").astype(np.float64)
    # 1 s to 3 s of the pcap (the call is cut after about 3 s), in eight quarter-seconds, each found on its own.
    found = pieces_heard(heard, sent[8000:24000], 2000)
    scores = [score for score, _ in found]
    # The payload is decoded as sent (no transcoding on the way): a piece found is found whole, correlation ~1.0.
    assert sum(score > 0.95 for score in scores) >= 6, scores  # a jitter-buffer adjustment costs the piece it hits
    # ... and in the pcap's order and timing: each where the first one says, within a 20 ms frame (seen: 10 ms
    # later after an adjustment, with the host busy)
    offsets = [offset for score, offset in found if score > 0.95]
    assert max(offsets) - min(offsets) <= 160, offsets
