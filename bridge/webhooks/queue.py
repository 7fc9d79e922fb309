"""Pending webhook deliveries in Redis (keys: :mod:`bridge.store.keys`, ``cb:{webhooks}:*``).

A delivery is one event for one endpoint: ``<endpoint>|<webhook id>``, its record (the body as signed, the attempts
so far, the last failure) in one hash, its due time in one sorted set and its queueing time in another (the age of
the oldest pending event). A deliverer **claims** due deliveries with a lease: one Lua script moves each one's due
time to the lease's end, so no other deliverer (another worker, another node) sees it until then; its attempt
**settles** it (delivered: gone; failed: due again after the schedule's delay, or a dead letter) only while that
lease is still its own (the due time it set), so a deliverer that stalled past its lease cannot undo another's work.
A deliverer that dies mid-attempt leaves its claims to come due again at the lease's end: delivered at least once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from bridge.store import keys

SEP = "|"
KEYS = (keys.WEBHOOKS_DUE, keys.WEBHOOKS_DELIVERIES, keys.WEBHOOKS_CREATED, keys.WEBHOOKS_DEAD)

_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local rec = redis.call('HGET', KEYS[2], id)
  if rec then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, id)
    table.insert(out, rec)
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[3], id)
  end
end
return out
"""

# ARGV: id, lease (the due time the claim set), mode (done | retry | dead), record, next due or time of death,
# the dead letters' cut-off
_SETTLE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] == 'done' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[6])
for _, id in ipairs(old) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[6])
return 1
"""

# ARGV: now, then the dead letters to send again (none: all of them)
_RETRY = """
local ids = ARGV
local all = #ARGV == 1
if all then ids = redis.call('ZRANGE', KEYS[4], 0, -1) end
local n = 0
for i, id in ipairs(ids) do
  local rec = redis.call('HGET', KEYS[2], id)
  if (all or i > 1) and redis.call('ZREM', KEYS[4], id) == 1 and rec then
    local d = cjson.decode(rec)
    d['last'] = 'sent again after: ' .. tostring(d['last'])
    d['attempts'] = 0
    redis.call('HSET', KEYS[2], id, cjson.encode(d))
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    redis.call('ZADD', KEYS[3], ARGV[1], id)
    n = n + 1
  end
end
return n
"""


@dataclass
class Delivery:
    """One event for one endpoint. ``body`` is the exact text that is signed and sent; ``last`` the last failure
    (``503``, ``timeout``, ``redirect 302 not followed``, ...)."""

    id: str
    endpoint: str
    type: str
    body: str
    created: float
    attempts: int = 0
    last: str = ""

    @property
    def key(self) -> str:
        return f"{self.endpoint}{SEP}{self.id}"

    def record(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_record(cls, text: str) -> Delivery:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


async def enqueue(client: aioredis.Redis, deliveries: Iterable[Delivery], now: float) -> int:
    """Queue ``deliveries``, due at once. One that is already queued (a spool file written twice) keeps its state."""
    pipe = client.pipeline(transaction=False)
    n = 0
    for d in deliveries:
        pipe.hsetnx(keys.WEBHOOKS_DELIVERIES, d.key, d.record())
        pipe.zadd(keys.WEBHOOKS_DUE, {d.key: now}, nx=True)
        pipe.zadd(keys.WEBHOOKS_CREATED, {d.key: d.created}, nx=True)
        n += 1
    if n:
        await pipe.execute()
    return n


async def claim(client: aioredis.Redis, now: float, lease_s: float, limit: int) -> tuple[float, list[Delivery]]:
    """Up to ``limit`` deliveries due by ``now``, each leased until the returned time."""
    lease = round(now + lease_s, 3)
    out = await client.eval(_CLAIM, len(KEYS), *KEYS, repr(now), repr(lease), str(limit))
    found = [Delivery.from_record(_text(out[i + 1])) for i in range(0, len(out), 2)]
    return lease, found


async def settle(
    client: aioredis.Redis,
    delivery: Delivery,
    lease: float,
    mode: Literal["done", "retry", "dead"],
    at: float,
) -> bool:
    """Settle a claimed delivery (``at``: its next due time, or when it was given up); False if its lease was lost
    (another deliverer has it now)."""
    args = (delivery.key, repr(lease), mode, delivery.record(), repr(at), repr(at - keys.WEBHOOK_DEAD_S))
    done = await client.eval(_SETTLE, len(KEYS), *KEYS, *args)
    return bool(done)


async def retry_dead(client: aioredis.Redis, ids: Iterable[str], now: float) -> int:
    """Send dead letters again, due now, from the start of the schedule (their attempts start over, in the same
    script); none named: all of them. How many went back."""
    raw = await client.eval(_RETRY, len(KEYS), *KEYS, repr(now), *ids)
    return int(raw)


async def listing(client: aioredis.Redis, *, dead: bool) -> list[Delivery]:
    """The pending deliveries (by due time) or the dead letters (by the time they were given up)."""
    ids = [_text(k) for k in await client.zrange(keys.WEBHOOKS_DEAD if dead else keys.WEBHOOKS_DUE, 0, -1)]
    records = await client.hmget(keys.WEBHOOKS_DELIVERIES, ids) if ids else []
    return [Delivery.from_record(_text(r)) for r in records if r is not None]


async def due_times(client: aioredis.Redis) -> dict[str, float]:
    """Each pending delivery's due time (a claimed one's: its lease's end)."""
    return await _scores(client, keys.WEBHOOKS_DUE)


async def dead_times(client: aioredis.Redis) -> dict[str, float]:
    """When each dead letter was given up."""
    return await _scores(client, keys.WEBHOOKS_DEAD)


async def _scores(client: aioredis.Redis, key: str) -> dict[str, float]:
    pairs: Any = await client.zrange(key, 0, -1, withscores=True)
    return {_text(k): float(s) for k, s in pairs}


async def backlog(client: aioredis.Redis, now: float) -> tuple[int, float]:
    """How many deliveries are pending, and the age in seconds of the oldest (0: none)."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.WEBHOOKS_CREATED)
    pipe.zrange(keys.WEBHOOKS_CREATED, 0, 0, withscores=True)
    results = await pipe.execute()
    count, oldest = int(results[0]), results[1]
    return count, max(0.0, now - float(oldest[0][1])) if oldest else 0.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
