"""Where and how a process speaks SIP: :class:`SipConfig`, checked at construction, and the closed sets its modes
come from (:class:`SrtpMode`, :class:`MediaPortKind`; transports: :class:`bridge.sip.sipmsg.Transport`). What
pjsua2 is told of them is :mod:`bridge.sip.transports` (listeners, account, SRTP) and :mod:`bridge.sip.endpoint`
(media ports).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bridge.audio.frames import BEAT_FRAMES, MAX_BEAT_FRAMES, MAX_JITTER_FLOOR_MS
from bridge.sip.access import AuthLockout, DigestAuth, parse_networks
from bridge.sip.cport import DEFAULT_LEAD
from bridge.sip.sipmsg import Transport
from bridge.sip.tlsfiles import check_tls_files

_E = TypeVar("_E", bound=enum.StrEnum)

DOCUMENTED_CALL_CAP = 4  # what this wheel allows per process (docs/pjsip.md); used if the read-back fails


class SrtpMode(enum.StrEnum):
    """SRTP with SDES keys (RFC 4568, RFC 3711): not offered, offered (plain RTP accepted too), or required."""

    OFF = "off"
    OPTIONAL = "optional"
    MANDATORY = "mandatory"


class MediaPortKind(enum.StrEnum):
    """A call's media port (bridge.sip.cport): C on the clock thread, a pjsua2 AudioMediaPort, or the first that
    works (``auto``: native if it builds and passes its start-up check)."""

    AUTO = "auto"
    NATIVE = "native"
    PYTHON = "python"


MIN_SE_FLOOR = 90  # RFC 4028 §4; pjsip_timer_init_session asserts it: a smaller Min-SE aborts the process


@dataclass(frozen=True, slots=True)
class SipConfig:
    """Where and how a process speaks SIP. The app's settings loader maps onto this."""

    host: str = "127.0.0.1"  # SIP and RTP bind address ("0.0.0.0": all interfaces)
    port: int = 5060  # SIP port for every transport; 0 picks a free one (UDP first, TCP then tries the same)
    # Transport names (a plain string is taken and kept as its member); "tls" too: a TLS listener on tls_port
    transports: tuple[str, ...] = (Transport.UDP, Transport.TCP)
    tls_port: int = 0  # 0: any free port
    tls_cert: str = ""  # PEM certificate and private key of the TLS listener (checked at construction)
    tls_key: str = field(default="", repr=False)
    # PEM CA list that verifies the far end of the TLS connections this side opens; "": the system's CA store
    tls_ca: str = ""
    tls_verify: bool = True  # False: the far end's certificate is not verified (a warning at each start)
    srtp: str = SrtpMode.OFF  # a SrtpMode: off | optional | mandatory (SDES, RFC 4568; bridge.sip.transports)
    public_address: str = ""  # advertised in Contact and Via (and SDP, unless rtp_public_address) instead of host
    rtp_public_address: str = ""  # advertised in SDP (c=, o=) instead of host (1:1 NAT); "" = public_address
    rtp_port: int = 0  # first RTP port (RTCP is +1); 0: pjsua picks free ports
    rtp_port_range: int = 0  # number of ports from rtp_port to try; 0 = no limit
    max_calls: int = DOCUMENTED_CALL_CAP  # asked for; the library may cut it (see SipEndpoint.max_calls)
    user: str = "callbridge"  # user part of the local account URI
    user_agent: str = ""  # Server and User-Agent headers: "" sends none (nothing names the product to a scanner)
    pjsua_log_level: int = 1  # pjlib log level 0-6, forwarded to logger "bridge.sip.pjsua"; 4+ logs SIP messages
    # a pjsip log line (a packet it quotes) is cut here, with a marker: a peer's packet cannot flood the log. The
    # softphone, a tool its user points at a far end to read the SIP trace, keeps whole packets (still escaped)
    pjsua_log_chars: int = 400
    poll_interval_s: float = 0.02  # libHandleEvents while shutting down (in service: the metronome's 20 ms beat)
    busy_poll_interval_s: float = 0.005  # the same after SIP traffic while polls find more (bursts, floods)
    shutdown_grace_s: float = 1.0  # how long close() waits for BYEs to complete
    # Media port per call, a MediaPortKind (bridge.sip.cport): "native" (C, the clock thread never takes the GIL),
    # "python" (a pjsua2 AudioMediaPort), "auto" (native if it builds and passes its start-up check, else python).
    # The environment variable CALLBRIDGE_MEDIA_PORT sets the default (benchmarks compare the two).
    media_port: str = field(default_factory=lambda: os.environ.get("CALLBRIDGE_MEDIA_PORT", MediaPortKind.AUTO))
    playout_lead_frames: int = DEFAULT_LEAD  # native port: frames queued ahead of the clock (20 ms each)
    # native ports: the clock thread wakes the event loop once every this many 20 ms ticks (bridge.runtime.metronome):
    # playout rings are filled for the whole beat, the Realtime sockets read and SIP polled once per beat. 1 is
    # the lowest latency (a barge-in is seen up to one beat late), more costs less CPU.
    media_beat_frames: int = BEAT_FRAMES
    # packet loss concealment of received G.711 (pjmedia's PLC, on in every phone): a frame that comes too late for
    # the jitter buffer is made up from the audio before it. A measuring phone turns it off, so that it records a
    # late frame as the gap it was, not as audio the other side never sent.
    concealment: bool = True
    # the jitter buffer's floor for received audio (pjmedia's, per call): it keeps at least this much ahead before
    # it plays (jbMinPre), starts at it (jbInit: a buffer that started higher and shrank would move the echo's delay
    # while the echo guard learns it), grows to 300 ms ahead at most (jbMaxPre) and holds 500 ms (jbMax). 0:
    # pjmedia's adaptive defaults, which start from one frame: the least delay on a clean line, misplaced frames
    # (played early or late, then one dropped to catch up) on a jittery one. See JitterBuffer.
    jitter_buffer_ms: int = 0
    # native port: ask for SCHED_RR on pjmedia's clock thread, at the lowest real-time priority or at the worker's
    # own if it runs real-time (bridge/runtime/sched.py); needs CAP_SYS_NICE, refused quietly without it.
    # CALLBRIDGE_CLOCK_RT=0 turns it off.
    clock_realtime: bool = field(default_factory=lambda: os.environ.get("CALLBRIDGE_CLOCK_RT", "1") != "0")
    # Access control, checked by SipGateway on every INVITE before the app sees it (see bridge.sip.access):
    allowed_sources: tuple[str, ...] = ()  # CIDRs / addresses INVITEs may come from; others get 403
    # with no allowed_sources and no auth_users, only loopback sources and the trusted fronts' calls are answered
    # (closed by default), unless this says any source on purpose
    allow_any_source: bool = False
    auth_users: Mapping[str, str] = field(default_factory=dict, repr=False)  # digest user -> password; {} = off
    auth_realm: str = "callbridge"  # digest realm of the 401 challenges
    auth_exempt_sources: tuple[str, ...] = ()  # CIDRs trusted by address alone (no challenge), e.g. a carrier
    # CIDRs of the front (the Kamailio dispatcher) whose X-Callbridge-Source header names the caller's source, which
    # every check above then uses (bridge.sip.access.caller_source); () = the header is ignored from everyone
    trusted_fronts: tuple[str, ...] = ()
    # concurrent calls one source address may hold on this endpoint; more get 486 (CALLS_PER_SOURCE_BUSY). Sources in
    # allowed_sources or trunk_sources are exempt, and so are loopback sources when nothing is configured (the closed
    # default). 0: off
    calls_per_source: int = 2
    # CIDRs of listed trunks (not an allowlist: who may call is decided above): no calls_per_source limit, and room
    # kept for them: where trunks are listed (here or in allowed_sources), the sources outside both lists together
    # hold at most unlisted_share of this endpoint's calls (rounded down; 1: no such limit), the next gets 486
    # (UNLISTED_SHARE_BUSY)
    trunk_sources: tuple[str, ...] = ()
    unlisted_share: float = 0.5
    auth_nonce_ttl_s: float = 300.0  # how long a challenge's nonce stays good
    auth_max_failures: int = 10  # bad credentials from one source address within the window ...
    auth_failure_window_s: float = 60.0
    auth_lockout_s: float = 300.0  # ... lock that address out (403 at once) for this long
    auth_nonce_secret: str = field(default="", repr=False)  # HMAC key of nonces; "" = random per process (share
    # one across workers behind one dispatcher, so that a retry landing on another worker is still accepted)
    # Every call bounded (bridge.sip.bounds): no RTP for rtp_timeout_s (rtp_hold_timeout_s while the caller holds)
    # ends it with a BYE; SIP session timers (RFC 4028) with this interval and smallest accepted Min-SE.
    rtp_timeout_s: float = 30.0
    rtp_hold_timeout_s: float = 600.0
    session_expires_s: int = 1800
    session_min_se_s: int = 90

    def __post_init__(self) -> None:
        """Refuse a malformed configuration at construction, naming the field."""
        self._check_security()
        object.__setattr__(self, "media_port", _member(MediaPortKind, "media_port", self.media_port))
        if not 1 <= self.playout_lead_frames <= 16:
            raise ValueError(f"SipConfig.playout_lead_frames: expected 1..16, got {self.playout_lead_frames}")
        if not 1 <= self.media_beat_frames <= MAX_BEAT_FRAMES:
            raise ValueError(
                f"SipConfig.media_beat_frames: expected 1..{MAX_BEAT_FRAMES}, got {self.media_beat_frames}"
            )
        if self.playout_lead_frames + self.media_beat_frames - 1 > 16:
            raise ValueError(
                "SipConfig.media_beat_frames: playout_lead_frames + media_beat_frames - 1 must be at most 16 (the "
                f"native port's ring), got {self.playout_lead_frames} + {self.media_beat_frames} - 1"
            )
        if not 0 <= self.jitter_buffer_ms <= MAX_JITTER_FLOOR_MS:
            raise ValueError(
                f"SipConfig.jitter_buffer_ms: expected 0..{MAX_JITTER_FLOOR_MS}, got {self.jitter_buffer_ms}"
            )
        if not (self.rtp_timeout_s > 0 and self.rtp_hold_timeout_s > 0):
            raise ValueError("SipConfig.rtp_timeout_s, rtp_hold_timeout_s: must be > 0")
        if not MIN_SE_FLOOR <= self.session_min_se_s <= self.session_expires_s:
            raise ValueError(
                f"SipConfig.session_min_se_s: expected {MIN_SE_FLOOR}..session_expires_s ({self.session_expires_s}), "
                f"got {self.session_min_se_s}"
            )
        if not 0 <= self.unlisted_share <= 1:
            raise ValueError(f"SipConfig.unlisted_share: expected 0..1, got {self.unlisted_share}")
        for name in ("allowed_sources", "auth_exempt_sources", "trusted_fronts", "trunk_sources"):
            value = getattr(self, name)
            parse_networks(value, f"SipConfig.{name}")  # raises ValueError naming the field and the bad entry
            object.__setattr__(self, name, tuple(value))
        users = self.auth_users
        if not isinstance(users, Mapping) or not all(
            isinstance(user, str) and user and isinstance(password, str) for user, password in users.items()
        ):
            raise ValueError("SipConfig.auth_users: expected a mapping of non-empty user names to password strings")
        if users:
            self.digest_auth()  # validates auth_realm and auth_nonce_ttl_s
            self.auth_lockout()  # validates the lockout settings

    def _check_security(self) -> None:
        unknown = {name.lower() for name in self.transports} - set(Transport)
        if unknown:
            raise ValueError(f"SipConfig.transports: unknown {', '.join(sorted(unknown))} (expected udp, tcp, tls)")
        object.__setattr__(self, "transports", tuple(Transport(name.lower()) for name in self.transports))
        object.__setattr__(self, "srtp", _member(SrtpMode, "srtp", self.srtp))
        if Transport.TLS in self.transports and (self.tls_cert or self.tls_key):
            check_tls_files(
                Path(self.tls_cert) if self.tls_cert else None,
                Path(self.tls_key) if self.tls_key else None,
                Path(self.tls_ca) if self.tls_ca else None,
                names=("SipConfig.tls_cert", "SipConfig.tls_key", "SipConfig.tls_ca"),
            )

    def digest_auth(self) -> DigestAuth | None:
        """The digest authenticator this configuration asks for, or None if ``auth_users`` is empty."""
        if not self.auth_users:
            return None
        try:
            return DigestAuth(
                self.auth_realm,
                self.auth_users,
                nonce_ttl_s=self.auth_nonce_ttl_s,
                secret=self.auth_nonce_secret or None,
            )
        except ValueError as exc:
            raise ValueError(f"SipConfig.{exc}") from None

    def auth_lockout(self) -> AuthLockout | None:
        """The per-source lockout of repeated bad credentials, or None if ``auth_users`` is empty."""
        if not self.auth_users:
            return None
        try:
            return AuthLockout(self.auth_max_failures, self.auth_failure_window_s, self.auth_lockout_s)
        except ValueError as exc:
            raise ValueError(f"SipConfig.{exc}") from None


@dataclass(frozen=True, slots=True)
class JitterBuffer:
    """pjmedia's jitter buffer settings (``MediaConfig.jbInit``, ``jbMinPre``, ``jbMaxPre``, ``jbMax``: all in ms)
    for a floor of ``floor_ms`` (:attr:`SipConfig.jitter_buffer_ms`); None where pjmedia's defaults stand."""

    init_ms: int
    min_prefetch_ms: int
    max_prefetch_ms: int
    max_ms: int

    @staticmethod
    def for_floor(floor_ms: int) -> JitterBuffer | None:
        if floor_ms <= 0:
            return None
        return JitterBuffer(floor_ms, floor_ms, max(300, 2 * floor_ms), 500)


def _member(kind: type[_E], name: str, value: str) -> _E:
    """``value`` as a member of ``kind``, or a ValueError naming the field and the members."""
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"SipConfig.{name}: expected one of {', '.join(kind)}, got {value!r}") from None
