"""The Lua scripts behind ``RedisBudgetBackend``: reserve, settle, read, claim an alert.

Every script touches the keys of one budget only (they share the hash tag ``{cw:b:<name>}``),
so each is atomic on a standalone Redis and on a Redis Cluster alike.

**Time is Redis's.**  A script reads ``TIME`` itself (unless the caller passes ``now_ms``, which
only tests with an injected clock do), and works out the window's buckets from it, so windows and
hold expiry agree across processes whatever their clocks say.  The window is passed as
``kind, size, count``: ``r`` rolling (bucket length in ms, bucket count), ``d`` UTC day, ``m``
UTC month.

**Lost state is detected.**  The spend hash carries the budget's *epoch* (field ``e``), written
when it is created and never expiring.  A process remembers the epoch it saw; finding none (Redis
restarted empty, the key evicted) or a different one means the spend counted so far is gone: the
first process to see it records the bucket of the loss (field ``l``) and reports it once; while
the window still reaches back to that bucket, ``on_state_lost="deny"`` refuses calls.
"""

from __future__ import annotations

import hashlib

_PRELUDE = """
local function now_ms(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(x) return string.format('%.0f', x) end
local function bucket(kind, size, count, ms)
  local day = math.floor(ms / 86400000)
  if kind == 'r' then
    local cur = math.floor(ms / size)
    return cur, cur - count + 1
  elseif kind == 'd' then
    return day, day
  end
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then year = year + 1 end
  local cur = year * 12 + month - 1
  return cur, cur
end
local function window_spent(key, minb)
  local meta = redis.call('HMGET', key, 't', 'm')
  local oldest = tonumber(meta[2])
  if oldest == nil then return 0, -1 end
  if oldest >= minb then return tonumber(meta[1]) or 0, oldest end
  local all = redis.call('HGETALL', key)
  local total, low, stale = 0, nil, {}
  for i = 1, #all, 2 do
    local b = tonumber(all[i])
    if b then
      if b < minb then
        stale[#stale + 1] = all[i]
      else
        total = total + tonumber(all[i + 1])
        if low == nil or b < low then low = b end
      end
    end
  end
  for i = 1, #stale, 500 do
    redis.call('HDEL', key, unpack(stale, i, math.min(i + 499, #stale)))
  end
  if low == nil then
    redis.call('HDEL', key, 't', 'm')
    return 0, -1
  end
  redis.call('HSET', key, 't', fmt(total), 'm', fmt(low))
  return total, low
end
local function prune_holds(holds, amounts, ms)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', ms, 'LIMIT', 0, 500)
  if #expired > 0 then
    local values = redis.call('HMGET', amounts, unpack(expired))
    local freed = 0
    for i = 1, #values do freed = freed + (tonumber(values[i]) or 0) end
    redis.call('HDEL', amounts, unpack(expired))
    redis.call('ZREM', holds, unpack(expired))
    if freed ~= 0 then redis.call('HINCRBY', amounts, '_t', fmt(-freed)) end
  end
end
"""

RESERVE_LUA = (
    _PRELUDE
    + """
-- KEYS: spent hash, holds zset, hold amounts hash
-- ARGV: now_ms or '', kind, size, count, limit, amount, hold_id, hold_ms, enforce,
--       epoch seen or '', new epoch, deny while lost ('1'/'0')
local ms = now_ms(ARGV[1])
local cur, minb = bucket(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ms)
prune_holds(KEYS[2], KEYS[3], ms)
local meta = redis.call('HMGET', KEYS[1], 'e', 'l')
local epoch, lostb, lost = meta[1], tonumber(meta[2]), 0
if not epoch then
  epoch = ARGV[11]
  redis.call('HSET', KEYS[1], 'e', epoch)
  if ARGV[10] ~= '' then
    lost, lostb = 1, cur
    redis.call('HSET', KEYS[1], 'l', fmt(cur))
  end
elseif ARGV[10] ~= '' and ARGV[10] ~= epoch and lostb == nil then
  lost, lostb = 1, cur
  redis.call('HSET', KEYS[1], 'l', fmt(cur))
end
if lost == 0 and lostb ~= nil and lostb >= minb then lost = 2 end
local spent, oldest = window_spent(KEYS[1], minb)
local reserved = tonumber(redis.call('HGET', KEYS[3], '_t') or '0')
local limit = tonumber(ARGV[5])
local amount = tonumber(ARGV[6])
local over = 0
if spent + reserved + amount > limit or spent + reserved >= limit then over = 1 end
if (over == 1 and ARGV[9] == '1') or (lost > 0 and ARGV[12] == '1') then
  return {0, over, spent, reserved, oldest, ms, epoch, lost}
end
-- a hold id already held (the same reservation run again: redis-py resends a command whose
-- reply timed out) is held once, or the total would keep a phantom hold for good
if amount > 0 and redis.call('HSETNX', KEYS[3], ARGV[7], ARGV[6]) == 1 then
  redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[8]), ARGV[7])
  redis.call('HINCRBY', KEYS[3], '_t', ARGV[6])
end
return {1, over, spent, reserved, oldest, ms, epoch, lost}
"""
)

SETTLE_LUA = (
    _PRELUDE
    + """
-- KEYS: spent hash, holds zset, hold amounts hash, the writer's last applied batch number
-- ARGV: now_ms or '', kind, size, count, age_ms, writer_ttl, cost, batch number, hold ids...
-- The cost is charged to the bucket of (now - age): when the calls settled, by Redis's clock.
-- A writer sends its batches in the order of their numbers, retries first: a batch numbered
-- at or below the last one applied is a retry of one that did run (after an ambiguous
-- failure), and is applied once.
local ms = now_ms(ARGV[1])
local kind, size, count = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local cur = bucket(kind, size, count, ms - tonumber(ARGV[5]))
local _, minb = bucket(kind, size, count, ms)
local dup = 0
if tonumber(ARGV[8]) > tonumber(redis.call('GET', KEYS[4]) or '0') then
  redis.call('SET', KEYS[4], ARGV[8], 'EX', ARGV[6])
  local freed = 0
  for i = 9, #ARGV, 500 do
    local last = math.min(i + 499, #ARGV)
    local amounts = redis.call('HMGET', KEYS[3], unpack(ARGV, i, last))
    for j = 1, #amounts do freed = freed + (tonumber(amounts[j]) or 0) end
    redis.call('HDEL', KEYS[3], unpack(ARGV, i, last))
    redis.call('ZREM', KEYS[2], unpack(ARGV, i, last))
  end
  if freed ~= 0 then
    redis.call('HINCRBY', KEYS[3], '_t', fmt(-freed))
  end
  if tonumber(ARGV[7]) > 0 and cur >= minb then
    local m = redis.call('HGET', KEYS[1], 'm')
    redis.call('HINCRBY', KEYS[1], fmt(cur), ARGV[7])
    redis.call('HINCRBY', KEYS[1], 't', ARGV[7])
    if (not m) or tonumber(m) > cur then
      redis.call('HSET', KEYS[1], 'm', fmt(cur))
    end
  end
else
  dup = 1
end
local spent, oldest = window_spent(KEYS[1], minb)
local reserved = tonumber(redis.call('HGET', KEYS[3], '_t') or '0')
return {spent, reserved, oldest, dup, ms}
"""
)

READ_LUA = (
    _PRELUDE
    + """
-- read-only: KEYS: spent hash, holds zset, hold amounts hash; ARGV: now_ms or '', kind, size, count
local ms = now_ms(ARGV[1])
local _, minb = bucket(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ms)
local all = redis.call('HGETALL', KEYS[1])
local spent, low = 0, -1
for i = 1, #all, 2 do
  local b = tonumber(all[i])
  if b and b >= minb then
    spent = spent + tonumber(all[i + 1])
    if low < 0 or b < low then low = b end
  end
end
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ms, '+inf')
local reserved, holds = 0, 0
for i = 1, #live, 500 do
  local amounts = redis.call('HMGET', KEYS[3], unpack(live, i, math.min(i + 499, #live)))
  for j = 1, #amounts do
    local amount = tonumber(amounts[j])
    if amount then
      reserved = reserved + amount
      holds = holds + 1
    end
  end
end
return {spent, reserved, low, holds, ms}
"""
)

CLAIM_LUA = """
-- KEYS: alert claim key; ARGV: now_ms or '', dedupe_ms (-1: once per key), ttl_s
local ms = tonumber(ARGV[1])
if ARGV[1] == '' then
  local t = redis.call('TIME')
  ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local fired = redis.call('GET', KEYS[1])
if fired then
  local dedupe = tonumber(ARGV[2])
  if dedupe < 0 or ms - tonumber(fired) < dedupe then return 0 end
end
redis.call('SET', KEYS[1], string.format('%.0f', ms), 'EX', ARGV[3])
return 1
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


RESERVE_SHA = _sha(RESERVE_LUA)
SETTLE_SHA = _sha(SETTLE_LUA)
READ_SHA = _sha(READ_LUA)
CLAIM_SHA = _sha(CLAIM_LUA)
SCRIPTS = {
    RESERVE_SHA: RESERVE_LUA,
    SETTLE_SHA: SETTLE_LUA,
    READ_SHA: READ_LUA,
    CLAIM_SHA: CLAIM_LUA,
}
