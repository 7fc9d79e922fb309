"""The answer names the packet time the bridge sends (bridge/sip/sdpptime.py): an offer of ``a=ptime:30`` or
``a=ptime:40`` (carriers' G.711 trunks), or none, gets an answer whose audio section says ``a=ptime:20``, once, and
every packet the bridge then sends is 20 ms (160 PCMU bytes, 20 ms apart). A re-INVITE's answer says it too. The
Content-Length is the body's (the SDP is rewritten before pjsip prints the message)."""

from __future__ import annotations

import itertools
import time

import pytest
from _helpers import GatewayApp, RawSip, RtpPeer, describe, in_dialog, open_dialog, sdp_media_address, sdp_offer

PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}


def _audio_ptimes(message: str) -> list[str]:
    body = message.split("\r\n\r\n", 1)[1]
    audio = body.split("m=audio ", 1)[1].split("\r\nm=", 1)[0]
    return [line for line in audio.split("\r\n") if line.startswith("a=ptime:")]


@pytest.mark.parametrize("offered", [30, 40, None])
def test_the_answer_names_the_20_ms_the_bridge_sends(offered: int | None) -> None:
    gateway = GatewayApp("--mode", "tone", "--tone-hz", "600")
    try:
        with RawSip(gateway.port) as raw, RtpPeer() as rtp:
            offer = sdp_offer(rtp.port, PCMU_TE) + (f"a=ptime:{offered}\r\n" if offered else "")
            answered, dialog = open_dialog(raw, offer)
            rtp.remote = sdp_media_address(answered.raw)
            rtp.tone_hz = 440.0
            start = time.monotonic()
            time.sleep(1.2)
            heard = rtp.received_between(start + 0.3, time.monotonic())
            again = in_dialog(raw, dialog, "INVITE", body=offer.replace("o=raw 1 1 ", "o=raw 1 2 "))
            bye = in_dialog(raw, dialog, "BYE")
    finally:
        gateway.wait_calls_ended()
        finished = gateway.stop()
    assert finished.returncode == 0, describe(finished)
    assert answered.status == 200 and again.status == 200 and bye.status == 200
    assert _audio_ptimes(answered.raw) == ["a=ptime:20"], answered.raw
    assert _audio_ptimes(again.raw) == ["a=ptime:20"], again.raw
    body = answered.raw.split("\r\n\r\n", 1)[1]
    assert int(answered.headers["content-length"]) == len(body.encode())
    pcmu = [p for p in heard if p.payload_type == 0]
    assert len(pcmu) >= 30 and {len(p.payload) for p in pcmu} == {160}, {len(p.payload) for p in pcmu}  # 20 ms
    gaps = sorted(b.at - a.at for a, b in itertools.pairwise(pcmu))
    assert 0.012 < gaps[len(gaps) // 2] < 0.028, gaps[len(gaps) // 2]  # one packet every 20 ms
