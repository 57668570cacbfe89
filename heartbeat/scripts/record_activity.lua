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

-- Entries older than the TTL belong to sessions that expired; trimming them
-- here costs O(log n) plus the few removed, and keeps both indexes bounded.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)

-- The peak is sampled before this heartbeat's own session is added: this
-- session may be about to be refused (and taken out again), and a live one is
-- already counted since its previous heartbeat.
local live = redis.call('ZCARD', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'heartbeats', 1)
if live > (tonumber(redis.call('HGET', KEYS[3], 'peak')) or 0) then
  redis.call('HSET', KEYS[3], 'peak', live)
end
redis.call('EXPIRE', KEYS[3], minute_ttl)

redis.call('ZADD', KEYS[1], now, user_id)
redis.call('ZADD', KEYS[2], now, member)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return live
