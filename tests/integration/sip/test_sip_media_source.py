"""Media from the caller only (bridge.sip.rtpguard): a stranger spraying RTP at the gateway's port range, before and
during a call, is neither heard by the app (what the model would hear) nor sent the agent's audio.

The gateway test app plays a 600 Hz tone and records what each call sends it; the caller (raw SIP and RTP from
127.0.0.1) sends 1 kHz; the stranger (127.0.0.3) sends 1.9 kHz to every port of the app's RTP range, from before the
INVITE to after the BYE, more than pjmedia's NAT probation count (10 packets) between two of the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.g711 import ulaw_decode
from bridge.audio.wav import read_wav
from bridge.devkit.ports import can_bind, free_port
from tests.integration.sip._helpers import (
    STRANGER,
    GatewayApp,
    RawSip,
    RtpPeer,
    Stranger,
    in_dialog,
    open_dialog,
    sdp_media_address,
    sdp_offer,
)

CALLER_HZ, STRANGER_HZ, AGENT_HZ = 1000.0, 1900.0, 600.0
RTP_RANGE = 16


pytestmark = pytest.mark.skipif(not can_bind(STRANGER), reason=f"{STRANGER} is not usable here")


def _range(first_port: int, count: int) -> list[tuple[str, int]]:
    return [("127.0.0.1", port) for port in range(first_port, first_port + count)]


def _band(pcm: bytes, hz: float) -> float:
    """Power near ``hz`` as a share of the signal's total power."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    total = float(spectrum.sum()) or 1.0
    return float(spectrum[np.abs(freqs - hz) < 40].sum()) / total


@pytest.fixture(scope="module")
def sprayed_call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """One call under a stranger's spray; what the app recorded, what the caller and the stranger received."""
    record = tmp_path_factory.mktemp("heard")
    rtp_port = free_port() & ~1
    app = GatewayApp("--mode", "tone", "--tone-hz", str(AGENT_HZ), "--record-dir", str(record),
                     "--rtp-port", str(rtp_port), "--rtp-range", str(RTP_RANGE))  # fmt: skip
    finished = None
    try:
        with (
            Stranger(_range(rtp_port, RTP_RANGE + 2), STRANGER_HZ, burst=12) as stranger,
            RtpPeer() as caller,
            RawSip(app.port) as raw,
        ):
            time.sleep(0.3)  # the spray is on before the INVITE: sockets opened for the call meet it at once
            caller.tone_hz = CALLER_HZ
            final, dialog = open_dialog(raw, sdp_offer(caller.port, {0: "PCMU/8000"}))
            assert final.status == 200, final.raw
            answer_host, answer_port = sdp_media_address(final.raw)
            caller.remote = (answer_host, answer_port)
            start = time.monotonic()
            time.sleep(2.0)
            heard_by_caller = caller.received_between(start + 0.5, time.monotonic())
            assert in_dialog(raw, dialog, "BYE").status == 200
            app.wait_calls_ended()
            spray_sent, spray_back = stranger.sent, stranger.received
        finished = app.stop()
    finally:
        if finished is None:
            app.stop()
    report = finished.report
    assert report is not None, finished.stderr[-3000:]
    yield {
        "call": report["calls"][0],
        "metric": report["rtp_foreign_dropped_metric"],
        "answer_port": answer_port,
        "rtp_port": rtp_port,
        "caller_heard": ulaw_decode(b"".join(p.payload for p in heard_by_caller)),
        "spray_sent": spray_sent,
        "spray_back": spray_back,
    }


def test_the_app_hears_the_caller_and_never_the_stranger(sprayed_call: dict[str, object]) -> None:
    call = sprayed_call["call"]
    assert isinstance(call, dict)
    heard = read_wav(Path(call["recording"]))
    assert len(heard) > 8000 * 2, "the app heard less than a second"  # 16-bit samples
    assert _band(heard, CALLER_HZ) > 0.8, call["received"]
    assert _band(heard, STRANGER_HZ) < 0.001, "the stranger's 1.9 kHz reached the app"
    assert int(call["rtp_dropped"]) > 100, call  # the kernel filter dropped the spray and counted it
    # /metrics counts them once the call has ended (at least this call's: the spray went on until the BYE)
    assert float(str(sprayed_call["metric"])) >= int(call["rtp_dropped"])


def test_the_agent_speaks_to_the_caller_only(sprayed_call: dict[str, object]) -> None:
    assert int(str(sprayed_call["spray_sent"])) > 1000
    assert sprayed_call["spray_back"] == 0, "the stranger received RTP from the gateway"
    pcm = sprayed_call["caller_heard"]
    assert isinstance(pcm, bytes) and len(pcm) > 8000 * 2
    assert _band(pcm, AGENT_HZ) > 0.8


def test_rtp_ports_are_drawn_within_the_range(sprayed_call: dict[str, object]) -> None:
    first = int(str(sprayed_call["rtp_port"]))
    assert first <= int(str(sprayed_call["answer_port"])) < first + RTP_RANGE
