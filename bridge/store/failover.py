"""Following a Sentinel-managed primary as it moves, and the writer's record of when its writes wait.

A Sentinel failover, planned (``SENTINEL FAILOVER``) or not, promotes a replica. A planned one leaves the old primary
up and still a primary for several seconds: a client connected to it keeps writing there without an error, and those
writes are lost when Sentinel demotes it. :class:`PrimaryWatch` subscribes to ``+switch-master`` on every sentinel
of the URL; at the switch it points the client's pool at the new primary (idle connections closed, new ones ask the
sentinels again) and tells the writer, which re-syncs everything it holds onto the new primary. Each (re)subscription
also asks the sentinels where the primary is, so a switch missed while a sentinel was unreachable is caught then. A
demoted primary's ``READONLY`` answer is turned into a connection error by redis-py's Sentinel pool: an outage, with
the same re-sync.

Sentinel also closes the old primary's clients, which can come before its ``+switch-master``: a pooled connection
would then reconnect to the new primary and write there before the re-sync, and a stream's re-synced older entries
would be refused as out of order. The pool :func:`~bridge.store.connection.connect` makes for ``redis+sentinel://``
(:class:`~bridge.store.connection.FollowedPool`) refuses such a connection and tells the watch, until the writer's
re-sync takes the new primary (:meth:`PrimaryWatch.carrying_resync`).

:class:`WriteStall` is the writer's clock of a stall: since when writes wait (an outage, or a switch whose re-sync
has not landed yet), and until when the dead-worker reaper holds off after writes resume, because the other workers
were stalled too and need a moment to write their heartbeats again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import RedisError

from bridge.store.connection import FollowedPool, backoff

log = logging.getLogger("bridge.store")

SWITCH_CHANNEL = "+switch-master"
LISTEN_S = 1.0  # one wait for a message; a cancelled watch stops within it

Address = tuple[str, int]


def parse_switch(data: str | bytes, service: str) -> Address | None:
    """``+switch-master``'s ``<service> <old ip> <old port> <new ip> <new port>`` -> the new primary, if the message
    is about ``service`` and well formed (pure)."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    parts = text.split()
    if len(parts) != 5 or parts[0] != service or not parts[4].isdigit():
        return None
    return parts[3], int(parts[4])


def address_text(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PrimaryWatch:
    """Subscribes to ``+switch-master`` on each sentinel of a Sentinel-managed client and calls
    ``on_switch(address)`` once per move of the primary (several sentinels announce the same switch)."""

    def __init__(self, pool: SentinelConnectionPool, on_switch: Callable[[Address], None]) -> None:
        self.pool = pool
        self.service = str(pool.service_name)
        self.on_switch = on_switch
        self.primary: Address | None = None
        self.switches = 0
        self._tasks: list[asyncio.Task[None]] = []
        if isinstance(pool, FollowedPool):
            pool.on_move = self._found

    @contextlib.contextmanager
    def carrying_resync(self) -> Iterator[None]:
        """Around a write that re-syncs everything: a primary that moved is taken by the connection it opens."""
        pool = self.pool if isinstance(self.pool, FollowedPool) else None
        if pool is not None:
            pool.admitting = True
        try:
            yield
        finally:
            if pool is not None:
                pool.admitting = False

    @classmethod
    def of(cls, client: aioredis.Redis, on_switch: Callable[[Address], None]) -> PrimaryWatch | None:
        """A watch for a client behind sentinels; None for any other client."""
        pool = getattr(client, "connection_pool", None)  # a cluster client has one per node, and no sentinels
        return cls(pool, on_switch) if isinstance(pool, SentinelConnectionPool) else None

    def describe(self) -> str:
        """`` (primary host:port)`` for a log line, once known."""
        return f" (primary {address_text(self.primary)})" if self.primary is not None else ""

    def start(self) -> None:
        if not self._tasks:
            sentinels: list[aioredis.Redis] = list(self.pool.sentinel_manager.sentinels)
            self._tasks = [
                asyncio.create_task(self._follow(s), name=f"sentinel-watch-{self.service}-{i}")
                for i, s in enumerate(sentinels)
            ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _follow(self, sentinel: aioredis.Redis) -> None:
        delays = None
        while True:
            pubsub = sentinel.pubsub()
            try:
                await pubsub.subscribe(SWITCH_CHANNEL)
                delays = None
                await self._ask()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_S)
                    if message is not None and (moved := parse_switch(message["data"], self.service)):
                        await self._moved(moved, "Sentinel +switch-master")
            except (RedisError, OSError) as exc:
                log.debug("sentinel watch of %s: %s", self.service, exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            delays = delays or backoff(0.1, 2.0, 2.0)
            await asyncio.sleep(next(delays))

    async def _ask(self) -> None:
        """Where the sentinels say the primary is now (at each (re)subscription)."""
        try:
            host, port = await self.pool.sentinel_manager.discover_master(self.service)
        except (RedisError, OSError):
            return
        if self.primary is None:
            self.primary = (str(host), int(port))
        else:
            await self._moved((str(host), int(port)), "asked the sentinels")

    def _found(self, address: Address) -> None:
        """A new connection found the primary moved before the watch heard of it (the pool has asked the sentinels
        and closed its idle connections already)."""
        self._switched(address, "a new connection asked the sentinels")

    def _switched(self, address: Address, how: str) -> None:
        if address == self.primary:
            return
        self.primary = address
        self.switches += 1
        log.debug("primary of %s moved to %s (%s)", self.service, address_text(address), how)
        self.on_switch(address)

    async def _moved(self, address: Address, how: str) -> None:
        if address == self.primary:
            return
        # Connections to the old primary go (idle ones now, busy ones when released); the next command's connection
        # asks the sentinels again.
        self.pool.master_address = address
        with contextlib.suppress(RedisError, OSError):
            await self.pool.update_active_connections_for_reconnect()  # type: ignore[no-untyped-call]
            await self.pool.disconnect(inuse_connections=False)
        self._switched(address, how)


@dataclass
class WriteStall:
    """When the writer's writes started waiting (None: they do not), and until when its reaper holds off."""

    reap_grace_s: float
    waiting_since: float | None = None
    reap_after: float = float("-inf")

    def waiting(self, now: float | None = None) -> None:
        """Writes wait from now (an outage, or a primary switch not yet re-synced)."""
        if self.waiting_since is None:
            self.waiting_since = time.monotonic() if now is None else now

    def written(self, began: float, now: float | None = None) -> float | None:
        """A write that began at ``began`` landed: returns how long writes had waited (None if they had not, or if
        they started waiting while it was on its way); the reaper's grace starts."""
        if self.waiting_since is None or self.waiting_since > began:
            return None
        now = time.monotonic() if now is None else now
        waited, self.waiting_since = now - self.waiting_since, None
        self.reap_after = now + self.reap_grace_s
        return waited

    def may_reap(self, now: float | None = None) -> bool:
        """Not while writes wait, nor within ``reap_grace_s`` after they resume: the other workers were cut off by
        the same stall and have not all written their heartbeats again."""
        now = time.monotonic() if now is None else now
        return self.waiting_since is None and now >= self.reap_after
