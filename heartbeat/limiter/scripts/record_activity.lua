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
-- ARGV[1] session TTL (ms)
-- ARGV[2] S, the number of session triples that follow
-- ARGV[3 .. 2+3S] triples: user id, live-sessions member, time of its latest allowed heartbeat (ms)
-- ARGV[3+3S ...] triples: user id, time of its latest heartbeat (ms), 1 if it found the account full else 0
--
-- Returns {sessions written, live sessions in the shard now}.

local ttl = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now - ttl

-- A session that ended after this batch heard it stays out: another process
-- may have stopped or evicted it while the heartbeat waited here. An ended
-- mark is kept as long as a pending heartbeat can matter (the session TTL).
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - math.max(ttl, 60000)))

local sessions_end = 2 + 3 * tonumber(ARGV[2])
local written = 0
for i = 3, sessions_end, 3 do
  local user_id, member, heard = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if heard > since then
    local ended = redis.call('ZSCORE', KEYS[3], member)
    if not ended or tonumber(ended) < heard then
      -- GT: another process may already have written a later heartbeat.
      redis.call('ZADD', KEYS[2], 'GT', heard, member)
      redis.call('ZADD', KEYS[1], 'GT', heard, user_id)
      written = written + 1
    end
  end
end

-- An account's latest heartbeat says whether it is full: a later "full" from
-- another process is never undone by an earlier "not full" (the scores order them).
for i = sessions_end + 1, #ARGV, 3 do
  local user_id, heard, full = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if full == '1' then
    if heard > since then
      redis.call('ZADD', KEYS[4], 'GT', heard, user_id)
    end
  else
    local marked = redis.call('ZSCORE', KEYS[4], user_id)
    if marked and tonumber(marked) <= heard then
      redis.call('ZREM', KEYS[4], user_id)
    end
  end
end

-- Readers count entries newer than the TTL; trimming older ones keeps memory
-- bounded. Once per batch, so O(log n + removed) about once a second.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
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
