"""Who may call: source-address allowlists and SIP digest authentication. Pure Python, no pjsua2.

Two checks the gateway runs on every INVITE before the app sees it (``SipConfig.allowed_sources``,
``SipConfig.auth_users``), and that an app can run again per dialplan or trunk (:func:`source_allowed`):

* **Source allowlist.** CIDRs (``"10.0.0.0/8"``, ``"2001:db8::/32"``) or single addresses (``"192.0.2.7"``).
  An empty list allows every source. The source is the address the datagram or connection came from (pjsip's
  ``rdata.srcAddress``), never a header, so a caller cannot claim another address. An IPv4-mapped IPv6 source
  (``::ffff:192.0.2.7``) matches IPv4 networks.
* **Digest authentication** (RFC 3261 §22.4 over RFC 2617 / RFC 7616), as a registrar or a trunk-facing SBC does it:
  an INVITE without valid credentials gets ``401 Unauthorized`` with a ``WWW-Authenticate: Digest`` challenge;
  the caller repeats the INVITE with an ``Authorization`` header. :class:`DigestAuth` issues and checks the
  challenges:

  - nonces are stateless and unforgeable: ``issued-at (8 hex) + 16 random bytes + HMAC-SHA256`` under a secret
    (random per process unless one is given, e.g. shared by the workers behind one dispatcher), and expire after
    ``nonce_ttl_s``. An expired or replayed nonce with a correct response gets a new challenge with
    ``stale=true`` (RFC 2617 §3.2.1: the client retries without asking for the password again);
  - replays: with ``qop=auth`` each nonce's ``nc`` must grow; without qop a nonce is good for one request;
  - a wrong password or an unknown user gets ``403 Forbidden`` rather than another challenge, so that a client
    with bad credentials stops instead of looping (and learns nothing about which part was wrong);
  - the response is checked over the ``uri`` the client put in its credentials, which need not be the
    Request-URI as received: a proxy in front (the Kamailio dispatcher) rewrites the Request-URI to the worker,
    and SIPp signs ``sip:host:port``. RFC 2617 §3.2.2.5 asks servers to compare them (SHOULD); replays are
    stopped by the nonce rules above instead;
  - algorithms: ``MD5`` (what SIP phones and SIPp speak, the default challenge) and ``SHA-256`` (RFC 7616/8760).
* **Behind a front** (the Kamailio dispatcher, :mod:`bridge.serve.front`), every INVITE comes from the front's
  address. The front writes the caller's own source into ``X-Callbridge-Source`` (removing every ``X-Callbridge-*``
  header the caller sent), and :func:`caller_source` takes that header from the addresses in
  ``SipConfig.trusted_fronts`` only, and only the front's one copy (:func:`front_copies_ok`: two copies refuse the
  INVITE): from anywhere else it is ignored, so a caller reaching a worker directly cannot claim another address.
  Where the header block ends, the worker reads it as the front does (:func:`bridge.sip.sipmsg.split_message`).
  The allowlist and the lockout below act on the source this gives.
* **Lockout** (:class:`AuthLockout`): a source address that sends ``auth_max_failures`` bad credentials within
  ``auth_failure_window_s`` is refused outright (403, counted) for ``auth_lockout_s``: password guessing from one
  address costs the guesser minutes per handful of tries, and costs the worker no digest work meanwhile.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.runtime.failures import Failures

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORBIDDEN_SOURCE = "Forbidden (source address not allowed)"
FORBIDDEN_CREDENTIALS = "Forbidden (bad credentials)"
FORBIDDEN_LOCKED_OUT = "Forbidden (too many failed authentications)"
CALLS_PER_SOURCE_BUSY = "Busy Here (too many calls from this source)"  # SipConfig.calls_per_source
UNLISTED_SHARE_BUSY = "Busy Here (room kept for listed trunks)"  # SipConfig.unlisted_share
UNAUTHORIZED = "Unauthorized"

# -- source allowlists ------------------------------------------------------------------------------------------


def parse_networks(entries: Iterable[str], field: str = "allowed_sources") -> tuple[IPNetwork, ...]:
    """``("10.0.0.0/8", "192.0.2.7", "::1")`` -> networks. A bad entry raises ``ValueError`` naming ``field``.

    Host bits are allowed (``"192.0.2.7/24"`` means ``192.0.2.0/24``), as firewall configurations write them.
    """
    if isinstance(entries, str):
        raise ValueError(f"{field}: expected a list of CIDRs, got the string {entries!r}")
    networks: list[IPNetwork] = []
    for entry in entries:
        text = str(entry).strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{field}: {entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def source_ip(address: str) -> str:
    """The IP of ``"192.0.2.7:5060"``, ``"[2001:db8::1]:5060"``, ``"2001:db8::1"`` or ``"192.0.2.7"``."""
    text = address.strip()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text[1:]
    if text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has two colons or more
        return text.split(":", 1)[0]
    return text


def _address(address: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(source_ip(address).split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(address: str, networks: Sequence[IPNetwork]) -> bool:
    """Is ``address`` ("ip" or "ip:port") inside one of ``networks``? An unparsable address is not."""
    ip = _address(address)
    return ip is not None and any(ip.version == net.version and ip in net for net in networks)


SOURCE_HEADER = "X-Callbridge-Source"  # "ip:port" ("[v6]:port") of the caller, written by the front


AUTH_HEADER = "X-Callbridge-Auth"  # the digest user the front authenticated the caller as (front_auth)
FRONT_HEADERS = (SOURCE_HEADER, AUTH_HEADER)  # what the front writes itself, one copy each (kamailio.cfg)
FORBIDDEN_FRONT_HEADERS = "Forbidden (front headers not the front's own)"


def front_copies_ok(values_by_header: Iterable[Sequence[str]]) -> bool:
    """Is every front header of a request from a trusted front the front's own copy (at most one each)? The front
    removes every ``X-Callbridge-*`` header a caller sent before it adds its own, so a second copy is one that
    reached the worker past the front's parser: the request is refused, not believed."""
    return all(len(values) <= 1 for values in values_by_header)


def caller_source(packet_source: str, header_values: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The caller's source address ("ip:port"): ``packet_source`` (where the request came from), unless that is a
    trusted front (inside ``trusted``) and the request carries exactly one :data:`SOURCE_HEADER` (the front's own
    copy) naming a valid address. More than one copy names nobody (:func:`front_copies_ok` refuses the request);
    anything else in the header is ignored."""
    if len(header_values) != 1 or not trusted or not in_networks(packet_source, trusted):
        return packet_source
    claimed = header_values[0].strip()
    return claimed if _address(claimed) is not None else packet_source


def source_allowed(address: str, cidrs: Iterable[str | IPNetwork]) -> bool:
    """The allowlist rule: True if ``cidrs`` is empty (allow all) or ``address`` is inside one of them.

    ``address`` may carry a port (``IncomingCall.remote_addr``) or not (``IncomingCall.remote_ip``). A bad CIDR
    raises ``ValueError``; validate configuration with :func:`parse_networks` at load time instead.
    """
    networks = tuple(c if isinstance(c, ipaddress.IPv4Network | ipaddress.IPv6Network) else _net(c) for c in cidrs)
    return not networks or in_networks(address, networks)


def _net(text: str) -> IPNetwork:
    return parse_networks([text], "cidr")[0]


# -- digest authentication ----------------------------------------------------------------------------------------

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),  # RFC 2617 requires MD5
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}


@dataclass(frozen=True, slots=True)
class DigestFields:
    """What a digest ``response`` signs besides the password (RFC 2617 §3.2.2, RFC 7616 §3.4): the parameters of an
    ``Authorization`` header and the request's method. ``qop`` ``auth`` or none (then ``nc`` and ``cnonce`` are
    unused); no ``-sess`` algorithms."""

    username: str
    realm: str
    method: str
    uri: str
    nonce: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""


def _hash(algorithm: str) -> Callable[[bytes], str]:
    digest = _HASHES.get(algorithm.upper())
    if digest is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return digest


def digest_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username:realm:password) (RFC 2617 §3.2.2.2): what a server may hold instead of the password (the
    front's user table does)."""
    return _hash(algorithm)(f"{username}:{realm}:{password}".encode())


def digest_response(fields: DigestFields, password: str) -> str:
    """The ``response`` value of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1."""
    digest = _hash(fields.algorithm)
    ha1 = digest_ha1(fields.username, fields.realm, password, fields.algorithm)
    ha2 = digest(f"{fields.method}:{fields.uri}".encode())
    if fields.qop:
        return digest(f"{ha1}:{fields.nonce}:{fields.nc}:{fields.cnonce}:{fields.qop}:{ha2}".encode())
    return digest(f"{ha1}:{fields.nonce}:{ha2}".encode())


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``'Digest username="a", nc=00000001'`` -> ``("digest", {"username": "a", "nc": "00000001"})``.

    Parameter names are lower-cased; quoted strings may contain commas and backslash escapes (RFC 3261 §25.1).
    A value that does not parse yields ``("", {})``.
    """
    parts = value.strip().split(None, 1)
    scheme, rest = (parts[0], parts[1]) if len(parts) == 2 else ((parts[0], "") if parts else ("", ""))
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            return "", {}
        name = rest[i:eq].strip().lower()
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            if i >= n:
                return "", {}  # unterminated quoted string
            i += 1
            param = "".join(chars)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            param = rest[i:end].strip()
            i = end
        if not name or name in params:
            return "", {}  # RFC 7616 §3.4: each parameter at most once
        params[name] = param
    return scheme.lower(), params


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What to do with a request: ``status`` 0 = accept (``user`` authenticated), 401 = challenge
    (``www_authenticate`` is the header value), 403 = refuse. ``detail`` says why, for logs."""

    status: int
    reason: str
    detail: str
    user: str | None = None
    www_authenticate: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0


class DigestAuth:
    """Digest authentication of requests against ``users`` (name -> password) in ``realm``.

    Not thread-safe: the gateway calls it on the event loop thread only. ``clock`` is wall-clock seconds
    (replaceable in tests).
    """

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str],
        *,
        nonce_ttl_s: float = 300.0,
        secret: bytes | str | None = None,
        algorithm: str = "MD5",
        clock: Callable[[], float] = time.time,
        max_tracked: int = 10_000,
    ) -> None:
        if not realm or '"' in realm or "\\" in realm:
            raise ValueError(f"auth_realm: {realm!r} must be non-empty, without quotes or backslashes")
        if algorithm.upper() not in _HASHES:
            raise ValueError(f"unsupported digest algorithm {algorithm!r} (MD5 or SHA-256)")
        if nonce_ttl_s <= 0:
            raise ValueError(f"auth_nonce_ttl_s: must be > 0, got {nonce_ttl_s}")
        self.realm = realm
        self.algorithm = algorithm.upper()
        self.nonce_ttl_s = nonce_ttl_s
        self._users = dict(users)
        key = secret.encode() if isinstance(secret, str) else secret
        self._secret = key or secrets.token_bytes(32)
        self._clock = clock
        self._max_tracked = max_tracked
        self._seen: OrderedDict[str, int] = OrderedDict()  # nonce -> last nc (-1: used without qop)
        self._forgotten_until = 0  # nonces issued at or before this (evicted from _seen) count as stale

    # -- nonces ----------------------------------------------------------------------------------------------

    def _mac(self, body: str) -> str:
        return hmac.new(self._secret, f"{body}:{self.realm}".encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        body = f"{int(self._clock()):08x}{secrets.token_hex(16)}"
        return body + self._mac(body)

    def _issued_at(self, nonce: str) -> int | None:
        """The nonce's issue time, or None if it is not one of ours (wrong length, not hex, bad MAC)."""
        if len(nonce) != 8 + 32 + 32:
            return None
        body, mac = nonce[:40], nonce[40:]
        if not hmac.compare_digest(mac.encode("utf-8", "replace"), self._mac(body).encode()):
            return None
        try:
            return int(body[:8], 16)
        except ValueError:
            return None

    def challenge(self, stale: bool = False) -> str:
        """A ``WWW-Authenticate`` value with a fresh nonce."""
        value = f'Digest realm="{self.realm}", nonce="{self.new_nonce()}", algorithm={self.algorithm}, qop="auth"'
        return value + (", stale=true" if stale else "")

    # -- checking --------------------------------------------------------------------------------------------

    def _challenge(self, detail: str, stale: bool = False) -> AuthResult:
        return AuthResult(401, UNAUTHORIZED, detail, www_authenticate=self.challenge(stale))

    def check(self, method: str, authorizations: Iterable[str]) -> AuthResult:
        """Check the ``Authorization`` header values of one request (``method`` as received)."""
        params: dict[str, str] | None = None
        for value in authorizations:
            scheme, candidate = parse_auth_params(value)
            if scheme == "digest" and candidate.get("realm") == self.realm:
                params = candidate
                break
        if params is None:
            return self._challenge("no credentials for this realm")
        username = params.get("username", "")
        password = self._users.get(username)
        if password is None:
            return AuthResult(403, FORBIDDEN_CREDENTIALS, f"unknown user {username!r}")
        algorithm = params.get("algorithm", "MD5").upper()
        qop = params.get("qop", "").lower()
        nonce = params.get("nonce", "")
        nc_text, cnonce = params.get("nc", ""), params.get("cnonce", "")
        if algorithm not in _HASHES or qop not in ("", "auth"):
            return AuthResult(403, FORBIDDEN_CREDENTIALS, f"unsupported algorithm {algorithm} / qop {qop!r}", username)
        uri = params.get("uri", "")
        if uri.partition(":")[0].lower() not in ("sip", "sips", "tel"):
            return AuthResult(403, FORBIDDEN_CREDENTIALS, f"digest uri {uri[:80]!r} is not a SIP URI", username)
        nc = -1
        if qop:
            if not cnonce or len(nc_text) != 8:
                return AuthResult(403, FORBIDDEN_CREDENTIALS, "qop=auth without cnonce or nc", username)
            try:
                nc = int(nc_text, 16)
            except ValueError:
                return AuthResult(403, FORBIDDEN_CREDENTIALS, f"bad nc {nc_text!r}", username)
        signed = DigestFields(username, self.realm, method, uri, nonce, algorithm, qop, nc_text, cnonce)
        expected = digest_response(signed, password)
        if not hmac.compare_digest(expected.encode(), params.get("response", "").lower().encode("utf-8", "replace")):
            return AuthResult(403, FORBIDDEN_CREDENTIALS, f"wrong response for user {username!r}", username)
        # The password is right. Is the nonce ours, fresh, and not replayed?
        issued = self._issued_at(nonce)
        if issued is None:
            return self._challenge("nonce not issued here")
        now = self._clock()
        if now - issued > self.nonce_ttl_s or issued > now + 5:
            return self._challenge("nonce expired", stale=True)
        if not self._first_use(nonce, issued, nc):
            return self._challenge("nonce or nc replayed", stale=True)
        return AuthResult(0, "OK", "authenticated", username)

    def _first_use(self, nonce: str, issued: int, nc: int) -> bool:
        self._expire()
        last = self._seen.get(nonce)
        if last is None:
            if issued <= self._forgotten_until:
                return False  # its history was evicted: it may have been used already
            self._seen[nonce] = nc
            while len(self._seen) > self._max_tracked:
                evicted, _ = self._seen.popitem(last=False)
                self._forgotten_until = max(self._forgotten_until, self._issued_at(evicted) or 0)
            return True
        if nc < 0 or nc <= last:  # without qop a nonce is good once; with qop the count must grow
            return False
        self._seen[nonce] = nc
        return True

    def _expire(self) -> None:
        horizon = self._clock() - self.nonce_ttl_s
        for nonce in list(self._seen):
            issued = self._issued_at(nonce)
            if issued is not None and issued >= horizon:
                break  # first use roughly follows issue order; stop at the first live one
            del self._seen[nonce]


class AuthLockout:
    """Per source address: after ``max_failures`` refused credentials (wrong password, unknown user) within
    ``window_s``, every INVITE from that address is refused for ``lockout_s`` without looking at its credentials
    (403 ``FORBIDDEN_LOCKED_OUT``). A success clears the address's count. A challenge (401) is not a failure: it
    is the normal first answer. Bounded: at most ``max_tracked`` addresses are remembered (the oldest go first).

    Pure and not thread-safe (the gateway calls it on the event loop thread); ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        max_failures: int = 10,
        window_s: float = 60.0,
        lockout_s: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 10_000,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or lockout_s <= 0:
            raise ValueError("auth lockout: max_failures must be >= 1, window_s and lockout_s > 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._max_tracked = max_tracked
        self._failures = Failures(max_failures, window_s, clock=clock, max_keys=max_tracked)  # per address
        self._locked: OrderedDict[str, float] = OrderedDict()  # address -> locked until
        self.lockouts = 0  # addresses locked out so far

    def locked(self, address: str) -> bool:
        until = self._locked.get(address)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._locked[address]
        return False

    def failure(self, address: str) -> bool:
        """Count one refused credential from ``address``; True if this locks it out."""
        now = self._failures.add(address)
        if not self._failures.over(address):
            return False
        self._failures.clear(address)
        self._locked[address] = now + self.lockout_s
        self._locked.move_to_end(address)
        self.lockouts += 1
        self._trim(self._locked)
        return True

    def success(self, address: str) -> None:
        self._failures.clear(address)

    def _trim(self, table: OrderedDict[str, Any]) -> None:
        while len(table) > self._max_tracked:
            table.popitem(last=False)


# -- who a worker answers when nothing is configured ----------------------------------------------------------------

LOOPBACK = parse_networks(("127.0.0.0/8", "::1/128"), "loopback")
OPEN_SETTINGS = ("sip_allowed_sources", "sip_auth_users", "sip_trusted_fronts")


def is_loopback_host(host: str) -> bool:
    """Is a bind address loopback only? A wildcard (``0.0.0.0``, ``::``, ``""``) or a host name is not."""
    text = host.strip().strip("[]")
    if text == "localhost":
        return True
    return in_networks(text, LOOPBACK)


def exposure(
    host: str,
    *,
    allowed_sources: Sequence[str],
    auth_users: int,
    trusted_fronts: Sequence[str],
    allow_any: bool,
    front_screening: Sequence[str] = (),
) -> tuple[str, str]:
    """(what is open, the problem or ""): who a worker bound to ``host`` answers, and why it must not start.

    Closed by default: with no allow-list, no digest users and no trusted front, a worker answers loopback sources
    only. Bound to anything but loopback that leaves nobody who should call able to, and a typo away from answering
    the Internet, so it is refused unless ``allow_any`` (``sip_allow_any_source``) says so on purpose.
    ``front_screening`` names what the node's own front checks before a worker sees a call (its settings)."""
    if allow_any:
        return f"any source may call (sip_allow_any_source: true) on {host or '*'}", ""
    parts = []
    if allowed_sources:
        parts.append(f"sources in sip_allowed_sources ({', '.join(allowed_sources)})")
    if auth_users:
        parts.append(f"callers that pass digest authentication ({auth_users} sip_auth_users)")
    if trusted_fronts:
        parts.append(f"calls through the trusted fronts ({', '.join(trusted_fronts)})")
    parts += [f"calls the front admits ({what})" for what in front_screening]
    if parts:
        return "calls answered from " + "; ".join(parts), ""
    what = "loopback callers only (none of " + ", ".join(OPEN_SETTINGS) + " is set)"
    if is_loopback_host(host):
        return what, ""
    problem = (
        f"sip_host {host or '*'!r} is not a loopback address and nothing says who may call: set "
        + ", ".join(OPEN_SETTINGS)
        + ", or sip_allow_any_source: true to answer any source on purpose"
    )
    return what, problem
