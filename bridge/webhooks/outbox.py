"""The emitting side of webhooks: :func:`emit` (or :meth:`Outbox.emit`) never blocks and never raises into a call.

An event becomes one :class:`~bridge.webhooks.queue.Delivery` per endpoint that wants it (same ``webhook-id`` for
all), its body made now. They wait in memory until a background task writes them to Redis (at once while Redis
answers; every second while it does not). A process that stops while Redis is away writes what it still holds to a
spool file (``<spool_dir>/webhooks/*.json``, 0600); the next outbox of the node to reach Redis (a worker's, or
``serve``'s) queues those first. So an event is lost only with the machine's disk.

One outbox per process is installed (:func:`install`): a worker's, and ``serve``'s for events that happen there.
Anything in that process may then call::

    from bridge.webhooks.outbox import emit
    emit("rollout.decision", {"dialplan": "support", "variant": "ga", "weights": {...}, "why": "..."},
         dialplan="support")

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
from redis.exceptions import RedisError

from bridge.errors import redact
from bridge.store.spool import claim_files, write_file
from bridge.webhooks.body import envelope
from bridge.webhooks.endpoints import Endpoint, endpoints, targets
from bridge.webhooks.queue import Delivery, enqueue
from bridge.webhooks.signing import new_id

log = logging.getLogger("bridge.webhooks")

SPOOL_SUBDIR = "webhooks"
SUFFIX = ".webhooks.json"
BATCH = 500  # deliveries per pipeline
FLUSH_RETRY_S = 1.0

Routes = Callable[[], Mapping[str, Endpoint]]


class Outbox:
    """Events on their way to Redis (see the module doc). ``routes``: the endpoints now (a reload changes them)."""

    def __init__(self, client: aioredis.Redis, routes: Routes, spool_dir: Path | None = None) -> None:
        self.client = client
        self.routes = routes
        self.spool = spool_dir / SPOOL_SUBDIR if spool_dir is not None else None
        self.queue: deque[Delivery] = deque()
        self.spooled = 0  # deliveries written to a spool file at close
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._replayed = False
        self._down_since: float | None = None
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
    ) -> str | None:
        """Queue one event for every endpoint that wants it; its ``webhook-id`` (None: no endpoint wants it).
        ``callers``: the caller in each form an endpoint may ask for (``viewer``, ``masked``, ``full``), put into
        each endpoint's copy of ``data`` as ``caller``."""
        try:
            wanted = targets(self.routes(), event_type, dialplan)
            if not wanted:
                return None
            msg_id, now = new_id(), time.time()
            for endpoint in wanted:
                shown = dict(data)
                if callers is not None:
                    shown["caller"] = callers.get(endpoint.caller, callers.get("viewer"))
                body = envelope(event_type, shown, now).decode()
                self.queue.append(Delivery(msg_id, endpoint.name, str(event_type), body, now))
            if self._task is None and not self._closing:
                self.start()
            self._wake.set()
            return msg_id
        except Exception:  # an event must never break what emits it (a call's end)
            log.exception("webhook event %s not queued", event_type)
            return None

    async def _run(self) -> None:
        while not self._closing:
            try:
                if not self._replayed:
                    self._replayed = await self._replay()
                if self.queue:
                    await self._flush()
            except Exception:  # never a dead outbox: the events stay queued for the next round
                log.exception("webhooks: the outbox's round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_RETRY_S):  # not wait_for: it may swallow a cancel (Python 3.11)
                    await self._wake.wait()

    async def _flush(self) -> bool:
        """Write what is queued; False if Redis did not take it (it stays queued)."""
        while self.queue:
            batch = [self.queue[i] for i in range(min(BATCH, len(self.queue)))]
            try:
                await enqueue(self.client, batch, time.time())
            except (RedisError, OSError) as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "webhooks: Redis unreachable (%s); %d event(s) wait in memory",
                        redact(str(exc)),
                        len(self.queue),
                    )
                return False
            for _ in batch:
                self.queue.popleft()
            if self._down_since is not None:
                log.warning("webhooks: Redis back; queued the events that waited")
                self._down_since = None
        return True

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
        with contextlib.suppress(RedisError, OSError):
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

    async def _replay(self) -> bool:
        """Queue every spool file's deliveries; False if Redis did not take one (tried again later)."""
        for path, claimed in claim_files(self.spool, SUFFIX):
            try:
                records = [Delivery.from_record(r) for r in json.loads(claimed.read_text(encoding="utf-8"))]
                await enqueue(self.client, records, time.time())
            except (RedisError, OSError):
                with contextlib.suppress(OSError):
                    claimed.rename(path)
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


def emit(
    event_type: str,
    data: Mapping[str, Any],
    *,
    dialplan: str | None = None,
    callers: Mapping[str, str] | None = None,
) -> str | None:
    """Queue an event with this process's outbox (:meth:`Outbox.emit`); None if there is none."""
    return _installed.emit(event_type, data, dialplan=dialplan, callers=callers) if _installed is not None else None


def worker_outbox(settings: Any, plans: Callable[[], Iterable[Any]]) -> Outbox | None:
    """A worker's outbox on ``settings.redis_url`` (None without Redis), routing to ``webhook_url`` and the
    ``plans``' webhooks as they are now (a reload changes them), installed for :func:`emit`. It starts with the
    first event (``serve``'s own outbox queues the spool files at start)."""
    if not settings.redis_url:
        return None
    from bridge.store.connection import connect

    outbox = Outbox(connect(settings.redis_url), lambda: endpoints(settings.webhook_url, plans()), settings.spool_dir)
    install(outbox)
    return outbox
