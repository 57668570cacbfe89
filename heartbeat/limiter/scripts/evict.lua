-- Evict one session, or all of a user's live sessions, and start their cool-down.
--
-- KEYS[1] sessions ZSET, KEYS[2] details HASH, KEYS[3] evicted ZSET (as in admit.lua)
-- ARGV[1] session id, or "" for every live session of the user
-- ARGV[2] cool-down (ms); 0 frees the slot without a cool-down
-- ARGV[3] session TTL (ms), to tell live sessions from expired ones
--
-- Returns the evicted session ids. Only live sessions are evicted: a named
-- session that is not live (expired, stopped, never seen) is left alone, with
-- no cool-down, so support is told the truth and nothing is armed by mistake.

local session_id = ARGV[1]
local cooldown = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local targets
if session_id == '' then
  targets = redis.call('ZRANGEBYSCORE', KEYS[1], now - ttl, '+inf')
else
  targets = {session_id}
end

local evicted = {}
for _, sid in ipairs(targets) do
  local seen = redis.call('ZSCORE', KEYS[1], sid)
  if seen and tonumber(seen) > now - ttl then
    evicted[#evicted + 1] = sid
    redis.call('ZREM', KEYS[1], sid)
    redis.call('HDEL', KEYS[2], 's:' .. sid, 't:' .. sid, 'd:' .. sid, 'n:' .. sid, 'p:' .. sid)
    if cooldown > 0 then
      redis.call('ZADD', KEYS[3], now + cooldown, sid)
    end
  end
end

if cooldown > 0 and #evicted > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('PTTL', KEYS[3]) < cooldown then
    redis.call('PEXPIRE', KEYS[3], cooldown)
  end
end
return evicted
