"""Pending webhook deliveries in Redis (keys: :mod:`bridge.store.keys`, ``cb:{webhooks}:*``; scripts:
:mod:`bridge.webhooks.scripts`).

A delivery is one event for one endpoint: ``<endpoint>|<webhook id>``, its record (the body as signed, the attempts
so far, the last failure, its call and ``seq``, and its seal: :func:`bridge.webhooks.signing.queue_seal`) in one
hash. Each endpoint has its own queue (its due set, its
pending set by queueing time, its dead letters, its calls' chains), so one endpoint's backlog never stands in front of
another's, and its own caps (:class:`~bridge.webhooks.limits.Limits`). A deliverer **claims** one endpoint's due
deliveries with a lease: one Lua script moves each one's due time to the lease's end, so no other deliverer (another
node) sees it until then; its attempt **settles** it (delivered: gone; failed: due again after the schedule's delay,
or a dead letter) only while that lease is still its own (the due time it set), so a deliverer that stalled past its
lease cannot undo another's work. A deliverer that dies mid-attempt leaves its claims to come due again at the lease's
end: delivered at least once. One call's deliveries to one endpoint go in order (a chain: the next is due once the one
before is delivered, given up or dropped). A call's last event (``call.ended``) is queued once per endpoint, whoever
emits it (its worker, or the pool or a reaper for a call whose worker died): a second is refused and counted.

Queueing pushes a token on ``cb:{webhooks}:wake``; a deliverer blocks on it (:func:`wait_for_work`) instead of
polling.
"""

from __future__ import annotations

import json
import os
import socket
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import redis.asyncio as aioredis

from bridge.store import keys
from bridge.webhooks import scripts, signing
from bridge.webhooks.limits import Limits

SEP = "|"
PARTS = ("due", "pending", "waiting", "heads", "dead", "ended", "leases")
LAST_EVENT: Final = "call.ended"  # a call's last event: one per call and endpoint
ENDED_KEEP_S: Final = keys.CALL_TTL_S  # a call whose last event was queued is remembered this long (its hash too)


@dataclass
class Delivery:
    """One event for one endpoint. ``body`` is the exact text that is signed and sent; ``last`` the last failure
    (``503``, ``timeout``, ``redirect 302 not followed``, ...); ``chain`` the call it belongs to ("" none) and ``seq``
    its place among that call's events."""

    id: str
    endpoint: str
    type: str
    body: str
    created: float
    attempts: int = 0
    last: str = ""
    chain: str = ""
    seq: int = 0
    seal: str = ""  # signing.queue_seal of what is sent, made when it was queued ("": unsealed)

    @property
    def key(self) -> str:
        return f"{self.endpoint}{SEP}{self.id}"

    def sealed_parts(self) -> tuple[str | int, ...]:
        """What its seal covers: everything that decides what is sent, where, and in which order."""
        return (self.id, self.endpoint, self.type, self.body, self.chain, self.seq)

    def sealed(self, key: bytes | None) -> Delivery:
        """Itself, sealed with ``key`` (None: as it is)."""
        if key is not None:
            self.seal = signing.queue_seal(key, self.sealed_parts())
        return self

    def ended_slot(self, key: bytes | None) -> str:
        """Its call's one ``call.ended`` slot per endpoint ("": not a call's last event): the call, and with the queue's
        seal ``key`` a MAC of the endpoint and the call beside it, which every node sealing with that key makes alike
        (the worker and a reaper share the slot) and a writer of Redis without it cannot (a forged ``call.ended``
        takes a slot of its own, never the real call's)."""
        if self.type != LAST_EVENT or not self.chain:
            return ""
        if key is None:
            return self.chain
        return f"{self.chain}{SEP}{signing.queue_seal(key, ('ended', self.endpoint, self.chain))}"

    def holds(self, key: bytes) -> bool:
        """Whether its seal is the one ``key`` makes (a delivery queued by this product, unchanged since)."""
        return signing.seal_holds(key, self.sealed_parts(), self.seal)

    def record(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    def size(self) -> int:
        """Bytes of its record (what the caps count)."""
        return len(self.record().encode())

    @classmethod
    def from_record(cls, text: str) -> Delivery:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data and data[k] is not None})

    @classmethod
    def read(cls, key: str, text: str) -> Delivery:
        """The delivery ``key`` (``<endpoint>|<webhook id>``) from its record as Redis holds it; a record that does not
        read as one (anyone who writes Redis can put anything there) is an empty, unsealed delivery of that key, which
        the deliverer refuses (:meth:`refusal`) instead of failing the whole claim."""
        try:
            d = cls.from_record(text)
            texts = (d.id, d.endpoint, d.type, d.body, d.chain, d.seal)
            if all(isinstance(t, str) for t in texts) and type(d.seq) is int and type(d.attempts) is int:
                return d
        except (ValueError, TypeError, AttributeError):
            pass
        endpoint, _, msg_id = key.rpartition(SEP)
        return cls(msg_id, endpoint, "", "", 0.0, last="its record in Redis is not readable")

    def refusal(self, key: bytes | None) -> str | None:
        """Why it may not be sent (None: it may): unreadable, or, with the queue's ``key``, its seal does not hold."""
        if not self.type:
            return "its record in Redis is not readable"
        if key is not None and not self.holds(key):
            return (
                "its seal does not hold (not queued by this product, or changed in Redis since, or queued by a node "
                "with another listen_key)"
            )
        return None


@dataclass(frozen=True)
class Queued:
    """What one :func:`enqueue` did, by endpoint (only those with any): deliveries dropped past the caps, and calls'
    last events refused because one was queued for the call already."""

    dropped: dict[str, int]
    twice: dict[str, int]


@dataclass(frozen=True)
class Claim:
    """What one claim got: the deliveries, leased until ``lease``; ``next_due``: the earliest due time left in the
    endpoint's queue (a lease's end included; None: nothing due, ever, until something is queued)."""

    lease: float
    deliveries: list[Delivery]
    next_due: float | None


@dataclass(frozen=True)
class Lease:
    """A claimed delivery's lease: ``holder`` sends it until ``until`` (then it is due again, for anyone)."""

    until: float
    holder: str


def holder_name() -> str:
    """Who claims, as a listing names it: this host and process (``node-a pid 4242``)."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def endpoint_keys(endpoint: str) -> list[str]:
    """The keys every script of one endpoint takes (:mod:`bridge.webhooks.scripts`)."""
    common = [keys.WEBHOOKS_DELIVERIES, keys.WEBHOOKS_ENDPOINTS, keys.WEBHOOKS_BYTES, keys.WEBHOOKS_WAKE]
    return common + [keys.webhooks_of(endpoint, part) for part in PARTS]


async def _run(client: aioredis.Redis, script: str, endpoint: str, now: float, dead_ttl_s: float, *args: Any) -> Any:
    names = endpoint_keys(endpoint)
    return await client.eval(script, len(names), *names, endpoint, repr(now), repr(now - dead_ttl_s), *args)


async def enqueue(
    client: aioredis.Redis,
    deliveries: Iterable[Delivery],
    now: float,
    limits: Limits,
    seal_key: bytes | None = None,
) -> Queued:
    """Queue ``deliveries``, each due at once unless an earlier one of its call waits for the same endpoint. One that
    is already queued (a spool file written twice) keeps its state; a call's second last event is not queued (its
    slot named with ``seal_key``, the queue's: :meth:`Delivery.ended_slot`). Past an endpoint's caps its oldest are
    dropped."""
    by_endpoint: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        by_endpoint[d.endpoint].append(d)
    out = Queued({}, {})
    for endpoint, batch in by_endpoint.items():
        args: list[Any] = [limits.max_events, limits.max_bytes, ENDED_KEEP_S]
        for d in batch:
            args += [d.key, d.record(), repr(d.created), d.chain, d.seq, d.ended_slot(seal_key)]
        _, gone, twice = await _run(client, scripts.ENQUEUE, endpoint, now, limits.dead_ttl_s, *args)
        for counts, n in ((out.dropped, int(gone)), (out.twice, int(twice))):
            if n:
                counts[endpoint] = n
    return out


async def claim(
    client: aioredis.Redis,
    endpoint: str,
    now: float,
    lease_s: float,
    limit: int,
    dead_ttl_s: float,
    holder: str | None = None,
) -> Claim:
    """Up to ``limit`` of ``endpoint``'s deliveries due by ``now``, each leased until the returned time to ``holder``
    (default: :func:`holder_name`)."""
    lease = round(now + lease_s, 3)
    who = holder_name() if holder is None else holder
    out = await _run(client, scripts.CLAIM, endpoint, now, dead_ttl_s, repr(lease), str(limit), who)
    found = [Delivery.read(_text(out[i]), _text(out[i + 1])) for i in range(1, len(out), 2)]
    nxt = _text(out[0])
    return Claim(lease, found, float(nxt) if nxt else None)


async def settle(
    client: aioredis.Redis,
    delivery: Delivery,
    lease: float,
    mode: Literal["done", "retry", "dead"],
    at: float,
    dead_ttl_s: float,
    now: float,
) -> bool:
    """Settle a claimed delivery (``at``: its next due time, or when it was given up); False if its lease was lost
    (another deliverer has it now, or it was dropped)."""
    args = (delivery.key, repr(lease), mode, delivery.record(), repr(at))
    return bool(await _run(client, scripts.SETTLE, delivery.endpoint, now, dead_ttl_s, *args))


async def retry_dead(client: aioredis.Redis, ids: Iterable[str], now: float, dead_ttl_s: float) -> int:
    """Send dead letters again (``<endpoint>|<webhook id>``), due now, from the start of the schedule; none named:
    all of them. How many went back."""
    named: dict[str, list[str]] = defaultdict(list)
    for key in ids:
        named[key.rpartition(SEP)[0]].append(key)
    every = not named
    endpoints = await _members(client) if every else sorted(named)
    n = 0
    for endpoint in endpoints:
        n += int(await _run(client, scripts.RETRY, endpoint, now, dead_ttl_s, *named.get(endpoint, [])))
    return n


async def wait_for_work(client: aioredis.Redis, timeout_s: float) -> bool:
    """Block until something is queued (a token on the wake list; True) or ``timeout_s`` passes (False). ``client``
    must allow a read longer than ``timeout_s``."""
    return await client.blpop([keys.WEBHOOKS_WAKE], timeout=timeout_s) is not None


async def _members(client: aioredis.Redis) -> list[str]:
    return sorted(_text(m) for m in await client.smembers(keys.WEBHOOKS_ENDPOINTS))


async def stored_endpoints(client: aioredis.Redis) -> list[str]:
    """The endpoints with deliveries or dead letters in Redis."""
    return await _members(client)


async def listing(client: aioredis.Redis, *, dead: bool) -> list[Delivery]:
    """The pending deliveries (by queueing time) or the dead letters (by the time they were given up)."""
    scored: list[tuple[float, str]] = []
    for endpoint in await _members(client):
        pairs: Any = await client.zrange(
            keys.webhooks_of(endpoint, "dead" if dead else "pending"), 0, -1, withscores=True
        )
        scored += [(float(s), _text(k)) for k, s in pairs]
    ids = [k for _, k in sorted(scored)]
    records = await client.hmget(keys.WEBHOOKS_DELIVERIES, ids) if ids else []
    return [Delivery.read(key, _text(r)) for key, r in zip(ids, records, strict=True) if r is not None]


async def due_times(client: aioredis.Redis) -> dict[str, float]:
    """Each due delivery's due time (a claimed one's: its lease's end; one waiting behind an earlier event of its call
    has none yet)."""
    return await _scores(client, "due")


async def leases(client: aioredis.Redis, now: float) -> dict[str, Lease]:
    """The deliveries in flight at ``now``: claimed, their lease still running and still the one that claim set (a
    lease that ran out, its deliverer stopped, is none: the delivery is due again)."""
    out: dict[str, Lease] = {}
    for endpoint in await _members(client):
        notes: Any = await client.hgetall(keys.webhooks_of(endpoint, "leases"))
        if not notes:
            continue
        due: Any = await client.zmscore(keys.webhooks_of(endpoint, "due"), list(notes))
        for (key, note), score in zip(notes.items(), due, strict=True):
            until, _, holder = _text(note).partition(SEP)
            try:
                lease = Lease(float(until), holder)
            except ValueError:
                continue
            if score is not None and float(score) == lease.until and lease.until > now:
                out[_text(key)] = lease
    return out


async def dead_times(client: aioredis.Redis) -> dict[str, float]:
    """When each dead letter was given up."""
    return await _scores(client, "dead")


async def _scores(client: aioredis.Redis, part: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for endpoint in await _members(client):
        pairs: Any = await client.zrange(keys.webhooks_of(endpoint, part), 0, -1, withscores=True)
        out.update({_text(k): float(s) for k, s in pairs})
    return out


async def backlog(client: aioredis.Redis, now: float) -> tuple[int, float]:
    """How many deliveries are pending, and the age in seconds of the oldest (0: none)."""
    endpoints = await _members(client)
    if not endpoints:
        return 0, 0.0
    pipe = client.pipeline(transaction=False)
    for endpoint in endpoints:
        pipe.zcard(keys.webhooks_of(endpoint, "pending"))
        pipe.zrange(keys.webhooks_of(endpoint, "pending"), 0, 0, withscores=True)
    results = await pipe.execute()
    count = sum(int(n) for n in results[0::2])
    oldest = [float(first[0][1]) for first in results[1::2] if first]
    return count, max(0.0, now - min(oldest)) if oldest else 0.0


async def adopt_legacy(client: aioredis.Redis) -> int:
    """Move what a version before per-endpoint queues left (one due set, one dead set) into the endpoints' queues:
    pending ones keep their due time (out of any chain), dead letters their time of death. How many moved."""
    due: Any = await client.zrange(keys.WEBHOOKS_LEGACY_DUE, 0, -1, withscores=True)
    dead: Any = await client.zrange(keys.WEBHOOKS_LEGACY_DEAD, 0, -1, withscores=True)
    if not due and not dead:
        return 0
    found = [(_text(k), float(s), False) for k, s in due] + [(_text(k), float(s), True) for k, s in dead]
    records = await client.hmget(keys.WEBHOOKS_DELIVERIES, [k for k, _, _ in found])
    pipe = client.pipeline(transaction=False)
    for (key, score, is_dead), rec in zip(found, records, strict=True):
        if rec is None:
            continue
        d = Delivery.read(key, _text(rec))
        pipe.sadd(keys.WEBHOOKS_ENDPOINTS, d.endpoint)
        pipe.hincrby(keys.WEBHOOKS_BYTES, d.endpoint, len(_text(rec).encode()))
        if is_dead:
            pipe.zadd(keys.webhooks_of(d.endpoint, "dead"), {key: score})
        else:
            pipe.zadd(keys.webhooks_of(d.endpoint, "pending"), {key: d.created})
            pipe.zadd(keys.webhooks_of(d.endpoint, "due"), {key: score})
    pipe.delete(keys.WEBHOOKS_LEGACY_DUE, keys.WEBHOOKS_LEGACY_CREATED, keys.WEBHOOKS_LEGACY_DEAD)
    pipe.rpush(keys.WEBHOOKS_WAKE, "1")
    await pipe.execute()
    return len(found)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
