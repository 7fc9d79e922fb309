"""Who called, through the real gateway (``IncomingCall.caller``, ``IncomingCall.original_called``), when a trusted
front relays the call: the front (here the test, from 127.0.0.1) reports the caller's source in
``X-Callbridge-Source``. A caller whose reported source is listed (``SipConfig.allowed_sources``) is a trusted trunk:
its P-Asserted-Identity names the caller, and ``Privacy: id`` withholds it. Behind a front with nothing listed,
From stays the caller. The original called number (Diversion) is read either way."""

from __future__ import annotations

from typing import Any

import pytest
from _helpers import GatewayApp, RawSip, describe, free_port, sdp_offer

pytestmark = pytest.mark.integration

PCMU = {0: "PCMU/8000"}
TRUNK = "10.0.0.7:5060"  # the caller's source, as the front reports it
HEADERS = (
    f"X-Callbridge-Source: {TRUNK}",
    "P-Asserted-Identity: <sip:+15551234567@trunk.example;user=phone>, <tel:+15551234567>",
    "Diversion: <sip:+15550002222@pbx.example>;reason=no-answer, <sip:+15550001111@pbx.example>;reason=unconditional",
)


def calls_through_the_front(*args: str, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Two INVITEs from the "front" (127.0.0.1), each answered and ended, the second with ``extra`` headers too: the
    calls as the app saw them."""
    app = GatewayApp("--mode", "silent", "--trusted-front", "127.0.0.1/32", *args)
    try:
        with RawSip(app.port) as front:
            for more in ((), extra):
                answer, seen = front.invite(sdp_offer(free_port(), PCMU), extra="\r\n".join(HEADERS + more))
                assert answer.status == 200, (answer, seen)
        app.wait_calls_ended()
    finally:
        finished = app.stop()
    assert finished.returncode == 0 and finished.report is not None, describe(finished)
    calls: list[dict[str, Any]] = finished.report["calls"]
    return calls


def test_a_listed_source_behind_a_trusted_front_is_a_trusted_trunk() -> None:
    asserted, withheld = calls_through_the_front("--allow", "10.0.0.0/8", extra=("Privacy: id",))
    assert (asserted["caller"], asserted["original_called"], asserted["remote_addr"]) == (
        "+15551234567",
        "+15550001111",
        TRUNK,
    )
    assert (withheld["caller"], withheld["original_called"]) == ("anonymous", "+15550001111")


def test_behind_a_front_with_nothing_listed_from_stays_the_caller() -> None:
    first, second = calls_through_the_front(extra=("Privacy: none",))
    for call in (first, second):
        assert (call["caller"], call["original_called"], call["remote_addr"]) == ("raw", "+15550001111", TRUNK)
