"""What the console pushes to the browser with server-sent events (the WHATWG HTML "Server-sent events" format).

**Live calls** (:class:`LiveCalls`): one watcher task for every open page. While at least one page listens it reads
the live calls of every worker from Redis (:func:`bridge.store.read.read_live_calls`) every
:data:`POLL_INTERVAL_S`, compares them with the previous read (:func:`diff`) and sends each page only the changes:

* ``snapshot`` ``{"calls": [row, ...], "now": epoch s}`` when a page connects;
* ``upsert`` ``row`` when a call appears or any of its row fields changes (phase, last line said, ...);
* ``remove`` ``{"call_id"}`` when it leaves the live set (it ended, or was marked ended for a dead worker);
* ``store`` ``{"ok": bool, "error"?}`` when Redis stops or starts answering.

A row carries the call's marks (``flags``: :mod:`.flags`, from its stream entries, read as they come) with the worst
one's ``severity``, and ``activity``: what is going on in words ("agent speaking", "on hold", ...), each word held
at least :data:`bridge.supervisor.flags.STEADY_S`.

A row's ``status`` is ``live``, or ``lost`` when its worker is dead: a worker of this ``serve`` whose process is gone
(known at once from the pool), or any worker, on any node, whose heartbeat expired. Its calls stay ``lost`` until
they are marked ended (by this node's pool, which closes a dead worker's calls at once, ``bridge.serve.lost``; or a
reaper, or the restarted worker), and then leave. The duration is not pushed: the page counts it
from ``started_at``, offset by the server's ``now``.

**One call** (:func:`follow_call`): ``call`` (the Redis hash) at once and whenever it changes, ``entries`` (the recent
stream entries) at once, then ``entry`` for each new stream entry as it is written (``XREAD BLOCK``), ``latency``
(:func:`bridge.supervisor.timeline.latency`) whenever an entry changed it, ``actions`` (the call's supervisor actions
from the call-actions audit, :mod:`.action_audit`: who did what, and whether a worker took it) at once, then
``action`` for each one audited later (read with the hash), ``marks`` (``{"flags", "severity"}``: the call's marks
as the lists show them, :class:`~bridge.supervisor.flags.CallWatch` over its entries) at once and whenever they
change (a new entry, or a caller waiting long enough now for ``slow agent``), and ``done`` once the call has ended and
its stream is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from bridge.call.state import Phase
from bridge.dialplan import Watch
from bridge.errors import redact
from bridge.store import keys
from bridge.store.connection import StoreUnavailable
from bridge.store.read import CallSummary, StreamEntry, read_call, read_call_events, read_live_calls, stream_entry
from bridge.supervisor.action_audit import actions_after, call_actions
from bridge.supervisor.flags import CallWatch, Steady, worst
from bridge.supervisor.timeline import latency

log = logging.getLogger("bridge.supervisor")

POLL_INTERVAL_S = 0.25  # the call store flushes every 0.15 s: a change reaches a page in well under a second
QUEUE_MAX = 1000  # events held for one slow page; beyond it the page is dropped (its EventSource reconnects)
FOLLOW_BLOCK_MS = 500  # XREAD BLOCK: under the Redis client's socket timeout
STATE_EVERY_S = 1.0  # how often a followed call's hash is re-read (a reaper changes it without a stream entry)
DONE_AFTER_S = 2.0  # an ended call's stream is followed this much longer for its last entries

Row = dict[str, Any]
Event = tuple[str, Any]  # (SSE event name, JSON data)
ROW_FIELDS = (
    "worker",
    "phase",
    "dialect",
    "variant",
    "dialplan",
    "caller",
    "called",
    "original_called",
    "model",
    "voice",
    "started_at",
    "last_transcript",
    "transfer",
)


class RowStatus(enum.StrEnum):
    """A live call's row ``status``: its worker is alive, or gone (the module doc)."""

    LIVE = "live"
    LOST = "lost"


def row(call: CallSummary, lost_workers: Collection[str], seen: Seen | None = None, now: float = 0.0) -> Row:
    """A live call's row; ``seen``: what its stream entries told so far (its marks and activity)."""
    lost = not call.worker_alive or call.worker in lost_workers
    out: Row = {"call_id": call.call_id, "status": RowStatus.LOST if lost else RowStatus.LIVE}
    out.update({name: getattr(call, name) for name in ROW_FIELDS})
    if seen is not None:
        seen.watch.note({"fallback": call.fallback})
        marks = seen.watch.marks(now)
        word = seen.watch.activity(
            {"phase": call.phase, "on_hold": call.on_hold, "in_outage": call.in_outage, "transfer": call.transfer}
        )
        out.update(flags=marks, severity=worst(marks), activity=seen.steady.show(word, now))
        out["taken_over_by"] = seen.watch.taken_over_by  # a supervisor talks to the caller: the others see who
    return out


class Seen:
    """One live call as the watcher follows it: its :class:`~bridge.supervisor.flags.CallWatch` and shown word."""

    def __init__(self, watch: Watch) -> None:
        self.watch = CallWatch(watch)
        self.steady = Steady()


async def read_new_entries(
    redis: aioredis.Redis, seen: Mapping[str, Seen], where: str = "redis client"
) -> dict[str, list[StreamEntry]]:
    """Each followed call's stream entries after the last one fed (one pipeline). Raises StoreUnavailable."""
    ids = list(seen)
    try:
        pipe = redis.pipeline(transaction=False)
        for call_id in ids:
            after = seen[call_id].watch.after
            pipe.xrange(keys.call_events(call_id), min="-" if after == "0-0" else f"({after}")
        replies = await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(where, str(exc) or type(exc).__name__) from None
    return {call_id: [stream_entry(i, f) for i, f in r] for call_id, r in zip(ids, replies, strict=True) if r}


def diff(old: Mapping[str, Row], new: Mapping[str, Row]) -> list[Event]:
    """The events that turn the table ``old`` into ``new`` (call id -> row): removals first, then upserts in the
    order of ``new``."""
    events: list[Event] = [("remove", {"call_id": call_id}) for call_id in old if call_id not in new]
    events += [("upsert", r) for call_id, r in new.items() if old.get(call_id) != r]
    return events


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_MAX)

    def put(self, event: Event | None) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def end(self) -> None:
        """Drop what is queued and end :meth:`events` (a page too slow to keep up reconnects for a snapshot)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event


class LiveCalls:
    """The live-calls table, read from Redis by one task while any page listens, and fanned out to every page."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        lost_workers: Callable[[], Collection[str]] = frozenset,
        interval_s: float = POLL_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        watch_of: Callable[[str], Watch] = lambda plan: Watch(),
    ) -> None:
        self.redis = redis
        self.lost_workers = lost_workers
        self.watch_of = watch_of  # a plan's thresholds for the marks (by plan name)
        self.seen: dict[str, Seen] = {}
        self.interval_s = interval_s
        self.clock = clock
        self.rows: dict[str, Row] = {}
        self.store_ok: bool | None = None
        self.store_error = ""
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._first_read = asyncio.Event()

    async def subscribe(self) -> Subscription:
        """A new page: its snapshot is the first event it gets."""
        sub = Subscription()
        self._subscribers.add(sub)
        if self._task is None or self._task.done():
            self._first_read.clear()
            self._task = asyncio.create_task(self._run(), name="console-live-calls")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_read.wait(), 2.0)
        sub.put(("snapshot", {"calls": list(self.rows.values()), "now": self.clock()}))
        if self.store_ok is False:
            sub.put(("store", {"ok": False, "error": self.store_error}))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    async def close(self) -> None:
        for sub in list(self._subscribers):
            sub.end()
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _publish(self, events: list[Event]) -> None:
        for sub in list(self._subscribers):
            for event in events:
                if not sub.put(event):
                    self._subscribers.discard(sub)
                    sub.end()
                    break

    async def _run(self) -> None:
        while self._subscribers:
            try:
                calls = await read_live_calls(self.redis, now=self.clock())
            except StoreUnavailable as exc:
                if self.store_ok is not False:
                    self.store_ok, self.store_error = False, redact(exc.detail)
                    log.warning("console: %s", exc)
                    self._publish([("store", {"ok": False, "error": self.store_error})])
            except Exception:  # the watcher must outlive anything, or every open page would freeze
                log.exception("console: reading the live calls failed")
            else:
                if self.store_ok is False:
                    self._publish([("store", {"ok": True})])
                self.store_ok = True
                lost = self.lost_workers()
                await self._follow(calls)
                now = self.clock()
                new = {c.call_id: row(c, lost, self.seen[c.call_id], now) for c in calls}
                events = diff(self.rows, new)
                self.rows = new
                if events:
                    self._publish(events)
            self._first_read.set()
            await asyncio.sleep(self.interval_s)
        self.rows, self.seen = {}, {}  # nobody listens: the next page starts from a fresh read

    async def _follow(self, calls: list[CallSummary]) -> None:
        """Feed each live call's new stream entries to its watch (a call seen first: its whole stream)."""
        live = {c.call_id: c for c in calls}
        self.seen = {cid: self.seen.get(cid) or Seen(self.watch_of(c.dialplan)) for cid, c in live.items()}
        for call_id, entries in (await read_new_entries(self.redis, self.seen)).items():
            self.seen[call_id].watch.feed(entries)


def _public(state: Mapping[str, str]) -> dict[str, str]:
    """The hash without ``sip_dialog`` (a restarted worker's means to hang up; nothing a supervisor reads)."""
    return {k: v for k, v in state.items() if k != "sip_dialog"}


class _Marks:
    """One followed call's marks: fed its entries, it says when what the page shows must change."""

    def __init__(self, watch: Watch, wall: Callable[[], float]) -> None:
        self.watch = CallWatch(watch)
        self.wall = wall
        self.shown: dict[str, Any] | None = None

    def changed(self, entries: list[StreamEntry], ended: bool) -> dict[str, Any] | None:
        """The marks to send now (None: as shown)."""
        self.watch.feed(entries)
        marks = self.watch.marks(None if ended else self.wall())
        now = {"flags": marks, "severity": worst(marks)}
        if now == self.shown:
            return None
        self.shown = now
        return now


async def follow_call(
    redis: aioredis.Redis,
    call_id: str,
    *,
    clock: Callable[[], float] = time.monotonic,
    watch_of: Callable[[str], Watch] = lambda plan: Watch(),
    wall: Callable[[], float] = time.time,
) -> AsyncIterator[Event]:
    """The events of one call's detail view (module docstring); ``watch_of``: a plan's thresholds for the marks (by
    plan name). Raises StoreUnavailable."""
    detail = await read_call(redis, call_id, count=keys.STREAM_MAXLEN)
    if detail is None:
        yield ("missing", {"call_id": call_id})
        return
    state, entries = _public(detail.state), list(detail.events)
    yield ("call", state)
    yield ("entries", [e.to_json() for e in entries])
    measured = latency(entries)
    yield ("latency", measured)
    marks = _Marks(watch_of(state.get("dialplan", "")), wall)
    marks.watch.note(state)
    yield ("marks", marks.changed(entries, state.get("phase") == Phase.ENDED))
    acted, after_action = await call_actions(redis, call_id)
    yield ("actions", acted)
    after = entries[-1].id if entries else "0-0"
    next_state = clock() + STATE_EVERY_S
    ended_at: float | None = clock() if state.get("phase") == Phase.ENDED else None
    while True:
        new: list[StreamEntry] = await read_call_events(redis, call_id, after=after, block_ms=FOLLOW_BLOCK_MS)
        for e in new:
            yield ("entry", e.to_json())
        if new:
            after = new[-1].id
            entries = (entries + new)[-keys.STREAM_MAXLEN :]
            now_measured = latency(entries)
            if now_measured != measured:
                measured = now_measured
                yield ("latency", measured)
        if new or clock() >= next_state:
            next_state = clock() + STATE_EVERY_S
            fresh = await read_call(redis, call_id, count=1)
            if fresh is not None and _public(fresh.state) != state:
                state = _public(fresh.state)
                marks.watch.note(state)
                yield ("call", state)
            if state.get("phase") == Phase.ENDED and ended_at is None:
                ended_at = clock()
            if (now_marks := marks.changed(new, ended_at is not None)) is not None:
                yield ("marks", now_marks)
            acted, after_action = await actions_after(redis, call_id, after_action)
            for action in acted:
                yield ("action", action)
        if ended_at is not None and not new and clock() - ended_at >= DONE_AFTER_S:
            yield ("done", {"call_id": call_id})
            return
