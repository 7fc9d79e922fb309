"""Behind 1:1 NAT (a cloud VM): with ``sip_public_address`` and ``rtp_public_address`` set, a call through the front
is answered with the front's public address in Record-Route (Kamailio's ``listen ... advertise``) and the worker's
public media address in the SDP; the worker's Contact stays the address the front reaches it on."""

from __future__ import annotations

from pathlib import Path

from _front import NODE_A, front_node, invite, requirements

pytestmark = requirements
SIP_PUBLIC, RTP_PUBLIC = "203.0.113.10", "203.0.113.20"


async def test_a_call_through_the_front_announces_the_public_addresses(tmp_path: Path) -> None:
    config = {"sip_public_address": SIP_PUBLIC, "rtp_public_address": RTP_PUBLIC}
    async with front_node(tmp_path, workers=1, config=config) as (_node, port, _health):
        call = await invite(NODE_A, port, wait_bye=True)
        assert (call.status, call.bye) == (200, 200)
        assert f"{SIP_PUBLIC}:{port}" in call.headers["record-route"], call.headers
        assert f"c=IN IP4 {RTP_PUBLIC}" in call.body, call.body
        assert f"@{NODE_A}:" in call.headers["contact"], call.headers
