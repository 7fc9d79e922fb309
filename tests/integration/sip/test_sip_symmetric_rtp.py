"""Symmetric RTP (bridge.sip.rtpguard): media is admitted from the offer's ``c=`` host and from the host the INVITE
came from; any other host's packets are dropped, counted, and a caller whose audio is all dropped is named in a
WARNING (the admitted hosts and the host it sends from) and in the call's events.

The caller's offer names a documentation address (``c=IN IP4 192.0.2.2``, RFC 5737) it does not send from, as a
softphone on a host with two addresses does; its SIP comes from 127.0.0.1. The gateway test app plays 600 Hz and
records what it hears (what the model would hear); the caller sends 1 kHz from 127.0.0.1 (its signalling address:
heard) or from 127.0.0.3 (a third address: dropped).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.audio.wav import read_wav
from bridge.devkit.ports import can_bind
from tests.integration.sip._helpers import (
    GatewayApp,
    RawSip,
    RtpPeer,
    in_dialog,
    open_dialog,
    sdp_media_address,
    sdp_offer,
)

ANNOUNCED, THIRD = "192.0.2.2", "127.0.0.3"
CALLER_HZ = 1000.0
WARNING = re.compile(r"WARNING.*no audio from the caller.*")

pytestmark = pytest.mark.skipif(not can_bind(THIRD), reason=f"{THIRD} is not usable here")


def _band(pcm: bytes, hz: float) -> float:
    """Power near ``hz`` as a share of the signal's total power."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    total = float(spectrum.sum()) or 1.0
    return float(spectrum[np.abs(freqs - hz) < 40].sum()) / total


def _call_from(rtp_host: str, record: Path) -> tuple[dict[str, Any], str, float | None]:
    """One 4 s call announcing ANNOUNCED, with RTP from ``rtp_host``: the app's report of it, its log, and how long
    after the 200 OK the all-dropped WARNING was first seen in the log (None: never, while the call was up)."""
    app = GatewayApp("--mode", "tone", "--record-dir", str(record))
    finished = None
    seen_after: float | None = None
    try:
        with RtpPeer(rtp_host) as caller, RawSip(app.port) as raw:
            caller.tone_hz = CALLER_HZ
            offer = sdp_offer(caller.port, {0: "PCMU/8000"}).replace("c=IN IP4 127.0.0.1", f"c=IN IP4 {ANNOUNCED}")
            final, dialog = open_dialog(raw, offer)
            assert final.status == 200, final.raw
            answered = time.monotonic()
            caller.remote = sdp_media_address(final.raw)
            while time.monotonic() - answered < 4.0:
                if seen_after is None and WARNING.search(app.log_so_far()):
                    seen_after = time.monotonic() - answered
                time.sleep(0.05)
            assert in_dialog(raw, dialog, "BYE").status == 200
            app.wait_calls_ended()
        finished = app.stop()
    finally:
        if finished is None:
            app.stop()
    assert finished.report is not None, finished.stderr[-3000:]
    (report,) = finished.report["calls"]
    return report, finished.stderr, seen_after


def test_a_caller_announcing_another_address_is_heard_from_its_signalling_address(tmp_path: Path) -> None:
    report, log, warned_after = _call_from("127.0.0.1", tmp_path)
    heard = read_wav(Path(report["recording"]))
    assert len(heard) > 8000 * 2 * 2, f"the app heard {len(heard) / 16000:.1f} s"
    assert _band(heard, CALLER_HZ) > 0.8, report["received"]
    assert warned_after is None and not WARNING.search(log), log[-2000:]
    assert "MediaDropped" not in report["events"], report["events"]


def test_a_third_address_is_dropped_counted_and_named_while_the_call_is_up(tmp_path: Path) -> None:
    report, log, warned_after = _call_from(THIRD, tmp_path)
    heard = read_wav(Path(report["recording"]))
    assert _band(heard, CALLER_HZ) < 0.001 if heard else True, "the third address's tone reached the app"
    assert int(report["rtp_dropped"]) > 50, report  # ~4 s of 50 packets a second, less the sampled moment
    assert warned_after is not None, f"no all-dropped WARNING while the call was up:\n{log[-3000:]}"
    print(f"all-dropped WARNING {warned_after:.2f} s after the 200 OK")
    (line,) = WARNING.findall(log)  # once per call
    assert ANNOUNCED in line and "127.0.0.1" in line, line  # both admitted hosts ...
    assert f"sends from {THIRD}" in line, line  # ... and the one the caller sends from
    assert report["events"].count("MediaDropped") == 1, report["events"]
