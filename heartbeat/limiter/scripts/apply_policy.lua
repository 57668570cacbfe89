-- Store a new version of the policy document and put it in force, atomically.
--
-- KEYS[1] version  STRING the version in force (absent: none applied yet)
-- KEYS[2] versions HASH   version -> JSON record (document, who applied it, why, when)
-- ARGV[1] the new version's JSON record, without its number (the script gives it)
-- ARGV[2] the version the caller read before it edited the document, or "" (any): a
--         dashboard page open on version 4 must not silently undo a version 5 applied meanwhile
--
-- Returns {1, new version} when applied, or {0, the version in force} when ARGV[2]
-- is not the version in force (nothing written). Versions are never reused or
-- deleted: the history is the audit of what was in force when.

local expected = ARGV[2]
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if expected ~= '' and tonumber(expected) ~= current then
  return {0, current}
end
local version = current + 1
redis.call('HSET', KEYS[2], version, ARGV[1])
redis.call('SET', KEYS[1], version)
return {1, version}
