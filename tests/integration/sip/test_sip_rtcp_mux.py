"""RTP and RTCP on one port (RFC 5761): an offer with ``a=rtcp-mux`` gets an answer with it, and audio flows both ways
on that one port; an offer without it gets an answer without it. Against the gateway test app (``_echo_app.py``)."""

from __future__ import annotations

import time

import pytest
from _helpers import GatewayApp, RawSip, RtpPacket, RtpPeer, in_dialog, open_dialog, sdp_media_address, sdp_offer

pytestmark = pytest.mark.integration

GATEWAY_HZ = 600.0


def _answer_attributes(raw_message: str) -> list[str]:
    body = raw_message.split("\r\n\r\n", 1)[-1]
    return [line.strip() for line in body.splitlines() if line.startswith("a=")]


def _heard(rtp: RtpPeer, since: float, count: int, within_s: float) -> list[RtpPacket]:
    """The packets heard since ``since``, once there are ``count`` of them (or ``within_s`` is out: fewer)."""
    deadline = time.monotonic() + within_s
    while len(heard := rtp.received_between(since, time.monotonic())) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return heard


def test_rtcp_mux_is_answered_when_offered_and_audio_flows_on_the_one_port() -> None:
    app = GatewayApp("--mode", "tone", "--tone-hz", str(GATEWAY_HZ))
    try:
        with RawSip(app.port) as raw, RtpPeer() as rtp:
            offer = sdp_offer(rtp.port, {0: "PCMU/8000"}) + "a=rtcp-mux\r\n"
            answered, dialog = open_dialog(raw, offer)
            rtp.remote = sdp_media_address(answered.raw)
            rtp.tone_hz = 440.0
            start = time.monotonic()
            heard = _heard(rtp, start + 0.25, 40, within_s=10.0)
            bye = in_dialog(raw, dialog, "BYE")
        with RawSip(app.port) as raw, RtpPeer() as rtp:
            plain, dialog = open_dialog(raw, sdp_offer(rtp.port, {0: "PCMU/8000"}))
            in_dialog(raw, dialog, "BYE")
    finally:
        app.wait_calls_ended()
        finished = app.stop()
    assert answered.status == 200 and bye.status == 200
    assert "a=rtcp-mux" in _answer_attributes(answered.raw), answered.raw
    assert len(heard) >= 40, len(heard)  # the gateway's audio reached the offer's one port
    assert finished.report is not None
    assert finished.report["calls"][0]["media"]["frames_in"] >= 50  # and the caller's reached the app
    assert plain.status == 200 and "a=rtcp-mux" not in _answer_attributes(plain.raw), plain.raw
