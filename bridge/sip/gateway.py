"""Incoming calls: pjsua2 underneath, plain Python objects and ``bridge.events`` on top.

::

    gateway = SipGateway(SipConfig(host="0.0.0.0", port=5060), on_incoming=handle_call)
    async with gateway:                      # starts the endpoint; closing hangs up and destroys it cleanly
        await stop_requested.wait()

    async def handle_call(call: IncomingCall) -> None:
        call.ringing()                                   # 180
        ...open the Realtime session...
        call.start_media(playout, on_frame)              # on_frame(pcm, t) runs on the loop, 20 ms frames
        call.answer()                                    # 200 OK
        while True:
            event = await call.events.get()              # Dtmf / TransferProgress / CallerHungUp
            ...

The app coroutine owns its call. When it returns (or raises), whatever is left is closed: an unanswered call
gets ``480 Temporarily Unavailable`` (``500`` if the coroutine raised), an answered one a BYE.

What pjsua decides by itself, before any of this runs (so ``on_incoming`` never sees these calls; each is
counted in ``SipGateway.rejected`` and passed to ``on_rejected``), as measured with pjsip 2.15.1:

* an offer without PCMU, PCMA or G.722 (bridged at 8 kHz: bridge/sip/endpoint.py): ``488 Not Acceptable Here``;
* an INVITE beyond the per-process call cap (4 with this wheel): ``486 Busy Here``;
* an SDP body that does not parse (``400 Bad SDP`` with a ``Warning``), an SDP without media
  (``400 Missing media in SDP``), no Contact (``400 Bad Request``), a body that is not SDP
  (``415 Unsupported Media Type``), an unknown ``Require`` (``420 Bad Extension``);
* a request that does not parse at all (broken Via, a missing Call-ID/From/To/CSeq, a non-numeric
  Content-Length): dropped by pjsip's transport layer, logged, never answered;
* an out-of-dialog ``OPTIONS``: ``200 OK`` with Allow/Accept/Supported; an in-dialog request for an unknown
  dialog (BYE, INFO, CANCEL): ``481 Call/Transaction Does Not Exist``; a ``SUBSCRIBE``: ``403 Forbidden (no
  subscriptions here)`` (the endpoint's account turns pjsua's presence server away).

None of the checks below applies to those non-INVITE requests: pjsua answers them for any source (a firewall
or the dispatcher in front is the place to drop strangers' packets altogether).

What the gateway decides next, before the app sees the call (also counted; :mod:`bridge.sip.admission`). It looks
at a new INVITE before pjsua makes it a call (:mod:`bridge.sip.rxhook`) and answers a refusal there, statelessly, so
that a refused INVITE holds no call slot and no media sockets (in ``onIncomingCall`` if that hook is off):

* the source address is outside ``SipConfig.allowed_sources``: ``403 Forbidden (source address not allowed)``.
  Behind a front (``SipConfig.trusted_fronts``) the source is the caller's, as the front reports it
  (:func:`bridge.sip.access.caller_source`); this source also drives the lockout and ``IncomingCall.remote_addr``;
* ``Content-Length`` promises more body than the datagram holds (RFC 3261 §18.3; pjsip ignores the header on
  UDP): ``400 Bad Request (Content-Length larger than the body)``;
* with ``SipConfig.auth_users``: no or stale credentials get ``401 Unauthorized`` and a
  ``WWW-Authenticate: Digest`` challenge; wrong ones ``403 Forbidden (bad credentials)`` (see
  :mod:`bridge.sip.access`). An accepted call carries the user in ``IncomingCall.auth_user``. A challenged or
  guessing INVITE holds no call slot;
* a ``Session-Expires`` below ``SipConfig.session_min_se_s`` (RFC 4028): ``422 Session Interval Too Small`` with
  ``Min-SE``. pjsua2 runs ``onIncomingCall`` before it makes that check itself, so without this the app would take
  the INVITE for a call whose caller hung up while it rang; the caller's retry (same Call-ID) is the call;
* the source already holds ``SipConfig.calls_per_source`` calls here (sources in ``allowed_sources`` or
  ``trunk_sources`` exempt, and loopback under the closed default): ``486 Busy Here (too many calls from this
  source)``. Only an admitted call takes a slot. A call through a trusted front is the front's to count
  (``front_calls_per_source``): the front is one source for all its callers, and it knows each caller's calls
  across every worker;
* where trunks are listed (``allowed_sources``, ``trunk_sources``), the sources outside the lists already hold
  ``SipConfig.unlisted_share`` of the worker's calls: ``486 Busy Here (room kept for listed trunks)``.

Each initial INVITE gets one final answer, however often it arrives (:mod:`bridge.sip.answers`, fed every response
sent by :mod:`bridge.sip.txhook`): a retransmission of one answered 2xx is absorbed, of a refused one refused again
alike, and a merged request gets ``482 Loop Detected``.

And during a call: a REFER from the caller and an INVITE with ``Replaces`` aimed at a bridged call are declined
with ``603`` (pjsua would otherwise dial the Refer-To URI itself); a DTMF "digit" outside 0-9 * # A-D (SIP INFO
carries any text) is dropped and counted in ``IncomingCall.dtmf_dropped``. SIP INFO digits come in both common
bodies: ``application/dtmf-relay`` (``Signal=5``, pjsua's own) and ``application/dtmf`` (the digit itself, which
pjsua would answer ``500``: :mod:`bridge.sip.infodtmf` answers it ``200``).

How the caller's side ended the call: its BYE, or its CANCEL while the call rings (seen in ``onCallTsxState``, the
one place a CANCEL's text reaches the application), is read for its ``Reason`` header (RFC 3326,
:mod:`bridge.sip.reason`) and handed on as ``CallerHungUp.peer``: a network failure, or a ring completed elsewhere,
is not the caller's hang-up.

Hold and resume (re-INVITE with ``a=sendonly`` / ``a=inactive``, then ``a=sendrecv``) are answered by pjsua: 200
with the mirrored direction (recvonly / inactive / sendrecv). pjsua rebuilds the stream on each re-INVITE; while the
caller holds, ``IncomingCall.held`` is True and the app's port stays disconnected (no music on hold reaches the app,
``on_frame`` pauses, nothing is sent, and the agent's audio waits where it was, since the port is not read); on resume
the port is connected to the new stream and audio flows both ways again. Each change is a
:class:`~bridge.events.CallerHold` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import pjsua2 as pj

from bridge import metrics
from bridge.audio.frames import FRAME_MS, FrameSource, StreamKernel
from bridge.events import (
    CallerHold,
    CallerHungUp,
    Dtmf,
    DtmfSource,
    Event,
    MediaDropped,
    PeerEnding,
    TransferProgress,
)
from bridge.privacy.masking import mask_number
from bridge.runtime.service import Service
from bridge.sip.access import FORBIDDEN_SOURCE, in_networks, source_allowed, source_ip
from bridge.sip.admission import SESSION_INTERVAL_TOO_SMALL, Admission, Verdict
from bridge.sip.answers import AnswerBook
from bridge.sip.bounds import (
    MEDIA_TIMEOUT,
    MEDIA_TIMEOUT_HEADER,
    NO_ACK,
    SESSION_TIMER_EXPIRED,
    RtpWatch,
    no_ack,
    session_timer_expired,
)
from bridge.sip.callermedia import CallerMedia
from bridge.sip.conference import Conference
from bridge.sip.cport import NativePort, NativeUplink
from bridge.sip.crossing import PortCounters
from bridge.sip.dialogguard import PASS, DialogGuard, GuardedDialog, media_security
from bridge.sip.endpoint import (
    REFUSED_CALLER_VISIBLE_DIGITS,
    CallGone,
    LogLimiter,
    RejectedCall,
    SipEndpoint,
    SipError,
    for_handle,
    pjsua_callback,
    sip_error,
)
from bridge.sip.identity import call_identity
from bridge.sip.infodtmf import InfoDtmf
from bridge.sip.legs import DTMF_DIGITS, LegCall, SipLeg, call_op, first_audio
from bridge.sip.outbound import HumanCall, dial
from bridge.sip.oversize import BODY_SHORT, MAX_MESSAGE, MAX_PACKET, TOO_LARGE, Refused, cut_or_too_large, read_head
from bridge.sip.reason import ENDING_REQUESTS, peer_ending
from bridge.sip.rtpguard import MediaClaims, MediaGuard, media_sources, sdp_connection_ip
from bridge.sip.rxhook import RxHook
from bridge.sip.sdpptime import PtimeHook
from bridge.sip.sipconfig import MediaPortKind, SipConfig
from bridge.sip.sipmsg import (
    SIP_CALL_ID_CHARS,
    Dialog,
    Transport,
    clean_text,
    dialog_from_ack,
    message_body,
    parse_request_head,
    user_part,
)
from bridge.sip.sizeguard import SizeGuard
from bridge.sip.transports import secure_media
from bridge.sip.txhook import TxHook

_LOG = logging.getLogger("bridge.sip")

OnFrame = Callable[[bytes, float], None]
OnIncoming = Callable[["IncomingCall"], Awaitable[None]]

HEADER_CHARS = 1024  # a header value as the app sees it (IncomingCall.headers)


def new_call_id() -> str:
    """The bridge's own id of a call, made when its INVITE arrives: it names the call's files, Redis keys and log
    lines. Never the caller's Call-ID (RFC 3261 §8.1.1.4 lets a caller write anything there, and reuse it)."""
    return f"c-{uuid.uuid4().hex}"


def _rtp_transport(call: Any) -> tuple[int, str] | None:
    """The call's audio RTP socket: its local port, and the host its last datagram came from ("" before any)."""
    found = first_audio(call) if call is not None else None
    if found is None:
        return None
    try:
        info = call.getMedTransportInfo(found[1])
        port = int(str(info.localRtpName).rpartition(":")[2])
    except (pj.Error, ValueError):
        return None
    source = str(info.srcRtpName).rpartition(":")[0].strip("[]")
    return port, "" if source in ("", "0.0.0.0") else source


def _rx_packets(call: Any, indexes: tuple[int, ...]) -> int | None:
    """RTP packets received so far on the call's audio streams at ``indexes`` (pjmedia's RTCP statistics), None
    with no stream. The indexes come from the last media state, so the watch never builds a whole CallInfo."""
    total: int | None = None
    for index in indexes:
        try:
            total = (total or 0) + int(call.getStreamStat(index).rtcp.rxStat.pkt)
        except pj.Error:
            continue  # no stream right now (being rebuilt by a re-INVITE, or inactive)
    return total


def _audio_state(call: Any) -> tuple[tuple[int, ...], bool]:
    """The call's audio media indexes, and whether the caller holds the call (RFC 3264 §8.4: its last offer said
    sendonly or inactive)."""
    info = call.getInfo()  # keep the CallInfo alive while reading its media vector (SWIG returns a reference)
    audio = [m for m in info.media if m.type == pj.PJMEDIA_TYPE_AUDIO]
    statuses = [int(m.status) for m in audio]
    held = pj.PJSUA_CALL_MEDIA_REMOTE_HOLD in statuses and pj.PJSUA_CALL_MEDIA_ACTIVE not in statuses
    return tuple(int(m.index) for m in audio), held


class _GatewayCall(LegCall):
    """The caller's call: a :class:`~bridge.sip.legs.LegCall` whose handle is its :class:`IncomingCall`, which also
    declines INVITEs with Replaces and follows the NOTIFYs of its own REFERs."""

    @pjsua_callback
    def onCallReplaceRequest(self, prm: Any) -> None:
        # Same reason for an INVITE with Replaces (RFC 3891): nobody may take over a bridged call.
        prm.statusCode = 603
        _LOG.warning("declined INVITE/Replaces for %s", self.handle.call_id if self.handle else "?")

    @for_handle
    def onCallTsxState(self, handle: IncomingCall, prm: Any) -> None:
        # The caller's BYE or CANCEL as it arrives, before the call's DISCONNECTED state: a CANCEL's text reaches the
        # application nowhere else (the state change that follows it is the 487's).
        e = prm.e
        if e.type != pj.PJSIP_EVENT_TSX_STATE or e.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG:
            return
        tsx = e.body.tsxState.tsx
        if int(tsx.role) == pj.PJSIP_ROLE_UAS and str(tsx.method) in ENDING_REQUESTS:
            handle._on_request(str(e.body.tsxState.src.rdata.wholeMsg))

    @for_handle
    def onCallTransferStatus(self, handle: IncomingCall, prm: Any) -> None:
        final = bool(prm.finalNotify)
        handle._on_transfer(TransferProgress(int(prm.statusCode), str(prm.reason), final))
        prm.cont = not final  # keep receiving NOTIFYs until the final one (RFC 3515 §2.4.5)


class _RefusedCall(pj.Call):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    """An INVITE the gateway refused in ``onIncomingCall``. pjsua2 needs a Call object to send the final response,
    and it must live until pjsua reports the call DISCONNECTED (a Call dropped earlier hangs up on destruction)."""

    def __init__(self, account: Any, call_id: int, on_gone: Callable[[_RefusedCall], None]) -> None:
        super().__init__(account, call_id)
        self.on_gone: Callable[[_RefusedCall], None] | None = on_gone

    @pjsua_callback
    def onCallState(self, prm: Any) -> None:
        on_gone = self.on_gone
        if on_gone is not None and self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.on_gone = None
            asyncio.get_running_loop().call_soon(on_gone, self)  # not from inside the callback


class IncomingCall(SipLeg):
    """One incoming call as the app sees it. Every method runs on the event loop thread and returns at once.

    Fields: ``call_id`` (the bridge's own id, :func:`new_call_id`: it names files, keys and metrics),
    ``sip_call_id`` (the caller's SIP Call-ID, as data), ``caller`` (user part of From; from a trusted trunk, a
    source in ``SipConfig.allowed_sources``, the number its P-Asserted-Identity or Remote-Party-ID asserts;
    ``anonymous`` when the INVITE withholds it: :mod:`bridge.sip.identity`), ``called`` (user part of the
    request-URI), ``original_called`` (the number the call was first placed to, from Diversion or History-Info;
    "" for none); every caller-written value is passed through :func:`~bridge.sip.sipmsg.clean_text`.
    ``remote_addr`` ("ip:port" the INVITE came from, or the caller's as a trusted front reports it;
    ``remote_ip`` without the port), ``peer_addr`` (the address the INVITE arrived from: the front, if any),
    ``headers`` (the INVITE's headers, lower-case names, first occurrence), ``auth_user`` (the digest user the
    INVITE authenticated as, or None when ``SipConfig.auth_users`` is off or the source is exempt), ``trusted``
    (the INVITE came from a trusted trunk, a source in ``allowed_sources``: its asserted identity and its
    ``traceparent`` are believed).

    ``events`` carries :class:`~bridge.events.Dtmf`, :class:`~bridge.events.TransferProgress` and, last,
    :class:`~bridge.events.CallerHungUp` (whoever hung up: ``local_hangup`` tells if it was us).
    ``disconnected`` is set at the same time as that last event.
    """

    def __init__(self, gateway: SipGateway, call: _GatewayCall, prm: Any) -> None:
        super().__init__(call)
        info = call.getInfo()
        self._invite = str(prm.rdata.wholeMsg)
        head = parse_request_head(self._invite)
        self.call_id: str = new_call_id()
        self.sip_call_id: str = clean_text(str(info.callIdString), SIP_CALL_ID_CHARS)
        self.called: str = clean_text(user_part(head.uri) if head else user_part(str(info.localUri)))
        self.peer_addr: str = str(prm.rdata.srcAddress)
        self.remote_addr: str | None = gateway.caller_source(self.peer_addr, self._invite) or None
        # From, or a trusted trunk's P-Asserted-Identity / Remote-Party-ID (a source in allowed_sources, as the dialog
        # guard trusts it); Diversion / History-Info (bridge.sip.identity)
        trunk = bool(gateway._allowed) and in_networks(self.remote_addr or "", gateway._allowed)
        identity = call_identity(self._invite, user_part(str(info.remoteUri)), trusted=trunk)
        self.trusted: bool = trunk  # its headers vouch for what they say (a traceparent continues its trace)
        self.caller: str = identity.caller
        self.original_called: str = identity.original_called
        self.headers: dict[str, str] = {
            k: clean_text(v, HEADER_CHARS) for k, v in (head.headers if head else {}).items()
        }
        self.auth_user: str | None = None
        self.dtmf_dropped = 0  # "digits" outside 0-9 * # A-D (a SIP INFO body can say anything)
        self.held = False  # the caller put the call on hold (re-INVITE with sendonly/inactive); see the module doc
        self.disconnected = self.ended  # the same event, by the name the call's PhoneLeg reads
        self.answered = False
        self.confirmed = False  # the caller's ACK arrived
        self.end_cause = ""  # the SIP-level bound that ended the call (bridge.sip.bounds), if one did
        self._peer: PeerEnding | None = None  # the caller's last BYE or CANCEL, and its Reason (bridge.sip.reason)
        self._rtp: RtpWatch | None = None
        self._audio_indexes: tuple[int, ...] = ()  # the call's audio media, from its last media state
        self.hangup_code: int | None = None
        self.hangup_reason: str = ""
        self.codec: str | None = None  # "PCMU" / "PCMA" / "G722" once media is up
        self.srtp = False  # the audio runs SRTP (RTP/SAVP, bridge.sip.transports)
        self.dialog: Dialog | None = None  # from the caller's ACK: lets a restarted worker send BYE for this call
        self._gateway = gateway
        self.conference = Conference(self, gateway.claims)  # hold, routing and joining; the media port's seat
        self._on_frame: OnFrame | None = None
        self._transfer: asyncio.Future[TransferProgress] | None = None
        self._counters = PortCounters()  # this call's share of a pooled port's counters
        self._baseline = PortCounters()
        self._media: CallerMedia | None = None  # media from the caller only (bridge.sip.rtpguard)
        try:
            self._media = gateway.caller_media(self.call_id, self._invite, self.remote_ip, self._emit)
        except Exception:  # the call goes on unguarded rather than not at all
            _LOG.exception("%s: media source filter", self.call_id)

    def __repr__(self) -> str:
        state = "ended" if self.disconnected.is_set() else "answered" if self.answered else "ringing"
        return f"<IncomingCall {self.call_id} ({self.sip_call_id!r}) {self.caller}->{self.called} {state}>"

    @property
    def remote_ip(self) -> str | None:
        """The IP address the INVITE came from (``remote_addr`` without the port)."""
        return source_ip(self.remote_addr) if self.remote_addr else None

    # -- access ------------------------------------------------------------------------------------------------

    def enforce_sources(self, cidrs: Iterable[str]) -> bool:
        """A per-dialplan (or per-trunk) source allowlist, on top of ``SipConfig.allowed_sources``.

        True if the INVITE's source is inside ``cidrs`` (an empty list allows every source). Otherwise the call
        is refused with ``403 Forbidden (source address not allowed)``, counted in ``SipGateway.rejected`` and
        reported to ``on_rejected`` like the gateway's own refusals, and False is returned: the app just returns.
        Call it before answering. A malformed CIDR raises ``ValueError`` (validate dialplans at load time with
        :func:`bridge.sip.access.parse_networks`).
        """
        if source_allowed(self.remote_addr or "", cidrs):
            return True
        self.reject(403, FORBIDDEN_SOURCE)
        self._gateway.endpoint.count_rejected(
            RejectedCall(
                403,
                FORBIDDEN_SOURCE,
                self.call_id,
                self.caller,
                self.called,
                self.remote_addr or "",
                "not in the dialplan's allowed sources",
            )
        )
        return False

    # -- SIP actions ---------------------------------------------------------------------------------------

    def _live(self, operation: str) -> LegCall:
        if self._call is None or self.disconnected.is_set():
            raise CallGone(operation, "the call has ended")
        return self._call

    def ringing(self) -> None:
        """Send ``180 Ringing``."""
        self._respond("ringing", 180)

    def answer(self) -> None:
        """Send ``200 OK`` (SDP answer with PCMU, PCMA or G.722). Media connects as soon as it is negotiated."""
        self._respond("answer", 200)
        self.answered = True

    def _respond(self, operation: str, status: int) -> None:
        """A provisional or the 2xx response to the INVITE; nothing once answered."""
        call = self._live(operation)
        if self.answered:
            return
        try:
            call.answer(call_op(status))
        except pj.Error as exc:
            raise sip_error(operation, exc) from None

    def reject(self, code: int = 486, reason: str | None = None, retry_after: int | None = None) -> None:
        """Refuse an unanswered call with a final response, e.g. 486, 403, or 503 with ``Retry-After``."""
        call = self._live("reject")
        if self.answered:
            raise SipError("reject", "the call is already answered: use hangup()")
        if not 300 <= code <= 699:
            raise ValueError(f"reject needs a 3xx-6xx status code, got {code}")
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
        self.local_hangup = True
        try:
            call.hangup(call_op(code, reason, headers))
        except pj.Error as exc:
            raise sip_error("reject", exc) from None

    def transfer(self, uri: str) -> None:
        """Blind transfer: send REFER (RFC 3515) asking the caller to call ``uri``.

        Progress arrives as ``TransferProgress`` events (NOTIFY sipfrags: 100 Trying, 180, then a final one).
        The transferor leaves on a final 2xx; :meth:`wait_transfer` makes that one line::

            call.transfer("sip:agent@10.0.0.5")
            if (await call.wait_transfer()).status_code // 100 == 2:
                call.hangup()
        """
        call = self._live("transfer")
        if not self.answered:
            raise SipError("transfer", "REFER needs an answered call")
        future: asyncio.Future[TransferProgress] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume_exception)
        try:
            call.xfer(uri, call_op())
        except pj.Error as exc:
            raise sip_error("transfer", exc) from None
        if self._transfer is not None and not self._transfer.done():
            self._transfer.cancel()
        self._transfer = future

    def dial(self, uri: str) -> HumanCall:
        """A warm transfer's second leg: call ``uri`` from this endpoint (:mod:`bridge.sip.outbound`)."""
        self._live("dial")
        return self._gateway.dial_human(self, uri)

    def hold(self, wav: str) -> None:
        """A warm transfer's hold (:meth:`bridge.sip.conference.Conference.hold`): the caller hears ``wav`` in a
        loop; the session neither hears the caller nor is heard by them."""
        self.conference.hold(wav)

    def unhold(self) -> None:
        """The hold ends: the session and the caller hear each other again."""
        self.conference.unhold()

    def audio_media(self) -> Any:
        """The call's audio in the conference bridge (an ``AudioMedia``), or None."""
        found = first_audio(self._call) if self._call is not None and not self.disconnected.is_set() else None
        return found[0] if found is not None else None

    async def wait_transfer(self) -> TransferProgress:
        """The final ``TransferProgress`` of the last :meth:`transfer`; :class:`CallGone` if the call ended first."""
        if self._transfer is None:
            raise SipError("wait_transfer", "no transfer was started")
        return await asyncio.shield(self._transfer)

    def send_dtmf(self, digits: str) -> None:
        """Send digits as RFC 4733 telephone-events."""
        bad = set(digits) - DTMF_DIGITS
        if bad:
            raise ValueError(f"not DTMF digits: {''.join(sorted(bad))!r}")
        call = self._live("send_dtmf")
        try:
            call.dialDtmf(digits)
        except pj.Error as exc:
            raise sip_error("send_dtmf", exc) from None

    # -- media ---------------------------------------------------------------------------------------------

    def start_media(self, outbound: FrameSource, on_frame: OnFrame) -> None:
        """Connect audio both ways, now or as soon as the SDP is negotiated (call it before ``answer()``).

        ``outbound.pop_frame()`` runs on pjmedia's clock thread and must return 320 bytes (8 kHz PCM16 mono,
        20 ms) at once; an empty or short frame is padded with silence. ``on_frame(pcm, t_capture)`` runs on the
        event loop thread for each received frame; ``t_capture`` is ``time.monotonic()`` in the clock callback.
        Calling it again swaps the source and sink.
        """
        self._live("start_media")
        self._on_frame = on_frame
        port = self.conference.port
        if port is None:
            port = self.conference.port = self._gateway.endpoint.acquire_port()
            self._baseline = port.counters()
        port.attach(outbound, self._deliver)
        self._on_media_state()

    def uplink_offload(self, upsampler: StreamKernel) -> NativeUplink | None:
        """The caller's audio sent from the clock thread (native ports with the C resampler; ``cport.c``,
        "Uplink"). ``CALLBRIDGE_UPLINK=python`` keeps it on the loop (for comparison)."""
        port = self.conference.port
        if not isinstance(port, NativePort) or os.environ.get("CALLBRIDGE_UPLINK") == MediaPortKind.PYTHON:
            return None
        return port.uplink(upsampler)

    def stop_media(self) -> None:
        """Stop both directions: the caller hears silence, ``on_frame`` is no longer called."""
        self._on_frame = None
        if self.conference.port is not None:
            self.conference.port.detach()

    @property
    def media_port_kind(self) -> MediaPortKind:
        """The media port kind: "native" (C, bridge.sip.cport) or "python" (a pjsua2 AudioMediaPort)."""
        return self._gateway.endpoint.media_port_kind

    @property
    def clock_priority(self) -> str:
        """Native ports: whether pjmedia's clock thread runs SCHED_RR ("granted", "refused: ..."); else "n/a"."""
        hub = self._gateway.endpoint.hub
        return hub.clock_realtime if hub is not None else "n/a"

    @property
    def media_counters(self) -> dict[str, int]:
        """Frames in/out, size-0 frames and callback errors of this call's media port."""
        port = self.conference.port
        if port is None:
            return self._counters.as_dict()
        return port.counters().since(self._baseline).as_dict()

    @property
    def rtp_dropped(self) -> int:
        """Media packets dropped on this call's sockets so far: from other addresses than the caller's media."""
        return self._media.dropped if self._media is not None else 0

    def _deliver(self, pcm: bytes, t_capture: float) -> None:
        on_frame = self._on_frame
        if on_frame is not None:
            on_frame(pcm, t_capture)

    # -- callbacks from _GatewayCall (loop thread) --------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self.events.put_nowait(event)

    def _on_dtmf(self, digit: str, source: DtmfSource) -> None:
        normal = digit.upper()
        if len(normal) != 1 or normal not in DTMF_DIGITS:
            self.dtmf_dropped += 1
            _LOG.warning("%s: dropped DTMF %r from %s (not 0-9 * # A-D)", self.call_id, digit[:16], source)
            return
        self._emit(Dtmf(digit=normal, source=source))

    def _on_media_state(self) -> None:
        call = self._call
        if call is None or self.disconnected.is_set():
            return
        self._audio_indexes, held = _audio_state(call)
        if held != self.held:
            self.held = held
            _LOG.info("%s: %s by the caller", self.call_id, "held" if held else "resumed")
            self._emit(CallerHold(held))
        found = first_audio(call)
        if found is None:
            return
        audio, index = found
        with contextlib.suppress(pj.Error):
            stream = call.getStreamInfo(index)
            self.codec = str(stream.codecName)
            self.srtp = secure_media(call, index)
            if self._media is not None:  # a re-INVITE may move the caller's media
                self._media.relock(media_sources(str(stream.remoteRtpAddress).rpartition(":")[0], self.remote_ip))
        try:  # the caller is heard once its ACK has come (bridge.sip.bounds, "no ACK")
            self.conference.caller_media(audio, hear_caller=self.confirmed)
        except pj.Error as exc:
            _LOG.error("%s: connecting media failed: %s", self.call_id, sip_error("connect", exc))

    def _on_state(self, info: Any, received: str | None = None) -> None:
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.answered = True
            if not self.confirmed:
                cfg = self._gateway.config
                self._rtp = RtpWatch(cfg.rtp_timeout_s, cfg.rtp_hold_timeout_s, time.monotonic())
                if self._media is not None:
                    self._media.answered(time.monotonic())
                self._hear_caller()
            self.confirmed = True
            if received and self.dialog is None:
                self.dialog = dialog_from_ack(received, self._invite, self.peer_addr)
            self._invite = ""  # only the dialog needed it
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED and not self.disconnected.is_set():
            self.hangup_code = int(info.lastStatusCode)
            self.hangup_reason = str(info.lastReason)
            if not self.end_cause and no_ack(self.answered, self.confirmed, self.local_hangup, self.hangup_code):
                self._bounded(NO_ACK, "the 200 OK was retransmitted for 64*T1 unACKed: RFC 3261 §13.3.1.4")
            if not self.end_cause and session_timer_expired(self.confirmed, self.local_hangup, self.hangup_code):
                self._bounded(SESSION_TIMER_EXPIRED)
            if self.end_cause:
                self.hangup_reason = self.end_cause
            peer = None if self.local_hangup else self._peer or (peer_ending(received) if received else None)
            gone = CallerHungUp(self.hangup_code, self.hangup_reason, self.end_cause, self.local_hangup, peer)
            self._emit(gone)
            self.disconnected.set()
            transfer = self._transfer
            if transfer is not None and not transfer.done():
                transfer.set_exception(CallGone("transfer", "the call ended before the final NOTIFY"))
            self._on_frame = None
            # Drop the pjsua2 objects after this callback has returned (not from inside it).
            asyncio.get_running_loop().call_soon(self._release)

    def _on_request(self, message: str) -> None:
        """The caller's BYE or CANCEL: what its Reason header says, kept for the call's end (the last one counts)."""
        if not self.disconnected.is_set():
            self._peer = peer_ending(message) or self._peer

    def _hear_caller(self) -> None:
        """The ACK came: the media port hears the caller too (until now it only spoke to them)."""
        found = first_audio(self._call) if self._call is not None else None
        if found is None:
            return
        try:
            self.conference.hear_caller(found[0])
        except pj.Error as exc:
            _LOG.error("%s: connecting the caller's audio failed: %s", self.call_id, sip_error("connect", exc))

    def _check_media(self, now: float) -> None:
        """The gateway's periodic look at the caller's RTP (bridge.sip.bounds): a silent caller is hung up."""
        call, watch = self._call, self._rtp
        if call is None or watch is None or self.disconnected.is_set() or self.end_cause:
            return
        try:
            packets = _rx_packets(call, self._audio_indexes)
        except pj.Error:
            return
        if self._media is not None:
            self._media.check(now, packets, self.held, lambda: _rtp_transport(self._call))
        if watch.observe(packets, self.held, now):
            self._bounded(MEDIA_TIMEOUT, f"no RTP for {watch.quiet_s(now):.0f} s")
            self.hangup(MEDIA_TIMEOUT_HEADER)

    def _bounded(self, cause: str, detail: str = "") -> None:
        self.end_cause = cause
        metrics.SIP_BOUNDED.labels(cause).inc()
        _LOG.warning("%s (Call-ID %r): %s%s", self.call_id, self.sip_call_id, cause, f" ({detail})" if detail else "")

    def _on_transfer(self, progress: TransferProgress) -> None:
        self._emit(progress)
        transfer = self._transfer
        if progress.final and transfer is not None and not transfer.done():
            transfer.set_result(progress)

    def _release(self) -> None:
        """Forget the pjsua2 Call and give the port back to the pool. Idempotent."""
        self._forget_call()
        if self._media is not None:
            self._gateway.release_media(self._media)
        port = self.conference.port
        self.conference.close()
        if port is not None:
            self._counters = port.counters().since(self._baseline)
            self._gateway.endpoint.release_port(port)
        self._gateway._forget(self)


def _info_digit(calls: Mapping[int, IncomingCall], guarded: Mapping[int, str], sip_call_id: str, digit: str) -> bool:
    """An ``application/dtmf`` INFO's digit to the live call with that SIP Call-ID; False if there is none."""
    for key, held in guarded.items():
        handle = calls.get(key)
        if held == sip_call_id and handle is not None and not handle.disconnected.is_set():
            handle._on_dtmf(digit, DtmfSource.INFO)
            return True
    return False


def _consume_exception(future: asyncio.Future[TransferProgress]) -> None:
    if not future.cancelled():
        future.exception()  # marks it retrieved: no "exception was never retrieved" noise if nobody awaits


class SipGateway(Service):
    """Answers incoming SIP calls and runs ``on_incoming(call)`` as one task per call.

    ``await start()`` (or ``async with``) on the event loop thread; ``await close()`` hangs up every call,
    cancels the app tasks, and destroys the endpoint so that the process exits 0.
    """

    def __init__(
        self,
        config: SipConfig,
        on_incoming: OnIncoming,
        on_rejected: Callable[[RejectedCall], None] | None = None,
    ) -> None:
        self.config = config
        self.endpoint = SipEndpoint(config)
        self.endpoint.on_rejected = on_rejected
        self._on_incoming = on_incoming
        self._calls: dict[int, IncomingCall] = {}  # id(handle) -> handle: a reused Call-ID must not hide a call
        self._refused: dict[int, _RefusedCall] = {}  # refused INVITEs until pjsua has finished them
        self._tasks: set[asyncio.Task[None]] = set()
        self._account: Any = None
        self.calls_total = 0
        # the screening of new INVITEs and their call slots (bridge.sip.admission)
        self.admission = Admission(config, self._live_sources, lambda: self.endpoint.max_calls)
        self._allowed = self.admission.allowed  # the trusted trunks
        self._watch: asyncio.Task[None] | None = None
        self._claims: MediaClaims | None = None  # every media socket's owner: a call, or a transfer's leg
        self._humans: dict[int, HumanCall] = {}  # warm transfers' second legs, until pjsua has finished them
        self.dialogs = DialogGuard()  # only the caller steers its call (bridge.sip.dialogguard)
        self._guarded: dict[int, str] = {}  # id(handle) -> the SIP Call-ID its dialog is held under
        self._rx = RxHook(self._check_request)
        self.answers = AnswerBook()  # one final answer per INVITE transaction (bridge.sip.answers)
        self._tx = TxHook(self.answers.answered)  # every response sent goes into it
        self._ptime = PtimeHook(FRAME_MS)  # every SDP sent names the packet time sent (bridge.sip.sdpptime)
        self._size = SizeGuard(self._too_large)  # messages over pjsip's buffer: 513 (bridge.sip.oversize)
        # SIP INFO application/dtmf, which pjsua answers 500 (bridge.sip.infodtmf)
        self._info = InfoDtmf(functools.partial(_info_digit, self._calls, self._guarded))
        self._refusal_log = LogLimiter(per_second=20.0, burst=100.0, max_chars=500)

    async def start(self) -> None:
        self.endpoint.start()
        cfg = self.config
        ranged = cfg.rtp_port and cfg.rtp_port_range
        ports = range(cfg.rtp_port, cfg.rtp_port + cfg.rtp_port_range + 2) if ranged else None
        self._claims = MediaClaims(self.endpoint.sip_port, ports)
        self._account = self.endpoint.create_account(self._incoming)
        self.endpoint.on_release(self._drop_all)
        if self._rx.register():
            self.endpoint.on_release(self._rx.unregister)
        else:
            _LOG.warning("caller guard off: %s (in-dialog requests are not checked by source)", self._rx.why)
        if self._tx.register():
            self.endpoint.on_release(self._tx.unregister)
        else:
            _LOG.warning("answer record off: %s (a late INVITE retransmission may look new)", self._tx.why)
        if self._ptime.register():
            self.endpoint.on_release(self._ptime.unregister)
        else:
            _LOG.warning("SDP ptime off: %s (answers name no a=ptime)", self._ptime.why)
        if self._size.register():
            self.endpoint.on_release(self._size.unregister)
        else:
            _LOG.warning("size guard off: %s (a TCP message over %d bytes gets no answer)", self._size.why, MAX_MESSAGE)
        self._watch = asyncio.get_running_loop().create_task(self._watch_media(), name="sip-media-watch")

    async def _watch_media(self) -> None:
        """Every call's RTP, looked at about four times per ``rtp_timeout_s`` (at most once a second)."""
        interval = min(1.0, self.config.rtp_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for handle in list(self._calls.values()):
                try:
                    handle._check_media(now)
                except Exception:
                    _LOG.exception("media watch of %s", handle.call_id)

    @property
    def sip_port(self) -> int:
        return self.endpoint.sip_port

    @property
    def claims(self) -> MediaClaims | None:
        """Every media socket's owner (a call, or a leg of a transfer's conference); None until started."""
        return self._claims

    @property
    def max_calls(self) -> int:
        """Concurrent calls this process can hold (read back from pjsua after ``libInit``)."""
        return self.endpoint.max_calls

    @property
    def active_calls(self) -> int:
        """Calls pjsua holds right now (ringing or answered)."""
        return self.endpoint.active_calls

    @property
    def rejected(self) -> dict[int, int]:
        """INVITEs refused before the app took them, by status code: by pjsua (488 no PCMU/PCMA/G722, 486 over the call
        cap, 400/415/420 bad requests), by the screening (403 source, 401 challenge, 403 credentials, 400 short
        body) and by :meth:`IncomingCall.enforce_sources`. An INVITE that authenticates after a challenge counts
        one 401 first."""
        return dict(self.endpoint.rejected)

    @property
    def calls(self) -> list[IncomingCall]:
        """The calls whose pjsua2 objects are still held (until just after their disconnect)."""
        return list(self._calls.values())

    def _incoming(self, prm: Any) -> None:
        """``Account.onIncomingCall`` on the loop thread: screen the INVITE, wrap the call, keep it, start the app
        task."""
        try:
            verdict = self._screen(prm)
        except Exception:
            _LOG.exception("screening an incoming INVITE failed")
            verdict = Verdict(500, "Server Internal Error", "screening failed")
        if verdict.status:
            self._refuse(prm, verdict)
            return
        call = _GatewayCall(self._account, prm.callId)
        try:
            handle = IncomingCall(self, call, prm)
        except BaseException:
            with contextlib.suppress(pj.Error):
                call.hangup(call_op(500))
            raise
        handle.auth_user = verdict.user
        call.handle = handle
        self._calls[id(handle)] = handle
        self._guard_dialog(handle, str(prm.rdata.wholeMsg))
        self.calls_total += 1
        _LOG.info(  # no plan has taken the call yet: its caller masked as a plan's default privacy masks it
            "incoming call %s (Call-ID %r) from %r (%s) to %r",
            handle.call_id,
            handle.sip_call_id,
            mask_number(handle.caller, REFUSED_CALLER_VISIBLE_DIGITS),
            handle.remote_addr,
            handle.called,
        )
        task = asyncio.get_running_loop().create_task(self._run_app(handle), name=f"call-{handle.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _guard_dialog(self, handle: IncomingCall, invite: str) -> None:
        """Hold the call's dialog in :attr:`dialogs`: its in-dialog requests from the INVITE's source only, its media
        moved only to the offer's host or the caller's, or anywhere for a caller in ``allowed_sources`` (a trusted
        trunk; bridge.sip.dialogguard)."""
        head = parse_request_head(invite)
        sip_call_id = head.headers.get("call-id", "") if head else ""
        if not sip_call_id:
            return
        offer = sdp_connection_ip(message_body(invite))
        hosts = media_sources(offer, handle.remote_ip) + ((offer,) if offer else ())
        trusted = bool(self._allowed) and in_networks(handle.remote_addr or "", self._allowed)
        self.dialogs.hold(
            sip_call_id,
            GuardedDialog(handle.call_id, source_ip(handle.peer_addr), tuple(dict.fromkeys(hosts)), trusted),
        )
        self._guarded[id(handle)] = sip_call_id

    def _check_request(
        self, message: str, source: str, transport: Transport | None
    ) -> tuple[int, str, Mapping[str, str]]:
        """Every received request, before pjsip acts on it (bridge.sip.rxhook): a repeated INVITE's one answer
        (bridge.sip.answers), a new INVITE's screening (bridge.sip.admission), the dialog guard's verdict, then the
        offer's transport rule (SDES keys over TLS only, SRTP on sips: calls). First of all, a request too large
        for pjsip's buffer or cut short is refused (bridge.sip.oversize)."""
        if (cut := cut_or_too_large(message)) is not None:
            raw = message.encode("utf-8", "surrogateescape")
            refused = dataclasses.replace(read_head(raw).refused(len(raw)), status=cut[0], reason=cut[1])
            self._too_large(refused, source, transport or "")
            return (-1, "", {}) if refused.summary.startswith("ACK") else (*cut, {})
        look = self.answers.look(message, source)
        if look.verdict is not None:
            return look.verdict
        if look.key is not None:  # a new INVITE: its retransmissions are its transaction's until it is answered
            self.answers.pending(look.key, look.branch, source)
            if (refusal := self._early_refusal(message, source)) is not None:
                self.answers.refused(look.key, look.branch, (refusal.status, refusal.reason, refusal.headers))
                return refusal.status, refusal.reason, refusal.headers
        verdict = self.dialogs.verdict(message, source)
        if verdict.status == PASS and verdict.detail:  # a trusted trunk moved its media (no caller number here)
            _LOG.info("%s", verdict.detail)
        if verdict.status == PASS:
            verdict = media_security(message, transport)
        if verdict.refused:
            line = self._refusal_log.admit(
                f"refused {verdict.detail} (from {source}): {verdict.status} {verdict.reason}"
            )
            if line is not None:
                _LOG.warning("%s", line)
        if verdict.status == PASS and (digit := self._info.answer(message)) is not None:
            return digit  # an application/dtmf INFO of a call, its source checked (bridge.sip.infodtmf)
        return verdict.status, verdict.reason, dict(verdict.headers)

    def _too_large(self, refused: Refused, source: str, transport: str) -> None:
        """A request refused for its size or cut short (bridge.sip.oversize): an INVITE counted as refused."""
        method, _, call_id = refused.summary.partition(" ")
        size = f"{refused.size} bytes" + (" or more" if refused.size >= MAX_PACKET and transport == "udp" else "")
        over = f" over {transport.upper()}" if transport else ""
        detail = f"{size}{over}; a worker takes SIP messages of up to {MAX_MESSAGE} bytes"
        if refused.status != TOO_LARGE[0]:  # cut short by someone else (400)
            detail = "truncated body" if refused.reason == BODY_SHORT[1] else "no end of its header block"
        if method.upper() != "INVITE":
            what = method[:20] or "message"
            _LOG.warning("refused a %s from %s: %d %s (%s)", what, source, refused.status, refused.reason, detail)
            return
        call_id = clean_text(call_id, SIP_CALL_ID_CHARS)
        caller, called = clean_text(refused.caller), clean_text(refused.called)
        self.endpoint.count_rejected(
            RejectedCall(refused.status, refused.reason, call_id, caller, called, source, detail)
        )

    def _early_refusal(self, message: str, packet_source: str) -> Verdict | None:
        """A new INVITE's refusal by the screening, counted and answered here before pjsua makes it a call, so that
        it takes no call slot and no media sockets; None lets it on (bridge.sip.admission)."""
        verdict = self.admission.early(message, packet_source)
        if verdict is not None:
            self.endpoint.count_rejected(self.admission.rejected(message, packet_source, verdict))
        return verdict

    def caller_media(
        self, call_id: str, invite: str, signalling_ip: str | None, emit: Callable[[MediaDropped], None]
    ) -> CallerMedia:
        """A new call's media guard (bridge.sip.callermedia): the sockets pjsua has just opened for its INVITE, now
        the call's, locked to the offer's host and the INVITE's source (bridge.sip.rtpguard) before the 200 OK."""
        if self._claims is None:
            raise SipError("media guard", "the gateway is not started")
        sources = media_sources(sdp_connection_ip(message_body(invite)), signalling_ip)
        return CallerMedia(call_id, MediaGuard(self._claims.take(call_id)), sources, signalling_ip, emit)

    def release_media(self, media: CallerMedia) -> None:
        """An ended call's sockets go back; what its guard dropped is counted and logged."""
        guard = media.guard
        if guard is None:
            return
        if self._claims is not None:
            self._claims.release(guard.sockets)
        dropped = media.close()
        if dropped:
            metrics.RTP_FOREIGN_DROPPED.inc(dropped)
            admitted = " or ".join(media.sources) or "nowhere"
            _LOG.warning("%s: dropped %d media packets not from %s", media.call_id, dropped, admitted)

    def caller_source(self, packet_source: str, message: str) -> str:
        """Where the request came from: ``packet_source``, or the caller's address a trusted front reports."""
        return self.admission.caller_source(packet_source, message)

    def front_user(self, packet_source: str, message: str) -> str:
        """The digest user a trusted front authenticated the caller as (``X-Callbridge-Auth``), else ""."""
        return self.admission.front_user(packet_source, message)

    def _live_sources(self) -> list[str]:
        """The caller IPs of the calls up now (ringing or answered): what the call slots count."""
        return [h.remote_ip or "" for h in self._calls.values() if not h.disconnected.is_set()]

    def _screen(self, prm: Any) -> Verdict:
        """The screening of the INVITE pjsua has made a call of (bridge.sip.admission): what its early look found, or
        all of it now (source allowlist, Content-Length, digest auth, then the call slots, which only an admitted
        INVITE takes)."""
        return self.admission.screen(str(prm.rdata.wholeMsg), str(prm.rdata.srcAddress))

    def _refuse(self, prm: Any, verdict: Verdict) -> None:
        """Answer the INVITE with the verdict's final response, count it, and keep the Call until it is gone."""
        rejected = self.admission.rejected(str(prm.rdata.wholeMsg), str(prm.rdata.srcAddress), verdict)
        call = _RefusedCall(self._account, prm.callId, self._refused_gone)
        self._refused[id(call)] = call
        if verdict.status == SESSION_INTERVAL_TOO_SMALL:  # pjsua sends this 422 itself as the callback returns,
            return  # and counts it (onRejectedIncomingCall); the Call is kept until it is gone all the same
        self.endpoint.count_rejected(rejected)
        # Answer on the next loop turn, not inside onIncomingCall: until then the call holds one of pjsua's 4 call
        # slots, so a burst of INVITEs polled in the same libHandleEvents() gets pjsua's own 486 (which opens no
        # media sockets) instead of a media socket pair each (see SetupBudget in endpoint.py: ~32 set-ups in half
        # a second abort the process).
        asyncio.get_running_loop().call_soon(self._send_refusal, call, verdict, rejected.call_id)

    def _send_refusal(self, call: _RefusedCall, verdict: Verdict, call_id: str) -> None:
        if call.on_gone is None or self._account is None:  # already gone (CANCEL) or shutting down
            return
        try:
            # A final code through answer(): it carries the extra headers (the WWW-Authenticate challenge) in every
            # state, where a hangup() issued while pjsua is still inside onIncomingCall was sent without them.
            call.answer(call_op(verdict.status, verdict.reason, verdict.headers))
        except pj.Error as exc:
            _LOG.info("refusing INVITE %s: %s", call_id, sip_error("refuse", exc))

    def _refused_gone(self, call: _RefusedCall) -> None:
        self._refused.pop(id(call), None)

    async def _run_app(self, handle: IncomingCall) -> None:
        failed = False
        try:
            await self._on_incoming(handle)
        except asyncio.CancelledError:
            raise
        except Exception:
            failed = True
            _LOG.exception("call %s: on_incoming raised", handle.call_id)
        finally:
            if not handle.disconnected.is_set() and handle._call is not None:
                try:
                    if handle.answered:
                        handle.hangup()
                    else:
                        handle.reject(500 if failed else 480)
                except SipError as exc:
                    _LOG.debug("closing %s: %s", handle.call_id, exc)

    def dial_human(self, caller: IncomingCall, uri: str) -> HumanCall:
        """Place a warm transfer's leg to ``uri`` in the caller's conference, which takes the sockets pjsua opened
        for its INVITE; the gateway keeps the leg until pjsua has finished it."""
        if self._account is None:
            raise SipError("dial", "the gateway is not started")
        self.endpoint.note_call_setup()
        human = dial(caller.conference, self._account, uri, call_op(), self._human_gone)
        if not human.ended.is_set():
            self._humans[id(human)] = human
        return human

    def _human_gone(self, human: HumanCall) -> None:
        self._humans.pop(id(human), None)

    def _forget(self, handle: IncomingCall) -> None:
        self._calls.pop(id(handle), None)
        sip_call_id = self._guarded.pop(id(handle), None)
        if sip_call_id is not None:
            self.dialogs.forget(sip_call_id, handle.call_id)
            self._info.forget(sip_call_id)

    def _drop_all(self) -> None:
        for handle in list(self._calls.values()):
            handle._release()
        self._calls.clear()
        for human in list(self._humans.values()):
            human.release()
        self._humans.clear()
        for refused in self._refused.values():
            refused.on_gone = None
        self._refused.clear()
        self._account = None

    async def close(self) -> None:
        """Hang up every call, stop the app tasks, destroy the endpoint."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        for handle in list(self._calls.values()):
            handle.hangup()
        for human in list(self._humans.values()):
            human.hangup()
        tasks = list(self._tasks)
        if tasks:
            # Give apps a moment to see CallerHungUp and finish on their own, then cancel the rest.
            _done, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.endpoint.close()
