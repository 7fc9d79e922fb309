"""What pjsua decides before the app runs (OPTIONS, codec mismatch, call cap) and the app's own refusals,
checked with raw SIP over a UDP socket (no SIPp needed)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from _helpers import (
    LOCALHOST,
    Finished,
    GatewayApp,
    RawSip,
    SipResponse,
    describe,
    finish,
    free_port,
    in_dialog,
    open_dialog,
    sdp_offer,
    softphone,
    tcp_options,
)

pytestmark = pytest.mark.integration


RTP_BASE, RTP_RANGE = 41000, 20


@dataclass
class EdgeRun:
    options: SipResponse
    options_tcp: SipResponse
    g729: tuple[SipResponse, list[int]]
    pcma: tuple[SipResponse, list[int]]
    app: Finished


@pytest.fixture(scope="module")
def edges() -> EdgeRun:
    """One app; an OPTIONS, a G729-only INVITE and a PCMA-only INVITE against it; then its exit report."""
    app = GatewayApp("--mode", "silent", "--rtp-port", str(RTP_BASE), "--rtp-range", str(RTP_RANGE))
    try:
        options_tcp = tcp_options(app.port)
        with RawSip(app.port) as raw:
            options = raw.options()
            g729 = raw.invite(sdp_offer(free_port(), {18: "G729/8000"}))
            pcma = raw.invite(sdp_offer(free_port(), {8: "PCMA/8000"}))
        app.wait_calls_ended()  # the BYE that ends the PCMA call
    finally:
        finished = app.stop()
    return EdgeRun(options, options_tcp, g729, pcma, finished)


def test_options_gets_200_with_capabilities(edges: EdgeRun) -> None:
    response = edges.options
    assert response.status == 200
    allow = {method.strip() for method in response.headers["allow"].split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "INFO"} <= allow
    assert "application/sdp" in response.headers["accept"]


def test_tcp_transport_answers_too(edges: EdgeRun) -> None:
    assert edges.options_tcp.status == 200
    assert edges.options_tcp.headers["via"].startswith("SIP/2.0/TCP")


def test_an_offer_of_no_codec_of_ours_gets_488(edges: EdgeRun) -> None:
    final, seen = edges.g729  # G.729: not in the build (PCMU, PCMA and G.722 are ours: bridge/sip/endpoint.py)
    assert final.status == 488, seen
    assert final.reason == "Not Acceptable Here"


def test_pcma_only_offer_is_accepted_with_pcma(edges: EdgeRun) -> None:
    final, seen = edges.pcma
    assert final.status == 200, seen
    body = final.raw.split("\r\n\r\n", 1)[1]
    assert "a=rtpmap:8 PCMA/8000" in body  # the SDP answer keeps the one codec we share
    assert "G722" not in body and "speex" not in body
    media_port = int(next(line for line in body.splitlines() if line.startswith("m=audio")).split()[1])
    assert RTP_BASE <= media_port < RTP_BASE + RTP_RANGE  # SipConfig.rtp_port / rtp_port_range


def test_refusal_is_counted_and_never_reaches_the_app(edges: EdgeRun) -> None:
    assert edges.app.returncode == 0, describe(edges.app)
    report = edges.app.report
    assert report is not None
    assert report["rejected"] == {"488": 1}
    assert [call["codec"] for call in report["calls"]] == ["PCMA"]  # the G729 INVITE made no IncomingCall


def test_fifth_concurrent_call_gets_486() -> None:
    app = GatewayApp("--mode", "silent")
    phones = [softphone("call", app.uri, "--hangup-after", "4") for _ in range(4)]
    try:
        app.wait_live_calls(4)  # each softphone process is its own endpoint with one call
        with RawSip(app.port) as raw:
            final, seen = raw.invite(sdp_offer(free_port(), {0: "PCMU/8000"}))
        results = [finish(phone) for phone in phones]
    finally:
        gateway = app.stop()
    assert final.status == 486, seen
    assert final.reason == "Busy Here"
    assert all(result.report and result.report["sip_status"] == 200 for result in results), results
    assert gateway.returncode == 0, describe(gateway)
    report = gateway.report
    assert report is not None
    assert report["max_calls"] == 4
    assert report["cap_source"] == "pjsua_call_get_max_count()"
    assert report["rejected"] == {"486": 1}
    assert len(report["calls"]) == 4  # the 5th never became an IncomingCall
    assert max(call["active_at_invite"] for call in report["calls"]) == 4


def test_app_level_cap_answers_503_with_retry_after() -> None:
    app = GatewayApp("--mode", "silent", "--max-active", "1", "--retry-after", "17")
    phone = softphone("call", app.uri, "--hangup-after", "2.5")
    try:
        app.wait_live_calls(1)
        with RawSip(app.port) as raw:
            final, seen = raw.invite(sdp_offer(free_port(), {0: "PCMU/8000"}))
        first = finish(phone)
    finally:
        gateway = app.stop()
    assert final.status == 503, seen
    assert final.headers.get("retry-after") == "17"
    assert first.report is not None and first.report["sip_status"] == 200
    assert gateway.returncode == 0, describe(gateway)


def test_caller_cannot_transfer_the_bridge_or_replace_its_call() -> None:
    """A REFER from the caller would make pjsua dial the Refer-To URI itself (toll fraud); an INVITE with
    Replaces (RFC 3891) would take over the bridged call. The gateway declines both with 603."""
    app = GatewayApp("--mode", "silent")
    try:
        with RawSip(app.port) as raw, RawSip(app.port) as intruder:
            answered, dialog = open_dialog(raw, sdp_offer(free_port(), {0: "PCMU/8000"}))
            refer = in_dialog(raw, dialog, "REFER", f"Refer-To: <sip:900@{LOCALHOST}:9>")
            replaces = f"Replaces: {dialog.call_id};to-tag={dialog.to_tag};from-tag={raw.tag}"
            hijack, _seen = intruder.invite(sdp_offer(free_port(), {0: "PCMU/8000"}), extra=replaces)
            bye = in_dialog(raw, dialog, "BYE")
        app.wait_calls_ended()
    finally:
        gateway = app.stop()
    assert answered.status == 200
    assert refer.status == 603, refer.raw
    assert hijack.status == 603, hijack.raw
    assert bye.status == 200  # the original call was still up, untouched
    assert gateway.returncode == 0, describe(gateway)
    assert gateway.report is not None
    assert len(gateway.report["calls"]) == 1  # the Replaces INVITE never became a call
    assert gateway.report["calls"][0]["hangup_event"][0] == 200
