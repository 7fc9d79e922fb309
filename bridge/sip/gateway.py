"""One incoming call as the app sees it (:class:`IncomingCall`): pjsua2's Call underneath, plain Python and
``bridge.events`` on top. :class:`bridge.sip.service.SipGateway` makes one for each INVITE it lets on and runs the app's
coroutine with it; what is refused before that is in :mod:`bridge.sip.service`.

During a call: a REFER from the caller and an INVITE with ``Replaces`` aimed at a bridged call are declined
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
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import pjsua2 as pj

from bridge import metrics
from bridge.audio.frames import FrameSource, OnFrames, StreamKernel, block_form
from bridge.events import CallerHold, CallerHungUp, Dtmf, DtmfSource, Event, MediaDropped, PeerEnding, TransferProgress
from bridge.sip.access import FORBIDDEN_SOURCE, IPNetwork, in_networks, source_allowed, source_ip
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
from bridge.sip.endpoint import CallGone, RejectedCall, SipEndpoint, SipError, for_handle, pjsua_callback, sip_error
from bridge.sip.identity import call_identity
from bridge.sip.legs import DTMF_DIGITS, LegCall, SipLeg, call_op, first_audio
from bridge.sip.outbound import HumanCall
from bridge.sip.reason import ENDING_REQUESTS, peer_ending
from bridge.sip.rtpguard import MediaClaims, media_sources
from bridge.sip.sipconfig import MediaPortKind, SipConfig
from bridge.sip.sipmsg import SIP_CALL_ID_CHARS, Dialog, clean_text, dialog_from_ack, parse_request_head, user_part
from bridge.sip.transports import secure_media

_LOG = logging.getLogger("bridge.sip")

OnFrame = Callable[[bytes, float], None]

HEADER_CHARS = 1024  # a header value as the app sees it (IncomingCall.headers)


class _Delivery:
    """A call's sink at its media port: each caller frame, or a read's frames as one block (a
    :class:`~bridge.audio.frames.BlockSink`), to the call's ``on_frame`` while its media runs; dropped while none."""

    __slots__ = ("_on_frame", "_on_frames")

    def __init__(self) -> None:
        self._on_frame: OnFrame | None = None
        self._on_frames: OnFrames | None = None

    def to(self, on_frame: OnFrame | None) -> None:
        """Where the frames go from now on (None: nowhere)."""
        self._on_frame = on_frame
        self._on_frames = None if on_frame is None else block_form(on_frame)

    def __call__(self, pcm: bytes, t_capture: float) -> None:
        on_frame = self._on_frame
        if on_frame is not None:
            on_frame(pcm, t_capture)

    def on_frames(self, block: bytes, times: Sequence[float]) -> None:
        on_frames = self._on_frames
        if on_frames is not None:
            on_frames(block, times)


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


class CallHost(Protocol):
    """What an incoming call uses of the gateway that took it (:class:`bridge.sip.service.SipGateway` is one)."""

    config: SipConfig
    endpoint: SipEndpoint
    _allowed: tuple[IPNetwork, ...]  # the trusted trunks
    _trunks: tuple[IPNetwork, ...]  # the listed trunks (sip_trunk_sources)

    @property
    def claims(self) -> MediaClaims | None:
        """Every media socket's owner; None until started."""

    def caller_source(self, packet_source: str, message: str) -> str:
        """Where the request came from: ``packet_source``, or the caller's address a trusted front reports."""

    def caller_media(
        self, call_id: str, invite: str, signalling_ip: str | None, emit: Callable[[MediaDropped], None]
    ) -> CallerMedia:
        """A new call's media guard (bridge.sip.callermedia)."""

    def release_media(self, media: CallerMedia) -> None:
        """An ended call's sockets go back."""

    def dial_human(self, caller: IncomingCall, uri: str) -> HumanCall:
        """Place a warm transfer's leg to ``uri`` in the caller's conference."""

    def _forget(self, handle: IncomingCall) -> None:
        """The call is gone: the gateway lets go of it."""


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

    def __init__(self, gateway: CallHost, call: _GatewayCall, prm: Any) -> None:
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
        self.trusted: bool = trunk  # its headers vouch for what they say (the caller's identity)
        # a listed trunk's (allowed or sip_trunk_sources): its traceparent and tracestate continue its trace
        self.traced_trunk: bool = trunk or in_networks(self.remote_addr or "", gateway._trunks)
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
        self._caller_frames = _Delivery()  # the media port's sink: the caller's frames to start_media's on_frame
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
        Where ``on_frame`` takes blocks (``on_frames``, :class:`~bridge.audio.frames.BlockSink`), the native port's
        reads come to it as blocks, one call each. Calling it again swaps the source and sink.
        """
        self._live("start_media")
        self._caller_frames.to(on_frame)
        port = self.conference.port
        if port is None:
            port = self.conference.port = self._gateway.endpoint.acquire_port()
            self._baseline = port.counters()
        port.attach(outbound, self._caller_frames)
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
        self._caller_frames.to(None)
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
            self._caller_frames.to(None)
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


def _consume_exception(future: asyncio.Future[TransferProgress]) -> None:
    if not future.cancelled():
        future.exception()  # marks it retrieved: no "exception was never retrieved" noise if nobody awaits
