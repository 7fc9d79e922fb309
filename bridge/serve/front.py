"""The front door: Kamailio in front of the workers, so that one SIP address reaches every worker of every node.

A worker process holds at most a few calls (4 with the pjsua2 wheel), and a trunk points at one address. With
``callbridge serve --front kamailio`` the pool starts Kamailio (Debian's ``kamailio`` package) on
``sip_host:sip_port`` and the workers on the ports after it; Kamailio's ``dispatcher`` module spreads new calls by
call load over every worker it knows, this node's and the ``front_peers`` of other nodes. The routing script is
``bridge/serve/kamailio/kamailio.cfg`` (read it: it says what happens to a call); this module writes what it
includes into a run directory:

* ``front.defs``: the listen address, the control socket and the timers, as Kamailio ``#!define``/``#!substdef``;
* ``dispatcher.list``: one destination per worker, ``maxload`` = the calls the worker's process reported it holds;
* ``front.sources``: ``front_allowed_sources`` (group 1) and ``sip_trunk_sources`` (group 2) as the permissions
  module's address file;
* ``front.users`` (mode 0600): the HA1 of each ``sip_auth_users`` user for digest at the front (``front_auth``),
  the key of its nonces and of topology hiding, random per front;
* ``rpc.sock``: Kamailio's JSON-RPC control socket (a Unix datagram socket, mode 0600), used by
  ``callbridge drain`` and by :meth:`KamailioFront.destinations`;
* ``kamailio.log``: Kamailio's own log, unless ``serve``'s stderr is the journal (under systemd): its lines then go
  there, beside ``serve``'s (``journalctl -u callbridge``). Either way ``serve`` writes them (:func:`relay_log`):
  one line per message, peer data in it escaped, cut and its numbers masked.

The edge (:class:`Edge`): a flood limit per source address, an allow-list, the listed trunks (trusted peers, never
refused by a user's guard), digest auth with a guard per user against guess storms from unlisted sources, a copy
of an INVITE it already has (another branch) refused 482, in-dialog requests relayed only within dialogs the front
set up, topology hiding. What Kamailio refused is read from its counters over the control socket and exported as
metrics (:func:`edge_counts`).

Drain (``callbridge drain NODE|WORKER``, or SIGUSR1 to ``serve``): the worker's destination is set to disabled, so
no new call reaches it while its calls go on (their in-dialog requests follow the dialog, not the dispatcher);
``--undo`` (SIGUSR2) makes it active again. A restarted Kamailio forgets drains and current loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.config import Settings, load_settings
from bridge.errors import BridgeError, ConfigError
from bridge.privacy.masking import mask_sip_numbers
from bridge.runtime.lifetime import pdeathsig_prefix
from bridge.runtime.logs import safe_text, stderr_is_journal
from bridge.runtime.sched import renice_group
from bridge.sip.access import digest_ha1

log = logging.getLogger("bridge.serve.front")

INSTALL_HINT = "apt-get install kamailio"
TEMPLATE_ENV = "CALLBRIDGE_KAMAILIO_CFG"  # another routing script than the package's (kamailio/kamailio.cfg)
DISPATCHER_SET = 1  # the script routes every new call to this dispatcher set ...
TLS_DISPATCHER_SET = 2  # ... and a call that came over TLS to this one: the same workers' TLS listeners
PING_INTERVAL_S = 1  # OPTIONS to every worker this often ...
ANSWER_TIMEOUT_MS = 2000  # ... and a worker silent this long to a probe is out until it answers one
# A new call waits this long for a worker's first answer (100 Trying) before the front tries another and takes that
# worker out. Longer than a probe's: a worker busy setting up a burst of calls can be seconds late, and trying
# another meanwhile sends the call twice (the late worker may still answer it); a dead one the probes find first.
INVITE_TIMEOUT_MS = 5000
FRONT_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")  # all of serve's environment Kamailio gets
# Kamailio's niceness: every call's signalling passes its few processes, and on a machine the workers fill, fair
# shares among a hundred busy processes leave each SIP hop waiting for a core. Needs CAP_SYS_NICE (else ordinary).
FRONT_NICE = -10
RING_TIMEOUT_MS = 120_000  # a worker that has answered 1xx may take this long to answer the call
CALL_MAX_S = 3660  # dialog and call-load entries of calls that never saw their BYE expire after this
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_S = 30.0  # a front that ran this long before it died restarts after the backoff's first step again
METRICS_INTERVAL_S = 2.0  # the dispatcher's view of the workers is exported this often
DRAINED, ACTIVE = "d", "ap"  # dispatcher.set_state's words: disabled (no calls, no probes); active and probed
_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # Debian's place, often absent from a user's PATH


class FrontError(BridgeError):
    """The front cannot start or cannot be reached."""


def kamailio_binary() -> str | None:
    """``kamailio`` from PATH (or the sbin directories a non-root PATH often lacks); None if not installed."""
    found = shutil.which("kamailio")
    if found:
        return found
    for directory in _SEARCH_PATH:
        candidate = Path(directory) / "kamailio"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_kamailio() -> str:
    binary = kamailio_binary()
    if binary is None:
        raise FrontError(f"--front kamailio: Kamailio is not installed; install it with `{INSTALL_HINT}`")
    return binary


def template_path() -> Path:
    """The routing script: ``$CALLBRIDGE_KAMAILIO_CFG``, else the package's own ``bridge/serve/kamailio/kamailio.cfg``
    (package data, in a checkout and in the wheel alike), whatever the working directory."""
    configured = os.environ.get(TEMPLATE_ENV)
    path = Path(configured) if configured else Path(str(resources.files("bridge.serve") / "kamailio" / "kamailio.cfg"))
    if not path.is_file():
        raise FrontError(f"the Kamailio routing script {path} is missing (set {TEMPLATE_ENV} to its path)")
    return path


# -- the dispatcher list --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    """One worker as the front sees it."""

    host: str
    port: int
    max_calls: int
    tls_port: int = 0  # the worker's TLS listener (sip_tls_port); 0: none known (a peer's, or no TLS)

    @property
    def address(self) -> str:
        """ "host:port" ("[v6]:port"): also the destination's ``duid`` (its call-load key)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.address}"


def parse_peer(text: str, default_max_calls: int) -> Destination:
    """``"10.0.0.7:5061"`` or ``"10.0.0.7:5061/4"`` or ``"[2001:db8::7]:5061"`` -> a destination."""
    entry, _, cap = text.strip().partition("/")
    host, sep, port = entry.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"front_peers: {text!r} is not host:port or host:port/max_calls")
    if cap and (not cap.isdigit() or int(cap) < 1):
        raise ValueError(f"front_peers: {text!r}: max_calls must be a positive integer")
    return Destination(host, int(port), int(cap) if cap else default_max_calls)


def dispatcher_list(destinations: Sequence[Destination]) -> str:
    """The dispatcher module's list file: ``setid uri flags priority attrs``; flag 8 = probed with OPTIONS. Workers
    with a TLS listener are in the TLS set too, under the same ``duid`` (SIPS needs TLS on every hop, RFC 5630 §3.1:
    a ``sips:`` caller refuses an answer whose Record-Route or Contact is not TLS)."""
    lines = ["# generated by callbridge serve --front kamailio: set uri flags priority attrs"]
    for d in destinations:
        lines.append(f"{DISPATCHER_SET} {d.uri} 8 0 duid={d.address};maxload={d.max_calls}")
    for d in destinations:
        if d.tls_port:
            host = f"[{d.host}]" if ":" in d.host else d.host
            uri = f"sip:{host}:{d.tls_port};transport=tls"
            lines.append(f"{TLS_DISPATCHER_SET} {uri} 8 0 duid={d.address};maxload={d.max_calls}")
    return "\n".join(lines) + "\n"


# -- the edge: flood limit, allow-list, digest auth, topology hiding -------------------------------------------------

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


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by this user only, from its creation on."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the front listens and what it announces. ``advertise`` (``sip_public_address``, behind 1:1 NAT) is the
    address the listeners announce in Record-Route and Via instead of the bound one. ``tls_port`` adds a TLS listener
    (``FRONT_TLS``: Kamailio's tls module with ``tls.cfg`` of the run directory)."""

    host: str
    port: int
    advertise: str = ""
    tls_port: int | None = None


def front_defs(
    listen: Listen,
    run_dir: Path,
    retry_after_s: int,
    log_level: int = 1,
    edge: Edge | None = None,
    dialog_db: str = "",
    dialog_id: int = 0,
) -> str:
    """What ``kamailio.cfg`` includes: addresses, paths and numbers that appear inside strings as ``#!substdef``,
    other numbers as ``#!define``; switches of the edge as bare ``#!define``. The listeners are ``listen``'s.
    ``dialog_db`` (:func:`dialog_db_url`) keeps the dialogs in Redis (``FRONT_DIALOG_DB``, schema in ``db_redis/``),
    their ids of this front's own (``dialog_id``: ``front_dialog_id``)."""
    edge = edge or Edge()
    listen_host, port, advertise, tls_port = listen.host, listen.port, listen.advertise, listen.tls_port
    host = f"[{listen_host}]" if ":" in listen_host else listen_host
    public = f"[{advertise}]" if ":" in advertise else advertise
    announce = f" advertise {public}:{port}" if advertise else ""
    strings = {
        "FRONT_LISTEN_UDP": f"udp:{host}:{port}{announce}",
        "FRONT_LISTEN_TCP": f"tcp:{host}:{port}{announce}",
        "FRONT_RPC_SOCKET": str(run_dir / "rpc.sock"),
        "FRONT_DISPATCHER_LIST": str(run_dir / "dispatcher.list"),
        "FRONT_RETRY_AFTER_S": str(retry_after_s),
        "FRONT_ADDRESS_FILE": str(run_dir / "front.sources"),
        **edge.script_values(),
    }
    if edge.server_header:
        strings["FRONT_SERVER_NAME"] = edge.server_header
    source_ipv4 = _ipv4_host(listen_host)
    if tls_port is not None:
        strings["FRONT_LISTEN_TLS"] = f"tls:{host}:{tls_port}" + (
            f" advertise {public}:{tls_port}" if advertise else ""
        )
        strings["FRONT_TLS_CFG"] = str(run_dir / "tls.cfg")
    if dialog_db:
        strings["FRONT_DIALOG_DB_URL"] = dialog_db
        strings["FRONT_DIALOG_SCHEMA"] = str(run_dir / "db_redis")
    switches = [
        name
        for name, on in (
            ("FRONT_ALLOWLIST", bool(edge.allowed_sources)),
            ("FRONT_TRUNKS", bool(edge.trunk_sources)),
            ("FRONT_AUTH", bool(edge.auth_users)),
            ("FRONT_TOPOH", edge.topology_hiding),
            ("FRONT_TLS", tls_port is not None),
            ("FRONT_DIALOG_DB", bool(dialog_db)),
            ("FRONT_SERVER_HEADER", bool(edge.server_header)),
            ("FRONT_SOURCE_IPV4", bool(source_ipv4)),
        )
        if on
    ]
    numbers = {
        "FRONT_TIMEOUT_MS": ANSWER_TIMEOUT_MS,
        "FRONT_INVITE_TIMEOUT_MS": INVITE_TIMEOUT_MS,
        "FRONT_RING_MS": RING_TIMEOUT_MS,
        "FRONT_CALL_MAX_S": CALL_MAX_S,
        "FRONT_PING_S": PING_INTERVAL_S,
        "FRONT_LOG_LEVEL": log_level,
        "FRONT_DIALOG_ID": dialog_id,
    }
    if edge.calls_per_source:
        numbers["FRONT_CALLS_PER_SOURCE"] = edge.calls_per_source
    for value in strings.values():
        if "!" in value or "\n" in value:
            raise ConfigError("front", "front_dir", f"{value!r}: the front's paths cannot contain '!' or newlines")
    lines = ["# generated by callbridge serve --front kamailio"]
    lines += [f'#!substdef "!{name}!{value}!g"' for name, value in strings.items()]
    lines += [f"#!define {name} {value}" for name, value in numbers.items()]
    lines += [f"#!define {name}" for name in switches]
    if source_ipv4:  # the address the workers trust as their front's, also on the front's TCP and TLS connections
        lines.append(f'#!substdef "!FRONT_SOURCE_ADDRESS!{source_ipv4}!g"')
    return "\n".join(lines) + "\n"


def _ipv4_host(host: str) -> str:
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return ""


# -- dialogs in Redis (the dialog module's db_redis backend) ------------------------------------------------------

# db_redis's table schemas (one file per table: its columns, then its version; README.db_redis §1), as Debian's
# kamailio-redis-modules ships them in /usr/share/kamailio/db_redis/kamailio, for the tables the dialog module uses.
DIALOG_SCHEMAS = {
    "version": "id/int,table_name/string,table_version/int,\n1\n",
    "dialog": (
        "id/int,hash_entry/int,hash_id/int,callid/string,from_uri/string,from_tag/string,to_uri/string,"
        "to_tag/string,caller_cseq/string,callee_cseq/string,caller_route_set/string,callee_route_set/string,"
        "caller_contact/string,callee_contact/string,caller_sock/string,callee_sock/string,state/int,"
        "start_time/int,timeout/int,sflags/int,iflags/int,toroute_name/string,req_uri/string,xdata/string,\n7\n"
    ),
    "dialog_vars": "id/int,hash_entry/int,hash_id/int,dialog_key/string,dialog_value/string,\n1\n",
}
DIALOG_DB_PACKAGE = "kamailio-redis-modules"
_MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/aarch64-linux-gnu/kamailio/modules",
                "/usr/lib/kamailio/modules", "/usr/lib64/kamailio/modules", "/usr/local/lib64/kamailio/modules",
                "/usr/local/lib/kamailio/modules")  # fmt: skip


def has_db_redis() -> bool:
    """Is Kamailio's db_redis module installed (True where Kamailio's module directory is not a known one)?"""
    installed = [Path(d) for d in _MODULE_DIRS if Path(d).is_dir()]
    return not installed or any((d / "db_redis.so").is_file() for d in installed)


DEFAULT_DIALOG_DB = 15  # where the dialogs go in the Redis of redis_url, unless that is redis_url's own database


@dataclass(frozen=True, slots=True)
class DialogStore:
    """Where the front keeps its dialogs: ``url`` (the dialog module's ``db_url``) and ``db`` in Redis, or in
    Kamailio's memory (``url`` ""), and why, for the start-up line and ``/healthz``."""

    url: str = ""
    db: int | None = None
    why: str = "front_dialogs: memory"

    @property
    def where(self) -> str:
        return "redis" if self.url else "memory"

    def describe(self) -> str:
        if self.url:
            return f"dialogs in Redis ({self.why}, database {self.db})"
        return f"dialogs in memory only: {self.why} (a restarted front forgets its live calls)"

    def to_json(self) -> dict[str, Any]:
        return {"store": self.where, "why": self.why}


def dialog_store(settings: Settings) -> DialogStore:
    """Where the front's dialogs go (``front_dialogs``, ``front_dialog_url``, ``front_dialog_db``): by default the Redis
    of ``redis_url``, database 15 (14 where redis_url's own is 15), when db_redis can reach it (a plain
    ``redis://host:port``); else ``front_dialog_url``; else memory, and why. Asked for explicitly (a
    ``front_dialog_url`` or ``front_dialog_db``) without Kamailio's db_redis installed: FrontError."""
    if settings.front_dialogs == "memory":
        return DialogStore()
    asked = settings.front_dialog_url is not None or settings.front_dialog_db is not None
    if settings.front_dialog_url is not None:
        parts, why = urlsplit(settings.front_dialog_url), "front_dialog_url"
        own = parts.path.strip("/")
        db = settings.front_dialog_db if settings.front_dialog_db is not None else int(own or 0)
    elif not settings.redis_url:
        return DialogStore(why="no redis_url")
    else:
        parts, why = urlsplit(settings.redis_url), "the Redis of redis_url"
        if parts.scheme != "redis" or not parts.hostname:
            return DialogStore(
                why=f"Kamailio's db_redis reaches a plain redis://host:port only, not redis_url's {parts.scheme}://; "
                "front_dialog_url names a Redis for them"
            )
        taken = parts.path.strip("/") or "0"
        fallback = DEFAULT_DIALOG_DB if taken != str(DEFAULT_DIALOG_DB) else DEFAULT_DIALOG_DB - 1
        db = settings.front_dialog_db if settings.front_dialog_db is not None else fallback
    if not has_db_redis():
        if asked:
            raise FrontError(
                f"the front's dialogs in Redis need Kamailio's db_redis: apt-get install {DIALOG_DB_PACKAGE}"
            )
        return DialogStore(why=f"Kamailio's db_redis is not installed (apt-get install {DIALOG_DB_PACKAGE})")
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    auth = f"{parts.username or ''}:{parts.password}@" if parts.password else ""
    return DialogStore(f"redis://{auth}{host}:{parts.port or 6379}/{db}", db, why)


def dialog_db_url(settings: Settings) -> str:
    """The dialog module's ``db_url`` (:func:`dialog_store`); "" when the dialogs stay in Kamailio's memory."""
    return dialog_store(settings).url


def write_dialog_schemas(directory: Path) -> None:
    directory.mkdir(mode=0o700, exist_ok=True)
    for table, schema in DIALOG_SCHEMAS.items():
        (directory / table).write_text(schema, encoding="ascii")


def tls_cfg(settings: Settings) -> str:
    """``tls.cfg`` of Kamailio's tls module (README.tls §4): the front's certificate (``sip_tls_cert``,
    ``sip_tls_key``) for callers, TLS 1.2 or later; client certificates are neither asked for nor verified (trunks
    authenticate by address or digest). The workers' TLS listeners are reached as a client, verified against
    ``sip_tls_ca`` when it is set."""
    lines = [
        "# generated by callbridge serve --front kamailio",
        "[server:default]",
        "method = TLSv1.2+",
        "verify_certificate = no",
        "require_certificate = no",
        f"private_key = {settings.sip_tls_key}",
        f"certificate = {settings.sip_tls_cert}",
        "",
        "[client:default]",
        "method = TLSv1.2+",
        f"verify_certificate = {'yes' if settings.sip_tls_ca else 'no'}",
        "require_certificate = no",
    ]
    if settings.sip_tls_ca:
        lines.append(f"ca_list = {settings.sip_tls_ca}")
    return "\n".join(lines) + "\n"


def front_run_dir(settings: Settings) -> Path:
    """``settings.front_dir``, else ``$TMPDIR/callbridge-front-HOST-PORT`` (found again by ``callbridge drain``)."""
    if settings.front_dir is not None:
        return settings.front_dir
    return Path(tempfile.gettempdir()) / f"callbridge-front-{settings.front_host}-{settings.sip_port}"


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` for this user only; refuse one that another user owns."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_dir.stat().st_uid != os.getuid():
        raise FrontError(f"{run_dir} belongs to another user; choose another front_dir")
    run_dir.chmod(0o700)
    if len(str(run_dir / "rpc.sock")) > 100:  # sun_path holds 108 bytes
        raise FrontError(f"{run_dir} is too long a path for the front's control socket; choose a shorter front_dir")


# -- the control socket (Kamailio's jsonrpcs module, datagram transport) ---------------------------------------------


def rpc_call(sock_path: Path, method: str, params: Sequence[Any] = (), timeout_s: float = 3.0) -> Any:
    """One JSON-RPC 2.0 call over Kamailio's Unix datagram control socket; returns ``result`` or raises FrontError."""
    reply_path = Path(tempfile.gettempdir()) / f"callbridge-rpc-{os.getpid()}-{secrets.token_hex(4)}.sock"
    request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(str(reply_path))  # Kamailio answers to the sender's address
            sock.settimeout(timeout_s)
            sock.sendto(json.dumps(request).encode(), str(sock_path))
            data = sock.recv(1 << 20)
        except (OSError, TimeoutError) as exc:
            raise FrontError(f"the front's control socket {sock_path} did not answer {method}: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                reply_path.unlink()
    try:
        reply = json.loads(data)
    except ValueError:
        raise FrontError(f"the front answered {method} with something that is not JSON") from None
    if "error" in reply:
        raise FrontError(f"the front refused {method}: {reply['error'].get('message', reply['error'])}")
    return reply.get("result")


class Dispatch(enum.StrEnum):
    """A destination's state in Kamailio's dispatcher: the first letter of its ``FLAGS`` in ``dispatcher.list``."""

    ACTIVE = "A"
    INACTIVE = "I"  # its probes go unanswered
    TRYING = "T"
    DRAINED = "D"  # disabled: no calls, no probes
    UNKNOWN = "?"  # a letter this module does not know

    @classmethod
    def _missing_(cls, value: object) -> Dispatch:
        return cls.UNKNOWN

    @property
    def word(self) -> str:
        """The metric's ``state`` label and the drain command's column."""
        return "unknown" if self is Dispatch.UNKNOWN else self.name.lower()


@dataclass(frozen=True, slots=True)
class DestinationState:
    """A worker in the front's dispatcher: its :class:`Dispatch` state, and its current call load against its
    cap."""

    address: str
    state: Dispatch
    probing: bool
    load: int
    max_calls: int

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": str(self.state)}


def destinations_of(result: Any) -> list[DestinationState]:
    """``dispatcher.list``'s result -> destination states (Kamailio 5.6 JSON shape)."""
    found: list[DestinationState] = []
    for record in (result or {}).get("RECORDS", []):
        if int(record.get("SET", {}).get("ID", DISPATCHER_SET)) != DISPATCHER_SET:
            continue  # the TLS set names the same workers again
        for target in record.get("SET", {}).get("TARGETS", []):
            dest = target.get("DEST", {})
            attrs = dest.get("ATTRS", {}) or {}
            flags = str(dest.get("FLAGS", ""))
            found.append(
                DestinationState(
                    address=str(attrs.get("DUID") or str(dest.get("URI", "")).removeprefix("sip:")),
                    state=Dispatch(flags[:1]),
                    probing=flags[1:2] == "P",
                    load=int((dest.get("RUNTIME") or {}).get("DLGLOAD", 0)),
                    max_calls=int(attrs.get("MAXLOAD", 0)),
                )
            )
    return sorted(found, key=lambda d: d.address)


def _set_members(result: Any) -> list[tuple[int, str, str]]:
    """(set id, URI, duid) of every destination of every set: a drain applies to a worker's TLS entry too."""
    members: list[tuple[int, str, str]] = []
    for record in (result or {}).get("RECORDS", []):
        set_id = int(record.get("SET", {}).get("ID", DISPATCHER_SET))
        for target in record.get("SET", {}).get("TARGETS", []):
            dest = target.get("DEST", {})
            uri = str(dest.get("URI", ""))
            members.append((set_id, uri, str((dest.get("ATTRS") or {}).get("DUID") or uri.removeprefix("sip:"))))
    return members


def matches(address: str, target: str) -> bool:
    """Does worker ``address`` ("host:port") belong to ``target``: the worker itself, its node ("host"), or "all"?"""
    if target == "all":
        return True
    host = address.rpartition(":")[0].strip("[]")
    return target in (address, host, f"[{host}]")


def set_state(sock_path: Path, target: str, state: str) -> list[DestinationState]:
    """Set every worker matching ``target`` to ``state``; returns the workers afterwards. Nothing matches: an error."""
    current = destinations_of(rpc_call(sock_path, "dispatcher.list"))
    chosen = [d for d in current if matches(d.address, target)]
    if not chosen:
        known = ", ".join(d.address for d in current) or "none"
        raise FrontError(f"no worker of the front matches {target!r} (workers: {known})")
    addresses = {dest.address for dest in chosen}
    for set_id, uri, duid in _set_members(rpc_call(sock_path, "dispatcher.list")):
        if duid in addresses:
            rpc_call(sock_path, "dispatcher.set_state", [state, set_id, uri])
    after = destinations_of(rpc_call(sock_path, "dispatcher.list"))
    return [d for d in after if matches(d.address, target)]


# -- what the edge refused (the counters module's group "front") ------------------------------------------------

# Kamailio's counter -> (the metric's name in bridge.metrics, its reason label or "")
EDGE_COUNTERS = {
    "refused_source": ("FRONT_REFUSED", "source"),
    "refused_credentials": ("FRONT_REFUSED", "credentials"),
    "challenged": ("FRONT_REFUSED", "challenged"),
    "refused_dialog": ("FRONT_REFUSED", "dialog"),
    "refused_dialog_source": ("FRONT_REFUSED", "dialog_source"),
    "refused_method": ("FRONT_REFUSED", "method"),
    "bans": ("FRONT_BANS", ""),
    "banned_dropped": ("FRONT_BANNED_DROPPED", ""),
    "full": ("FRONT_FULL", ""),
    "refused_slots": ("FRONT_REFUSED", "calls_per_source"),
    "refused_merged": ("FRONT_REFUSED", "merged"),
    "refused_too_large": ("FRONT_REFUSED", "too_large"),
    "refused_user_locked": ("FRONT_REFUSED", "user_locked"),
    "user_locks": ("FRONT_USER_LOCKS", ""),
}


def edge_counts(result: Any) -> dict[str, int]:
    """``cnt.grp_get_all front``'s result (``{"front": {"bans": 1, ...}}``) -> the counters of EDGE_COUNTERS."""
    group = (result or {}).get("front", result) if isinstance(result, dict) else {}
    return {name: int(group.get(name, 0) or 0) for name in EDGE_COUNTERS} if isinstance(group, dict) else {}


class EdgeExport:
    """Kamailio's counters as Prometheus counters: each read adds what grew since the last (a restarted Kamailio
    starts from zero again, and then all it counted is new)."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.prime()

    @staticmethod
    def prime() -> None:
        """Every reason at zero from the start."""
        from bridge import metrics  # not at import: serve sets up multiprocess metrics first

        for metric_name, reason in EDGE_COUNTERS.values():
            if reason:
                getattr(metrics, metric_name).labels(reason)

    def update(self, counts: Mapping[str, int]) -> None:
        from bridge import metrics  # not at import: serve sets up multiprocess metrics first

        for name, value in counts.items():
            before = self.last.get(name, 0)
            grown = value - before if value >= before else value
            self.last[name] = value
            if grown <= 0:
                continue
            metric_name, reason = EDGE_COUNTERS[name]
            metric = getattr(metrics, metric_name)
            (metric.labels(reason) if reason else metric).inc(grown)


# -- a SIP health check ---------------------------------------------------------------------------------------------


async def options_status(host: str, port: int, timeout_s: float = 1.0, local_host: str = "") -> int | None:
    """Send one OPTIONS over UDP to ``host:port`` (from ``local_host``, if given); the final status code, or None if
    nothing answered in time."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if local_host:
            sock.bind((local_host, 0))
        sock.connect((host, port))
        local_host, local_port = sock.getsockname()[:2]
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        via = f"[{local_host}]:{local_port}" if ":" in local_host else f"{local_host}:{local_port}"
        request = (
            f"OPTIONS sip:{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:health@callbridge.invalid>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{target}>\r\n"
            f"Call-ID: {secrets.token_hex(12)}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + timeout_s
        try:
            sock.send(request)
            while (left := deadline - time.monotonic()) > 0:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
                parts = data.split(b" ", 2)
                if len(parts) >= 2 and parts[0] == b"SIP/2.0" and parts[1].isdigit() and int(parts[1]) >= 200:
                    return int(parts[1])
        except (TimeoutError, OSError):
            return None
    return None


# -- the process group -----------------------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """The live processes (zombies aside) of process group ``pgid``, from /proc; [] where /proc is not there."""
    members = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue  # gone meanwhile
            fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state ppid pgrp ...
            if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
                members.append(int(entry.name))
    return members


async def end_group(pgid: int, within_s: float = 10.0) -> list[int]:
    """SIGKILL what is left of process group ``pgid`` (Kamailio's children outlive a killed main process and keep
    its sockets) and wait until none of it is left; returns the pids that were ended."""
    left = group_members(pgid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return left
        await asyncio.sleep(0.05)
    log.error("front: processes %s of the old Kamailio did not end within %.0f s", group_members(pgid), within_s)
    return left


# -- Kamailio's log ---------------------------------------------------------------------------------------------

# Kamailio writes one JSON object a line (its "json" log engine; M: the message without its trailing newline), so a
# message quoting a peer's bytes (a header without a colon, a folded Call-ID) has its newlines escaped; serve reads
# it and writes each line in Kamailio's own text format, the message escaped again, cut and its numbers masked.
LOG_ENGINE = "--log-engine=json:M"
LOG_LINE_CHARS = 400  # a message of Kamailio's (a bad header it quotes) is cut here, with a marker
LOG_READ_LIMIT = 1 << 16  # Kamailio's own cap of a log message is 32 KiB; a longer line is skipped, and said so
LOG_VISIBLE_DIGITS = 4  # a number in a quoted header keeps its last digits, as a refused caller's does at a worker


def kamailio_log_line(raw: bytes) -> str:
    """One line of Kamailio's output -> the line serve writes: `` IDX(PID) LEVEL: <module> [file:line]: function():
    message`` (Kamailio's text format) with the message :func:`~bridge.runtime.logs.safe_text`, cut at
    :data:`LOG_LINE_CHARS` and its numbers masked; any other line (its start-up banner) the same way as a whole."""
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "message" not in record:
        return safe_text(mask_sip_numbers(text, LOG_VISIBLE_DIGITS), LOG_LINE_CHARS)
    idx, pid, level, module, file, line, function = (
        safe_text(str(record.get(key, "")), 64) for key in ("idx", "pid", "level", "module", "file", "line", "function")
    )
    head = f" {idx}({pid}) {level}: <{module}> [{file}:{line}]: {function}(): "
    return head + safe_text(mask_sip_numbers(str(record["message"]), LOG_VISIBLE_DIGITS), LOG_LINE_CHARS)


async def relay_log(stream: asyncio.StreamReader, out: Any) -> None:
    """Every line of Kamailio's output (``stream``) to ``out`` (a binary file, flushed a line at a time) as
    :func:`kamailio_log_line` writes it, until Kamailio closes it."""
    while True:
        try:
            raw = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            raw = end.partial
            if not raw:
                return
        except asyncio.LimitOverrunError as over:
            await stream.readexactly(over.consumed)  # the start of a line longer than any Kamailio writes
            raw = f"[{over.consumed} bytes of a longer line of Kamailio's skipped]".encode()
        out.write((kamailio_log_line(raw) + "\n").encode())
        out.flush()


# -- the process --------------------------------------------------------------------------------------------------


def front_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Kamailio's environment: the locale, the time zone, ``PATH`` and ``TMPDIR`` (:data:`FRONT_ENV`), nothing
    else of serve's: no setting, and no tool secret (a plan's ``env:`` header, which only the workers read)."""
    return {name: environ[name] for name in FRONT_ENV if name in environ}


class KamailioFront:
    """Kamailio for one node: writes the run directory, starts it, restarts it if it dies, stops it."""

    def __init__(self, settings: Settings, destinations: Sequence[Destination], binary: str | None = None) -> None:
        self.settings = settings
        self.destinations = list(destinations)
        self.binary = binary or require_kamailio()
        self.run_dir = front_run_dir(settings)
        self.edge = Edge.from_settings(settings)
        self.dialogs = dialog_store(settings)
        self.dialog_db = self.dialogs.url  # "": dialogs in Kamailio's memory only
        self._keys = (secrets.token_hex(16), secrets.token_hex(16))  # nonces, topoh: one pair per front, not per start
        self.listen_host = settings.sip_host
        self.port = settings.sip_port
        self.proc: asyncio.subprocess.Process | None = None
        self.scheduling = "ordinary"  # its niceness, as set at start (FRONT_NICE), for the log
        self.to_journal = stderr_is_journal()  # Kamailio's log beside serve's in the journal, else in the run dir
        self.restarts = 0
        self.answering = False  # answered OPTIONS since it last started, and its main process has not ended
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._log_task: asyncio.Task[None] | None = None

    @property
    def rpc_socket(self) -> Path:
        return self.run_dir / "rpc.sock"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "kamailio.log"

    def write(self) -> Path:
        """Write the run directory; returns the config file Kamailio runs."""
        prepare_run_dir(self.run_dir)
        config = self.run_dir / "kamailio.cfg"
        config.write_text(template_path().read_text(encoding="utf-8"), encoding="utf-8")
        defs = front_defs(
            Listen(self.listen_host, self.port, self.settings.sip_public_address, self.settings.sip_tls_port),
            self.run_dir,
            self.settings.front_retry_after_s,
            edge=self.edge,
            dialog_db=self.dialog_db,
            dialog_id=self.settings.front_dialog_id,
        )
        if self.dialog_db:
            write_dialog_schemas(self.run_dir / "db_redis")
        write_private(self.run_dir / "front.defs", defs)  # the dialog store's URL may hold Redis's password
        (self.run_dir / "dispatcher.list").write_text(dispatcher_list(self.destinations), encoding="utf-8")
        (self.run_dir / "front.sources").write_text(
            address_file(self.edge.allowed_sources, self.edge.trunk_sources), encoding="utf-8"
        )
        write_private(self.run_dir / "front.users", front_users(self.edge, *self._keys))
        if self.settings.sip_tls_port is not None:
            (self.run_dir / "tls.cfg").write_text(tls_cfg(self.settings), encoding="utf-8")
        with contextlib.suppress(FileNotFoundError):
            self.rpc_socket.unlink()  # a previous run's
        return config

    async def _spawn(self) -> None:
        config = self.write()
        # Kamailio's output on a pipe of serve's own, not the subprocess's: its children outlive a killed main process
        # with the pipe open, and the process's wait() would wait for them too (asyncio waits for its pipes).
        read_end, write_end = os.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *pdeathsig_prefix(),  # a killed `serve` takes Kamailio with it (bridge/runtime/lifetime.py)
                self.binary, LOG_ENGINE, "-DD", "-E", "-f", str(config), "-Y", str(self.run_dir), "-w",
                str(self.run_dir), stdin=asyncio.subprocess.DEVNULL, stdout=write_end, stderr=write_end,
                env=front_environment(os.environ),
                start_new_session=True,  # a terminal's Ctrl-C reaches serve, which stops Kamailio itself
            )  # fmt: skip
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._log_task = asyncio.create_task(self._relay(read_end), name="front-log")
        self.scheduling = renice_group(self.proc.pid, FRONT_NICE)  # before it forks its SIP processes, mostly

    async def _relay(self, read_end: int) -> None:
        """Kamailio's log (the pipe ``read_end``) to ``kamailio.log`` of the run directory, or beside serve's lines in
        the journal, until the last of its processes has closed the pipe."""
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=LOG_READ_LIMIT)
        with open(read_end, "rb", buffering=0) as pipe:  # noqa: ASYNC230  # a pipe: the loop reads it, never blocks
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), pipe)
            try:
                if self.to_journal:
                    await relay_log(stream, sys.stderr.buffer)
                    return
                with self.log_file.open("ab") as out:  # appends, flushed a line at a time
                    await relay_log(stream, out)
            finally:
                transport.close()

    async def _log_written(self, within_s: float = 2.0) -> None:
        """Wait (a little) until every line of an ended Kamailio is in its log."""
        if self._log_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, OSError):
                await asyncio.wait_for(asyncio.shield(self._log_task), within_s)

    def announce_metrics(self) -> None:
        """The front's series from its start, before Kamailio first reports (serve's own:
        :func:`bridge.serve.pool.announce_node`): each worker's calls at 0, its cap, each of its states at 0 (the
        first read of the dispatcher sets the one it is in), and every reason the edge counts at 0."""
        from bridge import metrics  # not at import: serve sets up multiprocess metrics first

        for dest in self.destinations:
            metrics.FRONT_WORKER_CALLS.labels(dest.address).set(0)
            metrics.FRONT_WORKER_MAX_CALLS.labels(dest.address).set(dest.max_calls)
            for state in Dispatch:
                if state is not Dispatch.UNKNOWN:
                    metrics.FRONT_WORKER_STATE.labels(dest.address, state.word).set(0)
        EdgeExport.prime()

    async def start(self, ready_within_s: float = 15.0) -> None:
        """Start Kamailio and wait until it answers OPTIONS on the front address; FrontError if it does not."""
        self.announce_metrics()
        await self._spawn()
        try:
            await self._wait_ready(ready_within_s)
        except BaseException:
            await self.stop()  # nothing half-started is left behind
            raise
        log.info(
            "front: Kamailio (pid %d, %s) on sip:%s:%d dispatching to %d workers (%s); %s; %s; run directory %s; "
            "its log %s",
            self.proc.pid if self.proc else 0,
            self.scheduling,
            self.listen_host,
            self.port,
            len(self.destinations),
            ", ".join(f"{d.address}/{d.max_calls}" for d in self.destinations),
            self.edge.describe(),
            self.dialogs.describe(),
            self.run_dir,
            "in the journal" if self.to_journal else self.log_file,
        )
        self._task = asyncio.create_task(self._supervise(), name="front")
        self._metrics_task = asyncio.create_task(self._export(), name="front-metrics")

    async def _wait_ready(self, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        probe_host = self.settings.front_host
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.returncode is not None:
                await self._log_written()
                raise FrontError(f"Kamailio exited at start: {self.log_tail()}")
            # from the front's own address, which its allow-list and flood limit exempt (the kernel would pick
            # 127.0.0.1 to reach a loopback alias such as 127.0.0.2)
            if await options_status(probe_host, self.port, 0.5, local_host=probe_host) == 200:
                self.answering = True  # until its main process ends: /healthz is 503 from then until it answers again
                self.scheduling = renice_group(self.proc.pid, FRONT_NICE)  # and the processes forked meanwhile
                return
            await asyncio.sleep(0.1)
        raise FrontError(f"Kamailio did not answer OPTIONS on {probe_host}:{self.port} within {within_s:.0f} s")

    def log_tail(self, lines: int = 12) -> str:
        if self.to_journal:
            return "(its log is in the journal, beside serve's)"
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        wanted = [line for line in text.splitlines() if "ERROR" in line or "CRITICAL" in line] or text.splitlines()
        return "\n".join(wanted[-lines:])

    async def _supervise(self) -> None:
        """Kamailio is one process group (a session of its own): when its main process ends (a child that dies takes
        the main process with it), what is left of the group is killed before Kamailio starts again on the same
        address, so nothing of a dead front keeps the port. Deaths in a row back off; STABLE_S of running resets it."""
        failures = 0
        while not self._stopping:
            assert self.proc is not None
            started = time.monotonic()
            rc = await self.proc.wait()
            self.answering = False
            if self._stopping:
                return
            ended = await end_group(self.proc.pid)  # pgid = the main process's pid (start_new_session)
            await self._log_written()
            if time.monotonic() - started >= STABLE_S:
                failures = 0
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            failures += 1
            self.restarts += 1
            log.error(
                "front: Kamailio (pid %d) exited with %s; %d processes left of its group killed; restarting on "
                "sip:%s:%d in %.1f s: %s",
                self.proc.pid, rc, len(ended), self.listen_host, self.port, delay, self.log_tail(4),
            )  # fmt: skip
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                await self._wait_ready(15.0)
                log.info("front: Kamailio restarted (pid %d) on sip:%s:%d", self.proc.pid, self.listen_host, self.port)
            except (FrontError, OSError) as exc:
                log.error("front: restart failed: %s", exc)

    async def _export(self) -> None:
        """Publish the dispatcher's view of every worker as metrics (calls, cap, whether it takes new calls)."""
        from bridge import metrics  # not at import: serve sets up multiprocess metrics first

        edge = EdgeExport()
        while not self._stopping:
            try:
                for dest in await self.states():
                    metrics.FRONT_WORKER_CALLS.labels(dest.address).set(dest.load)
                    metrics.FRONT_WORKER_MAX_CALLS.labels(dest.address).set(dest.max_calls)
                    for state in Dispatch:
                        if state is not Dispatch.UNKNOWN:
                            metrics.FRONT_WORKER_STATE.labels(dest.address, state.word).set(int(dest.state is state))
                edge.update(
                    edge_counts(await asyncio.to_thread(rpc_call, self.rpc_socket, "cnt.grp_get_all", ["front"]))
                )
            except FrontError as exc:
                log.debug("front metrics: %s", exc)
            await asyncio.sleep(METRICS_INTERVAL_S)

    def health(self) -> dict[str, Any]:
        return {
            "kind": "kamailio",
            "address": f"{self.listen_host}:{self.port}",
            "pid": self.proc.pid if self.proc else None,
            "alive": self.answering and self.proc is not None and self.proc.returncode is None,
            "restarts": self.restarts,
            "run_dir": str(self.run_dir),
            "dialogs": self.dialogs.to_json(),
        }

    async def states(self) -> list[DestinationState]:
        return destinations_of(await asyncio.to_thread(rpc_call, self.rpc_socket, "dispatcher.list"))

    async def set_state(self, target: str, state: str) -> list[DestinationState]:
        return await asyncio.to_thread(set_state, self.rpc_socket, target, state)

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._metrics_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        if proc is not None:
            await end_group(proc.pid)  # anything of the group that outlived its main process
            await proc.wait()
            await self._log_written()


def node_destinations(settings: Settings, worker_caps: Sequence[tuple[int, int]]) -> list[Destination]:
    """This node's workers ((port, max_calls) as they reported at start), then ``settings.front_peers``."""
    own = [
        Destination(settings.front_host, port, cap, settings.worker_tls_port(index) or 0)
        for index, (port, cap) in enumerate(worker_caps)
    ]
    default_cap = min((cap for _, cap in worker_caps), default=1)
    try:
        peers = [parse_peer(text, default_cap) for text in settings.front_peers]
    except ValueError as exc:
        raise ConfigError("settings", "front_peers", str(exc)) from None
    return own + peers


# -- callbridge drain -----------------------------------------------------------------------------------------------


def drain_main(argv: list[str]) -> int:
    from bridge.cli import build_parser
    from bridge.config import add_config_flag

    parser = build_parser(
        "drain", "stop new calls to a node or a worker behind the front (its calls go on); --undo to resume"
    )
    parser.add_argument(
        "target",
        help='a worker "HOST:PORT", a node "HOST" (all its workers), or "all"; "list"; "node": this node\'s serve '
        "(its workers answer new calls 503, the front takes them out; SIGUSR1)",
    )
    parser.add_argument("--undo", action="store_true", help="take calls again")
    parser.add_argument("--front-dir", type=Path, help="the front's run directory (default: from the settings)")
    add_config_flag(parser)
    parser.add_argument("--sip-host", help="the node's SIP address (as serve)")
    parser.add_argument("--sip-port", type=int, help="the front's SIP port (as serve)")
    parser.add_argument("--json", action="store_true", help="the workers and their states as JSON")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, sip_host=args.sip_host, sip_port=args.sip_port, front_dir=args.front_dir)
    except ConfigError as exc:
        print(f"callbridge drain: {exc}", file=sys.stderr)
        return 2
    if args.target == "node":  # this node's serve: its workers refuse new calls (503) and the front takes them out
        from bridge.serve.control import ask

        return ask(settings, "resume" if args.undo else "drain")
    sock_path = front_run_dir(settings) / "rpc.sock"
    try:
        if args.target == "list":
            chosen = destinations_of(rpc_call(sock_path, "dispatcher.list"))
        else:
            chosen = set_state(sock_path, args.target, ACTIVE if args.undo else DRAINED)
    except FrontError as exc:
        print(f"callbridge drain: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([d.to_json() for d in chosen]))
    else:
        for d in chosen:
            print(f"{d.address:<24} {d.state.word:<10} {d.load}/{d.max_calls} calls")
    return 0
