"""SIP INFO with ``application/dtmf`` (the body is the digit itself, as some PBXs and SBCs send it; the other common
format, ``application/dtmf-relay`` with ``Signal=``, is pjsua's own) is a DTMF digit answered 200, not pjsip's 500
(bridge/sip/infodtmf.py). A retransmission of the same INFO (same CSeq) is answered again but is no second digit; a
body that is no DTMF digit is answered 200 and dropped as the gateway drops any such "digit".
"""

from __future__ import annotations

import secrets
import time

from _helpers import GatewayApp, RawSip, RtpPeer, describe, in_dialog, open_dialog, sdp_media_address, sdp_offer

PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}
PLAIN = "application/dtmf"


def _stop(app: GatewayApp) -> dict[str, object]:
    app.wait_calls_ended()
    finished = app.stop()
    assert finished.returncode == 0 and finished.report is not None, describe(finished)
    assert "Traceback" not in finished.stderr, describe(finished)
    calls = finished.report["calls"]
    assert isinstance(calls, list) and len(calls) == 1, calls
    call = calls[0]
    assert isinstance(call, dict)
    return call


def test_info_application_dtmf_is_a_digit_answered_200() -> None:
    app = GatewayApp("--mode", "silent")
    statuses: list[int] = []
    try:
        with RawSip(app.port) as raw, RtpPeer() as rtp:
            answered, dialog = open_dialog(raw, sdp_offer(rtp.port, PCMU_TE))
            rtp.remote = sdp_media_address(answered.raw)
            rtp.tone_hz = 0.0
            for body in ("5", "#\r\n", "x", "d"):
                statuses.append(in_dialog(raw, dialog, "INFO", body=body, content_type=PLAIN).status)
                time.sleep(0.1)
            # the same INFO again (its 200 lost on the way, say): the same CSeq and branch, answered, one digit
            dialog.cseq += 1
            branch = "z9hG4bK" + secrets.token_hex(6)
            again = raw._request("INFO", dialog.uri, dialog.call_id, dialog.cseq, branch, dialog.to_tag, "7", "", PLAIN)
            for _ in range(2):
                raw.sock.sendto(again, raw.target)
                statuses.append(raw._read_final(5.0, dialog.call_id, f"{dialog.cseq} INFO")[0].status)
            relay_body = "Signal=9\r\nDuration=160\r\n"
            relay = in_dialog(raw, dialog, "INFO", body=relay_body, content_type="application/dtmf-relay")
            bye = in_dialog(raw, dialog, "BYE")
    finally:
        call = _stop(app)
    assert answered.status == 200 and bye.status == 200
    assert statuses == [200] * 6, statuses
    assert relay.status == 200
    assert call["dtmf"] == "5#D79", call  # "x" dropped, "d" normalized, "7" once, then pjsua's own dtmf-relay
    assert call["dtmf_sources"] == "iiiii", call
    assert call["dtmf_dropped"] == 1, call
