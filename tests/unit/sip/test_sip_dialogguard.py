from __future__ import annotations

import pytest

from bridge.sip.access import parse_networks
from bridge.sip.dialogguard import (
    DROP,
    KEYS_IN_CLEAR,
    PASS,
    SIPS_NEEDS_SRTP,
    DialogGuard,
    GuardedDialog,
    media_move_allowed,
    media_security,
)
from bridge.sip.sipmsg import Transport


def _request(method: str, call_id: str = "c1", to_tag: str = ";tag=w1", sdp_host: str | None = None) -> str:
    body = f"v=0\r\nc=IN IP4 {sdp_host}\r\nm=audio 4000 RTP/AVP 0\r\n" if sdp_host else ""
    return (
        f"{method} sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n"
        f"From: <sip:a@198.51.100.7>;tag=c1\r\nTo: <sip:100@192.0.2.1>{to_tag}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 2 {method}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )


@pytest.fixture
def guard() -> DialogGuard:
    held = DialogGuard()
    held.hold("c1", GuardedDialog("call-1", "198.51.100.7", ("198.51.100.7", "10.0.0.5")))
    return held


@pytest.mark.parametrize("method", ["BYE", "INVITE", "INFO", "UPDATE", "REFER", "CANCEL", "OPTIONS"])
def test_a_request_of_the_dialog_from_another_host_is_refused(guard: DialogGuard, method: str) -> None:
    verdict = guard.verdict(_request(method), "203.0.113.9:5060")
    assert verdict.status == 403 and "not from its caller" in verdict.detail
    mine = 200 if method == "OPTIONS" else PASS  # the caller's keep-alive is answered here
    assert guard.verdict(_request(method), "198.51.100.7:5999").status == mine  # the caller, any port
    assert guard.verdict(_request(method), "[::ffff:198.51.100.7]:5060").status == mine


def test_a_listed_trunks_call_takes_its_in_dialog_requests_from_any_listed_address() -> None:
    held = DialogGuard()
    trunks = parse_networks(["198.51.100.7/32", "198.51.100.8/32"])
    held.hold("c1", GuardedDialog("call-1", "198.51.100.7", ("198.51.100.7",), peers=trunks))
    assert held.verdict(_request("BYE"), "198.51.100.8:5060").status == PASS  # the SBC pair's other node
    assert held.verdict(_request("BYE"), "203.0.113.9:5060").status == 403  # a stranger still


def test_the_callers_in_dialog_options_is_answered_200_and_no_other_options_is(guard: DialogGuard) -> None:
    verdict = guard.verdict(_request("OPTIONS"), "198.51.100.7:5060")
    assert (verdict.status, verdict.reason, verdict.refused) == (200, "OK", False)
    allow = dict(verdict.headers)["Allow"]
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"} <= {m.strip() for m in allow.split(",")}
    assert guard.verdict(_request("OPTIONS", to_tag=""), "198.51.100.7:5060").status == PASS  # outside: pjsua's
    assert guard.verdict(_request("OPTIONS", call_id="other"), "198.51.100.7:5060").status == PASS  # not ours
    assert guard.verdict(_request("OPTIONS"), "203.0.113.9:5060").refused


def test_a_strangers_ack_is_dropped_and_unknown_dialogs_or_new_calls_are_pjsips(guard: DialogGuard) -> None:
    assert guard.verdict(_request("ACK"), "203.0.113.9:5060").status == DROP
    assert guard.verdict(_request("BYE", call_id="other"), "203.0.113.9:5060").status == PASS
    assert guard.verdict(_request("INVITE", to_tag=""), "203.0.113.9:5060").status == PASS
    guard.forget("c1", "another-call")  # a reused Call-ID of another call does not free this one
    assert guard.verdict(_request("BYE"), "203.0.113.9:5060").status == 403
    guard.forget("c1", "call-1")
    assert guard.verdict(_request("BYE"), "203.0.113.9:5060").status == PASS and len(guard) == 0


def test_the_callers_re_invite_moves_media_only_where_the_guard_admits(guard: DialogGuard) -> None:
    assert guard.verdict(_request("INVITE", sdp_host="203.0.113.9"), "198.51.100.7:5060").status == 488
    assert guard.verdict(_request("UPDATE", sdp_host="203.0.113.9"), "198.51.100.7:5060").status == 488
    for host in ("198.51.100.7", "10.0.0.5", "0.0.0.0"):
        assert guard.verdict(_request("INVITE", sdp_host=host), "198.51.100.7:5060").status == PASS
    assert guard.verdict(_request("INVITE"), "198.51.100.7:5060").status == PASS  # no offer
    assert media_move_allowed(None, ()) and not media_move_allowed("not-an-ip", ("198.51.100.7",))


def test_a_trusted_trunks_re_invite_moves_media_anywhere_and_says_so() -> None:
    held = DialogGuard()
    held.hold("c1", GuardedDialog("call-1", "198.51.100.7", ("198.51.100.7",), trusted=True))
    moved = held.verdict(_request("INVITE", sdp_host="203.0.113.9"), "198.51.100.7:5060")
    assert moved.status == PASS and held.refused == 0
    assert moved.detail == "INVITE of call-1 from 198.51.100.7:5060 (a trusted source) moves media to 203.0.113.9 " \
        "from 198.51.100.7"  # fmt: skip
    again = held.verdict(_request("INVITE", sdp_host="203.0.113.9"), "198.51.100.7:5060")  # a refresh: no news
    assert (again.status, again.detail) == (PASS, "")
    # the trust is the trunk's, for its own dialog: a stranger still gets 403
    assert held.verdict(_request("INVITE", sdp_host="192.0.2.99"), "203.0.113.9:5060").status == 403


def _offer(uri: str, proto: str = "RTP/AVP", crypto: bool = False, method: str = "INVITE") -> str:
    sdp = f"v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 4000 {proto} 0\r\n" + (
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZWNyZXRfX19rZXlfX19mb3JfdGVzdHM\r\n" if crypto else ""
    )
    return f"{method} {uri} SIP/2.0\r\nCall-ID: c9\r\nTo: <{uri}>\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"


def test_sdes_keys_only_over_tls_and_a_sips_call_only_with_srtp() -> None:
    keyed = _offer("sip:100@h", "RTP/SAVP", crypto=True)
    assert media_security(keyed, Transport.UDP).reason == KEYS_IN_CLEAR
    assert media_security(keyed, Transport.TCP).status == 488
    assert media_security(_offer("sip:100@h", crypto=True, method="UPDATE"), Transport.UDP).status == 488
    assert media_security(keyed, Transport.TLS).status == PASS
    assert media_security(_offer("sips:100@h"), Transport.TLS).reason == SIPS_NEEDS_SRTP
    assert media_security(_offer("sips:100@h", "RTP/SAVP", crypto=True), Transport.TLS).status == PASS
    assert media_security(_offer("sip:100@h"), Transport.UDP).status == PASS  # plain RTP over plain SIP
    no_offer = _offer("sips:100@h").split("\r\n\r\n")[0] + "\r\n\r\n"
    assert media_security(no_offer, Transport.TLS).status == PASS
    assert media_security(keyed, None).status == PASS  # a transport it cannot tell: pjsua's rules only
