-- Check-and-admit one heartbeat, atomically.
--
-- KEYS[1] sessions ZSET  session id -> last heartbeat (ms)
-- KEYS[2] details  HASH  "s:<session>" -> stream id, "t:<session>" -> started (ms)
-- KEYS[3] limit    STRING per-user override of the limit (may be absent)
-- KEYS[4] evicted  ZSET  session id -> end of its eviction cool-down (ms)
-- ARGV[1] session id
-- ARGV[2] stream id
-- ARGV[3] default limit
-- ARGV[4] session TTL (ms)
--
-- Returns {outcome, active sessions, limit, expired sessions pruned, now (ms)} where
-- outcome is 0 allowed (a live session), 1 allowed (newly admitted),
-- 2 refused (limit reached), 3 refused (session evicted, cooling down).
-- "active sessions" counts this session when it was allowed.

local session_id = ARGV[1]
local stream_id = ARGV[2]
local default_limit = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])

-- Redis' clock, so the API servers' clocks never matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Expired sessions free their slots here: no cron job is needed.
local pruned = 0
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if #stale > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
  for _, sid in ipairs(stale) do
    redis.call('HDEL', KEYS[2], 's:' .. sid, 't:' .. sid)
  end
  pruned = #stale
end

local limit = tonumber(redis.call('GET', KEYS[3])) or default_limit
local active = redis.call('ZCARD', KEYS[1])

local cooldown_end = redis.call('ZSCORE', KEYS[4], session_id)
if cooldown_end then
  if tonumber(cooldown_end) > now then
    return {3, active, limit, pruned, now}
  end
  redis.call('ZREM', KEYS[4], session_id)
end

local outcome = 0
if not redis.call('ZSCORE', KEYS[1], session_id) then
  -- A live session is never displaced: a newcomer waits for a free slot.
  if active >= limit then
    return {2, active, limit, pruned, now}
  end
  outcome = 1
  active = active + 1
  redis.call('HSET', KEYS[2], 't:' .. session_id, now)
end

redis.call('ZADD', KEYS[1], now, session_id)
redis.call('HSET', KEYS[2], 's:' .. session_id, stream_id)
-- Both keys live exactly as long as the user's newest session.
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {outcome, active, limit, pruned, now}
