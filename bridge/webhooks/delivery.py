"""The sending side of webhooks: ``serve`` runs one :class:`Deliverer` per node (``bridge.serve.webhooks``).

Each round it claims the due deliveries (:func:`bridge.webhooks.queue.claim`: leased, so two nodes never send one
at once), POSTs each to its endpoint's URL, signed with its secret (both looked up by the endpoint's name now, never
taken from the queue), at most :data:`~bridge.webhooks.schedule.TIMEOUT_S` per attempt, redirects not followed, and
settles it: a 2xx is delivered; anything else is tried again after the schedule's delay
(:mod:`bridge.webhooks.schedule`) with the same ``webhook-id``, and past the last one it is a dead letter. Counted
per endpoint (``callbridge_webhooks_*``); the oldest pending event's age is a gauge (the alert's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import metrics
from bridge.config import Settings
from bridge.errors import redact
from bridge.privacy.masking import mask_url
from bridge.webhooks import queue
from bridge.webhooks.endpoints import Endpoint
from bridge.webhooks.outbox import Routes
from bridge.webhooks.schedule import LEASE_S, RETRY_DELAYS_S, TIMEOUT_S, delivered, next_delay, status_class
from bridge.webhooks.signing import headers, secret_bytes

log = logging.getLogger("bridge.webhooks")

POLL_S = 1.0  # a round every second while nothing is due: an event is first sent within about a second
CONCURRENCY = 8  # attempts at once


def secret_of(endpoint: Endpoint, settings: Settings) -> str | None:
    """The endpoint's secret, read now: ``webhook_secret`` for the settings' endpoint, else the dialplan entry's
    ``env`` (or its ``_FILE``) or ``file``. None: not set (never logged)."""
    if endpoint.secret_ref is None:
        return settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None
    from bridge.tools.http import read_headers

    found, missing = read_headers({"secret": endpoint.secret_ref})
    return None if missing is not None else found["secret"]


class Deliverer:
    """Claims, sends and settles due deliveries until cancelled (see the module doc)."""

    def __init__(
        self,
        client: aioredis.Redis,
        routes: Routes,
        secret: Callable[[Endpoint], str | None],
        *,
        timeout_s: float = TIMEOUT_S,
        lease_s: float = LEASE_S,
        delays: tuple[float, ...] = RETRY_DELAYS_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.client = client
        self.routes = routes
        self.secret = secret
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self.delays = delays  # the schedule (:data:`~bridge.webhooks.schedule.RETRY_DELAYS_S`)
        self.poll_s = poll_s
        self._http: aiohttp.ClientSession | None = None
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._down = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="webhook-deliverer")

    async def close(self) -> None:
        """Stop after the attempts under way (each bounded by the timeout), or cancel them: what they claimed comes
        due again after the lease."""
        self._closing = True
        while self._task is not None and not self._task.done():
            self._task.cancel()  # again if a library swallowed it (a cancel meeting a timeout: aiohttp, redis-py)
            await asyncio.wait({self._task}, timeout=1.0)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
            self._http = http
            while not self._closing:
                try:
                    claimed = await self.round()
                    await self.export_backlog()
                except Exception:  # never a dead deliverer: what it claimed comes due again after the lease
                    log.exception("webhooks: a delivery round failed")
                    claimed = 0
                if not claimed:
                    await asyncio.sleep(self.poll_s)

    async def round(self) -> int:
        """One claim and its attempts; how many were claimed."""
        try:
            lease, due = await queue.claim(self.client, time.time(), self.lease_s, CONCURRENCY * 4)
        except (RedisError, OSError) as exc:
            if not self._down:
                log.warning("webhooks: Redis unreachable (%s); deliveries wait", redact(str(exc)))
            self._down = True
            return 0
        self._down = False
        if due:
            await asyncio.gather(*(self._attempt(d, lease) for d in due))
        return len(due)

    async def export_backlog(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            count, age = await queue.backlog(self.client, time.time())
            metrics.WEBHOOKS_PENDING.set(count)
            metrics.WEBHOOKS_OLDEST_PENDING.set(age)

    async def _attempt(self, d: queue.Delivery, lease: float) -> None:
        async with self._gate:
            endpoint = self.routes().get(d.endpoint)
            if endpoint is None:
                d.last = f"endpoint {d.endpoint} is no longer configured"
                await self._settle(d, lease, "dead", time.time())
                metrics.WEBHOOKS_DEAD.labels(d.endpoint).inc()
                log.error("webhook %s (%s): %s: a dead letter", d.id, d.type, d.last)
                return
            status, error = await self._post(endpoint, d)
            if status is not None and delivered(status):
                metrics.WEBHOOKS_DELIVERED.labels(endpoint.name).inc()
                log.info("webhook %s (%s) delivered to %s: %d", d.id, d.type, endpoint.name, status)
                await self._settle(d, lease, "done", time.time())
                return
            d.attempts += 1
            d.last = error or (f"redirect {status} not followed" if status and 300 <= status < 400 else str(status))
            metrics.WEBHOOKS_FAILED.labels(endpoint.name, status_class(status, error)).inc()
            delay = next_delay(d.attempts, self.delays)
            what = f"webhook {d.id} ({d.type}) to {endpoint.name} ({mask_url(endpoint.url)})"
            if delay is None:
                metrics.WEBHOOKS_DEAD.labels(endpoint.name).inc()
                log.error("%s: a dead letter after %d attempts (last: %s)", what, d.attempts, d.last)
                await self._settle(d, lease, "dead", time.time())
                return
            log.warning("%s failed (%s); attempt %d in %g s", what, d.last, d.attempts + 1, delay)
            await self._settle(d, lease, "retry", time.time() + delay)

    async def _post(self, endpoint: Endpoint, d: queue.Delivery) -> tuple[int | None, str]:
        """(status, "") or (None, why not): one attempt, bounded, no redirect followed."""
        secret = self.secret(endpoint)
        if not secret:
            return None, "its secret is not set"
        try:
            key = secret_bytes(secret)
        except ValueError as exc:
            return None, f"its secret is unusable: {exc}"
        body = d.body.encode()
        assert self._http is not None
        try:
            async with self._http.post(
                endpoint.url, data=body, headers=headers(key, d.id, body), allow_redirects=False
            ) as response:
                return response.status, ""
        except TimeoutError:
            return None, "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"error: {type(exc).__name__}"

    async def _settle(self, d: queue.Delivery, lease: float, mode: Any, at: float) -> None:
        try:
            if not await queue.settle(self.client, d, lease, mode, at):
                log.warning("webhook %s: its lease ran out before it was settled (another deliverer has it)", d.id)
        except (RedisError, OSError) as exc:  # its lease runs out: it is sent again (at least once)
            log.warning("webhook %s: not settled (%s); sent again after its lease", d.id, redact(str(exc)))
