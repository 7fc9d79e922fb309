"""An in-dialog OPTIONS (RFC 3261 §11: an SBC's or a trunk's dialog keep-alive, sent every 30-300 s on a long call)
is answered ``200 OK`` within the dialog (its To tag kept, ``Allow`` listing what the bridge takes), not pjsip's
``500 Unhandled by dialog usages`` (which makes the SBC tear the call down). The call goes on: audio both ways after
it, and the caller's BYE ends it. An OPTIONS of the dialog from another address is still the dialog guard's ``403``,
and an OPTIONS outside any dialog is pjsua's own (bridge/sip/dialogguard.py).
"""

from __future__ import annotations

import time

from _helpers import GatewayApp, RawSip, RtpPeer, describe, in_dialog, open_dialog, sdp_media_address, sdp_offer

PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}


def test_an_in_dialog_options_is_answered_200_and_the_call_goes_on() -> None:
    app = GatewayApp("--mode", "tone", "--tone-hz", "600")
    try:
        with RawSip(app.port) as raw, RtpPeer() as rtp:
            answered, dialog = open_dialog(raw, sdp_offer(rtp.port, PCMU_TE))
            rtp.remote = sdp_media_address(answered.raw)
            rtp.tone_hz = 440.0
            time.sleep(0.5)
            keepalives = [in_dialog(raw, dialog, "OPTIONS", extra="Accept: application/sdp\r\n") for _ in range(3)]
            with RawSip(app.port, local_host="127.0.0.2") as stranger:  # from another address: refused
                forged = in_dialog(stranger, dialog, "OPTIONS")
            after = time.monotonic()
            time.sleep(1.0)
            heard = rtp.received_between(after + 0.2, time.monotonic())
            bye = in_dialog(raw, dialog, "BYE")
    finally:
        app.wait_calls_ended()
        finished = app.stop()
    assert finished.returncode == 0 and finished.report is not None, describe(finished)
    assert [k.status for k in keepalives] == [200, 200, 200], [(k.status, k.reason) for k in keepalives]
    ok = keepalives[0]
    assert f"tag={dialog.to_tag}" in ok.headers["to"] and ok.headers["call-id"] == dialog.call_id
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"} <= {m.strip() for m in ok.headers["allow"].split(",")}
    assert forged.status == 403, (forged.status, forged.reason)
    assert bye.status == 200
    assert len(heard) >= 30, len(heard)  # the gateway still sends after the keep-alives (50 packets/s)
    (call,) = finished.report["calls"]
    assert isinstance(call, dict)
    assert call["media"]["frames_in"] >= 75, call["media"]  # the caller's audio still reaches the app
    assert "Traceback" not in finished.stderr, describe(finished)
