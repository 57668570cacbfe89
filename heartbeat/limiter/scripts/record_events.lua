-- Append events to one activity shard's event stream, keeping it to the retention.
--
-- Called in the same round trip as record_activity.lua by the activity flush
-- (the heartbeats' session.started and session.refused) and by the request
-- that ends sessions (session.ended, after the account's pending events of the
-- process, so that an account's events stay in order).
--
-- KEYS[1] events STREAM, one field "e" per entry: the event's JSON (heartbeat/limiter/events.py)
-- ARGV[1] retention (ms): entries older than that are trimmed (approximately: XADD MINID ~,
--         so Redis drops whole internal nodes, and a few older entries may stay a while)
-- ARGV[2] the most entries the stream keeps (EVENTS_MEMORY_BUDGET_MB's share; 0: no cap): past it the
--         oldest go first (approximately, XTRIM MAXLEN ~), so a flood of made-up accounts cannot
--         fill Redis with its events
-- ARGV[3...] the events' JSON, oldest first
--
-- Returns the number of events appended.

local retention = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = string.format('%d', now - retention)
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MINID', '~', oldest, '*', 'e', ARGV[i])
end
if cap > 0 then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', cap)
end
-- A stream nobody writes to for a whole retention holds only events past it.
redis.call('PEXPIRE', KEYS[1], retention)
return #ARGV - 2
