-- Free one session's slot at once (the player stopped).
--
-- KEYS[1] sessions ZSET, KEYS[2] details HASH (as in admit.lua)
-- ARGV[1] session id
--
-- Returns {1 if the session was live else 0, sessions left}.

local session_id = ARGV[1]
local removed = redis.call('ZREM', KEYS[1], session_id)
redis.call('HDEL', KEYS[2], 's:' .. session_id, 't:' .. session_id)
return {removed, redis.call('ZCARD', KEYS[1])}
