-- Free one session's slot at once (the player stopped, or the account stopped it).
--
-- KEYS[1] sessions ZSET, KEYS[2] details HASH, KEYS[3] stopped ZSET (as in admit.lua)
-- ARGV[1] session id
-- ARGV[2] session TTL (ms), to tell a live session from an expired one
-- ARGV[3] "1" to block the session for a TTL (stopped from another screen), else "0"
-- ARGV[4] the client network the stop comes from (an address prefix such as "192.0.2.0/24"),
--         for a stop without a token; "" or absent (older callers): from anywhere
--
-- Returns {1 if the session was live else 0, live sessions left}, or {2, live sessions left}
-- when the session is live but played from another network than ARGV[4] names (admit.lua's
-- "n:<session>"): nothing is changed. A session that was not live leaves every key as it
-- was (no key is created).

local session_id = ARGV[1]
local ttl = tonumber(ARGV[2])
local block = ARGV[3] == '1'
local network = ARGV[4] or ''

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local seen = redis.call('ZSCORE', KEYS[1], session_id)
local was_live = 0
if seen then
  if tonumber(seen) > now - ttl then
    was_live = 1
    if network ~= '' then
      local playing_from = redis.call('HGET', KEYS[2], 'n:' .. session_id)
      if playing_from and playing_from ~= network then
        return {2, redis.call('ZCOUNT', KEYS[1], '(' .. (now - ttl), '+inf')}
      end
    end
  end
  redis.call('ZREM', KEYS[1], session_id)
  redis.call('HDEL', KEYS[2], 's:' .. session_id, 't:' .. session_id, 'd:' .. session_id, 'n:' .. session_id,
    'p:' .. session_id)
end
if was_live == 1 and block then
  redis.call('ZADD', KEYS[3], now + ttl, session_id)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {was_live, redis.call('ZCOUNT', KEYS[1], '(' .. (now - ttl), '+inf')}
