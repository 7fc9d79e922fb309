"""What every SIP leg shares, without an endpoint: the pjsua2 callback guards, the hang-up, the dropped call."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bridge.events import DtmfSource
from bridge.sip.endpoint import for_handle, pjsua_callback
from bridge.sip.legs import LegCall, SipLeg


class _Handle:
    def __init__(self) -> None:
        self.seen: list[object] = []


class _Call:
    """Stands for a pjsua2 Call: the decorators need only its ``handle``."""

    def __init__(self, handle: _Handle | None) -> None:
        self.handle = handle

    @for_handle
    def onCallState(self, handle: _Handle, prm: Any) -> None:
        handle.seen.append(prm)

    @pjsua_callback
    def onCallTransferRequest(self, prm: Any) -> None:
        raise RuntimeError(f"bad {prm}")


def test_a_callback_reaches_the_handle_while_there_is_one() -> None:
    handle = _Handle()
    call = _Call(handle)
    call.onCallState("first")
    call.handle = None
    call.onCallState("after the release")
    assert handle.seen == ["first"]


def test_what_a_callback_raises_is_logged_not_handed_to_pjsua(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="bridge.sip"):
        _Call(None).onCallTransferRequest("refer")  # returns: nothing reaches SWIG
    assert [r.getMessage() for r in caplog.records] == ["_Call.onCallTransferRequest"]
    assert caplog.records[0].exc_info is not None and "bad refer" in str(caplog.records[0].exc_info[1])


class _FakeLegCall:
    def __init__(self) -> None:
        self.handle: object = None
        self.hangups: list[Any] = []

    def hangup(self, op: Any) -> None:
        self.hangups.append(op)


class _Leg(SipLeg):
    call_id = "c-test"

    def _on_state(self, info: Any, received: str | None) -> None: ...

    def _on_media_state(self) -> None: ...

    def _on_dtmf(self, digit: str, source: DtmfSource) -> None: ...


def _leg() -> tuple[_Leg, _FakeLegCall]:
    call = _FakeLegCall()
    leg = _Leg(call)  # type: ignore[arg-type]  # a stand-in for the pjsua2 call
    call.handle = leg
    return leg, call


def test_a_leg_hangs_up_once_with_the_reason_and_not_after_it_ended() -> None:
    leg, call = _leg()
    leg.hangup('SIP;cause=503;text="model unavailable"')
    assert leg.local_hangup and len(call.hangups) == 1
    headers = [(h.hName, h.hValue) for h in call.hangups[0].txOption.headers]
    assert headers == [("Reason", 'SIP;cause=503;text="model unavailable"')]
    leg.ended.set()
    leg.hangup()
    assert len(call.hangups) == 1


def test_a_dropped_call_is_dropped_once_and_forgets_its_leg() -> None:
    leg, call = _leg()
    assert leg._forget_call() and call.handle is None
    assert not leg._forget_call()
    leg.hangup()  # no call: nothing to send
    assert call.hangups == []


def test_the_leg_call_declines_a_refer() -> None:
    prm = type("Prm", (), {"statusCode": 0, "dstUri": "sip:fraud@example.com"})()
    LegCall.onCallTransferRequest(_Call(None), prm)  # type: ignore[arg-type]  # the callback needs no pjsua2 state
    assert prm.statusCode == 603
