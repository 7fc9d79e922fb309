"""Only the caller steers its call (bridge.sip.dialogguard, bridge.sip.rxhook), on a worker called directly.

A third address that knows the dialog's identifiers (Call-ID, both tags: what a console or a log could show) sends a
BYE, a re-INVITE moving the media to itself, an INFO and an UPDATE: each gets 403, the call stays up and the caller
keeps hearing the agent, and the third address receives no media. The caller's own re-INVITE moving the media to
the third address gets 488; its own re-INVITE (a hold and a resume) passes, and its BYE ends the call.
"""

from __future__ import annotations

import copy
import time

import pytest

from bridge.devkit.ports import can_bind
from bridge.sip.dialogguard import FORBIDDEN_NOT_CALLER
from tests.integration.sip._helpers import (
    LOCALHOST,
    GatewayApp,
    RawSip,
    RtpPeer,
    in_dialog,
    open_dialog,
    sdp_media_address,
    sdp_offer,
)

STRANGER = "127.0.0.3"

pytestmark = pytest.mark.skipif(not can_bind(STRANGER), reason=f"{STRANGER} is not usable here")


def _hears_agent(caller: RtpPeer, packets: int = 25, within_s: float = 10.0) -> bool:
    """Does the caller receive ``packets`` more RTP packets from now on (within ``within_s``)?"""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        if len(caller.received_between(start, time.monotonic())) >= packets:
            return True
        time.sleep(0.05)
    return False


def test_a_third_address_cannot_end_move_or_steer_the_call_and_the_caller_still_can() -> None:
    app = GatewayApp("--mode", "tone", "--tone-hz", "600")
    try:
        with RtpPeer() as caller, RtpPeer(STRANGER) as heard, RawSip(app.port) as raw:
            caller.tone_hz = 1000.0
            final, dialog = open_dialog(raw, sdp_offer(caller.port, {0: "PCMU/8000"}))
            assert final.status == 200, final.raw
            caller.remote = sdp_media_address(final.raw)
            app.wait_live_calls(1)
            assert _hears_agent(caller)

            with RawSip(app.port, local_host=STRANGER) as stranger:
                stranger.tag = raw.tag  # the caller's From-tag: the stranger knows every identifier
                forged = copy.copy(dialog)
                to_stranger = sdp_offer(heard.port, {0: "PCMU/8000"}).replace(LOCALHOST, STRANGER)
                forged.cseq += 10
                moved = in_dialog(stranger, forged, "INVITE", body=to_stranger)
                assert (moved.status, moved.reason) == (403, FORBIDDEN_NOT_CALLER), moved.raw
                assert in_dialog(stranger, forged, "UPDATE", body=to_stranger).status == 403
                info = in_dialog(stranger, forged, "INFO", body="Signal=1\r\nDuration=160\r\n",
                                 content_type="application/dtmf-relay")  # fmt: skip
                assert info.status == 403
                assert in_dialog(stranger, forged, "BYE").status == 403

            app.wait_live_calls(1)  # the call is up ...
            assert _hears_agent(caller)  # ... and its media still flows to the caller
            assert heard.received == []  # never to the third address

            # the caller itself may not send the media to another host than its own or its offer's
            dialog.cseq += 20
            elsewhere = in_dialog(raw, dialog, "INVITE", body=to_stranger)
            assert elsewhere.status == 488, elsewhere.raw
            assert heard.received == []
            # a hold and a resume from the caller pass
            hold = sdp_offer(caller.port, {0: "PCMU/8000"}).replace("a=sendrecv", "a=sendonly")
            assert in_dialog(raw, dialog, "INVITE", body=hold).status == 200
            assert in_dialog(raw, dialog, "INVITE", body=sdp_offer(caller.port, {0: "PCMU/8000"})).status == 200
            assert _hears_agent(caller)
            # and the caller's BYE ends the call
            assert in_dialog(raw, dialog, "BYE").status == 200
            app.wait_calls_ended()
        finished = app.stop()
    except BaseException:
        app.stop()
        raise
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "refused BYE of" in finished.stderr and "not from its caller" in finished.stderr
