"""The second leg of a warm transfer: the worker calls the human from the caller's own endpoint and account.

::

    human = incoming.dial("sip:agent@10.0.0.5")     # INVITE from the same pjsua2 endpoint (one more call slot)
    event = await human.events.get()                # HumanLegChanged("ringing" / "answered" / "ended"), Dtmf
    incoming.hold(wav)                              # the caller hears wav; the session is out of the call
    human.hear_agent(True)                          # the human hears the session's voice (the briefing)
    human.join()                                    # caller <-> human in pjsua2's conference bridge
    human.hangup()                                  # CANCEL while it rings, BYE once answered

The leg is placed in the caller's :class:`~bridge.sip.conference.Conference`, which routes its audio (the briefing,
the join) and holds its media sockets until it is gone. Joined, the caller's media port leaves the call (the model
hears nothing more, the caller hears nothing from it) and the two calls' conference slots transmit to each other
(``AudioMedia.startTransmit``), so the human hears the caller and the caller the human with no Python on the media
path.
Every callback runs on the loop thread (``threadCnt=0``, see ``bridge/sip/endpoint.py``); as for incoming calls,
the pjsua2 Call is kept until pjsua reports it DISCONNECTED, and the gateway releases any left at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

from bridge.events import Dtmf, DtmfSource, HumanLegChanged, LegState
from bridge.sip.conference import Conference
from bridge.sip.endpoint import CallGone, SipError, sip_error
from bridge.sip.legs import LegCall, SipLeg

_LOG = logging.getLogger("bridge.sip")


class HumanCall(SipLeg):
    """One outgoing call to a human, placed for a caller's warm transfer: the other direction of a
    :class:`~bridge.sip.legs.SipLeg`. Its events are :class:`~bridge.events.HumanLegChanged` and
    :class:`~bridge.events.Dtmf`."""

    def __init__(self, conference: Conference, account: Any, uri: str, on_gone: Callable[[HumanCall], None]) -> None:
        call = LegCall(account)
        super().__init__(call)
        self.call_id = f"{conference.call_id}/human"  # the caller's call's id, marked as its human leg
        self.uri = uri
        self.conference = conference  # the caller's: routes this leg's audio, holds its media sockets
        self.answered = False
        self.joined = False
        self.sip_code = 0
        self._on_gone = on_gone  # the gateway forgets it
        self._audio: Any = None
        call.handle = self

    def place(self, op: Any) -> None:
        """Send the INVITE (the sockets pjsua opens for it are the conference's); a failure (no call slot, a bad URI)
        ends the leg at once with ``sip_code`` 500."""
        assert self._call is not None
        try:
            self._call.makeCall(self.uri, op)
        except pj.Error as exc:
            error = sip_error("dial", exc)
            _LOG.warning("%s: dialling the human failed: %s", self.conference.call_id, error)
            self._gone(500, error.reason)
            return
        self.conference.admit(self, self.call_id)

    def hear_agent(self, on: bool) -> None:
        """The human hears the session's voice (the caller's media port), or no longer: the briefing."""
        if self._audio is None or self.ended.is_set():
            if on:
                raise CallGone("brief", "the human's leg has no audio")
            return
        self.conference.route_agent(self._audio, on)

    def join(self) -> None:
        """Connect the caller and the human directly (the caller's media port leaves both calls, the hold ends)."""
        if self._audio is None or self.ended.is_set():
            raise CallGone("join", "the human's leg has no audio")
        self.conference.join(self._audio)
        self.joined = True

    # -- callbacks (loop thread) ------------------------------------------------------------------------------

    def _on_dtmf(self, digit: str, source: DtmfSource) -> None:
        self.events.put_nowait(Dtmf(digit=digit.upper()))

    def _on_state(self, info: Any, received: str | None = None) -> None:
        state = info.state
        if state == pj.PJSIP_INV_STATE_EARLY and not self.answered:
            self.events.put_nowait(HumanLegChanged(LegState.RINGING, int(info.lastStatusCode), str(info.lastReason)))
        elif state == pj.PJSIP_INV_STATE_CONFIRMED and not self.answered:
            self.answered = True
            self.events.put_nowait(HumanLegChanged(LegState.ANSWERED, 200))
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._gone(int(info.lastStatusCode), str(info.lastReason))

    def _on_media_state(self) -> None:
        call = self._call
        if call is None:
            return
        info = call.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self._audio = call.getAudioMedia(media.index)
                return

    def _gone(self, code: int, reason: str) -> None:
        if self.ended.is_set():
            return
        self.sip_code = code
        self.events.put_nowait(HumanLegChanged(LegState.ENDED, code, reason))
        self.ended.set()
        asyncio.get_running_loop().call_soon(self.release)  # not from inside the callback

    def release(self) -> None:
        """Forget the pjsua2 objects (after the disconnect, or at shutdown). Idempotent."""
        self._audio = None
        if self._forget_call():
            self.conference.leave(self)
            self._on_gone(self)


def dial(conference: Conference, account: Any, uri: str, op: Any, on_gone: Callable[[HumanCall], None]) -> HumanCall:
    """Place the human's call in the caller's ``conference``; raises :class:`SipError` if the caller has gone."""
    if conference.caller.disconnected.is_set():
        raise SipError("dial", "the caller has hung up")
    human = HumanCall(conference, account, uri, on_gone)
    human.place(op)
    return human
