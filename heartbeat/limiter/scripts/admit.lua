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
-- ARGV[11] "1": decide by the policy document's rules (the arguments below, the ones that concern
--         this session), and store this session's inputs; absent or "0" (no policy applied, older
--         callers): ARGV[12..] are not read and every reply is as above
-- ARGV[12] the slots this session takes (its quality's weight)   ARGV[13] its device class, or ""
-- ARGV[14] the cap on live sessions of that class (0: none)       ARGV[15] its pool, or ""
-- ARGV[16] the cap on live sessions of that pool (0: none)
-- ARGV[17] "1" when the session counts against the rules, "0" for an uncounted pool
-- ARGV[18] the most client networks the account may play from at once (0: no cap)
-- ARGV[19] "block" refuses a session from one network more, "flag" admits it and says so
-- ARGV[20] the device id, or ""                                  ARGV[21] "1": same-device takeover
-- ARGV[22] the quality, or ""
-- ARGV[23] the session this one replaces (a hand-off), or ""
-- ARGV[24] what proves the right to end it: "" (an account token), "network" (it must play on
--         ARGV[9]'s network), or "device:<id>" (it must play on that device id)
-- ARGV[25] "network" when the device id proves nothing (no token): a takeover ends only a session
--         of that device playing on ARGV[9]'s network; "" (or absent) otherwise
--
-- Under a policy a live session whose class, pool, slots or counting change (another stream, another
-- quality) is decided again as a newcomer would be, without counting itself: refused (2, with the
-- rule) when it no longer fits, nothing written. An account holds at most 100 live sessions, the
-- uncounted ones included (rule "sessions").
--
-- Returns {outcome, active sessions, limit, expired sessions pruned, now (ms), limit source,
-- replaced session ids...}, or for a refusal for the limit with ARGV[8], {..., limit source,
-- then per live session: id, last heartbeat (ms), stream id, started (ms), device name or ""}:
-- the list the refusal was decided on, in the same round trip. The outcome is 0 allowed (a
-- live session), 1 allowed (newly admitted), 2 refused (limit reached), 3 refused (evicted,
-- cooling down), 4 refused (stopped from another screen), 5 refused (replaced by a newer
-- session), 6 refused (a new session while support blocks the account's new sessions), 7 refused
-- (a new session from a network over its rate of new sessions), 8 refused (handed off to another
-- device: the reply's 7th value is that device's name, or ""), 9 refused (ARGV[23] names no live
-- session of the account, or ARGV[24] does not hold: nothing is changed).
-- With ARGV[11], a repeat or new heartbeat and a refusal for a limit reply {outcome, active sessions,
-- limit (slots), pruned, now, limit source, rule ("" or maxStreams, devices.<class>, pools.<pool>,
-- networks), the rule's limit, what it counted, flags, ...} where flags add 1 (one network more
-- than maxNetworks, admitted under "flag"), 2 (a same-device takeover), 4 (a hand-off); then the
-- live sessions for a refusal with ARGV[8] (as above), or pairs {session id, "replaced" or
-- "handed_off"} of the sessions this admission ended.
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
local by_policy = ARGV[11] == '1'

-- Redis' clock, so the API servers' clocks never matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Every field the sessions in ``sids`` keep in the details hash, gone in one HDEL.
local function forget_details(sids)
  local fields = {}
  for _, sid in ipairs(sids) do
    for _, role in ipairs({'s:', 't:', 'd:', 'n:', 'p:'}) do
      fields[#fields + 1] = role .. sid
    end
  end
  redis.call('HDEL', KEYS[2], unpack(fields))
end

-- What expired, whether this session is live, how many are. (One ZRANGE WITHSCORES could tell all
-- three, but Redis formats each score with printf and Lua parses it back: callgrind counts more
-- instructions for it than for these three small reads. Numbers go to Redis as integer strings
-- for the same reason.)
local cutoff = string.format('%d', now - ttl)
local pruned = 0
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
if #stale > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  forget_details(stale)
  pruned = #stale
end
local known = redis.call('ZSCORE', KEYS[1], session_id)

-- A refusal for a limit, with ARGV[8]: the account's live sessions after it (id, last heartbeat,
-- stream, started, device name), the list the refusal was decided on. Expired sessions were
-- pruned above: every one left is live.
local function with_live_sessions(refusal)
  if list_sessions then
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

-- The heartbeat's own writes, whatever decided it: its time, its stream, what it asked for,
-- its device name and network when it says them, and ``extra`` (field, value pairs: a new
-- session's start and inputs), all in one HSET.
local function record_heartbeat(now, extra)
  -- Strings, not Lua numbers: Redis would format each number with printf's floating-point path.
  redis.call('ZADD', KEYS[1], string.format('%d', now), session_id)
  local fields = {'s:' .. session_id, stream_id, 'limit', string.format('%d', asked_limit), 'limitSource', asked_source}
  if device_name ~= '' then
    fields[#fields + 1] = 'd:' .. session_id
    fields[#fields + 1] = device_name
  end
  if network ~= '' then
    -- The network that plays the session now (a player may move, e.g. Wi-Fi to mobile).
    fields[#fields + 1] = 'n:' .. session_id
    fields[#fields + 1] = network
  end
  if extra then
    for _, value in ipairs(extra) do
      fields[#fields + 1] = value
    end
  end
  redis.call('HSET', KEYS[2], unpack(fields))
  -- Both keys live exactly as long as the user's newest session.
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end

-- A session's policy inputs, stored at its first heartbeat as "p:<session>" (class, device
-- id, quality, pool, slots, counted, the network it started from; tab-separated). A session
-- admitted before any policy was applied has none: one slot, counted, no class, pool or device.
local function inputs_of(packed)
  if not packed then
    return {class = '', device = '', quality = '', pool = '', weight = 1, counted = true}
  end
  local f = {}
  for part in string.gmatch(packed .. '\t', '([^\t]*)\t') do
    f[#f + 1] = part
  end
  return {class = f[1], device = f[2], quality = f[3], pool = f[4], weight = tonumber(f[5]) or 1,
    counted = f[6] ~= '0', started_from = f[7]}
end

local function packed_inputs(class, device, quality, pool, weight, counted, started_from)
  return table.concat({class, device, quality, pool, weight, counted and '1' or '0', started_from}, '\t')
end

-- The account's live sessions (pruned above, so all live) with their inputs and networks.
-- At most MAX_SESSIONS (admit_by_policy refuses one more), so the HMGET stays small.
local function live_sessions()
  local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
  local sessions = {}
  if #ids == 0 then
    return sessions
  end
  local fields = {}
  for _, sid in ipairs(ids) do
    fields[#fields + 1] = 'p:' .. sid
    fields[#fields + 1] = 'n:' .. sid
    fields[#fields + 1] = 't:' .. sid
  end
  local values = redis.call('HMGET', KEYS[2], unpack(fields))
  for i, sid in ipairs(ids) do
    local s = inputs_of(values[3 * i - 2])
    s.id = sid
    s.network = values[3 * i - 1] or ''
    -- maxNetworks counts the network a session started from: a session that moves (Wi-Fi to
    -- mobile) keeps its place, and moving cannot add a network the rule never decided on.
    s.counted_network = s.started_from or s.network
    s.started = tonumber(values[3 * i]) or 0
    sessions[#sessions + 1] = s
  end
  return sessions
end

-- What the counted sessions not in ``ended`` use: slots, per class, per pool, networks.
local function usage(sessions, ended)
  local u = {slots = 0, class = {}, pool = {}, networks = {}, network_count = 0}
  for _, s in ipairs(sessions) do
    if s.counted and not ended[s.id] then
      u.slots = u.slots + s.weight
      u.class[s.class] = (u.class[s.class] or 0) + 1
      u.pool[s.pool] = (u.pool[s.pool] or 0) + 1
      if s.counted_network ~= '' and not u.networks[s.counted_network] then
        u.networks[s.counted_network] = true
        u.network_count = u.network_count + 1
      end
    end
  end
  return u
end

-- The most live sessions one account may hold, uncounted ones included: a bound on what one
-- decision reads (and on what a misbehaving client can make an account cost).
local MAX_SESSIONS = 100

-- Decide a heartbeat by the policy's rules (ARGV[11] = "1"): see the contract above.
local function admit_by_policy(active, limit, source, pruned, now)
  local weight = tonumber(ARGV[12])
  local class, class_cap = ARGV[13], tonumber(ARGV[14])
  local pool, pool_cap = ARGV[15], tonumber(ARGV[16])
  local counted = ARGV[17] == '1'
  local max_networks, flag_networks = tonumber(ARGV[18]), ARGV[19] == 'flag'
  local device_id, takeover = ARGV[20], ARGV[21] == '1'
  local quality, replaces, proof = ARGV[22], ARGV[23], ARGV[24]
  local takeover_proof = ARGV[25] or ''

  local function refuse(rule, rule_limit, rule_active)
    return with_live_sessions({2, active, limit, pruned, now, source, rule, rule_limit, rule_active, 0})
  end

  -- The device, pool and network caps for a session of these inputs, over usage ``u``.
  local function caps_refusal(u, from_network)
    if class ~= '' and class_cap > 0 and (u.class[class] or 0) >= class_cap then
      return refuse('devices.' .. class, class_cap, u.class[class])
    end
    if pool ~= '' and pool_cap > 0 and (u.pool[pool] or 0) >= pool_cap then
      return refuse('pools.' .. pool, pool_cap, u.pool[pool])
    end
    if max_networks > 0 and from_network ~= '' and not u.networks[from_network]
      and u.network_count >= max_networks and not flag_networks then
      return refuse('networks', max_networks, u.network_count)
    end
    return nil
  end

  if known then
    -- A hand-off is a first heartbeat's: a live session naming a session that is not the
    -- account's is still told no (nothing ends).
    if replaces ~= '' and not redis.call('ZSCORE', KEYS[1], replaces) then
      return {9, active, limit, pruned, now, source}
    end
    local packed = redis.call('HGET', KEYS[2], 'p:' .. session_id)
    if not packed then
      -- Admitted before the policy was applied: it keeps its place and is counted by its inputs
      -- from now on (applying a policy refuses newcomers, it never cuts a live session).
      redis.call('HSET', KEYS[2], 'p:' .. session_id,
        packed_inputs(class, device_id, quality, pool, weight, counted, network))
    else
      local mine = inputs_of(packed)
      if mine.class ~= class or mine.pool ~= pool or mine.weight ~= weight or mine.counted ~= counted then
        -- The session changed what it plays (a live stream after a trailer, UHD after HD, a
        -- phone calling itself a TV): decided again as a newcomer would be, without counting
        -- itself, so no change of stream or quality can take more than the plan allows.
        if counted then
          local u = usage(live_sessions(), {[session_id] = true})
          if u.slots + weight > limit then
            return refuse('maxStreams', limit, u.slots)
          end
          local refusal = caps_refusal(u, mine.started_from or network)
          if refusal then
            return refusal
          end
        end
        redis.call('HSET', KEYS[2], 'p:' .. session_id,
          packed_inputs(class, mine.device, quality, pool, weight, counted, mine.started_from or network))
      end
    end
    record_heartbeat(now)
    return {0, active, limit, pruned, now, source, '', 0, 0, 0}
  end
  if redis.call('EXISTS', KEYS[7]) == 1 then
    return {6, active, limit, pruned, now, source}
  end
  if network_over_rate then
    return {7, active, limit, pruned, now, source}
  end
  if active >= MAX_SESSIONS and replaces == '' then
    return refuse('sessions', MAX_SESSIONS, active)
  end

  local sessions = live_sessions()
  -- The sessions this one would end: the one it replaces (a hand-off), the device's own (a takeover).
  local ending, ended_as, order = {}, {}, {}
  if replaces ~= '' then
    local target
    for _, s in ipairs(sessions) do
      if s.id == replaces then
        target = s
      end
    end
    if not target
      or (proof == 'network' and (network == '' or target.network ~= network))
      or (string.sub(proof, 1, 7) == 'device:' and target.device ~= string.sub(proof, 8)) then
      return {9, active, limit, pruned, now, source}
    end
    ending[replaces] = true
    ended_as[replaces] = 'handed_off'
    order[#order + 1] = replaces
  end
  local flags = 0
  if replaces ~= '' then
    flags = 4
  end
  if takeover and device_id ~= '' then
    -- The player restarted on this device: its old session gives its place, not a slot more.
    -- Without a token the device id proves nothing: only a session on this network is taken.
    local took_over = false
    for _, s in ipairs(sessions) do
      if s.device == device_id and not ending[s.id]
        and (takeover_proof ~= 'network' or (network ~= '' and s.network == network)) then
        ending[s.id] = true
        ended_as[s.id] = 'replaced'
        order[#order + 1] = s.id
        took_over = true
      end
    end
    if took_over then
      flags = flags + 2
    end
  end

  local u = usage(sessions, ending)
  if counted then
    if u.slots + weight > limit then
      if not replace_oldest then
        return refuse('maxStreams', limit, u.slots)
      end
      -- LIMIT_POLICY=replace_oldest makes room for the slots rule only: the counted sessions
      -- that started first, as many as it takes; the other rules below still refuse.
      local oldest = {}
      for _, s in ipairs(sessions) do
        if s.counted and not ending[s.id] then
          oldest[#oldest + 1] = s
        end
      end
      table.sort(oldest, function(a, b)
        if a.started ~= b.started then
          return a.started < b.started
        end
        return a.id < b.id
      end)
      local free = limit - u.slots
      for _, s in ipairs(oldest) do
        if free >= weight then
          break
        end
        ending[s.id] = true
        ended_as[s.id] = 'replaced'
        order[#order + 1] = s.id
        free = free + s.weight
      end
      if free < weight then
        return refuse('maxStreams', limit, u.slots)
      end
      u = usage(sessions, ending)
    end
    local refusal = caps_refusal(u, network)
    if refusal then
      return refusal
    end
    if max_networks > 0 and network ~= '' and not u.networks[network] and u.network_count >= max_networks then
      flags = flags + 1 -- one network more, admitted under "flag"
    end
  end

  -- Admitted: end the sessions it replaces, each told why on its next heartbeat. Marks whose
  -- block is over go first, with their hand-off names, so neither outlives its use.
  local reply = {1, 0, limit, pruned, now, source, '', 0, 0, flags}
  if #order > 0 then
    local over = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)
    if #over > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
      for _, sid in ipairs(over) do
        redis.call('HDEL', KEYS[2], 'h:' .. sid)
      end
    end
  end
  for _, sid in ipairs(order) do
    redis.call('ZREM', KEYS[1], sid)
    forget_details({sid})
    redis.call('ZADD', KEYS[6], now + ttl, sid)
    if ended_as[sid] == 'handed_off' then
      redis.call('HSET', KEYS[2], 'h:' .. sid, device_name)
    else
      redis.call('HDEL', KEYS[2], 'h:' .. sid)
    end
    reply[#reply + 1] = sid
    reply[#reply + 1] = ended_as[sid]
  end
  if #order > 0 then
    redis.call('PEXPIRE', KEYS[6], ttl)
  end
  reply[2] = active - #order + 1
  record_heartbeat(now,
    {'t:' .. session_id, string.format('%d', now), 'p:' .. session_id, packed_inputs(class, device_id, quality, pool, weight, counted, network)})
  return reply
end

local limit, source = asked_limit, asked_source
local active = redis.call('ZCARD', KEYS[1])

-- The staff override and the three blocks: almost every heartbeat finds none of these keys, so
-- one EXISTS over the four stands for a GET and three ZSCOREs.
local present = redis.call('EXISTS', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
local blocks = {}
if present > 0 then
  local raw = redis.call('GET', KEYS[3])
  local override = tonumber(raw)
  if override then
    limit, source = override, 'override'
  end
  if raw then
    present = present - 1
  end
  if present > 0 then
    blocks = {{KEYS[4], 3}, {KEYS[5], 4}, {KEYS[6], 5}}
  end
end

-- A blocked session is refused until its block ends; then the mark goes.
for _, block in ipairs(blocks) do
  local block_end = redis.call('ZSCORE', block[1], session_id)
  if block_end then
    if tonumber(block_end) > now then
      if block[2] == 5 then
        local moved_to = redis.call('HGET', KEYS[2], 'h:' .. session_id)
        if moved_to then
          return {8, active, limit, pruned, now, source, moved_to}
        end
      end
      return {block[2], active, limit, pruned, now, source}
    end
    redis.call('ZREM', block[1], session_id)
    if block[2] == 5 then
      redis.call('HDEL', KEYS[2], 'h:' .. session_id)
    end
  end
end

if by_policy then
  return admit_by_policy(active, limit, source, pruned, now)
end

local outcome = 0
local reply = {}
local first = nil -- a new session's start time, written with the rest
if not known then
  if redis.call('EXISTS', KEYS[7]) == 1 then
    return {6, active, limit, pruned, now, source}
  end
  if network_over_rate then
    return {7, active, limit, pruned, now, source}
  end
  if active >= limit then
    if not replace_oldest then
      -- A live session is never displaced: a newcomer waits for a free slot.
      return with_live_sessions({2, active, limit, pruned, now, source})
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
      forget_details({sid})
      redis.call('ZADD', KEYS[6], now + ttl, sid)
      reply[#reply + 1] = sid
    end
    redis.call('PEXPIRE', KEYS[6], ttl)
    active = limit - 1
  end
  outcome = 1
  active = active + 1
  first = {'t:' .. session_id, string.format('%d', now)}
end

record_heartbeat(now, first)
local result = {outcome, active, limit, pruned, now, source}
for _, sid in ipairs(reply) do
  result[#result + 1] = sid
end
return result
