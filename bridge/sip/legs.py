"""What every call of ours has, whichever way it runs: the caller's call the gateway answered, the human's leg of a
warm transfer it placed (:mod:`bridge.sip.outbound`), a test phone's calls (:mod:`bridge.sip.phone`).

* :class:`LegCall` is the one pjsua2 ``Call`` they use. pjsua calls its callbacks from C on the loop thread
  (``threadCnt=0``, see ``bridge/sip/endpoint.py``); each forwards to the call's ``handle``, a :class:`LegHandle`,
  while it has one (:func:`~bridge.sip.endpoint.for_handle`), and nothing it raises reaches pjsua. A REFER is
  declined with ``603``: pjsua's default would accept it and dial the Refer-To URI itself, so a caller could make
  the bridge call any URI (toll fraud). Only a test phone, the transferee of a blind transfer, takes one.
* :class:`SipLeg` is what both directions of the bridge's own calls share: the caller's call the gateway answered
  (:class:`bridge.sip.gateway.IncomingCall`) and the human's leg it placed (:class:`bridge.sip.outbound.HumanCall`).
  It holds the pjsua2 call until pjsua reports it gone, carries the leg's typed events (``events``; ``ended`` is
  set with the last one), hangs up, and takes what its :class:`LegCall` forwards.
* :func:`call_op` (a ``CallOpParam`` with a status, reason and headers), :func:`first_audio` (the active audio
  stream) and :func:`received_text` (the SIP message behind a state change).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import string
from typing import Any, Protocol

import pjsua2 as pj

from bridge.events import DtmfSource, Event
from bridge.sip.endpoint import for_handle, pjsua_callback, sip_error

_LOG = logging.getLogger("bridge.sip")

DTMF_DIGITS = frozenset(string.digits + "*#ABCDabcd")  # RFC 4733 §3.2 events 0-15


class LegHandle(Protocol):
    """What a :class:`LegCall`'s callbacks forward to."""

    @property
    def call_id(self) -> str:
        """Names the call in log lines."""

    def _on_state(self, info: Any, received: str | None) -> None:
        """The call's state changed (``info``: its ``CallInfo``; ``received``: the message that changed it)."""

    def _on_media_state(self) -> None:
        """Its media changed (an SDP was negotiated, a re-INVITE rebuilt the stream, a hold)."""

    def _on_dtmf(self, digit: str, source: DtmfSource) -> None:
        """A digit came (RFC 4733 telephone-event or SIP INFO, which can carry any text)."""


class LegCall(pj.Call):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    """A pjsua2 call whose callbacks forward to its :attr:`handle` (see the module doc)."""

    def __init__(self, account: Any, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.handle: LegHandle | None = None

    @for_handle
    def onCallState(self, handle: LegHandle, prm: Any) -> None:
        handle._on_state(self.getInfo(), received_text(prm))

    @for_handle
    def onCallMediaState(self, handle: LegHandle, prm: Any) -> None:
        handle._on_media_state()

    @for_handle
    def onDtmfDigit(self, handle: LegHandle, prm: Any) -> None:
        source = DtmfSource.INFO if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else DtmfSource.RFC4733
        handle._on_dtmf(str(prm.digit), source)

    @pjsua_callback
    def onCallTransferRequest(self, prm: Any) -> None:
        prm.statusCode = 603
        _LOG.warning("declined REFER to %s on %s", prm.dstUri, self.handle.call_id if self.handle else "?")


class SipLeg(abc.ABC):
    """One call of ours, answered or placed (see the module doc). Its methods run on the loop thread. The owner
    makes the leg its call's handle once the leg is whole (``call.handle = leg``)."""

    call_id: str  # names the call in log lines

    def __init__(self, call: LegCall) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.ended = asyncio.Event()  # set with the leg's last event
        self.local_hangup = False  # the hang-up was ours
        self._call: LegCall | None = call

    def hangup(self, reason: str | None = None) -> None:
        """End the call: CANCEL while it rings out, a final 603 while it rings in, BYE once answered; a no-op once
        ended. ``reason``: the value of a ``Reason`` header (RFC 3326) on the BYE, e.g.
        ``SIP;cause=503;text="model unavailable"``."""
        call = self._call
        if call is None or self.ended.is_set():
            return
        self.local_hangup = True
        try:
            call.hangup(call_op(headers={"Reason": reason} if reason else None))
        except pj.Error as exc:
            _LOG.debug("hangup of %s: %s", self.call_id, sip_error("hangup", exc))

    def _forget_call(self) -> bool:
        """Drop the pjsua2 call (after its disconnect, or at shutdown); False if it was already dropped."""
        call, self._call = self._call, None
        if call is None:
            return False
        call.handle = None
        return True

    # -- what the LegCall forwards (loop thread) ---------------------------------------------------------------

    @abc.abstractmethod
    def _on_state(self, info: Any, received: str | None) -> None:
        """See :class:`LegHandle`."""

    @abc.abstractmethod
    def _on_media_state(self) -> None:
        """See :class:`LegHandle`."""

    @abc.abstractmethod
    def _on_dtmf(self, digit: str, source: DtmfSource) -> None:
        """See :class:`LegHandle`."""


def call_op(status: int = 0, reason: str | None = None, headers: dict[str, str] | None = None) -> Any:
    """A ``CallOpParam`` with a status code, a reason phrase and extra headers."""
    prm = pj.CallOpParam(True)
    if status:
        prm.statusCode = status
    if reason:
        prm.reason = reason
    for name, value in (headers or {}).items():
        header = pj.SipHeader()
        header.hName = name
        header.hValue = value
        prm.txOption.headers.append(header)
    return prm


def received_text(prm: Any) -> str | None:
    """The SIP message that caused a call-state change, if one was received (the ACK for CONFIRMED arrives
    outside any transaction, as a plain RX_MSG event). None otherwise."""
    try:
        e = prm.e
        if e.type == pj.PJSIP_EVENT_RX_MSG:
            return str(e.body.rxMsg.rdata.wholeMsg) or None
        if e.type == pj.PJSIP_EVENT_TSX_STATE and e.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG:
            return str(e.body.tsxState.src.rdata.wholeMsg) or None
    except (AttributeError, pj.Error):
        return None
    return None


def first_audio(call: Any) -> tuple[Any, int] | None:
    """The call's active audio media and its index, or None (no SDP yet, on hold, or ended)."""
    info = call.getInfo()
    for media in info.media:
        if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
            return call.getAudioMedia(media.index), int(media.index)
    return None
