"""One endpoint's deliveries, on their own: a :class:`Lane` per configured endpoint (``bridge.webhooks.delivery``).

A lane claims only its endpoint's due deliveries, at most :data:`CONCURRENCY` in flight, and claims again as soon as
one settles: a slow or unreachable endpoint fills its own slots and nobody else's, so it never delays another
endpoint's deliveries. Between claims it sleeps, issuing no Redis command, until it is poked (something was queued:
the deliverer's wait on Redis returned; one of its attempts settled) or until the earliest due time the last claim
reported (a retry's, or another node's lease running out), at most :data:`IDLE_S` (a wake-up lost to a Redis
failover costs at most that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

from bridge.store.connection import REDIS_ERRORS, OutageLog, backoff
from bridge.webhooks import queue

log = logging.getLogger("bridge.webhooks")

CONCURRENCY: Final = 4  # attempts at once per endpoint (a call's events still go one after another)
IDLE_S: Final = 300.0  # a lane with nothing due looks again after this at the latest
ERROR_PAUSE_S: Final = 30.0  # after an unexpected error (a bug: logged with its traceback)


@dataclass(frozen=True)
class LaneSetup:
    """What every lane of one deliverer shares."""

    client: aioredis.Redis
    attempt: Callable[[queue.Delivery, float], Awaitable[None]]  # send one delivery and settle it
    outage: OutageLog  # the deliverer's Redis failures: one rate-limited line for all its lanes
    lease_s: float
    dead_ttl_s: float
    concurrency: int = CONCURRENCY
    idle_s: float = IDLE_S


class Lane:
    """See the module doc. :meth:`start` runs it until :meth:`close`."""

    def __init__(self, endpoint: str, setup: LaneSetup) -> None:
        self.endpoint, self.setup = endpoint, setup
        self.claims = 0  # claims made (what an idle lane does not do)
        self._poked = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._pauses: Iterator[float] = backoff(1.0, 2.0, ERROR_PAUSE_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"webhook-lane-{self.endpoint}")

    def poke(self) -> None:
        """Look for due deliveries now."""
        self._poked.set()

    async def close(self) -> None:
        """Stop claiming, and cancel the attempts under way: what they claimed comes due again after the lease."""
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        while pending := [t for t in tasks if not t.done()]:
            await asyncio.wait(pending, timeout=1.0)
            for task in pending:
                task.cancel()  # again if a library swallowed it (a cancel meeting a timeout: aiohttp, redis-py)

    async def _run(self) -> None:
        while True:
            self._poked.clear()
            try:
                wake_at = await self._claim()
            except REDIS_ERRORS as exc:  # Redis away: one line per interval for the whole deliverer
                self.setup.outage.failed(exc)
                wake_at = time.time() + next(self._pauses)
            except Exception:  # never a dead lane: what it claimed comes due again after the lease
                log.exception("webhooks to %s: a claim failed", self.endpoint)
                wake_at = time.time() + ERROR_PAUSE_S
            await self._sleep(wake_at)

    async def _claim(self) -> float | None:
        """Claim what fits and start its attempts; when to look again (None: only when poked)."""
        # an attempt pokes before its task is done and leaves the set: attempts ending in one turn of the loop must
        # not read as slots still taken, or the lane would sleep through the only pokes it gets
        free = self.setup.concurrency - sum(not task.done() for task in self._inflight)
        if free <= 0:
            return None  # an attempt's end pokes
        s = self.setup
        got = await queue.claim(s.client, self.endpoint, time.time(), s.lease_s, free, s.dead_ttl_s)
        self.claims += 1
        s.outage.recovered()
        self._pauses = backoff(1.0, 2.0, ERROR_PAUSE_S)
        for d in got.deliveries:
            task = asyncio.create_task(self._one(d, got.lease), name=f"webhook-{d.id}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return got.next_due

    async def _one(self, d: queue.Delivery, lease: float) -> None:
        try:
            await self.setup.attempt(d, lease)
        finally:
            self.poke()  # a slot is free, and the call's next event may be due now

    async def _sleep(self, wake_at: float | None) -> None:
        wait = self.setup.idle_s if wake_at is None else min(self.setup.idle_s, max(0.0, wake_at - time.time()))
        if wait <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):  # not wait_for: it may swallow a cancel (Python 3.11)
                await self._poked.wait()
