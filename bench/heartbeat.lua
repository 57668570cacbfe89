-- wrk script: realistic POST /heartbeat traffic for StreamLimit (see bench/README.md).
--
--   wrk -t2 -c16 -d20s -s bench/heartbeat.lua --latency http://127.0.0.1:PORT/heartbeat
--
-- The population: BENCH_USERS user ids (default 20000), split between the wrk
-- threads (BENCH_THREADS must equal -t, default 2, so that the split is exact;
-- a wrong value only changes the number of users). Each user has 1, 2 or 3
-- sessions (40% / 35% / 25%), always the same ids, so a second wrk run sends
-- the same sessions again.
--
-- BENCH_MODE=steady (default): each request is, with probability
-- 1 - BENCH_FRESH_SHARE (default 0.05), a repeat heartbeat of one of the
-- thread's sessions chosen at random, and otherwise a heartbeat of a brand new
-- session of a user who has 3 sessions already, which the limit (3) refuses
-- with 400 as long as those 3 sessions are live.
--
-- BENCH_MODE=prefill: each thread sends every one of its sessions exactly
-- once, in a random order, then stops (see prefill_done); run it first so
-- that the steady run sees live sessions (repeat heartbeats) rather than
-- first heartbeats.
--
-- Against the floor (bench/floor), which answers 200 to everything, the same
-- requests are sent; only the status counts differ.
--
-- BENCH_TOKEN_FILE (the token run): a file of one playback token per user, in
-- user order (bench/make_tokens.py); each request then carries its user's
-- token as "Authorization: Bearer <token>".
--
-- done() prints the status counts and one machine-readable line:
--   BENCH requests=N rps=R p50_ms=X p90_ms=Y p99_ms=Z max_ms=M 2xx=.. 4xx=.. 5xx=.. other=.. errors=..

local USERS = tonumber(os.getenv("BENCH_USERS") or "") or 20000
local THREADS = tonumber(os.getenv("BENCH_THREADS") or "") or 2
local MODE = os.getenv("BENCH_MODE") or "steady"
local FRESH_SHARE = tonumber(os.getenv("BENCH_FRESH_SHARE") or "") or 0.05
local TOKEN_FILE = os.getenv("BENCH_TOKEN_FILE") or ""

-- ---------------------------------------------------------------------------
-- setup / done: the main Lua state, which sees the threads only through get/set.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

local function ms(us)
   return us / 1000.0
end

function done(summary, latency, requests)
   local c = { 0, 0, 0, 0 }
   for _, thread in ipairs(threads) do
      c[1] = c[1] + (thread:get("c2xx") or 0)
      c[2] = c[2] + (thread:get("c4xx") or 0)
      c[3] = c[3] + (thread:get("c5xx") or 0)
      c[4] = c[4] + (thread:get("cother") or 0)
   end
   local e = summary.errors
   local errors = e.connect + e.read + e.write + e.timeout
   local seconds = summary.duration / 1e6
   io.write("Status codes (all threads):\n")
   io.write(string.format("  2xx: %d  4xx: %d  5xx: %d  other (not 2xx/4xx/5xx): %d\n", c[1], c[2], c[3], c[4]))
   io.write(string.format("  socket errors (connect/read/write/timeout): %d/%d/%d/%d\n",
      e.connect, e.read, e.write, e.timeout))
   for _, thread in ipairs(threads) do
      io.write(string.format("  thread %d: 2xx %d, 4xx %d, 5xx %d, other %d\n", thread:get("tid"),
         thread:get("c2xx") or 0, thread:get("c4xx") or 0, thread:get("c5xx") or 0, thread:get("cother") or 0))
   end
   io.write(string.format("RESULT rps=%d p50_ms=%.2f p99_ms=%.2f requests=%d errors=%d\n",
      math.floor(summary.requests / seconds + 0.5), ms(latency:percentile(50)), ms(latency:percentile(99)),
      summary.requests, errors))
   io.write(string.format(
      "BENCH requests=%d rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f 2xx=%d 4xx=%d 5xx=%d other=%d errors=%d\n",
      summary.requests, summary.requests / seconds,
      ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)), ms(latency.max),
      c[1], c[2], c[3], c[4], errors))
end

-- ---------------------------------------------------------------------------
-- The running phase: one Lua state per wrk thread.

local sessions = {}   -- { body = <json> } for every session this thread owns
local full_users = {} -- { user = <id>, stream = <id> } for users with 3 sessions
local next_prefill = 0
local fresh_serial = 0

c2xx, c4xx, c5xx, cother = 0, 0, 0, 0

-- Deterministic ids (the same in every run): 32-bit multiplicative hashing.
local function hash32(a, b)
   return (a * 2654435761 + b * 40503 + 12345) % 4294967296
end

local function uuid_like(a, b)
   local h1, h2, h3 = hash32(a, b), hash32(b + 7, a), hash32(a + b, 99991)
   return string.format("%08x-%04x-4%03x-%04x-%08x%04x",
      h1, h2 % 65536, math.floor(h2 / 65536) % 4096, 32768 + h3 % 16384, h3, math.floor(h1 / 65536))
end

local function session_count(user_index)
   local r = hash32(user_index, 1) % 100
   if r < 40 then return 1 elseif r < 75 then return 2 else return 3 end
end

-- BENCH_POLICY_INPUTS=1 (the policy run): every body also carries the policy's inputs: device
-- class "tv" (the family plan's cap of 3 TVs refuses a fourth screen, as the default limit of 3
-- does in the heartbeat run: the same mix of answers), a device id of the session's own, quality "hd".
local POLICY_INPUTS = os.getenv("BENCH_POLICY_INPUTS") == "1"

local function body(user, stream, session)
   if POLICY_INPUTS then
      return string.format(
         '{"userId":"%s","streamId":"%s","sessionId":"%s","deviceClass":"tv","deviceId":"%s","quality":"hd"}',
         user, stream, session, session)
   end
   return string.format('{"userId":"%s","streamId":"%s","sessionId":"%s"}', user, stream, session)
end

-- The user's token headers (token run), or nil: the default headers.
local token_headers = {}

local function load_tokens()
   if TOKEN_FILE == "" then
      return
   end
   local f = assert(io.open(TOKEN_FILE, "r"))
   local i = 0
   for line in f:lines() do
      i = i + 1
      if (i - tid) % THREADS == 0 then
         token_headers[i] = {
            ["Content-Type"] = "application/json",
            ["Accept"] = "application/json",
            ["User-Agent"] = "streamlimit-bench/1 (wrk)",
            ["Authorization"] = "Bearer " .. line,
         }
      end
   end
   f:close()
end

local function seed(tid)
   local s = os.time() * 1000 + tid * 7919
   local f = io.open("/dev/urandom", "rb")
   if f then
      local bytes = f:read(4)
      f:close()
      s = 0
      for i = 1, #bytes do s = s * 256 + bytes:byte(i) end
      s = s + tid
   end
   math.randomseed(s)
   -- LuaJIT's first values after seeding are poorly mixed; skip a few.
   for _ = 1, 10 do math.random() end
end

function init(args)
   seed(tid)
   if wrk.path == nil or wrk.path == "" or wrk.path == "/" then
      wrk.path = "/heartbeat" -- the URL may be given as just http://127.0.0.1:PORT
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Accept"] = "application/json"
   wrk.headers["User-Agent"] = "streamlimit-bench/1 (wrk)"
   for i = tid, USERS, THREADS do
      local user = string.format("user-%06d", i)
      local n = session_count(i)
      local stream
      for j = 1, n do
         -- Each screen plays its own title (a few hundred titles in all).
         stream = string.format("title-%04d", hash32(i, j) % 400)
         table.insert(sessions, { body = body(user, stream, uuid_like(i, j)), index = i })
      end
      if n == 3 then
         table.insert(full_users, { user = user, stream = stream, index = i })
      end
   end
   load_tokens()
   if MODE == "prefill" then
      -- Fisher-Yates: every session once, in a random order.
      for i = #sessions, 2, -1 do
         local j = math.random(i)
         sessions[i], sessions[j] = sessions[j], sessions[i]
      end
   end
end

function request()
   local b, index
   if MODE == "prefill" then
      next_prefill = next_prefill % #sessions + 1
      b, index = sessions[next_prefill].body, sessions[next_prefill].index
   elseif #full_users > 0 and math.random() < FRESH_SHARE then
      -- A 4th screen for a user already watching on 3: never seen before.
      local u = full_users[math.random(#full_users)]
      fresh_serial = fresh_serial + 1
      b = body(u.user, u.stream, string.format("fresh-%d-%d-%08x", tid, fresh_serial, math.random(0, 2147483646)))
      index = u.index
   else
      local s = sessions[math.random(#sessions)]
      b, index = s.body, s.index
   end
   return wrk.format(nil, nil, token_headers[index], b)
end

local responses = 0

-- wrk's main thread sleeps for the whole -d duration whatever the threads do,
-- so a thread that is done stops itself and leaves a file BENCH_DONE_FILE.<tid>:
-- bench/run.sh sends wrk SIGINT (which ends the run early, results printed)
-- once every thread has left one.
function prefill_done()
   local marker = os.getenv("BENCH_DONE_FILE")
   if marker then
      local f = io.open(marker .. "." .. tid, "w")
      if f then f:close() end
   end
   wrk.thread:stop()
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      c2xx = c2xx + 1
   elseif status >= 400 and status < 500 then
      c4xx = c4xx + 1
   elseif status >= 500 and status < 600 then
      c5xx = c5xx + 1
   else
      cother = cother + 1
   end
   if MODE == "prefill" then
      responses = responses + 1
      -- One more than the count: wrk calls request() once before the run to
      -- check it, which skips the first session; the wrap-around sends it.
      if responses == #sessions + 1 then
         prefill_done()
      end
   end
end
