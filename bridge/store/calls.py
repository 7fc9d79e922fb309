"""Per-call state in Redis, written off the media path by a batching writer that never blocks or fails a call.

What a call writes (key names and TTLs in :mod:`bridge.store.keys`):

* one hash per call (:data:`keys.CALL_FIELDS`: identity, protocol state, progress, times);
* one capped stream per call of event summaries and both transcripts (``XADD MAXLEN ~``);
* membership in its worker's live set, and the worker's heartbeat key (``SET ... EX ... GET``), once a second.

A live call's liveness is its worker's heartbeat (the readers: :mod:`bridge.store.read`, the reaper); the call writes
nothing of its own to say it is alive. Its ticking fields (``last_activity``, its probe's counters) go with the
heartbeat's write, and TTLs are set when a key is created, when the call ends, after a re-sync and every
``ttl_refresh_s`` (:mod:`bridge.store.pending`), so a call in its steady state costs about one ``HSET`` a second
plus its events (docs/benchmarks.md, "Redis per call").

The call session only ever calls cheap synchronous methods (:meth:`CallStore.update`, :meth:`CallStore.event`,
:meth:`CallStore.end`, or the :meth:`CallStore.listener_for` adapter on ``CallSession.listeners``). They touch memory
only (:mod:`bridge.store.pending`): an in-memory snapshot of each call's full hash (with the names of the fields changed
since the last flush) and a bounded queue of stream entries. They must be called on the event loop's thread (pjsua2
callbacks only copy and enqueue onto the loop; see docs/pjsip.md). A background task flushes one pipeline every
``flush_interval_s``: changed hash fields coalesced per call, stream entries in order, live-set membership, the
heartbeat, all in one round trip.

A Redis outage never stops a call::

    update()/event() ──► snapshot + queue ──► writer ──► Redis
                                   ▲             │ connection error
                                   │             ▼
                      bounded: oldest entries   retry with backoff (``backoff()``), counters:
                      dropped, ``dropped_writes`` ``write_errors``, ``outages``, ``queue_depth``, ``connected``
                                                 │ Redis answers again
                                                 ▼
                      RE-SYNC: every call still in memory gets its FULL hash rewritten from the snapshot (so the state
                      is complete even if Redis restarted empty), live-set membership and the heartbeat are re-added,
                      the recent stream entries already written are appended again, then the queued ones.

Stream entries carry ids chosen here (``<epoch ms>-<seq>``, increasing per call) rather than ``*``. Appending one that
Redis already holds is refused (``ID ... equal or smaller``) and ignored, so a retried pipeline, or a re-sync against a
server that kept its data, never duplicates an entry, and entries keep the time they happened, not the time Redis came
back. A worker only cut off from Redis answers the reapers' SIP probe, so its calls are left alone
(:mod:`bridge.store.reaper`); one whose calls were marked "worker died" all the same (it did not answer either: its
loop stalled) rewrites them as live when it reconnects.

Connections (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``, or a client): see
:mod:`bridge.store.connection`. What supervisors read back: :mod:`bridge.store.read`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from bridge import events as ev
from bridge.errors import redact
from bridge.store import keys
from bridge.store.connection import PrimaryMoved, backoff, given_or_connect, is_outage, safe_url
from bridge.store.ended import index_ended
from bridge.store.failover import Address, PrimaryWatch, WriteStall, address_text
from bridge.store.pending import MAX_QUEUE, Batch, PendingWrites, Probe, stamp
from bridge.store.read import RECENT_EVENTS, CallDetail, CallSummary, as_float, read_call, read_live_calls, text
from bridge.store.reaper import Lost, Orphaned, Reaper, report_orphans
from bridge.store.reaper import mark_ended as mark_ended
from bridge.store.reaper import reap_dead_workers as reap_dead_workers
from bridge.store.spool import replay_spool, spool_pending

log = logging.getLogger("bridge.store")

Listener = Callable[[ev.Report], None]

FLUSH_INTERVAL_S = 0.15


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _duplicate_id(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "equal or smaller" in str(exc)


def spool_at_close(pending: PendingWrites, spool_dir: Path | None, worker: str, connected: bool) -> tuple[int, int]:
    """What Redis did not take at a writer's close goes to a spool file, logged (never dropped silently). Returns
    (calls spooled, spool failures)."""
    unwritten = pending.queue_depth or pending.members_dirty or (pending.calls and not connected)
    if not unwritten:
        return 0, 0
    if spool_dir is None:
        lost = pending.queue_depth
        log.error("worker %s: %d call state write(s) not written to Redis and no spool: lost", worker, lost)
        return 0, 0
    try:
        spooled = spool_pending(pending, spool_dir)
    except OSError as exc:
        log.error("worker %s: call state not written to Redis, nor to the spool %s: %s", worker, spool_dir, exc)
        return 0, 1
    if spooled is None:
        return 0, 0
    path, calls, entries = spooled
    what = f"{calls} call(s) and {entries} event(s)"
    log.warning(
        "worker %s: Redis unreachable at stop: %s spooled to %s; written to Redis by the next worker that reaches it",
        worker,
        what,
        path,
    )
    return calls, 0


@dataclass(frozen=True)
class StoreTuning:
    """How often a writer writes and beats, how long what it writes lives in Redis, how it retries and reaps (the
    defaults are production's; tests shorten them)."""

    flush_interval_s: float = FLUSH_INTERVAL_S
    max_queue: int = MAX_QUEUE
    stream_maxlen: int = keys.STREAM_MAXLEN
    call_ttl_s: int = keys.CALL_TTL_S
    heartbeat_interval_s: float = keys.HEARTBEAT_INTERVAL_S
    heartbeat_ttl_s: int = keys.HEARTBEAT_TTL_S
    ttl_refresh_s: float = keys.TTL_REFRESH_S  # a live call's keys get their TTL again this often
    reap_interval_s: float | None = keys.REAP_INTERVAL_S  # None: this writer reaps no dead worker's calls
    reap_grace_s: float | None = None  # None: heartbeat_ttl_s + retry_cap_s
    retry_initial_s: float = 0.1
    retry_cap_s: float = 5.0

    def reap_grace(self) -> float:
        """After a stall, how long the reaper waits for the others to write their heartbeats again."""
        return self.heartbeat_ttl_s + self.retry_cap_s if self.reap_grace_s is None else self.reap_grace_s


# ------------------------------------------------------------------------------------------------ the writer
class CallStore:
    """The per-call state writer of one worker, and the supervisors' read side.

    ``CallStore(url)`` or ``CallStore(client=...)`` (Sentinel, Cluster, or a client you configured). Write side:
    ``await start()``, then the synchronous :meth:`begin` / :meth:`update` / :meth:`event` / :meth:`end` (or
    :meth:`listener_for`), ``await close()``. Read side (no ``start()`` needed): :meth:`list_calls`,
    :meth:`get_call`, :meth:`reap_dead_workers`.

    Gauges and counters, readable at any time: ``queue_depth`` (stream entries + changed hash fields not yet
    written), ``dropped_writes`` (stream entries, or ended calls, given up because the queue was full),
    ``write_errors`` (failed flushes), ``rejected_writes`` (commands Redis refused for another reason than a
    duplicate stream id), ``outages``, ``resyncs`` (completed after an outage), ``flushes``, ``connected``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        worker: str | None = None,
        tuning: StoreTuning = StoreTuning(),
        clock: Callable[[], float] = time.time,
        spool_dir: Path | None = None,
        **redis_kwargs: Any,
    ) -> None:
        self.client, self._owns_client = given_or_connect("CallStore", url, client, **redis_kwargs)
        self.where = safe_url(url) if url else "redis client"
        self.worker = worker or default_worker_id()
        self.tuning = tuning
        # after a stall the reaper waits this long for the others to write their heartbeats again (by default, their
        # longest retry delay and a heartbeat's life)
        self.stall = WriteStall(tuning.reap_grace())
        self.primary_watch = PrimaryWatch.of(self.client, self._primary_moved)  # behind sentinels only
        self._clock = clock
        self.spool_dir = spool_dir  # what a stop during an outage could not write goes here (bridge/store/spool.py)
        self.spooled_calls = 0
        self.spool_failures = 0  # calls whose final state went to the spool at close
        self.replayed_calls = 0  # calls written from spool files (this worker's or a previous run's)
        self.pending = PendingWrites(self.worker, clock, tuning.max_queue)
        # counters and gauges
        self.write_errors = 0
        self.rejected_writes = 0
        self.outages = 0
        self.resyncs = 0
        self.flushes = 0
        self.reaped_calls = 0  # other workers' calls this writer marked ended ("worker died")
        self.connected = False
        self.last_error = ""
        # the writer's state
        self._writing = False  # a pipeline is on its way: what it took is off the queue but not yet written
        self._resync = True  # the first write is a full sync (and adopts what a previous incarnation left behind)
        self._first_sync = True
        self._in_outage = False
        self._last_heartbeat = float("-inf")
        self._live_ttl_at = float("-inf")  # when the worker's live set last got its TTL (monotonic)
        self._flushing = 0  # flush() waiting: ticking fields are written at once
        self._last_reap = float("-inf")
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # Called with the ``(call id, sip_dialog)`` of calls found orphaned (a previous run of this worker, or a dead
        # worker): the worker opens each sealed dialog and sends its caller a BYE; ``on_lost`` with every one's
        # ``(call id, hash)``: the worker queues its call.ended. Never raises into the writer.
        self.on_orphaned: Orphaned | None = None
        self.on_lost: Lost | None = None
        self.reaper = Reaper(self.worker)  # its ``probe`` asks a suspect worker over SIP before its calls are ended

    # ---------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"callstore-{self.worker}")
            if self.primary_watch is not None:
                self.primary_watch.start()

    async def close(self, timeout_s: float = 2.0) -> None:
        """Try to write what is queued (for at most ``timeout_s``), withdraw the heartbeat, close the client."""
        self._closing = True
        self._wake.set()
        if self.primary_watch is not None:
            await self.primary_watch.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
            self._spool_unwritten()
            if self.connected and not self.pending.live_calls:
                with contextlib.suppress(RedisError, OSError):
                    pipe = self.client.pipeline(transaction=False)
                    pipe.delete(keys.worker_heartbeat(self.worker))
                    pipe.srem(keys.WORKERS, self.worker)
                    await pipe.execute()
        if self._owns_client:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()

    def _spool_unwritten(self) -> None:
        """At close: what Redis did not take goes to a spool file, logged and counted (never dropped silently)."""
        spooled, failed = spool_at_close(self.pending, self.spool_dir, self.worker, self.connected)
        self.spooled_calls += spooled
        self.spool_failures += failed

    async def __aenter__(self) -> CallStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def queue_depth(self) -> int:
        return self.pending.queue_depth

    @property
    def dropped_writes(self) -> int:
        return self.pending.dropped_writes

    @property
    def live_calls(self) -> list[str]:
        """Calls of this worker that have begun and not ended (in memory; no Redis read)."""
        return self.pending.live_calls

    @property
    def writes_waiting(self) -> float:
        """Seconds this writer's writes have waited for Redis (an outage, or a primary switch not yet re-synced);
        0 when they do not wait. ``/healthz`` says degraded while any worker's do."""
        since = self.stall.waiting_since
        return 0.0 if since is None else max(time.monotonic() - since, 1e-3)

    def request_resync(self) -> None:
        """Rewrite everything held in memory with the next write, as after an outage (e.g. after a FLUSHALL)."""
        self._resync = True
        self._wake.set()

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued is written (tests, shutdown). False if Redis did not take it in time."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        self._flushing += 1  # the ticking fields too, at once
        try:
            while self.queue_depth or self._writing or self._resync or self.pending.unwritten:
                if asyncio.get_running_loop().time() > deadline or self._task is None or self._task.done():
                    return False
                self._wake.set()
                await asyncio.sleep(0.01)
        finally:
            self._flushing -= 1
        return True

    # ---------------------------------------------------------------------------------------- write side (sync)
    def begin(self, call_id: str, **identity: str) -> None:
        """A call starts: its hash gets every field (empty where unknown yet) and it joins the live set. ``identity``:
        its caller, called, original_called, dialplan, variant, dialect, model and voice (any other name is
        ignored)."""
        self.pending.begin(call_id, **identity)

    def update(self, call_id: str, **fields: Any) -> None:
        """Set hash fields (names from :data:`keys.CALL_FIELDS`; others are ignored). Memory only; never raises."""
        self.pending.update(call_id, **fields)

    def event(self, call_id: str, kind: str, summary: str = "", /, **data: Any) -> None:
        """Append an entry to the call's stream (in order). Memory only; never raises. ``data`` may name a field
        like a parameter (a tool result's ``call_id`` is the model's, not the call's): the parameters are positional."""
        self.pending.event(call_id, kind, summary, **data)

    def end(self, call_id: str, reason: str) -> None:
        """The call is over: phase ENDED, ended_at, end_reason; it leaves the live set with the next write."""
        self.pending.end(call_id, reason)

    def refuse(self) -> None:
        """An INVITE this worker refused with 486 or 503 (a caller who did not get through): counted per minute
        with the next write. Memory only; never raises."""
        self.pending.refuse()
        self._wake.set()

    def watch(self, call_id: str, probe: Probe) -> None:
        """Poll ``probe()`` at every flush for fields that change too often to report one by one (for example
        ``{"last_user_audio_seq": session.frames_appended}``). Runs on the loop, off the media path."""
        self.pending.watch(call_id, probe)

    def listener_for(self, call_id: str, **identity: str) -> Listener:
        """A ``CallSession.listeners`` entry for one call: session reports become hash fields and stream entries.

        ``identity`` (caller, called, original_called, dialplan, variant, dialect, model, voice) begins the call if it
        has not begun. The mapping: :class:`~bridge.events.PhaseChanged` -> phase;
        :class:`~bridge.events.ResponseBegan` -> response_id; :class:`~bridge.events.TruncateSent` -> played_ms (the
        ``audio_end_ms`` the caller heard); :class:`~bridge.events.CallerSaid` / :class:`~bridge.events.AgentSaid` ->
        last_transcript and item_id; :class:`~bridge.events.LongestSilence` -> longest_silence_ms;
        :class:`~bridge.events.LongestWait` -> longest_wait_ms; :class:`~bridge.events.Answered` -> answered_at
        (unless the worker's webhooks set it); any stored report field named like a protocol or
        progress field (session_id, conversation_id, item_id, ...) -> that field; :class:`~bridge.events.CallEnded` ->
        :meth:`end`. Every report but :class:`~bridge.events.Latency` is streamed (kind, summary and the stored
        fields).
        """
        self.begin(call_id, **identity)

        def listener(report: ev.Report) -> None:
            self.pending.on_report(call_id, report)

        return listener

    # ---------------------------------------------------------------------------------------- the writer task
    async def _run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.tuning.flush_interval_s)
            self._wake.clear()
            try:
                began = time.monotonic()
                more = await self._write_once()
                if (waited := self.stall.written(began)) is not None:
                    where = self.primary_watch.describe() if self.primary_watch is not None else ""
                    log.info("Redis at %s is back after %.1f s%s: call state re-synced", self.where, waited, where)
                self._in_outage = False
                self.connected = True
                delays = None
                if self._closing and not more:
                    return
                if more:
                    self._wake.set()
            except Exception as exc:  # the writer must outlive anything, or calls would stop being recorded
                self._failed(exc)
                if self._closing:
                    return
                delays = delays or backoff(self.tuning.retry_initial_s, 2.0, self.tuning.retry_cap_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_closing(), next(delays))

    def _failed(self, exc: Exception) -> None:
        """A write failed: count it, and re-sync everything once Redis answers again."""
        self.write_errors += 1
        self.last_error = redact(f"{type(exc).__name__}: {exc}")
        self.connected = False
        self._resync = True
        self.stall.waiting()
        if not self._in_outage and not isinstance(exc, PrimaryMoved):  # a move is logged as such, not as an outage
            self._in_outage = True
            self.outages += 1
            if is_outage(exc):
                log.warning("Redis at %s unavailable, queueing call state: %s", self.where, self.last_error)
            else:
                log.exception("call state writer failed; queueing and retrying")

    def _primary_moved(self, address: Address) -> None:
        """Sentinel moved the primary: writes wait until everything held in memory is re-synced onto the new one
        (what went to the old primary since the switch is lost with its demotion)."""
        log.warning("Redis primary moved to %s (Sentinel failover): re-syncing call state there", address_text(address))
        self.stall.waiting()
        self.request_resync()

    async def _wait_closing(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()

    async def _write_once(self) -> bool:
        """One pipeline. Returns True if entries are still queued (write again at once)."""
        now, tick = self._clock(), time.monotonic()  # stamps from the clock, intervals monotonic
        resync = self._resync
        if resync and self._first_sync:
            for _, calls in await replay_spool(
                self.client, self.spool_dir, stream_maxlen=self.tuning.stream_maxlen, call_ttl_s=self.tuning.call_ttl_s
            ):
                self.replayed_calls += calls
            await self._adopt_leftovers()
        self.pending.poll_probes(now)
        heartbeat = resync or tick - self._last_heartbeat >= self.tuning.heartbeat_interval_s
        ticks = heartbeat or self._closing or self._flushing > 0
        batch = self.pending.take(resync, ticks=ticks, at=tick, ttl_refresh_s=self.tuning.ttl_refresh_s)
        live_ttl = resync or any(not ended for ended in batch.members.values())
        live_ttl = live_ttl or (heartbeat and tick - self._live_ttl_at >= self.tuning.ttl_refresh_s)
        pipe, hb_index = self._pipeline(batch, stamp(now) if heartbeat else None, resync=resync, live_ttl=live_ttl)
        if not len(pipe):
            return False
        self._resync = False  # set again by a failure, or by a primary switch while this write is on its way
        with self.primary_watch.carrying_resync() if resync and self.primary_watch else contextlib.nullcontext():
            results = await self._send(pipe, batch)
        self.pending.written(batch)
        if live_ttl:
            self._live_ttl_at = tick
        if resync:
            if not self._first_sync:
                self.resyncs += 1
            self._first_sync = False
        self.flushes += 1
        if heartbeat:
            self._last_heartbeat = tick
            if not resync and results[hb_index] is None:
                # Our heartbeat had expired (the loop stalled, or Redis lost its data without us seeing an error): a
                # reaper may have marked our calls ended. Rewrite everything at once.
                log.warning("worker %s: heartbeat had expired; re-syncing call state", self.worker)
                self._resync = True
                return True
        reap = self.tuning.reap_interval_s is not None and tick - self._last_reap >= self.tuning.reap_interval_s
        if reap and self.stall.may_reap(tick):  # not within a grace after a stall: others are writing theirs again
            self._last_reap = tick
            await self.reap_dead_workers()
        return bool(self.pending.queue)

    def _pipeline(
        self, batch: Batch, heartbeat_at: str | None, *, resync: bool, live_ttl: bool
    ) -> tuple[Pipeline, int]:
        """One write's commands (one round trip): per call its hash, TTL when due, membership, the stream entries and
        their TTL when due, the heartbeat (its index returned: ``SET ... GET``'s old value says if it had expired)."""
        pipe = self.client.pipeline(transaction=False)
        live = keys.worker_calls(self.worker)
        ttl = self.tuning.call_ttl_s
        for call_id in batch.order:
            if (fields := batch.hashes.get(call_id)) is not None:
                pipe.hset(keys.call(call_id), mapping=fields)
            if call_id in batch.expire:
                pipe.expire(keys.call(call_id), ttl)
            if (ended := batch.members.get(call_id)) is not None:
                if ended:
                    pipe.srem(live, call_id)
                    state = self.pending.calls[call_id].state if call_id in self.pending.calls else {}
                    index_ended(pipe, call_id, as_float(state.get("ended_at")) or self._clock(), self.tuning.call_ttl_s)
                else:
                    pipe.sadd(live, call_id)
        streamed = batch.streamed
        for entry in streamed:
            stream = keys.call_events(entry.call_id)
            pipe.xadd(stream, dict(entry.fields), id=entry.id, maxlen=self.tuning.stream_maxlen, approximate=True)
        for call_id in sorted(batch.expire_streams):
            pipe.expire(keys.call_events(call_id), ttl)
        if live_ttl:
            pipe.expire(live, ttl)
        for minute, count in sorted(batch.refused.items()):
            pipe.incrby(keys.refused_calls(minute), count)
            pipe.expire(keys.refused_calls(minute), keys.REFUSED_TTL_S)
        hb_index = -1
        if heartbeat_at is not None:
            hb_index = len(pipe)
            pipe.set(keys.worker_heartbeat(self.worker), heartbeat_at, ex=self.tuning.heartbeat_ttl_s, get=True)
            if resync:  # the reaper takes a worker it buried out of the set: its next write is a re-sync
                pipe.sadd(keys.WORKERS, self.worker)
        return pipe, hb_index

    async def _send(self, pipe: Pipeline, batch: Batch) -> list[Any]:
        """Run the pipeline. An outage puts the batch back and raises; other refusals are counted and logged."""
        self._writing = True
        try:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        except BaseException:
            self.pending.restore(batch)
            raise
        finally:
            self._writing = False
        outage = next((r for r in results if isinstance(r, Exception) and is_outage(r)), None)
        if outage is not None:
            self.pending.restore(batch)
            raise outage
        for r in results:
            if isinstance(r, Exception) and not _duplicate_id(r):
                self.rejected_writes += 1
                log.error("Redis refused a call state write: %s", redact(str(r)))
        return results

    async def _adopt_leftovers(self) -> None:
        """Calls a previous process with this worker id left in the live set are over: mark them ended."""
        known = await self.client.smembers(keys.worker_calls(self.worker))
        stale = sorted(c for c in (text(k) for k in known) if c not in self.pending.calls)
        if stale:
            ended = await mark_ended(self.client, stale, "worker restarted", now=self._clock())
            await self.client.srem(keys.worker_calls(self.worker), *stale)
            log.warning("worker %s: marked %d call(s) of a previous run ended", self.worker, len(stale))
            await report_orphans(self.client, ended, self.on_orphaned, self.on_lost)

    # ---------------------------------------------------------------------------------------- read side
    async def list_calls(self) -> list[CallSummary]:
        """Live calls across all workers (phase, dialect, duration, last transcript line). Raises StoreUnavailable."""
        return await read_live_calls(self.client, now=self._clock(), where=self.where)

    async def get_call(self, call_id: str, *, count: int = RECENT_EVENTS) -> CallDetail | None:
        """The call's hash and recent stream entries. Raises StoreUnavailable."""
        return await read_call(self.client, call_id, count=count, where=self.where)

    async def reap_dead_workers(self) -> dict[str, list[str]]:
        """Mark the calls of workers whose heartbeat expired and that do not answer SIP ended ("worker died"); never
        this worker's own (:mod:`bridge.store.reaper`)."""
        out = await self.reaper.round(self.client, now=self._clock())
        self.reaped_calls += sum(len(calls) for calls in out.values())
        await report_orphans(self.client, [c for calls in out.values() for c in calls], self.on_orphaned, self.on_lost)
        return out
