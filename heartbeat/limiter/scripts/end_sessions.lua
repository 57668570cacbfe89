-- Take ended sessions (stopped or evicted) out of the account's activity shard.
--
-- Runs after stop.lua or evict.lua has freed the slots in the user's own keys.
-- The ended mark keeps a heartbeat that another process heard earlier, and
-- has not flushed yet, from putting the session back (see record_activity.lua).
--
-- KEYS[1] live users     ZSET (as in record_activity.lua)
-- KEYS[2] live sessions  ZSET
-- KEYS[3] ended sessions ZSET
-- KEYS[4] at limit       ZSET (as in record_activity.lua): an account that lost a session is not full
-- ARGV[1] user id
-- ARGV[2] 1 if the user still has live sessions, else 0
-- ARGV[3] session TTL (ms)
-- ARGV[4...] live-sessions members that ended

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('ZADD', KEYS[3], now, ARGV[i])
end
redis.call('PEXPIRE', KEYS[3], math.max(2 * tonumber(ARGV[3]), 120000))
if ARGV[2] == '0' then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
if #ARGV > 3 then
  redis.call('ZREM', KEYS[4], ARGV[1])
end
return #ARGV - 3
