-- Write one process's batch of per-account records for support: who was seen
-- (the prefix search), recent refusals, and the daily account-sharing signals.
--
-- Called with record_activity.lua in the same round trip, by the activity
-- flush, never per heartbeat, once per activity shard: every key carries that
-- shard's hash tag.
--
-- KEYS[1] seen           ZSET user id -> last heartbeat (ms), kept a day
-- KEYS[2] seen by name   ZSET user id, all scores 0: lexicographic, for prefix search
-- KEYS[3] refused today  ZSET user id -> refusals this UTC day
-- KEYS[4] distinct today ZSET user id -> distinct sessions this UTC day (HyperLogLog estimate)
-- KEYS[5 ..]             per account, in the order of ARGV: the refusal LIST of each
--                        account with refusals, then the HyperLogLog of each account with new sessions
-- ARGV[1] how long "seen" lasts (ms)
-- ARGV[2] TTL of the daily keys (s)
-- ARGV[3] TTL of a refusal list (s)
-- ARGV[4] how many refusals a list keeps
-- ARGV[5] U, then U pairs: user id, time of its latest heartbeat (ms)
-- then R, then for each account with refusals: user id, n, n refusals (JSON)
-- then H, then for each account with new sessions: user id, n, n session ids
-- then, optional (absent from older callers: no cap): the most accounts this shard's analytics
-- keep (ACTIVITY_MEMORY_BUDGET_MB's share); past it the accounts heard longest ago are trimmed,
-- their per-account keys (refusal list, today's and yesterday's session HyperLogLogs) deleted,
-- at most 1000 a call (the next flush trims on)
--
-- Returns the number of accounts seen.

local seen_ms = tonumber(ARGV[1])
local day_ttl = tonumber(ARGV[2])
local refusals_ttl = tonumber(ARGV[3])
local refusals_kept = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local i = 5
local users = tonumber(ARGV[i])
i = i + 1
-- One ZADD per index for the whole batch (a command per account would cost Redis more than the
-- writes themselves).
if users > 0 then
  local by_time, by_name = {}, {}
  for _ = 1, users do
    by_time[#by_time + 1] = ARGV[i + 1]
    by_time[#by_time + 1] = ARGV[i]
    by_name[#by_name + 1] = 0
    by_name[#by_name + 1] = ARGV[i]
    i = i + 2
  end
  redis.call('ZADD', KEYS[1], 'GT', unpack(by_time))
  redis.call('ZADD', KEYS[2], 'NX', unpack(by_name))
end

local key = 5
local with_refusals = tonumber(ARGV[i])
i = i + 1
for _ = 1, with_refusals do
  local user_id, n = ARGV[i], tonumber(ARGV[i + 1])
  for j = 1, n do
    redis.call('LPUSH', KEYS[key], ARGV[i + 1 + j])
  end
  redis.call('LTRIM', KEYS[key], 0, refusals_kept - 1)
  redis.call('EXPIRE', KEYS[key], refusals_ttl)
  redis.call('ZINCRBY', KEYS[3], n, user_id)
  key = key + 1
  i = i + 2 + n
end

local with_new = tonumber(ARGV[i])
i = i + 1
for _ = 1, with_new do
  local user_id, n = ARGV[i], tonumber(ARGV[i + 1])
  for j = 1, n do
    redis.call('PFADD', KEYS[key], ARGV[i + 1 + j])
  end
  redis.call('EXPIRE', KEYS[key], day_ttl)
  redis.call('ZADD', KEYS[4], redis.call('PFCOUNT', KEYS[key]), user_id)
  key = key + 1
  i = i + 2 + n
end

-- The memory budget: the oldest analytics go first, so a flood of made-up accounts cannot
-- fill a Redis that admission needs (noeviction). Per-account keys share the shard's hash tag.
local cap = tonumber(ARGV[i])
if cap and cap > 0 then
  local excess = redis.call('ZCARD', KEYS[1]) - cap
  if excess > 0 then
    local base = string.sub(KEYS[1], 1, -5)  -- KEYS[1] is <shard base>seen
    local day = tonumber(string.match(KEYS[3], 'refused%-day:(%d+)$'))
    local oldest = redis.call('ZRANGE', KEYS[1], 0, math.min(excess, 1000) - 1)
    redis.call('ZREM', KEYS[1], unpack(oldest))
    redis.call('ZREM', KEYS[2], unpack(oldest))
    redis.call('ZREM', KEYS[3], unpack(oldest))
    redis.call('ZREM', KEYS[4], unpack(oldest))
    for _, user_id in ipairs(oldest) do
      redis.call('UNLINK', base .. 'refusals:' .. user_id,
        base .. 'sessions-hll:' .. day .. ':' .. user_id, base .. 'sessions-hll:' .. (day - 1) .. ':' .. user_id)
    end
  end
end

-- Forget accounts not seen for a day, a bounded number per batch.
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - seen_ms, 'LIMIT', 0, 1000)
if #stale > 0 then
  redis.call('ZREM', KEYS[1], unpack(stale))
  redis.call('ZREM', KEYS[2], unpack(stale))
end
for k = 1, 4 do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('EXPIRE', KEYS[k], day_ttl)
  end
end
return users
