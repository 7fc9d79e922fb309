"""The answer names the packet time the bridge sends (bridge/sip/sdpptime.py): an offer of ``a=ptime:30`` or
``a=ptime:40`` (carriers' G.711 trunks), or none, gets an answer whose audio section says ``a=ptime:20``, once, and
every packet the bridge then sends is 20 ms (160 PCMU bytes, 20 ms apart). A re-INVITE's answer says it too. The
Content-Length is the body's (the SDP is rewritten before pjsip prints the message)."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from _helpers import (
    GatewayApp,
    RawSip,
    RtpPacket,
    RtpPeer,
    describe,
    in_dialog,
    open_dialog,
    sdp_media_address,
    sdp_offer,
)

PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}


def _audio_ptimes(message: str) -> list[str]:
    body = message.split("\r\n\r\n", 1)[1]
    audio = body.split("m=audio ", 1)[1].split("\r\nm=", 1)[0]
    return [line for line in audio.split("\r\n") if line.startswith("a=ptime:")]


def _after_the_first(rtp: RtpPeer, packets: int, within_s: float = 15.0) -> list[RtpPacket]:
    """The PCMU packets heard from 0.3 s after the first one on, once ``packets`` of them have come (a loaded machine
    starts the tone late: wait for it, not for a fixed time)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        first = rtp.received_between(0.0, math.inf)
        heard = rtp.received_between(first[0].at + 0.3, math.inf) if first else []
        if len(heard) >= packets:
            return heard
        time.sleep(0.05)
    raise TimeoutError(f"{len(rtp.received_between(0.0, math.inf))} PCMU packets within {within_s:g} s")


@pytest.mark.parametrize("offered", [30, 40, None])
def test_the_answer_names_the_20_ms_the_bridge_sends(offered: int | None) -> None:
    gateway = GatewayApp("--mode", "tone", "--tone-hz", "600")
    try:
        with RawSip(gateway.port) as raw, RtpPeer() as rtp:
            offer = sdp_offer(rtp.port, PCMU_TE) + (f"a=ptime:{offered}\r\n" if offered else "")
            answered, dialog = open_dialog(raw, offer)
            rtp.remote = sdp_media_address(answered.raw)
            rtp.tone_hz = 440.0
            heard = _after_the_first(rtp, packets=40)
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
