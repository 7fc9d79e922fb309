"""Which new INVITE may become a call here, and which may take one of the worker's call slots.

The gateway's screening of a new INVITE (:class:`Admission`), in order:

1. **Who** (:meth:`Admission.admit`): the front's headers in one copy each, the source allowlist
   (``SipConfig.allowed_sources``, or loopback only under the closed default), ``Content-Length`` against the body,
   then digest authentication (``SipConfig.auth_users``: ``401`` and a challenge, ``403`` bad credentials or a
   locked-out source; :mod:`bridge.sip.access`).
2. **Session interval** (:func:`short_session`), for an INVITE that passed: a ``Session-Expires`` (RFC 4028) below
   ``session_min_se_s`` (or below the INVITE's own ``Min-SE``) gets ``422 Session Interval Too Small`` with the
   ``Min-SE`` a retry needs. pjsua would send that 422 itself, but only after making the INVITE a call that the app
   takes for a caller who hung up while it rang; refused here, it is no call at all, and the retry (the same Call-ID,
   a new CSeq) is the call.
3. **Room** (:meth:`Admission.slot`), for an INVITE that passed: a source holds at most ``calls_per_source`` calls
   here (``486 Busy Here (too many calls from this source)``; a trusted front's callers are the front's to count),
   and where trunks are listed (``allowed_sources``, ``trunk_sources``) the sources outside the lists together hold
   at most ``unlisted_share`` of the worker's calls (``486 Busy Here (room kept for listed trunks)``), so that a
   listed trunk always finds a slot however many strangers call. Listed sources have no limit of either kind.

The screening runs where it costs nothing: :meth:`Admission.early` is asked in pjsip's first look at a request
(:mod:`bridge.sip.rxhook`), before pjsua makes the INVITE a call, so a refused INVITE (a challenge, a guessed
password, a busy source) holds no call slot and no media sockets; it is answered there, statelessly. What
:meth:`early` admitted, ``onIncomingCall`` gets back from :meth:`Admission.screen` without a second look (a second
check of its credentials would find its nonce used). Without the early look (the hook could not be installed),
:meth:`screen` does it all in ``onIncomingCall``.

A slot refusal is counted in ``callbridge_sip_slot_refusals_total{reason}`` and named at WARNING once per source
per :data:`WARN_EVERY_S` (the setting to change, and what it says), besides the gateway's per-refusal line.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bridge import metrics
from bridge.sip.access import (
    AUTH_HEADER,
    CALLS_PER_SOURCE_BUSY,
    FORBIDDEN_FRONT_HEADERS,
    FORBIDDEN_LOCKED_OUT,
    FORBIDDEN_SOURCE,
    FRONT_HEADERS,
    LOOPBACK,
    SOURCE_HEADER,
    UNLISTED_SHARE_BUSY,
    AuthResult,
    caller_source,
    front_copies_ok,
    in_networks,
    parse_networks,
    source_ip,
)
from bridge.sip.endpoint import RejectedCall
from bridge.sip.sipconfig import SipConfig
from bridge.sip.sipmsg import (
    SIP_CALL_ID_CHARS,
    RequestHead,
    body_shorter_than_declared,
    clean_text,
    header_values,
    parse_request_head,
    user_part,
)

_LOG = logging.getLogger("bridge.sip")
WARN_EVERY_S = 600.0  # a source's slot refusals are named at WARNING once per this long (as the front does)


class SlotReason(enum.StrEnum):
    """Why an INVITE found no call slot (the ``reason`` of ``callbridge_sip_slot_refusals_total``)."""

    CALLS_PER_SOURCE = "calls_per_source"
    UNLISTED_SHARE = "unlisted_share"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The screening's answer to an INVITE: ``status`` 0 lets it through (as ``user`` if it authenticated)."""

    status: int
    reason: str
    detail: str
    user: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


ADMITTED = Verdict(0, "", "")
SESSION_INTERVAL_TOO_SMALL = 422  # RFC 4028 §6
_DELTA_DIGITS = 10  # a Session-Expires or Min-SE longer than this is left to pjsip's parser


def short_session(message: str, min_se_s: int) -> Verdict | None:
    """The 422 of an INVITE whose ``Session-Expires`` is below ``min_se_s`` or below its own ``Min-SE``, as pjsip
    judges it (``pjsip_timer_process_req``), with the ``Min-SE`` a retry needs (the larger of the two); None when
    it has no ``Session-Expires``, or one that is long enough. A value that does not parse is pjsip's to refuse."""
    expires = _delta(header_values(message, "session-expires"))
    if expires is None:
        return None
    floor = max(min_se_s, _delta(header_values(message, "min-se")) or 0)
    if expires >= floor:
        return None
    return Verdict(
        SESSION_INTERVAL_TOO_SMALL,
        "Session Interval Too Small",
        f"Session-Expires {expires} below Min-SE {floor}",
        headers={"Min-SE": str(floor)},
    )


def _delta(values: list[str]) -> int | None:
    """The delta-seconds of the first of a header's values (its parameters left out), or None."""
    text = values[0].split(";", 1)[0].strip() if values else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= _DELTA_DIGITS else None


class SourceWarnings:
    """Says yes once per (reason, source) per ``every_s``: the rate of a WARNING that names a refused source.
    Bounded: at most ``max_tracked`` pairs are remembered (the oldest go first)."""

    def __init__(
        self, every_s: float = WARN_EVERY_S, max_tracked: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.max_tracked = max_tracked
        self._clock = clock
        self._last: OrderedDict[tuple[SlotReason, str], float] = OrderedDict()

    def due(self, reason: SlotReason, source: str) -> bool:
        now, key = self._clock(), (reason, source)
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_tracked:
            self._last.popitem(last=False)
        return True


class Admission:
    """The screening of new INVITEs at one gateway (module doc). ``live`` gives the caller IPs of the calls up now
    (ringing or answered), ``capacity`` the calls the worker can hold. Event loop thread only."""

    def __init__(self, config: SipConfig, live: Callable[[], Iterable[str]], capacity: Callable[[], int]) -> None:
        self.config = config
        self.allowed = parse_networks(config.allowed_sources, "SipConfig.allowed_sources")
        self.exempt = parse_networks(config.auth_exempt_sources, "SipConfig.auth_exempt_sources")
        self.fronts = parse_networks(config.trusted_fronts, "SipConfig.trusted_fronts")
        self.trunks = parse_networks(config.trunk_sources, "SipConfig.trunk_sources")
        self.auth = config.digest_auth()
        self.lockout = config.auth_lockout()
        # closed by default: nothing configured means the trusted fronts' calls only, or loopback sources without one
        self.closed_default = not (self.allowed or self.auth or config.allow_any_source)
        self._live = live
        self._capacity = capacity
        self.warnings = SourceWarnings()
        self._vetted: tuple[str, Verdict] | None = None  # the INVITE early() let through, and its verdict

    # -- where a request comes from ------------------------------------------------------------------------

    def caller_source(self, packet_source: str, message: str) -> str:
        """Where the request came from: ``packet_source``, or the caller's address a trusted front reports."""
        if not self.fronts:
            return packet_source
        return caller_source(packet_source, header_values(message, SOURCE_HEADER.lower()), self.fronts)

    def front_user(self, packet_source: str, message: str) -> str:
        """The digest user a trusted front authenticated the caller as (``X-Callbridge-Auth``, which the front
        writes itself and removes from callers' requests: bridge/serve/kamailio/kamailio.cfg), else ""."""
        if not self.fronts or not in_networks(packet_source, self.fronts):
            return ""
        values = header_values(message, AUTH_HEADER)
        return values[0].strip() if len(values) == 1 else ""

    def listed(self, source: str) -> bool:
        """Is ``source`` a listed trunk (``allowed_sources`` or ``trunk_sources``)?"""
        return in_networks(source, self.allowed) or in_networks(source, self.trunks)

    # -- the screening ---------------------------------------------------------------------------------------

    def early(self, message: str, packet_source: str) -> Verdict | None:
        """A new INVITE before pjsua makes it a call: its refusal, to answer now, or None (kept for :meth:`screen`)."""
        verdict = self._judge(message, packet_source)
        if verdict.status:
            return verdict
        self._vetted = (message, verdict)
        return None

    def screen(self, message: str, packet_source: str) -> Verdict:
        """The screening of the INVITE pjsua has made a call of (``onIncomingCall``): what :meth:`early` found, or
        all of it now if the early look did not see this INVITE."""
        vetted, self._vetted = self._vetted, None
        if vetted is not None and vetted[0] == message:
            return vetted[1]
        return self._judge(message, packet_source)

    def _judge(self, message: str, packet_source: str) -> Verdict:
        verdict = self.admit(message, packet_source)
        if verdict.status:
            return verdict
        short = short_session(message, self.config.session_min_se_s)
        if short is not None:
            return short
        via_front = in_networks(packet_source, self.fronts)
        return self.slot(self.caller_source(packet_source, message), via_front) or verdict

    def admit(self, message: str, packet_source: str) -> Verdict:
        """Source allowlist, Content-Length, digest auth of an INVITE from ``packet_source``."""
        if in_networks(packet_source, self.fronts) and not front_copies_ok(
            header_values(message, name) for name in FRONT_HEADERS
        ):
            return Verdict(403, FORBIDDEN_FRONT_HEADERS, "a front header in more than one copy")
        source = self.caller_source(packet_source, message)
        if self.allowed and not in_networks(source, self.allowed):
            return Verdict(403, FORBIDDEN_SOURCE, "not in SipConfig.allowed_sources")
        if self.closed_default and not (
            in_networks(packet_source, self.fronts) or (not self.fronts and in_networks(source, LOOPBACK))
        ):
            # behind a front, its callers come through it: a local process reaching the worker's port is refused
            return Verdict(403, FORBIDDEN_SOURCE, "nothing configured: the trusted fronts only (else loopback)")
        if body_shorter_than_declared(message):
            return Verdict(400, "Bad Request (Content-Length larger than the body)", "truncated body")
        if self.auth is None or (self.exempt and in_networks(source, self.exempt)):
            return ADMITTED
        vetted = self.front_user(packet_source, message)
        if vetted:  # the front checked the caller's digest credentials (front_auth) and named the user
            return Verdict(0, "", "authenticated at the front", user=vetted)
        return self._authenticate(message, source_ip(source))

    def _authenticate(self, message: str, address: str) -> Verdict:
        """Digest authentication of an INVITE from ``address``, with the lockout of repeated bad credentials."""
        assert self.auth is not None
        head = parse_request_head(message)
        if head is None:  # pjsip parsed it as a request; this cannot happen unless the text is not what it parsed
            return Verdict(400, "Bad Request", "unparsable request line")
        lockout = self.lockout
        if lockout is not None and lockout.locked(address):
            return Verdict(403, FORBIDDEN_LOCKED_OUT, "source locked out after repeated bad credentials")
        result: AuthResult = self.auth.check(head.method, header_values(message, "authorization"))
        if lockout is not None:
            if result.ok:
                lockout.success(address)
            elif result.status == 403 and lockout.failure(address):
                seconds, count = lockout.lockout_s, lockout.max_failures
                _LOG.warning("%s locked out for %.0f s after %d bad credentials", address, seconds, count)
        if result.ok:
            return Verdict(0, "", result.detail, user=result.user)
        headers = {"WWW-Authenticate": result.www_authenticate} if result.www_authenticate else {}
        return Verdict(result.status, result.reason, result.detail, headers=headers)

    # -- call slots ------------------------------------------------------------------------------------------

    def slot(self, source: str, via_front: bool = False) -> Verdict | None:
        """None if a call from ``source`` may take a slot now, else the 486 verdict (module doc, "Room"). A call
        through a trusted front (``via_front``) is held to the share, not to ``calls_per_source``: the front counts
        each caller's calls across every worker (``front_calls_per_source``)."""
        if self.listed(source):
            return None
        address = source_ip(source)
        live = list(self._live())
        if not via_front:
            busy = self._per_source(address, sum(1 for ip in live if ip == address))
            if busy is not None:
                return busy
        if not (self.allowed or self.trunks) or self.config.unlisted_share >= 1:
            return None
        return self._share(address, sum(1 for ip in live if not self.listed(ip)))

    def _per_source(self, address: str, held: int) -> Verdict | None:
        limit = self.config.calls_per_source
        if not limit or held < limit or (self.closed_default and in_networks(address, LOOPBACK)):
            return None
        self._refused_slot(
            SlotReason.CALLS_PER_SOURCE,
            address,
            f"{address} holds {held} calls at this worker: its new calls get 486 (sip_calls_per_source {limit}; a "
            "trunk's addresses belong in sip_trunk_sources or sip_allowed_sources, which have no limit)",
        )
        return Verdict(486, CALLS_PER_SOURCE_BUSY, f"{held} calls from {address} up (calls_per_source {limit})")

    def _share(self, address: str, unlisted: int) -> Verdict | None:
        share, capacity = self.config.unlisted_share, self._capacity()
        cap = int(capacity * share + 1e-9)
        if unlisted < cap:
            return None
        self._refused_slot(
            SlotReason.UNLISTED_SHARE,
            address,
            f"{address}: sources outside sip_allowed_sources and sip_trunk_sources hold {unlisted} of this worker's "
            f"{capacity} calls: their new calls get 486 (sip_unlisted_share {share:g} keeps the rest for the listed "
            "trunks)",
        )
        detail = f"{unlisted} calls from unlisted sources up (unlisted_share {share:g} of {capacity})"
        return Verdict(486, UNLISTED_SHARE_BUSY, detail)

    def _refused_slot(self, reason: SlotReason, address: str, warning: str) -> None:
        """A slot refused for ``reason``: counted, and ``warning`` logged once per source and reason every
        :attr:`SourceWarnings.every_s`."""
        if self.warnings.due(reason, address):
            _LOG.warning("%s; said once per source every %.0f min", warning, self.warnings.every_s / 60)
        metrics.SIP_SLOT_REFUSALS.labels(reason).inc()

    # -- refusals --------------------------------------------------------------------------------------------

    def rejected(self, message: str, packet_source: str, verdict: Verdict) -> RejectedCall:
        """A refused INVITE as counted and logged (its caller-written fields cleaned)."""
        head: RequestHead | None = parse_request_head(message)
        headers = head.headers if head else {}
        return RejectedCall(
            verdict.status,
            verdict.reason,
            clean_text(headers.get("call-id", ""), SIP_CALL_ID_CHARS),
            clean_text(user_part(headers.get("from", ""))),
            clean_text(user_part(head.uri) if head else ""),
            self.caller_source(packet_source, message),
            verdict.detail,
        )
