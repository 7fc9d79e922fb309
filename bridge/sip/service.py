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

The call itself (its SIP actions, media, DTMF, hold, and how the caller's side ended it) is
:class:`bridge.sip.gateway.IncomingCall`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pjsua2 as pj

from bridge import metrics
from bridge.audio.frames import FRAME_MS
from bridge.events import DtmfSource, MediaDropped
from bridge.privacy.masking import mask_number
from bridge.runtime.service import Service
from bridge.sip.access import in_networks, source_ip
from bridge.sip.admission import SESSION_INTERVAL_TOO_SMALL, Admission, Verdict
from bridge.sip.answers import AnswerBook
from bridge.sip.callermedia import CallerMedia
from bridge.sip.dialogguard import PASS, DialogGuard, GuardedDialog, media_security
from bridge.sip.endpoint import (
    REFUSED_CALLER_VISIBLE_DIGITS,
    LogLimiter,
    RejectedCall,
    SipEndpoint,
    SipError,
    pjsua_callback,
    sip_error,
)
from bridge.sip.gateway import IncomingCall, _GatewayCall
from bridge.sip.infodtmf import InfoDtmf
from bridge.sip.legs import call_op
from bridge.sip.outbound import HumanCall, dial
from bridge.sip.oversize import BODY_SHORT, MAX_MESSAGE, MAX_PACKET, TOO_LARGE, Refused, cut_or_too_large, read_head
from bridge.sip.rtpguard import MediaClaims, MediaGuard, media_sources, sdp_connection_ip
from bridge.sip.rxhook import RxHook
from bridge.sip.sdpptime import PtimeHook
from bridge.sip.sipconfig import SipConfig
from bridge.sip.sipmsg import SIP_CALL_ID_CHARS, Transport, clean_text, message_body, parse_request_head
from bridge.sip.sizeguard import SizeGuard
from bridge.sip.txhook import TxHook

_LOG = logging.getLogger("bridge.sip")

OnIncoming = Callable[["IncomingCall"], Awaitable[None]]


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


def _info_digit(calls: Mapping[int, IncomingCall], guarded: Mapping[int, str], sip_call_id: str, digit: str) -> bool:
    """An ``application/dtmf`` INFO's digit to the live call with that SIP Call-ID; False if there is none."""
    for key, held in guarded.items():
        handle = calls.get(key)
        if held == sip_call_id and handle is not None and not handle.disconnected.is_set():
            handle._on_dtmf(digit, DtmfSource.INFO)
            return True
    return False


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
        self._trunks = self.admission.trunks  # the listed trunks (sip_trunk_sources): their traceparent continues
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
        trunk; bridge.sip.dialogguard); a call a listed trunk sent (``trunk_sources``) takes them from any of its
        addresses."""
        head = parse_request_head(invite)
        sip_call_id = head.headers.get("call-id", "") if head else ""
        if not sip_call_id:
            return
        offer = sdp_connection_ip(message_body(invite))
        hosts = media_sources(offer, handle.remote_ip) + ((offer,) if offer else ())
        trusted = bool(self._allowed) and in_networks(handle.remote_addr or "", self._allowed)
        trunks = self.admission.trunks
        peers = trunks if in_networks(handle.peer_addr or "", trunks) else ()  # a listed trunk's addresses: one peer
        self.dialogs.hold(
            sip_call_id,
            GuardedDialog(handle.call_id, source_ip(handle.peer_addr), tuple(dict.fromkeys(hosts)), trusted, peers),
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
