#!/usr/bin/env bash
# Heartbeat throughput of StreamLimit against a bare-Django floor, both served
# by the gunicorn set-up of `make run` (same gunicorn.conf.py), on 127.0.0.1.
#
# Run: `make bench` (it finds or starts Redis and sets REDIS_URL), i.e.
#   .venv/bin/python -m devtools.with_redis bash bench/run.sh
#
# Knobs (environment):
#   WORKERS       gunicorn workers           (default: $GUNICORN_WORKERS, else cores + 1, as gunicorn.conf.py)
#   WORKER_CLASS  gunicorn worker class      (default: $GUNICORN_WORKER_CLASS, else gevent, as gunicorn.conf.py)
#   THREADS       threads per gthread worker (default: $GUNICORN_THREADS, else 1)
#   CONNECTIONS   wrk connections            (default 16)
#   DURATION      measured wrk run           (default 20s)
#   WARMUP        unmeasured wrk run first   (default 5s)
#   WRK_THREADS   wrk threads                (default 2)
#   TARGETS       what to measure            (default "heartbeat tokens floor"; "heartbeat" alone for sweeps;
#                 tokens = the heartbeat with HS256 playback tokens on, one account token per user)
#   LOG_LEVEL     the service's log level    (default INFO, as `make run`)
#   BENCH_USERS   user ids in the traffic    (default 20000; see bench/heartbeat.lua)
#   BENCH_SESSION_TTL  SESSION_TTL_SECONDS of the service under test (default 600; see README)
#   PREFILL       1: heartbeat every session once before measuring (default 1)
#   PROFILE       1: record the workers with py-spy during the measured heartbeat and token runs
#                 (slows them down: do not compare those runs' numbers); summarise a profile
#                 with .venv/bin/python bench/profile_summary.py bench/results/latest/profile-heartbeat.txt
#                 (or profile-tokens.txt)
#   PYSPY_ARGS    extra py-spy record options (default --gil: only samples holding the GIL,
#                 i.e. CPU work; "" also counts time blocked on sockets)
#   LABEL         a name for this run's results folder
# Results: bench/results/<UTC time>-<label>/ (and bench/results/latest), gitignored.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

WORKERS=${WORKERS:-${GUNICORN_WORKERS:-$(($(nproc) + 1))}}
WORKER_CLASS=${WORKER_CLASS:-${GUNICORN_WORKER_CLASS:-gevent}}
THREADS=${THREADS:-${GUNICORN_THREADS:-1}}
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
WRK_THREADS=${WRK_THREADS:-2}
TARGETS=${TARGETS:-heartbeat tokens floor}
LOG_LEVEL=${LOG_LEVEL:-INFO}
BENCH_USERS=${BENCH_USERS:-20000}
BENCH_SESSION_TTL=${BENCH_SESSION_TTL:-600}
PREFILL=${PREFILL:-1}
PROFILE=${PROFILE:-0}
PYSPY_ARGS=${PYSPY_ARGS:---gil}
HOST=127.0.0.1 # never anything else
PY=.venv/bin/python
GUNICORN=.venv/bin/gunicorn
PREFIX="bench-$$"

say() { printf '[bench] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- Prerequisites -------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  say "wrk is missing: installing it with apt-get"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi
: "${REDIS_URL:?REDIS_URL is not set: run this through make bench (python -m devtools.with_redis bash bench/run.sh)}"
[ -x "$GUNICORN" ] || die "$GUNICORN is missing: run make setup"

mkdir -p bench/results
# One benchmark at a time, from any checkout: two would share the cores and both be wrong.
exec 9>"${TMPDIR:-/tmp}/streamlimit-bench.lock"
if ! flock -n 9; then
  say "another bench/run.sh is running; waiting for it to finish"
  flock 9
fi
others=$( (pgrep -x wrk; pgrep -f 'bin/gunicorn ') | tr '\n' ' ' || true)
[ -z "$others" ] || say "warning: wrk or gunicorn already running (pids $others): they compete for the CPU"

LABEL=${LABEL:-$WORKER_CLASS-w$WORKERS-t$THREADS-c$CONNECTIONS}
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-$LABEL"
OUT="bench/results/$RUN_ID"
mkdir -p "$OUT"
ln -sfn "$RUN_ID" bench/results/latest

# The service's local state (SQLite, secret key, collected static files) goes
# to a folder of the bench, so the checkout's var/ is left alone.
export STREAMLIMIT_VAR_DIR="$ROOT/bench/results/var"

SERVER_PID=""
PYSPY_PID=""

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

clean_redis() {
  "$PY" - "$PREFIX" <<'PYEOF' || say "could not delete the $PREFIX:* keys"
import os
import sys

import redis

client = redis.Redis.from_url(os.environ["REDIS_URL"])
batch, deleted = [], 0
for key in client.scan_iter(match=sys.argv[1] + ":*", count=5000):
    batch.append(key)
    if len(batch) == 5000:
        deleted += client.unlink(*batch)
        batch.clear()
if batch:
    deleted += client.unlink(*batch)
print(f"[bench] deleted {deleted} keys under {sys.argv[1]}:", file=sys.stderr)
PYEOF
}

cleanup() {
  # Background subshells inherit this trap: only the script itself cleans up.
  [ "$BASHPID" = "$$" ] || return 0
  [ -z "$PYSPY_PID" ] || kill "$PYSPY_PID" 2>/dev/null || true
  stop_server
  clean_redis
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# $1 wsgi app, $2 settings module, $3 log file; SERVER_ENV: extra VAR=value settings
SERVER_ENV=()
start_server() {
  PORT=$(free_port)
  env PLAYER_AUTH="${PLAYER_AUTH:-anonymous}" NEW_SESSIONS_PER_NETWORK_PER_MINUTE="${NEW_SESSIONS_PER_NETWORK_PER_MINUTE:-0}" "${SERVER_ENV[@]}" HOST="$HOST" PORT="$PORT" LOG_LEVEL="$LOG_LEVEL" \
    GUNICORN_WORKERS="$WORKERS" GUNICORN_WORKER_CLASS="$WORKER_CLASS" GUNICORN_THREADS="$THREADS" \
    REDIS_KEY_PREFIX="$PREFIX" SESSION_TTL_SECONDS="$BENCH_SESSION_TTL" DJANGO_SETTINGS_MODULE="$2" \
    "$GUNICORN" --config gunicorn.conf.py "$1" >"$3" 2>&1 &
  SERVER_PID=$!
  URL="http://$HOST:$PORT/heartbeat"
  local probe='{"userId":"bench-probe","streamId":"bench-probe","sessionId":"bench-probe"}' code
  for _ in $(seq 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || die "gunicorn exited; see $3"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      --data "$probe" "$URL" 2>/dev/null || true)
    case "$code" in 200 | 400 | 401) return 0 ;; esac
    sleep 0.1
  done
  die "gunicorn did not answer POST /heartbeat within 30 s (last status: ${code:-none}); see $3"
}

# $1 mode, $2 duration, $3 output file, then extra wrk options
run_wrk() {
  local mode=$1 duration=$2 out=$3
  shift 3
  BENCH_MODE="$mode" BENCH_USERS="$BENCH_USERS" BENCH_THREADS="$WRK_THREADS" BENCH_TOKEN_FILE="$TOKEN_FILE" \
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$duration" -s bench/heartbeat.lua "$@" "$URL" >"$out"
}

# Every session once (bench/heartbeat.lua, BENCH_MODE=prefill): each wrk
# thread leaves a file when it is done, and wrk ends early on SIGINT.
prefill() {
  local done_file="$OUT/prefill-done" wrk_pid started=$SECONDS
  rm -f "$done_file".*
  BENCH_MODE=prefill BENCH_USERS="$BENCH_USERS" BENCH_THREADS="$WRK_THREADS" BENCH_DONE_FILE="$done_file" \
    BENCH_TOKEN_FILE="$TOKEN_FILE" \
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d600s -s bench/heartbeat.lua "$URL" >"$OUT/$name-prefill.txt" &
  wrk_pid=$!
  while kill -0 "$wrk_pid" 2>/dev/null; do
    if [ "$(find "$OUT" -maxdepth 1 -name 'prefill-done.*' | wc -l)" -ge "$WRK_THREADS" ]; then
      kill -INT "$wrk_pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  wait "$wrk_pid" || die "prefill failed; see $OUT/$name-prefill.txt"
  rm -f "$done_file".*
  say "$name: prefill took $((SECONDS - started)) s: $(sed -n 's/^BENCH \(requests=[0-9]*\) \(rps=[0-9.]*\).* \(2xx=[0-9]*\) \(4xx=[0-9]*\).*/\1 \2 \3 \4/p' "$OUT/$name-prefill.txt")"
}

# CPU accounting over the measured run, so that a run that shared the machine
# with another job can be told apart. Prints: all busy steal gunicorn redis
# (clock ticks since boot: /proc/stat's totals, and utime+stime of the gunicorn
# master and workers and of any local redis-server).
cpu_snapshot() {
  local pid total=0 stat fields
  for pid in "$SERVER_PID" $(pgrep -P "$SERVER_PID") SPLIT $(pgrep -x redis-server); do
    if [ "$pid" = SPLIT ]; then
      printf -v gunicorn_ticks '%s' "$total"
      total=0
      continue
    fi
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    read -r -a fields <<<"${stat##*) }" # fields after "(comm) ": state is [0], utime [11], stime [12]
    total=$((total + fields[11] + fields[12]))
  done
  awk -v g="$gunicorn_ticks" -v r="$total" '$1 == "cpu" {
      all = 0; for (i = 2; i <= 9; i++) all += $i
      printf "%d %d %d %d %d\n", all, all - $5 - $6 - $9, $9, g, r }' /proc/stat
}

# $1 snapshot before, $2 after, $3 wrk CPU seconds, $4 requests: one line of % of one core.
cpu_report() {
  awk -v a="$1" -v b="$2" -v wrk="$3" -v req="$4" -v hz="$(getconf CLK_TCK)" -v cores="$(nproc)" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    all = y[1] - x[1]; busy = y[2] - x[2]; steal = y[3] - x[3]; g = y[4] - x[4]; r = y[5] - x[5]
    wall = all / cores; w = wrk * hz
    if (wall <= 0) { print "cpu: ?"; exit }
    printf "gunicorn %.0f%%, redis %.0f%%, wrk %.0f%%, everything else (other processes, kernel) %.0f%%, idle %.0f%%, steal %.0f%% (%% of one core, %d cores); gunicorn CPU per request %.2f ms\n",
      100 * g / wall, 100 * r / wall, 100 * w / wall, 100 * (busy - g - r - w) / wall,
      100 * (all - busy - steal) / wall, 100 * steal / wall, cores, req ? 1000 * g / hz / req : 0
  }'
}

field() { sed -n "s/^BENCH.* $1=\([^ ]*\).*/\1/p" "$2"; }

measure() { # $1 name: heartbeat or floor
  local name=$1 app settings
  SERVER_ENV=()
  TOKEN_FILE=""
  case "$name" in
    heartbeat) app=streamlimit.wsgi:application settings=streamlimit.settings ;;
    # The heartbeat run with issue 20's "family" plan in force (bench/family-policy.json) and every
    # body carrying deviceClass, deviceId and quality.
    policy) app=streamlimit.wsgi:application settings=streamlimit.settings ;;
    tokens)
      app=streamlimit.wsgi:application settings=streamlimit.settings
      # A throw-away HS256 key for this run only, and one account token per simulated user.
      local secret
      secret=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
      SERVER_ENV=("PLAYBACK_TOKEN_KEYS=bench=$secret")
      TOKEN_FILE="$OUT/token-list.txt"
      BENCH_SECRET="$secret" "$PY" bench/make_tokens.py "$BENCH_USERS" >"$TOKEN_FILE" ||
        die "could not make the tokens"
      ;;
    floor) app=bench.floor.wsgi:application settings=bench.floor.settings ;;
    *) die "unknown target $name (heartbeat, policy, tokens or floor)" ;;
  esac
  say "$name: gunicorn $WORKER_CLASS, $WORKERS workers x $THREADS threads ($app); wrk -t$WRK_THREADS -c$CONNECTIONS"
  start_server "$app" "$settings" "$OUT/$name-server.log"
  export BENCH_POLICY_INPUTS=0
  if [ "$name" = policy ]; then
    REDIS_KEY_PREFIX="$PREFIX" "$PY" manage.py policy apply bench/family-policy.json --reason "bench run" >/dev/null ||
      die "could not apply bench/family-policy.json"
    export BENCH_POLICY_INPUTS=1
    sleep 2.5 # every worker checks the version in force at most every 2 s
  fi
  if [ "$name" != floor ] && [ "$PREFILL" = 1 ]; then
    say "$name: prefill, every session once ($BENCH_USERS users)"
    prefill
  fi
  say "$name: warm-up $WARMUP"
  run_wrk steady "$WARMUP" "$OUT/$name-warmup.txt"
  local seconds=${DURATION%s}
  if [ "$PROFILE" = 1 ] && [ "$name" != floor ]; then
    local pyspy
    pyspy=$(command -v .venv/bin/py-spy py-spy | head -1 || true)
    [ -n "$pyspy" ] || die "PROFILE=1 needs py-spy (.venv/bin/pip install py-spy)"
    # shellcheck disable=SC2086  # PYSPY_ARGS is a list of options
    "$pyspy" record --pid "$SERVER_PID" --subprocesses --rate 200 --duration "$seconds" --format raw $PYSPY_ARGS \
      -o "$OUT/profile-$name.txt" >"$OUT/$name-py-spy.log" 2>&1 &
    PYSPY_PID=$!
    sleep 1
  fi
  say "$name: measuring $DURATION"
  local before after wrk_cpu TIMEFORMAT="%U %S"
  before=$(cpu_snapshot)
  wrk_cpu=$({ time run_wrk steady "$DURATION" "$OUT/$name.txt" --latency 2>"$OUT/$name-wrk.err"; } 2>&1)
  after=$(cpu_snapshot)
  if [ -n "$PYSPY_PID" ]; then
    wait "$PYSPY_PID" || say "py-spy failed; see $OUT/$name-py-spy.log"
    PYSPY_PID=""
  fi
  stop_server
  # The policy would stay in force under the run's prefix: a target after it starts from an empty one.
  [ "$name" != policy ] || clean_redis
  gzip -f "$OUT/$name-server.log" # one JSON line per request: tens of MB
  cp "$OUT/$name.txt" "bench/results/$name.txt" # the latest, at a fixed path
  grep -q '^BENCH ' "$OUT/$name.txt" || die "no result line in $OUT/$name.txt"
  # Steal is time the hypervisor gave this VM's CPUs to someone else.
  local cpu other
  cpu=$(cpu_report "$before" "$after" "$(awk '{ print $1 + $2 }' <<<"$wrk_cpu")" "$(field requests "$OUT/$name.txt")")
  echo "$name cpu: $cpu" >>"$OUT/cpu.txt"
  say "$name cpu: $cpu"
  other=$(sed -n 's/.*everything else[^%]* \([0-9-]*\)%.*/\1/p' <<<"$cpu")
  if [ "${other:-0}" -ge 30 ]; then
    say "warning: other processes used the CPU during the $name run (${other}% of a core): its numbers are low"
  fi
  say "$name: $(field rps "$OUT/$name.txt") req/s, p50 $(field p50_ms "$OUT/$name.txt") ms, p99 $(field p99_ms "$OUT/$name.txt") ms, 2xx $(field 2xx "$OUT/$name.txt"), 4xx $(field 4xx "$OUT/$name.txt"), 5xx $(field 5xx "$OUT/$name.txt"), other $(field other "$OUT/$name.txt"), socket errors $(field errors "$OUT/$name.txt")"
  if [ "$(field errors "$OUT/$name.txt")" != 0 ]; then
    # Sync gunicorn closes every connection, so wrk opens one per request and
    # the loopback's ephemeral ports sit in TIME_WAIT; a reused one can stall
    # for a second or more. wrk's req/s then counts the stall.
    say "warning: $name had socket errors or timeouts (stalled connections): its req/s is low; run again"
  fi
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "gunicorn: $WORKER_CLASS, workers=$WORKERS, threads=$THREADS; LOG_LEVEL=$LOG_LEVEL"
  echo "wrk: -t$WRK_THREADS -c$CONNECTIONS -d$DURATION (warm-up $WARMUP), users=$BENCH_USERS, prefill=$PREFILL, session TTL=${BENCH_SESSION_TTL}s"
} >"$OUT/summary.txt"

say "migrate + collectstatic, as make run (state in $STREAMLIMIT_VAR_DIR)"
"$PY" manage.py migrate --noinput >"$OUT/migrate.log" 2>&1 || die "migrate failed; see $OUT/migrate.log"
"$PY" manage.py collectstatic --noinput --verbosity 0 >>"$OUT/migrate.log" 2>&1 ||
  die "collectstatic failed; see $OUT/migrate.log"

for target in $TARGETS; do
  measure "$target"
done

{
  echo
  printf '%-10s %10s %9s %9s %9s %7s %7s %7s %7s\n' target "req/s" "p50 ms" "p90 ms" "p99 ms" 2xx 4xx 5xx errors
  for target in $TARGETS; do
    f="$OUT/$target.txt"
    printf '%-10s %10s %9s %9s %9s %7s %7s %7s %7s\n' "$target" "$(field rps "$f")" "$(field p50_ms "$f")" \
      "$(field p90_ms "$f")" "$(field p99_ms "$f")" "$(field 2xx "$f")" "$(field 4xx "$f")" "$(field 5xx "$f")" \
      "$(field errors "$f")"
  done
  if [ -f "$OUT/heartbeat.txt" ] && [ -f "$OUT/floor.txt" ]; then
    echo "heartbeat/floor = $(awk -v h="$(field rps "$OUT/heartbeat.txt")" -v f="$(field rps "$OUT/floor.txt")" \
      'BEGIN { printf "%.2f", h / f }')"
  fi
  if [ -f "$OUT/tokens.txt" ] && [ -f "$OUT/floor.txt" ]; then
    echo "tokens/floor = $(awk -v h="$(field rps "$OUT/tokens.txt")" -v f="$(field rps "$OUT/floor.txt")" \
      'BEGIN { printf "%.2f", h / f }')"
  fi
  [ "$PROFILE" != 1 ] || echo "(profiled with py-spy: the heartbeat numbers are lower than without it)"
  for target in $TARGETS; do
    [ "$(field errors "$OUT/$target.txt")" = 0 ] ||
      echo "($target had socket errors or timeouts: stalled connections make its req/s low; run again)"
  done
} >>"$OUT/summary.txt"
[ ! -f "$OUT/cpu.txt" ] || cat "$OUT/cpu.txt" >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
echo "results: $OUT"
