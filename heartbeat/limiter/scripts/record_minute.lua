-- Add one process's batch to a minute's activity counters (the dashboard's charts).
--
-- Called by the activity flush after record_activity.lua has run on every
-- shard the batch touched, with the live sessions those calls counted, and by
-- an eviction (ARGV[3]). One key, so one slot, on any topology.
--
-- KEYS[1] minute  HASH heartbeats, refused, evicted, peak
-- ARGV[1] heartbeats to count
-- ARGV[2] refusals to count
-- ARGV[3] sessions evicted to count
-- ARGV[4] live sessions now, summed over the shards (0: not known), raises "peak"
-- ARGV[5] the key's TTL (s)

for i, field in ipairs({'heartbeats', 'refused', 'evicted'}) do
  local n = tonumber(ARGV[i])
  if n > 0 then
    redis.call('HINCRBY', KEYS[1], field, n)
  end
end
local live = tonumber(ARGV[4])
if live > (tonumber(redis.call('HGET', KEYS[1], 'peak')) or 0) then
  redis.call('HSET', KEYS[1], 'peak', live)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
