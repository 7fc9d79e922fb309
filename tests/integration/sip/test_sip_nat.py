"""Behind 1:1 NAT: with ``public_address`` and ``rtp_public_address`` set, the gateway's 200 OK announces them in
Contact and SDP, and the requests it sends (a BYE) carry the public address in Via. The gateway test app, a raw SIP
caller; nothing is sent to the made-up public addresses."""

from __future__ import annotations

import secrets
import time

from tests.integration.sip._helpers import (
    GatewayApp,
    RawSip,
    open_dialog,
    parse_response,
    sdp_media_address,
    sdp_offer,
)

SIP_PUBLIC, RTP_PUBLIC = "203.0.113.10", "203.0.113.20"


def _next_request(raw: RawSip, method: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data, addr = raw.sock.recvfrom(65535)
        text = data.decode(errors="replace")
        if text.startswith(f"{method} "):
            head = parse_response(b"SIP/2.0 200 OK\r\n" + data.split(b"\r\n", 1)[1])  # headers of the request
            lines = [
                "SIP/2.0 200 OK",
                *(f"{name}: {head.headers[name]}" for name in ("via", "from", "to", "call-id", "cseq")),
                "Content-Length: 0",
            ]
            raw.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)
            return text
    raise TimeoutError(f"no {method} within {timeout} s")


def test_the_answer_and_the_bye_announce_the_public_addresses() -> None:
    app = GatewayApp("--mode", "silent", "--hangup-after", "0.5", "--public-address", SIP_PUBLIC,
                     "--rtp-public-address", RTP_PUBLIC)  # fmt: skip
    try:
        with RawSip(app.port) as raw:
            final, _dialog = open_dialog(raw, sdp_offer(40000 + secrets.randbelow(1000) * 2, {0: "PCMU/8000"}))
            assert final.status == 200, final.raw
            assert f"@{SIP_PUBLIC}:" in final.headers["contact"], final.headers["contact"]
            host, _port = sdp_media_address(final.raw)
            assert host == RTP_PUBLIC, final.raw
            assert f"IN IP4 {RTP_PUBLIC}" in final.raw.split("\r\no=", 1)[1].split("\r\n", 1)[0]
            bye = _next_request(raw, "BYE")
            via = next(line for line in bye.split("\r\n") if line.lower().startswith("via:"))
            assert SIP_PUBLIC in via, bye
            app.wait_calls_ended()
    finally:
        app.stop()
