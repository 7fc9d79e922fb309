"""What ends a call at the SIP level when the caller has gone quiet or away. Pure Python, no pjsua2.

A caller can send INVITE and ACK and then vanish: no RTP, no BYE, no answer to anything. Without a bound the call
keeps its slot and its model session for ever. Two bounds apply to every call (the gateway runs them):

* **No RTP** (:class:`RtpWatch`): the caller's RTP packet count (pjmedia's RTCP receive statistics) has not moved
  for ``rtp_timeout_s``, or ``rtp_hold_timeout_s`` while the caller holds the call (RFC 3264 §8.4: a held phone
  may send nothing). The bridge sends BYE with ``Reason: SIP;cause=408;text="media timeout"`` (RFC 3326).
* **Session timer** (RFC 4028): negotiated by pjsua (``AccountCallConfig.timerUse`` and friends). When the bridge
  is the refresher it sends the refreshes; when the caller is, and no refresh arrives, pjsua sends the BYE itself
  (RFC 4028 §10) and the call ends with ``408``: :func:`session_timer_expired` recognises that end.

And one applies before the call is up: **no ACK** (:func:`no_ack`). RFC 3261 §13.3.1.4: a UAS retransmits its 2xx
until the ACK comes, for 64*T1 (32 s), and then ends the dialog; pjsua sends the BYE itself and the call ends with
``408``. The caller never saw the call up (NAT, a wrong Contact or Record-Route on the way back): the bridge's failure,
not a hang-up. Until the ACK the caller's audio does not reach the app (``IncomingCall``: its media port speaks to the
caller, and hears it only once the ACK confirms the call), so such a call sends the model nothing of the caller.

Either way the call leaves through the leg's ordinary disconnect: the app sees ``CallerHungUp`` with the reason
(:data:`MEDIA_TIMEOUT`, :data:`SESSION_TIMER_EXPIRED`, :data:`NO_ACK`), its model session closes and its slot frees.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.events import NO_ACK as NO_ACK  # the end reason, named here with the other bounds

MEDIA_TIMEOUT = "media timeout"
SESSION_TIMER_EXPIRED = "session timer expired"
END_REASONS = (MEDIA_TIMEOUT, SESSION_TIMER_EXPIRED, NO_ACK)
MEDIA_TIMEOUT_HEADER = 'SIP;cause=408;text="media timeout"'  # RFC 3326 Reason of the BYE


@dataclass(slots=True)
class RtpWatch:
    """One call's RTP silence: :meth:`observe` the received packet count now and then; True once the count has not
    moved for the timeout that applies (the hold timeout while the caller holds). A change of hold state restarts
    the clock (the caller just spoke SIP). A timeout of 0 never expires."""

    timeout_s: float
    hold_timeout_s: float
    started: float
    _count: int | None = None
    _held: bool = False
    _since: float = 0.0

    def __post_init__(self) -> None:
        self._since = self.started

    def observe(self, packets: int | None, held: bool, now: float) -> bool:
        """``packets``: the stream's received RTP packets so far, or None (no stream right now)."""
        if held != self._held:
            self._held, self._since = held, now
        if packets is not None and packets != self._count:
            self._count, self._since = packets, now
            return False
        limit = self.hold_timeout_s if held else self.timeout_s
        return limit > 0 and now - self._since >= limit

    def quiet_s(self, now: float) -> float:
        """Seconds since the last packet (or the start, or the last hold change)."""
        return now - self._since


def session_timer_expired(confirmed: bool, local_hangup: bool, status: int) -> bool:
    """Did pjsua end a confirmed call because its session timer ran out? It sends the BYE itself, so the app did not
    hang up, and the call's last status is ``408 Request Timeout`` (RFC 4028 §10). A 408 before the ACK is pjsua
    giving up on the ACK instead (RFC 3261 §13.3.1.4), so the call must have been confirmed."""
    return confirmed and not local_hangup and status == 408


def no_ack(answered: bool, confirmed: bool, local_hangup: bool, status: int) -> bool:
    """Did pjsua end an answered call because its 200 OK was never ACKed (RFC 3261 §13.3.1.4)? It gives up after
    64*T1 and sends the BYE itself: the app did not hang up, the call was never confirmed, its last status 408."""
    return answered and not confirmed and not local_hangup and status == 408
