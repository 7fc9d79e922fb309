"""The Lua scripts of the webhook queue (:mod:`bridge.webhooks.queue`): each one endpoint's step, atomic.

Every script takes the same keys (:func:`bridge.webhooks.queue.endpoint_keys`; one hash tag, so one slot on a
cluster, and every key declared) and begins with the endpoint's name, the time now and the dead letters' cut-off::

    KEYS: deliveries, endpoints, bytes, wake, due:<ep>, pending:<ep>, waiting:<ep>, heads:<ep>, dead:<ep>, ended:<ep>,
          leases:<ep>
    ARGV: endpoint, now, dead-letter cut-off, ... (each script's own)

A **chain** is one call's deliveries to one endpoint, in the order of their ``seq``: only its head is in ``due``
(claimable); the others wait in ``waiting`` (``<chain>|<seq, 12 digits>|<delivery>``, read in order by name) until
the head is delivered, given up or dropped, when the next one is due at once. A delivery without a chain (a rollout
decision) is due at once.

A **lease**: a claim moves a delivery's due time to the lease's end and notes ``<lease's end>|<holder>`` in
``leases:<ep>`` (who sends it, for the listing); settling or forgetting it removes the note. A note whose time is no
longer the delivery's due time, or has passed, is no lease (its deliverer stopped: the delivery is due again).

A call's **last** event (``call.ended``) is queued once per endpoint, whoever emits it: its worker at the call's end,
or the pool or another worker's reaper for a call whose worker died (a worker that only stalled may still send its
own later). ``ended:<ep>`` keeps the slots of the calls whose last event was queued (score: when), for as long as the
caller keeps them (:data:`bridge.webhooks.queue.ENDED_KEEP_S`); a second one for such a call is not queued, and
counted. A call's slot is named with the queue's seal key (:meth:`bridge.webhooks.queue.Delivery.ended_slot`), so a
writer of Redis without it cannot take a real call's slot and have that call's own ``call.ended`` refused.
"""

from __future__ import annotations

from typing import Final

_PRELUDE: Final = """
local D, EPS, BYTES, WAKE, DUE, PENDING, WAITING, HEADS, DEAD, ENDED = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local LEASES = KEYS[11]
local EP, NOW, CUTOFF = ARGV[1], ARGV[2], ARGV[3]

local function member(chain, seq, key)
  return chain .. '|' .. string.format('%012d', tonumber(seq) or 0) .. '|' .. key
end

local function advance(chain)
  local nxt = redis.call('ZRANGEBYLEX', WAITING, '[' .. chain .. '|', '(' .. chain .. '}', 'LIMIT', 0, 1)[1]
  if nxt then
    redis.call('ZREM', WAITING, nxt)
    local key = string.sub(nxt, #chain + 15)
    redis.call('HSET', HEADS, chain, key)
    redis.call('ZADD', DUE, NOW, key)
  else
    redis.call('HDEL', HEADS, chain)
  end
end

local function unlink(key, rec)
  redis.call('ZREM', DUE, key)
  redis.call('ZREM', PENDING, key)
  local ok, d = pcall(cjson.decode, rec)  -- a record written by hand may be anything
  if not ok or type(d) ~= 'table' then d = {} end
  local chain = d['chain']
  if type(chain) == 'string' and chain ~= '' then
    if redis.call('HGET', HEADS, chain) == key then
      advance(chain)
    else
      redis.call('ZREM', WAITING, member(chain, d['seq'], key))
    end
  end
end

local function forget(key)
  redis.call('HDEL', LEASES, key)
  local rec = redis.call('HGET', D, key)
  if rec then
    redis.call('HINCRBY', BYTES, EP, -#rec)
    redis.call('HDEL', D, key)
  end
end

local function expire()
  local old = redis.call('ZRANGEBYSCORE', DEAD, '-inf', CUTOFF)
  for _, key in ipairs(old) do forget(key) end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', DEAD, '-inf', CUTOFF) end
  return #old
end

local function tidy()
  if redis.call('ZCARD', PENDING) == 0 and redis.call('ZCARD', DEAD) == 0 then
    redis.call('SREM', EPS, EP)
    redis.call('HDEL', BYTES, EP)
    redis.call('DEL', LEASES)
  end
end

local function wake()
  redis.call('LPUSH', WAKE, '1')
  redis.call('LTRIM', WAKE, 0, 7)
end
"""

# ARGV[4]: max events, ARGV[5]: max bytes, ARGV[6]: how long a call's last event is remembered (s), then per
# delivery: key, record, created, chain ('' none), seq, slot (its call's last event: the call's slot in ENDED,
# queue.Delivery.ended_slot; else '').
# Returns {added, dropped, twice}: past a cap the oldest go first, dead letters before pending deliveries; twice: a
# call's last event refused because one was queued for it already.
ENQUEUE: Final = (
    _PRELUDE
    + """
local added, dropped, twice = 0, 0, 0
local keep = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', ENDED, '-inf', tonumber(NOW) - keep)
for i = 7, #ARGV, 6 do
  local key, rec, created, chain, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local slot = ARGV[i + 5]
  local last = slot ~= '' and chain ~= '' and redis.call('HEXISTS', D, key) == 0
  if last and redis.call('ZADD', ENDED, 'NX', NOW, slot) == 0 then
    twice = twice + 1
  elseif redis.call('HSETNX', D, key, rec) == 1 then
    redis.call('HINCRBY', BYTES, EP, #rec)
    redis.call('ZADD', PENDING, created, key)
    added = added + 1
    if chain == '' or redis.call('HSETNX', HEADS, chain, key) == 1 then
      redis.call('ZADD', DUE, NOW, key)
    else
      redis.call('ZADD', WAITING, 0, member(chain, seq, key))
    end
  end
end
redis.call('SADD', EPS, EP)
expire()
local max_n, max_b = tonumber(ARGV[4]), tonumber(ARGV[5])
while redis.call('ZCARD', PENDING) + redis.call('ZCARD', DEAD) > max_n
    or tonumber(redis.call('HGET', BYTES, EP) or '0') > max_b do
  local key = redis.call('ZRANGE', DEAD, 0, 0)[1]
  if key then
    redis.call('ZREM', DEAD, key)
  else
    key = redis.call('ZRANGE', PENDING, 0, 0)[1]
    if not key then break end
    local rec = redis.call('HGET', D, key)
    if rec then unlink(key, rec) else redis.call('ZREM', PENDING, key) end
  end
  forget(key)
  dropped = dropped + 1
end
tidy()
if redis.call('EXISTS', ENDED) == 1 then redis.call('EXPIRE', ENDED, math.ceil(keep)) end
if added > 0 then wake() end
return {added, dropped, twice}
"""
)

# ARGV[4]: the lease's end, ARGV[5]: at most this many, ARGV[6]: who claims (the listing's "leased by"). Returns
# {next due time or '', key, record, key, record, ...}.
CLAIM: Final = (
    _PRELUDE
    + """
local out = {}
local ids = redis.call('ZRANGEBYSCORE', DUE, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[5]))
for _, key in ipairs(ids) do
  local rec = redis.call('HGET', D, key)
  if rec then
    redis.call('ZADD', DUE, ARGV[4], key)
    redis.call('HSET', LEASES, key, ARGV[4] .. '|' .. ARGV[6])
    table.insert(out, key)
    table.insert(out, rec)
  else
    redis.call('ZREM', DUE, key)
    redis.call('ZREM', PENDING, key)
  end
end
expire()
tidy()
table.insert(out, 1, redis.call('ZRANGE', DUE, 0, 0, 'WITHSCORES')[2] or '')
return out
"""
)

# ARGV[4]: delivery, ARGV[5]: the lease (the due time the claim set), ARGV[6]: done | retry | dead, ARGV[7]: its
# record now, ARGV[8]: its next due time (retry) or the time it was given up (dead). 0: the lease was lost.
SETTLE: Final = (
    _PRELUDE
    + """
local key, mode, rec = ARGV[4], ARGV[6], ARGV[7]
local score = redis.call('ZSCORE', DUE, key)
if not score or tonumber(score) ~= tonumber(ARGV[5]) then return 0 end
redis.call('HDEL', LEASES, key)
local old = redis.call('HGET', D, key)
if not old then
  redis.call('ZREM', DUE, key)
  return 0
end
if mode == 'retry' then
  redis.call('ZADD', DUE, ARGV[8], key)
else
  unlink(key, old)
end
if mode == 'done' then
  forget(key)
else
  redis.call('HSET', D, key, rec)
  redis.call('HINCRBY', BYTES, EP, #rec - #old)
  if mode == 'dead' then redis.call('ZADD', DEAD, ARGV[8], key) end
end
expire()
tidy()
return 1
"""
)

# ARGV[4...]: the dead letters to send again (none: all of the endpoint's). Out of their chains: sent as soon as
# possible, their attempts from 0. Returns how many went back.
RETRY: Final = (
    _PRELUDE
    + """
local ids = {}
for i = 4, #ARGV do table.insert(ids, ARGV[i]) end
if #ids == 0 then ids = redis.call('ZRANGE', DEAD, 0, -1) end
local n = 0
for _, key in ipairs(ids) do
  local rec = redis.call('HGET', D, key)
  if redis.call('ZREM', DEAD, key) == 1 and rec then
    local d = cjson.decode(rec)
    d['last'] = 'sent again after: ' .. tostring(d['last'])
    d['attempts'] = 0
    d['chain'] = ''
    local new = cjson.encode(d)
    redis.call('HSET', D, key, new)
    redis.call('HINCRBY', BYTES, EP, #new - #rec)
    redis.call('ZADD', PENDING, d['created'], key)
    redis.call('ZADD', DUE, NOW, key)
    n = n + 1
  end
end
if n > 0 then wake() end
return n
"""
)
