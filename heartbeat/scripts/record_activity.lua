-- Record one heartbeat in the shared activity keys (dashboard and metrics).
--
-- Sent in the same pipeline as admit.lua, so an allowed heartbeat still costs
-- one network round trip; these keys have their own hash tag, so on Redis
-- Cluster they may live on another node than the user's keys.
--
-- KEYS[1] live users    ZSET user id -> last heartbeat (ms)
-- KEYS[2] live sessions ZSET "<user id>\0<session id>" -> last heartbeat (ms)
-- KEYS[3] minute        HASH heartbeats, refused, evicted, peak (this minute)
-- ARGV[1] user id
-- ARGV[2] live-sessions member
-- ARGV[3] session TTL (ms)
-- ARGV[4] minute key TTL (s)
--
-- Returns the number of live sessions across all users before this heartbeat.

local user_id = ARGV[1]
local member = ARGV[2]
local ttl = tonumber(ARGV[3])
local minute_ttl = tonumber(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local heartbeats = redis.call('HINCRBY', KEYS[3], 'heartbeats', 1)
if heartbeats == 1 then
  redis.call('EXPIRE', KEYS[3], minute_ttl)
end

-- Readers only count entries newer than the TTL, so trimming older ones is
-- for memory alone: every 32nd heartbeat of a minute does it (O(log n) plus
-- the entries removed). The indexes' expiry is refreshed then and when they
-- gain a member; it is at least two minutes, longer than the gap between two
-- refreshes while anyone is watching (the first heartbeat of each minute).
if heartbeats % 32 == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
end

-- The peak is sampled before this heartbeat's own session is added: this
-- session may be about to be refused (and taken out again), and a live one is
-- already counted since its previous heartbeat. Trimming is occasional, so
-- count live entries by score rather than with ZCARD.
local live = redis.call('ZCOUNT', KEYS[2], '(' .. (now - ttl), '+inf')
if live > (tonumber(redis.call('HGET', KEYS[3], 'peak')) or 0) then
  redis.call('HSET', KEYS[3], 'peak', live)
end

local fresh_user = redis.call('ZADD', KEYS[1], now, user_id)
local fresh_session = redis.call('ZADD', KEYS[2], now, member)
if heartbeats % 32 == 1 or fresh_user + fresh_session > 0 then
  local keep = math.max(2 * ttl, 120000)
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('PEXPIRE', KEYS[2], keep)
end
return live
