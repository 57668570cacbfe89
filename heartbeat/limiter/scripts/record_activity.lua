-- Write one process's batch of heartbeat activity to one activity shard.
--
-- Called by StreamManager.flush_activity about once a second per process, not
-- per heartbeat (see heartbeat/limiter/activity.py), once per shard the batch touches.
-- A shard's keys have their own hash tag, so on Redis Cluster they may live on
-- another node than the users' keys.
--
-- KEYS[1] live users     ZSET user id -> last heartbeat (ms)
-- KEYS[2] live sessions  ZSET "<user id>\0<session id>" -> last heartbeat (ms)
-- KEYS[3] ended sessions ZSET "<user id>\0<session id>" -> when it was stopped or evicted (ms)
-- KEYS[4] at limit       ZSET user id -> latest heartbeat (ms), for accounts that heartbeat found full
-- KEYS[5] events         STREAM of the shard's events (optional: only with EVENTS_ENABLED)
-- ARGV[1] session TTL (ms)
-- ARGV[2] S, the number of session triples that follow
-- ARGV[3 .. 2+3S] triples: user id, live-sessions member, time of its latest allowed heartbeat (ms)
-- ARGV[3+3S ...] triples: user id, time of its latest heartbeat (ms), 1 if it found the account full else 0
-- ARGV[#ARGV] with KEYS[5] only: the events' retention (ms); the triples above end before it
--
-- With KEYS[5], each live session trimmed here for having expired (no heartbeat for a TTL)
-- is appended to the stream as one session.ended event with reason "expired", in the same
-- atomic step that removes it: every expired session leaves the index once, here, so it is
-- reported once, whichever process's flush trims it. A session ended otherwise (stopped,
-- evicted, replaced) has already left the index (end_sessions.lua) and is never reported
-- expired. The event's timestamp is when the session expired (its last heartbeat + TTL).
--
-- Returns {sessions written, live sessions in the shard now}.

local ttl = tonumber(ARGV[1])
local events = KEYS[5]
local last_triple = #ARGV
if events then
  last_triple = #ARGV - 1
end
-- RFC 3339 UTC with milliseconds, as heartbeat/limiter/events.py's timestamp_of writes it
-- (days to a civil date: Howard Hinnant's algorithm; Redis' Lua has no os.date).
local function iso_time(ms)
  local seconds = math.floor(ms / 1000)
  local days = math.floor(seconds / 86400)
  local rest = seconds - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then
    year = year + 1
  end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(rest / 3600), math.floor(rest % 3600 / 60), rest % 60, ms % 1000)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now - ttl

-- A session that ended after this batch heard it stays out: another process
-- may have stopped or evicted it while the heartbeat waited here. An ended
-- mark is kept as long as a pending heartbeat can matter (the session TTL).
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - math.max(ttl, 60000)))

-- Each command a script runs costs Redis more than the work it does on a few members, and a
-- batch holds about one heartbeat per session (a player is heard once per interval): so each
-- index is written with one command per batch (ZMSCORE, ZADD and ZREM take many members), not
-- one per heartbeat. The same writes as one command per member, in the same order.
local sessions_end = 2 + 3 * tonumber(ARGV[2])
local candidates = {}
for i = 3, sessions_end, 3 do
  if tonumber(ARGV[i + 2]) > since then
    candidates[#candidates + 1] = i
  end
end
local written = 0
if #candidates > 0 then
  local members = {}
  for n, i in ipairs(candidates) do
    members[n] = ARGV[i + 1]
  end
  local ended = redis.call('ZMSCORE', KEYS[3], unpack(members))
  local session_scores, user_scores = {}, {}
  for n, i in ipairs(candidates) do
    local heard = ARGV[i + 2]
    if not ended[n] or tonumber(ended[n]) < tonumber(heard) then
      -- GT: another process may already have written a later heartbeat.
      session_scores[#session_scores + 1] = heard
      session_scores[#session_scores + 1] = ARGV[i + 1]
      user_scores[#user_scores + 1] = heard
      user_scores[#user_scores + 1] = ARGV[i]
      written = written + 1
    end
  end
  if written > 0 then
    redis.call('ZADD', KEYS[2], 'GT', unpack(session_scores))
    redis.call('ZADD', KEYS[1], 'GT', unpack(user_scores))
  end
end

-- An account's latest heartbeat says whether it is full: a later "full" from
-- another process is never undone by an earlier "not full" (the scores order them).
local full, not_full, not_full_heard = {}, {}, {}
for i = sessions_end + 1, last_triple, 3 do
  local user_id, heard = ARGV[i], ARGV[i + 1]
  if ARGV[i + 2] == '1' then
    if tonumber(heard) > since then
      full[#full + 1] = heard
      full[#full + 1] = user_id
    end
  else
    not_full[#not_full + 1] = user_id
    not_full_heard[#not_full_heard + 1] = tonumber(heard)
  end
end
if #full > 0 then
  redis.call('ZADD', KEYS[4], 'GT', unpack(full))
end
if #not_full > 0 then
  local marks = redis.call('ZMSCORE', KEYS[4], unpack(not_full))
  local gone = {}
  for n, user_id in ipairs(not_full) do
    if marks[n] and tonumber(marks[n]) <= not_full_heard[n] then
      gone[#gone + 1] = user_id
    end
  end
  if #gone > 0 then
    redis.call('ZREM', KEYS[4], unpack(gone))
  end
end

-- Readers count entries newer than the TTL; trimming older ones keeps memory
-- bounded. Once per batch, so O(log n + removed) about once a second.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
if events then
  -- At most 1,000 a call, so that a mass expiry (a CDN outage) never holds Redis for long:
  -- the rest go at the next flush, a second later, each still reported once.
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', since, 'WITHSCORES', 'LIMIT', 0, 1000)
  if #expired > 0 then
    local retention = tonumber(ARGV[#ARGV])
    local oldest = string.format('%d', now - retention)
    for i = 1, #expired, 2 do
      local member, heard = expired[i], tonumber(expired[i + 1])
      local cut = string.find(member, '\0', 1, true)
      local user_id, session_id = string.sub(member, 1, cut - 1), string.sub(member, cut + 1)
      -- A stable id: one session expires once for a given last heartbeat.
      local id = 'evt_' .. string.sub(redis.sha1hex(KEYS[5] .. '\0expired\0' .. member .. '\0' .. heard), 1, 32)
      local event = cjson.encode({
        id = id,
        type = 'session.ended',
        timestamp = iso_time(heard + ttl),
        data = {userId = user_id, sessionId = session_id, reason = 'expired', lastHeartbeatAt = iso_time(heard)},
      })
      redis.call('XADD', events, 'MINID', '~', oldest, '*', 'e', event)
      redis.call('ZREM', KEYS[2], member)
    end
    redis.call('PEXPIRE', events, retention)
  end
else
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', since)
local keep = math.max(2 * ttl, 120000)
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('PEXPIRE', KEYS[4], keep)
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('PEXPIRE', KEYS[3], keep)
end

return {written, redis.call('ZCARD', KEYS[2])}
