"""Only the caller steers its call: the worker's rule for requests inside a call's dialog. Pure Python, no pjsua2.

Anyone who learns a dialog's identifiers (Call-ID, tags) can write a BYE, re-INVITE, INFO or UPDATE for it. pjsip
matches such a request to its dialog by those identifiers alone and acts on it: a BYE ends the call, a re-INVITE
moves the agent's audio to the address its SDP names. So before pjsip sees an in-dialog request
(:mod:`bridge.sip.rxhook` hands the gateway every request first), :meth:`DialogGuard.verdict` checks it against the
call's INVITE:

* it must come from the host the INVITE came from (the caller's, or its trunk's, or the front's, which checks the
  caller itself: bridge/serve/kamailio/kamailio.cfg, route[WITHINDLG]), or, for a call from a listed trunk
  (``sip_trunk_sources``), from any listed trunk address (a carrier's SBC pair sends the BYE from its other node:
  the listed addresses are one peer); anything else gets ``403`` (an ACK is dropped: it gets no answer), and the
  call and its media are untouched;
* a re-INVITE or UPDATE may move the caller's media only to a host the call's media guard admits
  (:func:`bridge.sip.rtpguard.media_sources`: the offer's ``c=`` host and the INVITE's source), or put it on hold
  (``c=0.0.0.0``): anything else gets ``488``. A call from a trusted trunk (its source in the worker's
  ``SipConfig.allowed_sources``) may move its media anywhere: an SBC's failover, Asterisk's ``direct_media``. The
  move passes with a detail to log; the dialog admits the new host from then on, and the media guard latches to it
  once pjsua has taken the offer.

An ``OPTIONS`` inside a held dialog from the caller's host (RFC 3261 §11: an SBC's or a trunk's keep-alive of a
long call) is answered ``200 OK`` here, with the capabilities pjsua gives out of a dialog (``Allow``, ``Accept``,
``Supported``): pjsip's invite session would answer it ``500 Unhandled by dialog usages``, and an SBC takes that for
a dead dialog and ends the call. The call is untouched.

A request of a dialog the gateway does not hold (a warm transfer's outbound leg, or no call at all) is pjsip's to
answer. A CANCEL counts as in the dialog of its INVITE: a stranger cannot cancel a ringing call either.

Every INVITE and UPDATE, new calls' too, also meets :func:`media_security`: SDES keys (``a=crypto``, RFC 4568) are
secret only over TLS, so an offer carrying them over UDP or TCP gets ``488`` (the keys went out in the clear: no
call is set up with them); and a ``sips:`` call (RFC 5630: secure to the end) whose offer is plain RTP gets ``488``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from bridge.sip.access import IPNetwork, in_networks, source_ip
from bridge.sip.rtpguard import sdp_connection_ip
from bridge.sip.sipmsg import Transport, parse_request_head, split_message

PASS, DROP = 0, -1  # verdict statuses besides a response code: let pjsip have it; drop it unanswered
FORBIDDEN_NOT_CALLER = "Forbidden (not the caller's address)"
MEDIA_NOT_ADMITTED = "Not Acceptable Here (media address not the caller's)"
_MOVES_MEDIA = frozenset({"INVITE", "UPDATE"})
KEEPALIVE_HEADERS: tuple[tuple[str, str], ...] = (  # what pjsua answers an OPTIONS outside a dialog
    ("Allow", "PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE, OPTIONS"),
    ("Accept", "application/sdp"),
    ("Supported", "replaces, 100rel, timer, norefersub"),
)
KEYS_IN_CLEAR = "Not Acceptable Here (SDES keys over an insecure transport: use TLS)"
SIPS_NEEDS_SRTP = "Not Acceptable Here (a sips: call needs SRTP)"


@dataclass(frozen=True, slots=True)
class GuardedDialog:
    call_id: str  # the bridge's id of the call (for logs)
    source: str  # the host the INVITE came from
    media_hosts: tuple[str, ...]  # where the caller's media may come from and go to; empty: not filtered
    trusted: bool = False  # a trusted trunk's call: its re-INVITEs may move the media to any host
    peers: tuple[IPNetwork, ...] = ()  # a listed trunk's call: the listed trunks' addresses, one peer with its source


@dataclass(frozen=True, slots=True)
class DialogVerdict:
    status: int  # PASS, DROP, or the response code
    reason: str = ""
    detail: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # the answer's extra headers

    @property
    def refused(self) -> bool:
        """Dropped or answered with a refusal (a 2xx answer is the request's handling, not a refusal)."""
        return self.status != PASS and not 200 <= self.status < 300


class DialogGuard:
    """The dialogs the gateway holds, by SIP Call-ID, and the rule for requests inside them."""

    def __init__(self) -> None:
        self._dialogs: dict[str, GuardedDialog] = {}
        self.refused = 0

    def __len__(self) -> int:
        return len(self._dialogs)

    def hold(self, sip_call_id: str, dialog: GuardedDialog) -> None:
        self._dialogs[sip_call_id] = dialog

    def forget(self, sip_call_id: str, call_id: str) -> None:
        held = self._dialogs.get(sip_call_id)
        if held is not None and held.call_id == call_id:
            del self._dialogs[sip_call_id]

    def verdict(self, message: str, source: str) -> DialogVerdict:
        """What to do with a request (its text as received, ``source`` "ip:port" it came from)."""
        if not self._dialogs:
            return DialogVerdict(PASS)
        head = parse_request_head(message)
        if head is None:
            return DialogVerdict(PASS)
        held = self._dialogs.get(head.headers.get("call-id", ""))
        in_dialog = ";tag=" in head.headers.get("to", "").replace(" ", "") or head.method == "CANCEL"
        if held is None or not in_dialog:
            return DialogVerdict(PASS)
        if not _same_host(source_ip(source), held.source) and not in_networks(source, held.peers):
            self.refused += 1
            detail = f"{head.method} of {held.call_id} from {source}, not from its caller {held.source}"
            if head.method == "ACK":
                return DialogVerdict(DROP, "", detail)
            return DialogVerdict(403, FORBIDDEN_NOT_CALLER, detail)
        if head.method == "OPTIONS":  # the dialog's keep-alive: the call is alive
            return DialogVerdict(200, "OK", f"OPTIONS of {held.call_id} from {source}", KEEPALIVE_HEADERS)
        if head.method in _MOVES_MEDIA and held.media_hosts:
            moved = sdp_connection_ip(split_message(message)[1])
            if not media_move_allowed(moved, held.media_hosts):
                if held.trusted and moved is not None:
                    self._dialogs[head.headers.get("call-id", "")] = replace(
                        held, media_hosts=(*held.media_hosts, moved)
                    )
                    detail = (
                        f"{head.method} of {held.call_id} from {source} (a trusted source) moves media to {moved} "
                        f"from {', '.join(held.media_hosts)}"
                    )
                    return DialogVerdict(PASS, "", detail)
                self.refused += 1
                detail = f"{head.method} of {held.call_id} moves media to {moved}, not to {', '.join(held.media_hosts)}"
                return DialogVerdict(488, MEDIA_NOT_ADMITTED, detail)
        return DialogVerdict(PASS)


def media_move_allowed(host: str | None, admitted: tuple[str, ...]) -> bool:
    """May a re-INVITE's ``c=`` host carry the call's media? No SDP, a hold (``0.0.0.0``), or a host the media guard
    admits (``admitted``)."""
    if host is None:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_unspecified or str(ip) in admitted


def _same_host(a: str, b: str) -> bool:
    try:
        first, second = ipaddress.ip_address(a.split("%", 1)[0]), ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return a == b
    if isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped is not None:
        first = first.ipv4_mapped
    if isinstance(second, ipaddress.IPv6Address) and second.ipv4_mapped is not None:
        second = second.ipv4_mapped
    return first == second


def media_security(message: str, transport: Transport | None) -> DialogVerdict:
    """The transport rule of an offer (see the module doc) that came over ``transport`` (None: not known, no
    rule)."""
    if not message.startswith(("INVITE ", "UPDATE ")) or transport is None:
        return DialogVerdict(PASS)
    head = parse_request_head(message)
    if head is None or head.method not in _MOVES_MEDIA:
        return DialogVerdict(PASS)
    audio, crypto = _audio_offer(split_message(message)[1])
    if crypto and transport is not Transport.TLS:
        return DialogVerdict(488, KEYS_IN_CLEAR, f"{head.method} with SDES keys over {transport.upper()}")
    if head.uri.lower().startswith("sips:") and audio and not (audio.startswith("RTP/SAVP") and crypto):
        return DialogVerdict(488, SIPS_NEEDS_SRTP, f"sips: {head.method} offering {audio}")
    return DialogVerdict(PASS)


def _audio_offer(sdp: str) -> tuple[str, bool]:
    """The first audio stream's transport protocol (``RTP/AVP``, ``RTP/SAVP``; "" without one) and whether the offer
    carries SDES keys (``a=crypto`` at its level or the session's)."""
    proto, crypto, in_audio, seen_audio = "", False, True, False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if seen_audio:
                break
            parts = line[2:].split()
            in_audio = bool(parts) and parts[0] == "audio"
            if in_audio:
                seen_audio, proto = True, parts[2] if len(parts) > 2 else ""
        elif line.startswith("a=crypto:") and in_audio:
            crypto = True
    return proto, crypto
