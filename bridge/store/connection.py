"""Connections to Redis, and what the callers of :mod:`bridge.store` make of their failures.

Any redis-py URL works (:func:`connect`): ``redis://[:password@]host:port/db``, ``rediss://`` for TLS
(certificate options as ``?ssl_ca_certs=...&ssl_cert_reqs=required`` or as keyword arguments), and
``unix://[:password@]/path/redis.sock?db=0``. A username/password in the URL is sent with AUTH. URLs are never
logged with their password (:func:`safe_url`), and nothing written holds a credential: summaries go through
``bridge.errors.redact``.

Sentinel: a ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]`` URL (default port
26379; ``?sentinel_password=...`` if the sentinels want AUTH too) asks those sentinels where the master of ``service``
is, and again after every connection error (:func:`parse_sentinel_url`, :func:`connect`). Or build the client yourself
and pass it in::

    from redis.asyncio.sentinel import Sentinel
    sentinel = Sentinel([("s1", 26379), ("s2", 26379)], socket_timeout=1.0, password="...")  # sentinel AUTH
    client = sentinel.master_for("callbridge", decode_responses=True, socket_timeout=1.0, password="...")
    store = CallStore(client=client, worker="w0")

An unplanned failover shows up as connection or ``READONLY`` errors; the writer treats them as an outage and re-syncs
the new master, which may have missed the last writes to the old one. A planned one (``SENTINEL FAILOVER``) leaves the
old master writable for seconds: the writer follows Sentinel's ``+switch-master`` instead
(:mod:`bridge.store.failover`).

Redis Cluster: ``redis+cluster://[[user]:password@]host1[:port][,host2[:port]...]`` (default port 6379; any nodes of
the cluster: the client learns the others and the slot map from them), ``rediss+cluster://`` for TLS with the TLS
options as query arguments (``?ssl_ca_certs=...&ssl_cert_reqs=required``) (:func:`parse_cluster_url`). A call's hash
and stream share the hash tag ``{<call_id>}`` and land in one slot; the writer's pipelines are non-transactional,
which redis-py's cluster pipeline splits per slot; pub/sub is sharded (``SPUBLISH``/``SSUBSCRIBE``,
:mod:`bridge.store.channels`). ``MOVED``/``ASK`` are followed by the client; a shard's failover shows up as connection
errors until its replica is promoted, which the writer rides out as it does a Sentinel failover (queue, then re-sync).
A cluster that reaches no node raises :class:`ClusterUnreachable`, a ``ConnectionError`` (redis-py's own
``RedisClusterException`` is no ``RedisError``); :class:`OutageLog` makes a loop's Redis failures one line a minute.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.errors import BridgeError, redact

SOCKET_TIMEOUT_S = 1.0
# What a Redis command raises when Redis is away: redis-py's errors, a socket's, and a cluster client's that reaches no
# node (``RedisClusterException`` is neither of the others: "Redis Cluster cannot be connected", no slot covered; the
# clients of connect() raise ClusterUnreachable, a RedisError, for those: this catches a client made elsewhere too)
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError)
OUTAGE_LOG_EVERY_S: Final = 60.0


class StoreUnavailable(BridgeError):
    """A supervisor read (or a rollout change) could not reach Redis. The message names no password."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = redact(detail)
        super().__init__(f"Redis unreachable at {where}: {self.detail}")


def safe_url(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://***@host:6379/0`` (for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable Redis URL)"
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # the master's AUTH
    sentinel_password: str | None = field(default=None, repr=False)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/callbridge/0`` -> sentinels, service name, db, credentials.
    A malformed URL raises ``ValueError`` (its message never holds the password)."""
    _, hosts, username, password, path, query = _split(url, (SENTINEL_SCHEME,), f"{SENTINEL_SCHEME}://")
    sentinels = _host_list(hosts, SENTINEL_PORT, SENTINEL_SCHEME)
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"{SENTINEL_SCHEME} URL: expected /<service name>[/<db>] after the sentinels")
    sentinel_password = parse_qs(query).get("sentinel_password", [None])[-1]
    return SentinelUrl(
        tuple(sentinels),
        unquote(parts[0]),
        int(parts[1]) if len(parts) == 2 else 0,
        username,
        password,
        sentinel_password,
    )


def _split(url: str, schemes: tuple[str, ...], what: str) -> tuple[str, str, str | None, str | None, str, str]:
    """``scheme://[[user]:password@]hosts[/path][?query]`` -> (scheme, hosts, user, password, path, query) (pure)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in schemes or not sep:
        raise ValueError(f"not a {what} URL")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return scheme, hosts, username, password, path, query


def _host_list(hosts: str, default_port: int, scheme: str) -> list[tuple[str, int]]:
    """``h1[:port],[v6]:port,...`` -> [(host, port)] (pure; a bad port or an empty address raises ``ValueError``)."""
    out: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, port = entry.strip(), default_port
        if host.startswith("["):
            host, _, tail = host[1:].partition("]")
            port_text = tail.removeprefix(":")
        elif host.count(":") == 1:
            host, _, port_text = host.partition(":")
        else:
            port_text = ""
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"{scheme} URL: bad port {port_text!r}")
            port = int(port_text)
        if not host:
            raise ValueError(f"{scheme} URL: an address is empty")
        out.append((host, port))
    return out


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CLUSTER_PORT = 6379
_CLUSTER_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


@dataclass(frozen=True)
class ClusterUrl:
    """A parsed ``redis+cluster://`` (``rediss+cluster://``: TLS) URL: the nodes to learn the cluster from."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()  # TLS options from the query (ssl_ca_certs=..., ...)


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """``redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000`` -> the nodes (any of them: the client learns the rest),
    credentials, TLS. A cluster has one database: a path other than ``/`` or ``/0`` is refused. A malformed URL raises
    ``ValueError`` (its message never holds the password)."""
    scheme, hosts, username, password, path, query = _split(
        url, CLUSTER_SCHEMES, "redis+cluster:// or rediss+cluster://"
    )
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"{scheme} URL: a cluster has database 0 only, not /{path}")
    options = tuple((k, v[-1]) for k, v in parse_qs(query).items() if k in _CLUSTER_TLS_OPTIONS)
    unknown = sorted(set(parse_qs(query)) - set(_CLUSTER_TLS_OPTIONS))
    if unknown:
        raise ValueError(f"{scheme} URL: unknown option(s) {', '.join(unknown)}")
    tls = scheme == "rediss+cluster"
    if options and not tls:
        raise ValueError(f"{scheme} URL: TLS options need rediss+cluster://")
    return ClusterUrl(tuple(_host_list(hosts, CLUSTER_PORT, scheme)), tls, username, password, options)


class ClusterUnreachable(RedisConnectionError):
    """A Redis Cluster that reaches no node, whose nodes disagree, or that leaves a slot uncovered. redis-py raises
    ``RedisClusterException`` for these, which is neither a ``RedisError`` nor an ``OSError``: the cluster client of
    :func:`connect` raises this (a ``ConnectionError``) instead, so every caller's handling of a Redis outage applies
    to a cluster's too. Its message is redis-py's."""


@functools.cache
def _cluster_client() -> type[Any]:
    """``RedisCluster`` with its outages as :class:`ClusterUnreachable` (a misuse, a command with keys in two slots,
    stays a ``RedisClusterException``)."""
    from redis.asyncio.cluster import RedisCluster

    class Cluster(RedisCluster):
        async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
            try:
                return await super().initialize(*args, **kwargs)
            except RedisClusterException as exc:  # every failure to learn the cluster
                raise ClusterUnreachable(str(exc)) from exc

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().execute_command(*args, **kwargs)
            except SlotNotCoveredError as exc:
                raise ClusterUnreachable(str(exc)) from exc

    return Cluster


def _cluster(url: str, options: dict[str, Any]) -> aioredis.Redis:
    """A ``RedisCluster`` for a ``redis+cluster://`` URL (its outages are :class:`ClusterUnreachable`). Its commands
    are a ``Redis``'s (typed as one for the callers: they use only what both have, and the pub/sub helpers of
    :mod:`bridge.store.channels` pick the sharded form on a cluster)."""
    from redis.asyncio.cluster import ClusterNode

    parsed = parse_cluster_url(url)
    tls: dict[str, Any] = {"ssl": True, **dict(parsed.options)} if parsed.tls else {}
    if "ssl_check_hostname" in tls:
        tls["ssl_check_hostname"] = tls["ssl_check_hostname"].lower() in ("1", "true", "yes")
    options = {k: v for k, v in options.items() if k != "db"}
    client = _cluster_client()(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        username=parsed.username,
        password=parsed.password,
        **tls,
        **options,
    )
    return cast(aioredis.Redis, client)


def is_cluster(client: object) -> bool:
    """Is this client a Redis Cluster's (sharded pub/sub, one database)?"""
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def given_or_connect(
    owner: str, url: str | None, client: aioredis.Redis | None, **kwargs: Any
) -> tuple[aioredis.Redis, bool]:
    """A store's client: ``client`` if given, else one for ``url`` (:func:`connect`, with ``kwargs``); and whether it
    was made here (then the store closes it). ``owner`` names the store in the ``ValueError`` for neither."""
    if client is not None:
        return client, False
    if url is None:
        raise ValueError(f"{owner} needs a Redis URL or a client")
    return connect(url, **kwargs), True


def connect(url: str, *, timeout_s: float = SOCKET_TIMEOUT_S, **kwargs: Any) -> aioredis.Redis:
    """A client for ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or ``redis+cluster://`` URLs that
    fails fast (one
    immediate retry, which replaces a pooled connection the server closed) instead of redis-py's default of ten
    retries with backoff: the callers of this module have their own retry policy, and a call must never wait on
    Redis. Behind sentinels, every new connection asks them for the current master. Replies are text; bytes that are
    no UTF-8 (anyone who can write Redis can store them) are read as U+FFFD, so a reader sees data it refuses, never
    a decoding error."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": "replace",  # a value that is no UTF-8 is read with U+FFFD, never a UnicodeDecodeError
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 1),
        "client_name": "callbridge",
    }
    options.update(kwargs)
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        parsed = parse_sentinel_url(url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel.__init__ unannotated
            list(parsed.sentinels),
            sentinel_kwargs={
                "socket_timeout": timeout_s,
                "socket_connect_timeout": timeout_s,
                "password": parsed.sentinel_password,
            },
        )
        master: aioredis.Redis = sentinel.master_for(
            parsed.service,
            connection_pool_class=FollowedPool,
            db=parsed.db,
            username=parsed.username,
            password=parsed.password,
            **options,
        )
        return master
    if is_cluster_url(url):
        return _cluster(url, options)
    return aioredis.from_url(url, **options)


class PrimaryMoved(RedisConnectionError):
    """A new connection found that Sentinel's primary moved, and its pool's writer has not re-synced there yet."""


class FollowedPool(SentinelConnectionPool):
    """A Sentinel pool whose writer decides when a moved primary is taken.

    A stream's entries only append, so a re-sync onto a new primary must come before any new entry there: one
    written first would sort the re-synced older ones out (``XADD`` with a smaller id is refused), and they would be
    lost. A planned failover can kill the old primary's clients before its ``+switch-master`` reaches the watch, and
    a pooled connection would then reconnect to the new primary without an error and write there. With ``on_move``
    set (by :class:`~bridge.store.failover.PrimaryWatch`), a new connection to a primary other than the one last
    taken raises :class:`PrimaryMoved` and reports the move, until a write that carries the re-sync opens one while
    ``admitting``. Without ``on_move`` it is redis-py's pool."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]  # unannotated
        self.on_move: Callable[[tuple[str, int]], None] | None = None
        self.taken: tuple[str, int] | None = None  # the primary the writer's writes go to
        self.admitting = False  # a re-sync is on its way: a new primary is taken

    async def get_master_address(self) -> tuple[str, int]:
        found = await super().get_master_address()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        address = (str(found[0]), int(found[1]))
        if self.on_move is not None and self.taken not in (None, address) and not self.admitting:
            self.on_move(address)
            raise PrimaryMoved(f"the primary moved to {address[0]}:{address[1]}; writes wait for the re-sync there")
        self.taken = address
        return address


def backoff(initial_s: float = 0.1, factor: float = 2.0, cap_s: float = 5.0) -> Iterator[float]:
    """Delays between reconnect attempts: 0.1, 0.2, 0.4, ... capped at ``cap_s`` (pure; like websockets' backoff)."""
    delay = initial_s
    while True:
        yield min(delay, cap_s)
        delay *= factor


def is_outage(exc: BaseException) -> bool:
    """Errors that mean "Redis is away or not writable right now": retry later and re-sync."""
    if isinstance(exc, ReadOnlyError | ClusterError | RedisClusterException):  # a replica after a failover; a cluster
        return True  # that is down or reaches no node
    return isinstance(exc, RedisError | OSError) and not isinstance(exc, ResponseError)


class OutageLog:
    """One loop's Redis failures as log lines, never a traceback: the first at once (WARNING), then at most one every
    ``every_s`` saying how many more there were, and one line when Redis answers again. A loop that meets Redis away
    every second writes one line a minute, not one a second (``what`` names the loop)."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        every_s: float = OUTAGE_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.what, self.every_s, self.clock = log, what, every_s, clock
        self.failures = 0  # since Redis last answered
        self._since: float | None = None  # the first failure of this outage
        self._logged_at = float("-inf")
        self._unlogged = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        self.failures += 1
        why = f"{type(exc).__name__}: {redact(str(exc))}"
        if self._since is None:
            self._since = now
            self._logged_at, self._unlogged = now, 0
            self.log.warning("%s: Redis unreachable (%s)", self.what, why)
        elif now - self._logged_at >= self.every_s:
            self.log.warning(
                "%s: Redis still unreachable after %.0f s (%d more failure(s); last: %s)",
                self.what,
                now - self._since,
                self._unlogged + 1,
                why,
            )
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1

    def recovered(self) -> None:
        if self._since is not None:
            self.log.warning(
                "%s: Redis answers again (after %.0f s, %d failure(s))",
                self.what,
                self.clock() - self._since,
                self.failures,
            )
        self._since, self.failures, self._unlogged = None, 0, 0
