"""The emitting side of webhooks: :func:`emit` (or :meth:`Outbox.emit`) never blocks and never raises into a call.

An event becomes one :class:`~bridge.webhooks.queue.Delivery` per endpoint that wants it (same ``webhook-id`` for
all), its body made now (strings cut at :attr:`~bridge.webhooks.limits.Limits.field_max_chars`). A call's events name
the call (``chain``) and their ``seq``: each endpoint gets them in that order. They wait in memory until a background
task writes them to Redis (at once while Redis answers; after a growing pause, up to :data:`FLUSH_RETRY_MAX_S`, while
it does not), at most :attr:`~bridge.webhooks.limits.Limits.memory_max_events` and ``memory_max_bytes`` of them: past
those the oldest are dropped and counted. A process that stops while Redis is away writes what it still holds to a
spool file (``<spool_dir>/webhooks/*.json``, 0600); the next outbox of the node to reach Redis (a worker's, or
``serve``'s) queues those first. So an event is lost only with the machine's disk, or to a cap.

One outbox per process is installed (:func:`install`): a worker's, and ``serve``'s for events that happen there.
Anything in that process may then call::

    from bridge.webhooks.outbox import emit
    emit("rollout.decision", {"dialplan": "support", "variant": "ga", "weights": {...}, "why": "..."},
         dialplan="support")
    emit("call.ended", {"call_id": "c-1", "seq": 3, ...}, dialplan="support", chain="c-1", seq=3)

which returns the event's ``webhook-id`` (None: no endpoint wants it, or no outbox in this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bridge import metrics
from bridge.store.connection import REDIS_ERRORS, OutageLog, backoff
from bridge.store.spool import claim_files, write_file
from bridge.webhooks.body import cut_long, envelope
from bridge.webhooks.endpoints import Endpoint, endpoints, targets
from bridge.webhooks.limits import DEFAULT as DEFAULT_LIMITS
from bridge.webhooks.limits import Limits
from bridge.webhooks.queue import Delivery, Queued, enqueue
from bridge.webhooks.signing import new_id, queue_key

log = logging.getLogger("bridge.webhooks")

SPOOL_SUBDIR = "webhooks"
SUFFIX = ".webhooks.json"
BATCH = 500  # deliveries per script
FLUSH_RETRY_S = 1.0  # the first retry while Redis is away; then doubling up to FLUSH_RETRY_MAX_S
FLUSH_RETRY_MAX_S = 30.0
DROP_LOG_EVERY_S = 60.0  # dropped deliveries: one line per endpoint and reason this often at most

Routes = Callable[[], Mapping[str, Endpoint]]


class Outbox:
    """Events on their way to Redis (see the module doc). ``routes``: the endpoints now (a reload changes them)."""

    def __init__(
        self,
        client: aioredis.Redis,
        routes: Routes,
        spool_dir: Path | None = None,
        limits: Limits = DEFAULT_LIMITS,
        seal_key: bytes | None = None,
    ) -> None:
        self.client = client
        self.seal_key = seal_key  # signing.queue_key: each delivery sealed with it as it is made (None: unsealed)
        self.routes = routes
        self.limits = limits
        self.spool = spool_dir / SPOOL_SUBDIR if spool_dir is not None else None
        self.queue: deque[Delivery] = deque()
        self.queued_bytes = 0  # of what waits in memory
        self.spooled = 0  # deliveries written to a spool file at close
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._replayed = False
        self._outage = OutageLog(log, "webhooks (events waiting to be queued)")
        self._pause = backoff(FLUSH_RETRY_S, 2.0, FLUSH_RETRY_MAX_S)
        self._drops: dict[tuple[str, str], int] = {}  # dropped since the last line about it
        self._drops_logged_at = float("-inf")
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-outbox")

    def emit(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        dialplan: str | None = None,
        callers: Mapping[str, str] | None = None,
        originals: Mapping[str, str] | None = None,
        chain: str | None = None,
        seq: int = 0,
    ) -> str | None:
        """Queue one event for every endpoint that wants it; its ``webhook-id`` (None: no endpoint wants it).
        ``callers``: the caller in each form an endpoint may ask for (``viewer``, ``masked``, ``full``), put into
        each endpoint's copy of ``data`` as ``caller``; ``originals``: the original called number of a forwarded
        call alike, as ``original_called``. ``chain``: the call the event belongs to, ``seq`` its place
        among the call's events: each endpoint gets a call's events in that order."""
        try:
            wanted = targets(self.routes(), event_type, dialplan)
            if not wanted:
                return None
            msg_id, now = new_id(), time.time()
            cut = cut_long(data, self.limits.field_max_chars)
            for endpoint in wanted:
                shown = dict(cut)
                if callers is not None:
                    shown["caller"] = callers.get(endpoint.caller, callers.get("viewer"))
                if originals is not None:
                    shown["original_called"] = originals.get(endpoint.caller, originals.get("viewer"))
                body = envelope(event_type, shown, now).decode()
                made = Delivery(msg_id, endpoint.name, str(event_type), body, now, chain=chain or "", seq=seq)
                self._hold(made.sealed(self.seal_key))
            if self._task is None and not self._closing:
                self.start()
            if not self._outage.down:  # while Redis is away the outbox tries again at its own pace
                self._wake.set()
            return msg_id
        except Exception:  # an event must never break what emits it (a call's end)
            log.exception("webhook event %s not queued", event_type)
            return None

    def _hold(self, delivery: Delivery) -> None:
        """Keep ``delivery`` in memory until Redis takes it; past the memory caps the oldest go (counted)."""
        self.queue.append(delivery)
        self.queued_bytes += delivery.size()
        self._trim()

    def _trim(self) -> None:
        while len(self.queue) > 1 and (
            len(self.queue) > self.limits.memory_max_events or self.queued_bytes > self.limits.memory_max_bytes
        ):
            gone = self.queue.popleft()
            self.queued_bytes -= gone.size()
            self._dropped(gone.endpoint, "memory", 1)

    async def _run(self) -> None:
        while not self._closing:
            pause: float | None = None  # None: until the next event
            try:
                if not self._replayed:
                    self._replayed = await self._replay()
                if not (await self._flush() and self._replayed):
                    pause = next(self._pause)  # Redis away: a growing pause, whatever is emitted meanwhile
                else:
                    self._pause = backoff(FLUSH_RETRY_S, 2.0, FLUSH_RETRY_MAX_S)
            except Exception:  # never a dead outbox: the events stay queued for the next round (a bug: logged)
                log.exception("webhooks: the outbox's round failed")
                pause = FLUSH_RETRY_MAX_S
            self._wake.clear()
            if pause is None:
                await self._wake.wait()  # nothing to write: no timer, no Redis command until the next event
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):  # not wait_for: it may swallow a cancel (Python 3.11)
                    await self._wake.wait()

    async def _flush(self) -> bool:
        """Write what is queued; False if Redis did not take it (it stays queued, the oldest first)."""
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]  # out: emit may trim meanwhile
            size = sum(d.size() for d in batch)
            self.queued_bytes -= size
            written = False
            try:
                queued = await enqueue(self.client, batch, time.time(), self.limits, self.seal_key)
                written = True
            except REDIS_ERRORS as exc:
                self._outage.failed(exc)
                return False
            finally:
                if not written:  # not taken (or cancelled at a stop): back in front, for the next try or the spool
                    self.queue.extendleft(reversed(batch))
                    self.queued_bytes += size
                    self._trim()
            self._count(queued)
            self._outage.recovered()
        return True

    def _count(self, queued: Queued) -> None:
        for endpoint, n in queued.dropped.items():
            self._dropped(endpoint, "full", n)
        for endpoint, n in queued.twice.items():  # a worker that stalled, then ended a call a reaper had ended
            metrics.WEBHOOKS_ENDED_TWICE.labels(endpoint).inc(n)
            log.info("webhooks to %s: %d call(s) already had their call.ended queued: not sent twice", endpoint, n)

    def _dropped(self, endpoint: str, reason: str, n: int) -> None:
        """Count ``n`` deliveries dropped; one ERROR line per :data:`DROP_LOG_EVERY_S` at most, with the count."""
        metrics.WEBHOOKS_DROPPED.labels(endpoint, reason).inc(n)
        self._drops[(endpoint, reason)] = self._drops.get((endpoint, reason), 0) + n
        now = time.monotonic()
        if now - self._drops_logged_at < DROP_LOG_EVERY_S:
            return
        why = {
            "full": "its queue in Redis is full (webhook_max_events, webhook_max_mb)",
            "memory": "the memory queue is full while Redis is away (webhook_memory_max_events or _max_mb)",
        }
        for (name, kind), count in sorted(self._drops.items()):
            log.error("webhooks to %s: %d delivery(ies) dropped, the oldest first: %s", name, count, why[kind])
        self._drops.clear()
        self._drops_logged_at = now

    async def close(self, within_s: float = 2.0) -> None:
        """Stop; what Redis does not take within ``within_s`` goes to a spool file. Closes the client."""
        self._closing = True
        self._wake.set()
        if self._task is not None:  # one flusher at a time: the task ends (or is cancelled) first
            done, _ = await asyncio.wait({self._task}, timeout=within_s)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task})
        if self.queue:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_s):
                    await self._flush()
        if self.queue:
            self._spool()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.client.aclose()

    def _spool(self) -> None:
        if self.spool is None:
            log.error("webhooks: %d event(s) lost: Redis unreachable at stop and no spool directory", len(self.queue))
            return
        try:
            stem = f"{int(time.time() * 1000)}-{os.getpid()}"
            path = write_file(self.spool, stem, SUFFIX, [d.record() for d in self.queue])
        except OSError as exc:
            log.error("webhooks: %d event(s) lost: cannot write the spool: %s", len(self.queue), exc)
            return
        self.spooled += len(self.queue)
        log.warning("webhooks: Redis unreachable at stop: %d event(s) kept in %s", len(self.queue), path)
        self.queue.clear()
        self.queued_bytes = 0

    async def _replay(self) -> bool:
        """Queue every spool file's deliveries; False if Redis did not take one (tried again later)."""
        for path, claimed in claim_files(self.spool, SUFFIX):
            try:
                records = [Delivery.from_record(r) for r in json.loads(claimed.read_text(encoding="utf-8"))]
                self._count(await enqueue(self.client, records, time.time(), self.limits, self.seal_key))
            except REDIS_ERRORS as exc:
                with contextlib.suppress(OSError):
                    claimed.rename(path)
                if not isinstance(exc, OSError) or exc.filename is None:
                    self._outage.failed(exc)
                return False
            except (ValueError, TypeError, KeyError):
                log.error("webhooks: spool file %s is not valid; kept as %s", path, claimed)
                continue
            claimed.unlink()
            log.warning("webhooks: queued %d spooled event(s) from %s", len(records), path.name)
        return True


_installed: Outbox | None = None


def install(outbox: Outbox | None) -> None:
    """The outbox :func:`emit` uses in this process (None: none)."""
    global _installed
    _installed = outbox


def installed() -> Outbox | None:
    """The outbox :func:`emit` uses in this process (None: none)."""
    return _installed


def emit(
    event_type: str,
    data: Mapping[str, Any],
    *,
    dialplan: str | None = None,
    callers: Mapping[str, str] | None = None,
    chain: str | None = None,
    seq: int = 0,
) -> str | None:
    """Queue an event with this process's outbox (:meth:`Outbox.emit`); None if there is none."""
    if _installed is None:
        return None
    return _installed.emit(event_type, data, dialplan=dialplan, callers=callers, chain=chain, seq=seq)


def worker_outbox(settings: Any, plans: Callable[[], Iterable[Any]]) -> Outbox | None:
    """A worker's outbox on ``settings.redis_url`` (None without Redis), routing to ``webhook_url`` and the
    ``plans``' webhooks as they are now (a reload changes them), installed for :func:`emit`. It starts with the
    first event (``serve``'s own outbox queues the spool files at start)."""
    if not settings.redis_url:
        return None
    from bridge.store.connection import connect

    def routes() -> Mapping[str, Endpoint]:  # read at each event
        return endpoints(settings.webhook_url, plans(), settings.webhook_caller)

    seal_key = queue_key(settings.listen_key.get_secret_value() if settings.listen_key else None)
    outbox = Outbox(connect(settings.redis_url), routes, settings.spool_dir, Limits.of(settings), seal_key)
    install(outbox)
    return outbox
