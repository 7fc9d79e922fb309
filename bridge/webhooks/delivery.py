"""The sending side of webhooks: ``serve`` runs one :class:`Deliverer` per node (``bridge.serve.webhooks``).

With no endpoint configured it issues no Redis command at all (it reads the endpoints again every
:data:`ROUTES_S`, from the settings and the dialplan files). Otherwise each endpoint has its own
:class:`~bridge.webhooks.lane.Lane`, so a slow or unreachable endpoint never delays another's deliveries, and the
deliverer blocks on Redis (:func:`bridge.webhooks.queue.wait_for_work`: ``BLPOP`` on the wake list, at most
:data:`WAIT_S`) instead of polling: an event queued anywhere wakes it at once; an idle node issues a few commands a
minute. A lane claims its due deliveries (leased, so two nodes never send one at once), POSTs each to its endpoint's
URL, signed with its secret (both looked up by the endpoint's name now, never taken from the queue; a delivery whose
seal does not hold, :func:`bridge.webhooks.signing.queue_seal`, is never sent but a dead letter at once), at most
:data:`~bridge.webhooks.schedule.TIMEOUT_S` per attempt, redirects not followed, and settles it: a 2xx is delivered;
anything else is tried again after the schedule's delay (:mod:`bridge.webhooks.schedule`) with the same
``webhook-id``, and past the last one it is a dead letter. A call's later event waits for its earlier one's delivery
or dead letter. Counted per endpoint (``callbridge_webhooks_*``); the oldest pending event's age is a gauge (the
alert's). Redis failures are one rate-limited log line (:class:`~bridge.store.connection.OutageLog`), never a
traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis

from bridge import metrics
from bridge.config import Settings
from bridge.privacy.masking import mask_url
from bridge.runtime import tracecontext
from bridge.store.connection import REDIS_ERRORS, OutageLog, backoff
from bridge.webhooks import queue
from bridge.webhooks.endpoints import Endpoint
from bridge.webhooks.lane import CONCURRENCY, Lane, LaneSetup
from bridge.webhooks.limits import DEFAULT as DEFAULT_LIMITS
from bridge.webhooks.limits import Limits
from bridge.webhooks.outbox import Routes
from bridge.webhooks.schedule import LEASE_S, RETRY_DELAYS_S, TIMEOUT_S, delivered, next_delay, status_class
from bridge.webhooks.signing import headers, secret_bytes

log = logging.getLogger("bridge.webhooks")

ROUTES_S: Final = 1.0  # no endpoint: the endpoints are read again this often (no Redis command)
WAIT_S: Final = 30.0  # one blocking wait on Redis for work at most this long
HOUSEKEEPING_S: Final = 60.0  # the backlog gauges, expired dead letters, the deliveries of endpoints no longer there
POLL_S: Final = 1.0  # without a waker client (a test, an embedding): lanes are poked this often instead
ERROR_PAUSE_S: Final = 30.0


def secret_of(endpoint: Endpoint, settings: Settings) -> str | None:
    """The endpoint's secret, read now: ``webhook_secret`` for the settings' endpoint, else the dialplan entry's
    ``env`` (or its ``_FILE``) or ``file``. None: not set (never logged)."""
    if endpoint.secret_ref is None:
        return settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None
    from bridge.tools.http import read_headers

    found, missing = read_headers({"secret": endpoint.secret_ref})
    return None if missing is not None else found["secret"]


def attempt_attributes(endpoint: Endpoint, d: queue.Delivery) -> dict[str, str | int]:
    """A delivery attempt span's attributes: HTTP client conventions (the URL's host and its path, no query), the
    endpoint's name, the event and its ``webhook-id``, the attempts before this one."""
    parts = urlsplit(endpoint.url)
    return {
        "http.request.method": "POST",
        "server.address": parts.hostname or "",
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        "url.template": f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}",
        "http.request.resend_count": d.attempts,
        "callbridge.webhook.endpoint": endpoint.name,
        "callbridge.webhook.type": d.type,
        "callbridge.webhook.id": d.id,
    }


@dataclass(frozen=True)
class Pace:
    """How a deliverer sends and waits: ``serve``'s are the defaults; tests shorten them."""

    timeout_s: float = TIMEOUT_S  # one attempt
    lease_s: float = LEASE_S  # a claim
    delays: tuple[float, ...] = RETRY_DELAYS_S  # the schedule (:data:`~bridge.webhooks.schedule.RETRY_DELAYS_S`)
    wait_s: float = WAIT_S  # one blocking wait on Redis
    poll_s: float = POLL_S  # without a waker client
    housekeeping_s: float = HOUSEKEEPING_S
    concurrency: int = CONCURRENCY  # attempts at once per endpoint


class Deliverer:
    """Lanes per endpoint, woken by what is queued, until cancelled (see the module doc). ``waker``: a second client
    for the blocking wait, whose reads may take longer than :attr:`Pace.wait_s` (None: lanes are poked every
    :attr:`Pace.poll_s`)."""

    def __init__(
        self,
        client: aioredis.Redis,
        routes: Routes,
        secret: Callable[[Endpoint], str | None],
        *,
        waker: aioredis.Redis | None = None,
        limits: Limits = DEFAULT_LIMITS,
        pace: Pace = Pace(),
        traces: tracecontext.Deliveries | None = None,
        seal_key: bytes | None = None,
    ) -> None:
        self.client, self.waker = client, waker
        self.seal_key = seal_key  # signing.queue_key: what it does not seal is refused (None: seals not checked)
        self.traces = traces  # each attempt a span, its traceparent on the request (None: tracing off)
        self.routes = routes
        self.secret = secret
        self.limits = limits
        self.pace = pace
        self.outage = OutageLog(log, "webhooks (deliveries wait)")
        self.lanes: dict[str, Lane] = {}
        self._setup = LaneSetup(client, self.attempt, self.outage, pace.lease_s, limits.dead_ttl_s, pace.concurrency)
        self._http: aiohttp.ClientSession | None = None
        self._adopted = False
        self._kept_at = float("-inf")  # the last housekeeping (monotonic)
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="webhook-deliverer")

    async def close(self) -> None:
        """Stop, and cancel the attempts under way: what they claimed comes due again after the lease."""
        self._closing = True
        await self._close_lanes()
        while self._task is not None and not self._task.done():
            self._task.cancel()  # again if a library swallowed it (a cancel meeting a timeout: aiohttp, redis-py)
            await asyncio.wait({self._task}, timeout=1.0)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.pace.timeout_s)
        connector = aiohttp.TCPConnector(limit=0)  # bounded by the lanes: CONCURRENCY per endpoint
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False, connector=connector) as http:
            self._http = http
            pauses = backoff(1.0, 2.0, ERROR_PAUSE_S)
            try:
                while not self._closing:
                    try:
                        await self._step(self.routes())
                        pauses = backoff(1.0, 2.0, ERROR_PAUSE_S)
                    except REDIS_ERRORS as exc:  # one line per interval, never a traceback
                        self.outage.failed(exc)
                        await asyncio.sleep(next(pauses))
                    except Exception:  # never a dead deliverer (a bug: logged, at most every ERROR_PAUSE_S)
                        log.exception("webhooks: the deliverer's round failed")
                        await asyncio.sleep(ERROR_PAUSE_S)
            finally:
                await self._close_lanes()

    async def _close_lanes(self) -> None:
        while self.lanes:
            await self.lanes.popitem()[1].close()

    async def _step(self, found: Mapping[str, Endpoint]) -> None:
        """Lanes for the endpoints configured now; then one wait for work (none configured: a pause, no Redis)."""
        for name in [n for n in self.lanes if n not in found]:
            await self.lanes.pop(name).close()
        if not found:
            await asyncio.sleep(ROUTES_S)
            return
        if not self._adopted:
            moved = await queue.adopt_legacy(self.client)
            if moved:
                log.warning("webhooks: %d delivery(ies) of an earlier version moved to their endpoints' queues", moved)
            self._adopted = True
        for name in found:
            if name not in self.lanes and not self._closing:
                self.lanes[name] = lane = Lane(name, self._setup)
                lane.start()
        if time.monotonic() - self._kept_at >= self.pace.housekeeping_s:
            self._kept_at = time.monotonic()
            await self._housekeeping(found)
        if self.waker is None:
            await asyncio.sleep(self.pace.poll_s)
        elif not await queue.wait_for_work(self.waker, self.pace.wait_s):
            return  # nothing queued: the lanes wake on their own due times
        self.outage.recovered()
        for lane in self.lanes.values():
            lane.poke()

    async def _housekeeping(self, found: Mapping[str, Endpoint]) -> None:
        """The backlog gauges; every lane looks (its dead letters past their time go); and the deliveries of endpoints
        no longer configured become dead letters."""
        for lane in self.lanes.values():
            lane.poke()
        count, age = await queue.backlog(self.client, time.time())
        metrics.WEBHOOKS_PENDING.set(count)
        metrics.WEBHOOKS_OLDEST_PENDING.set(age)
        for name in await queue.stored_endpoints(self.client):
            if name in found:
                continue
            while True:
                got = await queue.claim(self.client, name, time.time(), self.pace.lease_s, 100, self.limits.dead_ttl_s)
                if not got.deliveries:
                    break
                await asyncio.gather(*(self.attempt(d, got.lease) for d in got.deliveries))

    async def attempt(self, d: queue.Delivery, lease: float) -> None:
        """Send one claimed delivery and settle it."""
        endpoint = self.routes().get(d.endpoint)
        if endpoint is None:
            d.last = f"endpoint {d.endpoint} is no longer configured"
            await self._settle(d, lease, "dead", time.time())
            metrics.WEBHOOKS_DEAD.labels(d.endpoint).inc()
            log.error("webhook %s (%s): %s: a dead letter", d.id, d.type, d.last)
            return
        refusal = d.refusal(self.seal_key)
        if refusal is not None:  # never sent: a writer of Redis must not get its own event signed
            d.last = refusal
            await self._settle(d, lease, "dead", time.time())
            metrics.WEBHOOKS_REFUSED.labels(endpoint.name).inc()
            log.error("webhook %s to %s refused, a dead letter: %s", d.id[:40], endpoint.name, refusal)
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
        delay = next_delay(d.attempts, self.pace.delays)
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
        sent = headers(key, d.id, body)
        span = self.traces.attempt(d.body, attempt_attributes(endpoint, d)) if self.traces is not None else None
        if span is not None and span.traceparent:
            sent[tracecontext.HEADER] = span.traceparent
        status, error = None, ""
        try:
            async with self._http.post(endpoint.url, data=body, headers=sent, allow_redirects=False) as response:
                status = response.status
        except TimeoutError:
            error = "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"error: {type(exc).__name__}"
        finally:
            if span is not None:
                span.done(status, error or "cancelled")
        return status, error

    async def _settle(self, d: queue.Delivery, lease: float, mode: Any, at: float) -> None:
        try:
            if not await queue.settle(self.client, d, lease, mode, at, self.limits.dead_ttl_s, time.time()):
                log.warning("webhook %s: its lease ran out before it was settled (another deliverer has it)", d.id)
        except REDIS_ERRORS as exc:  # its lease runs out: it is sent again (at least once)
            self.outage.failed(exc)
