"""What the front refuses before a worker sees it (:class:`Edge`: kamailio/kamailio.cfg, route[ADMIT] and
route[AUTH]): the flood limit, the allow-list, the listed trunks, digest auth with a guard per user, topology hiding;
and the two files of the run directory it makes, ``front.sources`` (:func:`address_file`) and ``front.users``
(:func:`front_users`, mode 0600)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.sip.access import digest_ha1

REFUSALS_WITH_ALLOWLIST = 3  # a scanner (SIPVicious's svwar) gives up after 3 refusals: the ban comes with the third
REFUSALS_WITHOUT_ALLOWLIST = 10  # any source may call: a trunk's misconfigured few calls do not ban it at once


def refusal_limit(settings: Settings) -> int:
    """``front_refusal_limit``, else 3 where the front has an allow-list and 10 where it has none."""
    if settings.front_refusal_limit is not None:
        return settings.front_refusal_limit
    return REFUSALS_WITH_ALLOWLIST if settings.front_allowed_sources else REFUSALS_WITHOUT_ALLOWLIST


# User names and realms the routing script can hold in its strings without quoting (no '"', '$', '!', spaces).
_SCRIPT_TOKEN = re.compile(r"^[A-Za-z0-9._~+@:-]{1,64}$")


@dataclass(frozen=True)
class Edge:
    """What the front refuses before a worker sees it (kamailio/kamailio.cfg, route[ADMIT], route[AUTH])."""

    allowed_sources: tuple[str, ...] = ()  # CIDRs; () = any source
    # CIDRs of the listed trunks (sip_trunk_sources): trusted peers, not an allow-list: not flood-limited or banned,
    # no calls per source limit, never refused by a digest user's guard
    trunk_sources: tuple[str, ...] = ()
    auth_users: Mapping[str, str] | None = None  # user -> password: digest at the front; None = off
    auth_realm: str = "callbridge"
    pike_requests: int = 400  # requests per window from one address ...
    pike_window_s: int = 2
    ban_s: int = 300  # ... ban it for this long
    # 403s to one address, each within a minute of the last, that ban it for ban_s too
    refusal_limit: int = REFUSALS_WITHOUT_ALLOWLIST
    # calls one source outside the allow-list and the trunks may hold through the front; 0: no limit
    calls_per_source: int = 0
    # with digest at the front: wrong passwords for one user from unlisted sources (any of them), each within the
    # window of the last, that put the user under a guard for auth_user_ban_s (its calls from unlisted sources: 403)
    auth_user_failures: int = 10
    auth_user_window_s: int = 60
    auth_user_ban_s: int = 300
    topology_hiding: bool = False
    server_header: str = ""  # the Server / User-Agent header of Kamailio's own messages; "": none

    def __repr__(self) -> str:  # never the passwords
        return f"Edge({self.describe()})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Edge:
        users = {u: pw.get_secret_value() for u, pw in settings.sip_auth_users.items()} if settings.front_auth else None
        edge = cls(
            allowed_sources=settings.front_allowed_sources,
            trunk_sources=settings.sip_trunk_sources,
            auth_users=users,
            auth_realm=settings.sip_auth_realm,
            pike_requests=settings.front_pike_requests,
            pike_window_s=settings.front_pike_window_s,
            ban_s=settings.front_ban_s,
            refusal_limit=refusal_limit(settings),
            calls_per_source=settings.front_calls_per_source,
            auth_user_failures=settings.front_auth_user_failures,
            auth_user_window_s=settings.front_auth_user_window_s,
            auth_user_ban_s=settings.front_auth_user_ban_s,
            topology_hiding=settings.front_topology_hiding,
            server_header=settings.sip_server_header,
        )
        edge.check()
        return edge

    def check(self) -> None:
        """ConfigError naming the setting that the routing script cannot take."""
        for field, entries in (
            ("front_allowed_sources", self.allowed_sources),
            ("sip_trunk_sources", self.trunk_sources),
        ):
            for entry in entries:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ConfigError("settings", field, f"{entry!r} is not a CIDR") from None
        if self.auth_users is None:
            return
        if not self.auth_users:
            raise ConfigError("settings", "front_auth", "digest at the front needs users in sip_auth_users")
        if not _SCRIPT_TOKEN.match(self.auth_realm):
            raise ConfigError("settings", "sip_auth_realm", "with front_auth: letters, digits and ._~+@:- only")
        for user in self.auth_users:
            if not _SCRIPT_TOKEN.match(user):
                raise ConfigError("settings", "sip_auth_users", f"{user!r}: with front_auth: letters, digits, ._~+@:-")

    def describe(self) -> str:
        """The start-up log's words for what is open and what is guarded (no secret)."""
        sources = ", ".join(self.allowed_sources) if self.allowed_sources else "any source (no front_allowed_sources)"
        trunks = (
            f"trunks {', '.join(self.trunk_sources)} (sip_trunk_sources)"
            if self.trunk_sources
            else "no trunk listed (sip_trunk_sources)"
        )
        guarded = "its calls from unlisted sources refused" if self.trunk_sources else "its calls refused"
        auth = (
            f"digest auth of new calls ({len(self.auth_users)} users, realm {self.auth_realm}), a user guarded"
            f" {self.auth_user_ban_s} s ({guarded}) after {self.auth_user_failures} wrong passwords from unlisted"
            f" sources, each within {self.auth_user_window_s} s of the last"
            if self.auth_users
            else "no authentication at the front (front_auth off)"
        )
        flood = (
            f"ban {self.ban_s} s over {self.pike_requests} requests per {self.pike_window_s} s"
            f" or {self.refusal_limit} refusals"
        )
        hiding = "topology hidden" if self.topology_hiding else "topology not hidden"
        listed = [
            name for name, on in (("the allow-list", self.allowed_sources), ("the trunks", self.trunk_sources)) if on
        ]
        who = f"each source outside {' and '.join(listed)}" if listed else "each source"
        slots = (
            f"{who} holds at most {self.calls_per_source} calls (486 beyond)"
            if self.calls_per_source
            else "no limit of calls per source (front_calls_per_source 0)"
        )
        return f"sources: {sources}; {auth}; {trunks}; {flood}; {slots}; {hiding}"

    def script_values(self) -> dict[str, str]:
        """The edge's numbers and names as ``front.defs`` gives them to the routing script (``#!substdef``)."""
        return {
            "FRONT_PIKE_REQUESTS": str(self.pike_requests),
            "FRONT_PIKE_WINDOW_S": str(self.pike_window_s),
            "FRONT_BAN_S": str(self.ban_s),
            "FRONT_AUTH_REALM": self.auth_realm,
            "FRONT_REFUSALS": str(self.refusal_limit),
            "FRONT_AUTH_USER_FAILURES": str(self.auth_user_failures),
            "FRONT_AUTH_USER_WINDOW_S": str(self.auth_user_window_s),
            "FRONT_AUTH_USER_BAN_S": str(self.auth_user_ban_s),
        }


# A message of up to 64 KiB is read whole over TCP and TLS (then answered, trimmed or refused 513 by route[SIZE]):
# Kamailio's read buffer of every connection, in its shared memory.
READ_BUFFER = 65536 + 1024
TLS_STATE = 64 * 1024  # what OpenSSL holds per TLS connection in Kamailio's shared memory (about 50 KiB measured)
SHM_BASE_MB = 64  # Kamailio's default: dialogs, transactions, tables


@dataclass(frozen=True)
class Conns:
    """The front's TCP and TLS connections (kamailio/kamailio.cfg): how many in all and over TLS (Kamailio's
    ``tcp_max_connections``, ``tls_max_connections``), how long one may sit idle before it has carried a whole request
    (``tcp_connection_lifetime``; one that has is kept for a call's length), how large a message it may carry
    (``tcp_rd_buf_size``), the shared memory that holds them all (``-m``), how many one source may hold (enforced
    by ``front_conns``). Settings ``front_tcp_max_connections``, ``front_tls_max_connections``,
    ``front_connections_per_source``, ``front_tcp_idle_s``, ``front_shm_mb``."""

    max_connections: int = 1024
    max_tls: int = 256
    per_source: int = 16
    idle_s: int = 20
    shm_mb: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Conns:
        conns = cls(
            settings.front_tcp_max_connections,
            settings.front_tls_max_connections,
            settings.front_connections_per_source,
            settings.front_tcp_idle_s,
            settings.front_shm_mb,
        )
        if conns.max_tls > conns.max_connections:
            raise ConfigError("settings", "front_tls_max_connections", "at most front_tcp_max_connections")
        if conns.per_source >= conns.max_tls:
            raise ConfigError(
                "settings", "front_connections_per_source", "below front_tls_max_connections (and the TCP limit)"
            )
        if conns.shm_mb is not None and conns.shm_mb < conns.needed_mb:
            raise ConfigError(
                "settings", "front_shm_mb", f"{conns.shm_mb} MB cannot hold the connection limits: {conns.needed_mb}"
            )
        return conns

    @property
    def needed_mb(self) -> int:
        """Shared memory for every connection's read buffer, OpenSSL's state of every TLS one, and the rest."""
        need = self.max_connections * (READ_BUFFER + 1024) + self.max_tls * TLS_STATE
        return SHM_BASE_MB + -(-need // (1 << 20))

    @property
    def memory_mb(self) -> int:
        """Kamailio's ``-m``."""
        return self.shm_mb if self.shm_mb is not None else self.needed_mb

    def describe(self) -> str:
        return (
            f"TCP and TLS: {self.max_connections} connections ({self.max_tls} TLS), {self.per_source} per source"
            f" outside sip_trunk_sources, {self.idle_s} s idle before a whole request, messages up to"
            f" {READ_BUFFER - 1024} bytes; shared memory {self.memory_mb} MB"
        )

    def script_values(self) -> dict[str, int]:
        """``#!define`` numbers of ``front.defs``."""
        return {
            "FRONT_TCP_MAX": self.max_connections,
            "FRONT_TLS_MAX": self.max_tls,
            "FRONT_TCP_IDLE_S": self.idle_s,
            "FRONT_TCP_BUF": READ_BUFFER,
        }


ALLOWLIST_GROUP, TRUNK_GROUP = 1, 2  # the groups of front.sources that kamailio.cfg's allow_source_address() reads


def address_file(cidrs: Sequence[str], trunks: Sequence[str] = ()) -> str:
    """The permissions module's address file: ``group address netmask port`` (any port): the allow-list's
    ``cidrs`` in group 1, the listed ``trunks`` in group 2."""
    lines = ["# generated by callbridge serve --front kamailio from front_allowed_sources and sip_trunk_sources"]
    for group, entries in ((ALLOWLIST_GROUP, cidrs), (TRUNK_GROUP, trunks)):
        for entry in entries:
            net = ipaddress.ip_network(entry, strict=False)
            address = f"[{net.network_address}]" if net.version == 6 else str(net.network_address)
            lines.append(f"{group} {address} {net.prefixlen} 0")
    return "\n".join(lines) + "\n"


def front_users(edge: Edge, nonce_secret: str, mask_key: str) -> str:
    """``front.users``: route[FRONT_USERS] sets ``$var(ha1)`` for the Authorization's user ``$au`` (\"\" if
    unknown), and the random keys of the auth module's nonces and of topoh."""
    lines = ["# generated by callbridge serve --front kamailio; secret: mode 0600"]
    if edge.auth_users:
        lines.append(f'modparam("auth", "secret", "{nonce_secret}")')
    if edge.topology_hiding:
        lines.append(f'modparam("topoh", "mask_key", "{mask_key}")')
    lines += ["route[FRONT_USERS] {", '\t$var(ha1) = "";']
    if edge.auth_users:
        lines.append("\tswitch ($au) {")
        for user, password in sorted(edge.auth_users.items()):
            lines += [
                f'\t\tcase "{user}":',
                f'\t\t\t$var(ha1) = "{digest_ha1(user, edge.auth_realm, password)}";',
                "\t\t\tbreak;",
            ]
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"
