-- Check-and-admit one heartbeat, atomically.
--
-- KEYS[1] sessions ZSET  session id -> last heartbeat (ms)
-- KEYS[2] details  HASH  "s:<session>" -> stream id, "t:<session>" -> started (ms),
--                        "d:<session>" -> device name, "n:<session>" -> the client network
--                        of its latest heartbeat; "limit", "limitSource" -> what the
--                        latest allowed heartbeat asked for (token, plan or default)
-- KEYS[3] limit    STRING per-user override of the limit (may be absent)
-- KEYS[4] evicted  ZSET  session id -> end of its eviction cool-down (ms)
-- KEYS[5] stopped  ZSET  session id -> end of its block (ms): stopped from another screen
-- KEYS[6] replaced ZSET  session id -> end of its block (ms): replaced by a newer session
-- KEYS[7] blocked  STRING set by support while the account may start no new session (expires with the block)
-- ARGV[1] session id
-- ARGV[2] stream id
-- ARGV[3] the limit asked for: the token's maxStreams, else the plan's, else the default
-- ARGV[4] where it comes from: "token", "plan" or "default"
-- ARGV[5] session TTL (ms); also how long a stopped or replaced session stays blocked
-- ARGV[6] device name, or "" to keep the one stored
-- ARGV[7] "1" when a full account replaces its oldest session (LIMIT_POLICY=replace_oldest)
-- ARGV[8] "1" when a refusal for the limit should list the account's live sessions (the
--         player proved with a token that it speaks for the account)
-- ARGV[9] the client network of this heartbeat (an address prefix, see stop.lua), or "" (absent:
--         older callers) to keep the one stored
-- ARGV[10] "1" when this heartbeat's network started too many new sessions this minute
--         (NEW_SESSIONS_PER_NETWORK_PER_MINUTE, anonymous players): a new session is refused
--         with 7, writing nothing; a live one plays on (absent: older callers, "0")
--
-- Returns {outcome, active sessions, limit, expired sessions pruned, now (ms), limit source,
-- replaced session ids...}, or for a refusal for the limit with ARGV[8], {..., limit source,
-- then per live session: id, last heartbeat (ms), stream id, started (ms), device name or ""}:
-- the list the refusal was decided on, in the same round trip. The outcome is 0 allowed (a
-- live session), 1 allowed (newly admitted), 2 refused (limit reached), 3 refused (evicted,
-- cooling down), 4 refused (stopped from another screen), 5 refused (replaced by a newer
-- session), 6 refused (a new session while support blocks the account's new sessions), 7 refused
-- (a new session from a network over its rate of new sessions).
-- "active sessions" counts this session when it was allowed. The override in KEYS[3]
-- wins over ARGV[3], here, so that a staff change applies to the very next heartbeat.

local session_id = ARGV[1]
local stream_id = ARGV[2]
local asked_limit = tonumber(ARGV[3])
local asked_source = ARGV[4]
local ttl = tonumber(ARGV[5])
local device_name = ARGV[6]
local replace_oldest = ARGV[7] == '1'
local list_sessions = ARGV[8] == '1'
local network = ARGV[9] or ''
local network_over_rate = ARGV[10] == '1'

-- Redis' clock, so the API servers' clocks never matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function forget_details(sid)
  redis.call('HDEL', KEYS[2], 's:' .. sid, 't:' .. sid, 'd:' .. sid, 'n:' .. sid)
end

-- Expired sessions free their slots here: no cron job is needed.
local pruned = 0
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if #stale > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
  for _, sid in ipairs(stale) do
    forget_details(sid)
  end
  pruned = #stale
end

local limit, source = asked_limit, asked_source
local override = tonumber(redis.call('GET', KEYS[3]))
if override then
  limit, source = override, 'override'
end
local active = redis.call('ZCARD', KEYS[1])

-- A blocked session is refused until its block ends; then the mark goes.
local blocks = {{KEYS[4], 3}, {KEYS[5], 4}, {KEYS[6], 5}}
for _, block in ipairs(blocks) do
  local block_end = redis.call('ZSCORE', block[1], session_id)
  if block_end then
    if tonumber(block_end) > now then
      return {block[2], active, limit, pruned, now, source}
    end
    redis.call('ZREM', block[1], session_id)
  end
end

local outcome = 0
local reply = {}
if not redis.call('ZSCORE', KEYS[1], session_id) then
  if redis.call('EXISTS', KEYS[7]) == 1 then
    return {6, active, limit, pruned, now, source}
  end
  if network_over_rate then
    return {7, active, limit, pruned, now, source}
  end
  if active >= limit then
    if not replace_oldest then
      -- A live session is never displaced: a newcomer waits for a free slot.
      local refusal = {2, active, limit, pruned, now, source}
      if list_sessions then
        -- Expired sessions were pruned above: every one left is live.
        local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
        for i = 1, #live, 2 do
          local sid = live[i]
          local details = redis.call('HMGET', KEYS[2], 's:' .. sid, 't:' .. sid, 'd:' .. sid)
          refusal[#refusal + 1] = sid
          refusal[#refusal + 1] = live[i + 1]
          refusal[#refusal + 1] = details[1] or ''
          refusal[#refusal + 1] = details[2] or live[i + 1]
          refusal[#refusal + 1] = details[3] or ''
        end
      end
      return refusal
    end
    -- The sessions that started first make room, as many as it takes (one,
    -- unless the limit was lowered), and are told so on their next heartbeat.
    local live = redis.call('ZRANGE', KEYS[1], 0, -1)
    local started = {}
    for _, sid in ipairs(live) do
      started[sid] = tonumber(redis.call('HGET', KEYS[2], 't:' .. sid)) or 0
    end
    table.sort(live, function(a, b)
      if started[a] ~= started[b] then
        return started[a] < started[b]
      end
      return a < b
    end)
    for i = 1, active - limit + 1 do
      local sid = live[i]
      redis.call('ZREM', KEYS[1], sid)
      forget_details(sid)
      redis.call('ZADD', KEYS[6], now + ttl, sid)
      reply[#reply + 1] = sid
    end
    redis.call('PEXPIRE', KEYS[6], ttl)
    active = limit - 1
  end
  outcome = 1
  active = active + 1
  redis.call('HSET', KEYS[2], 't:' .. session_id, now)
end

redis.call('ZADD', KEYS[1], now, session_id)
redis.call('HSET', KEYS[2], 's:' .. session_id, stream_id, 'limit', asked_limit, 'limitSource', asked_source)
if device_name ~= '' then
  redis.call('HSET', KEYS[2], 'd:' .. session_id, device_name)
end
if network ~= '' then
  -- The network that plays the session now (a player may move, e.g. Wi-Fi to mobile).
  redis.call('HSET', KEYS[2], 'n:' .. session_id, network)
end
-- Both keys live exactly as long as the user's newest session.
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local result = {outcome, active, limit, pruned, now, source}
for _, sid in ipairs(reply) do
  result[#result + 1] = sid
end
return result
