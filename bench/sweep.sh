#!/usr/bin/env bash
# Heartbeat throughput for several gunicorn worker set-ups (bench/run.sh, heartbeat only).
#
# Run: .venv/bin/python -m devtools.with_redis bash bench/sweep.sh
# Columns: cpu/req is the gunicorn processes' CPU time per request; else is the
# CPU (% of one core) used by anything but gunicorn, Redis and wrk during the run:
# more than ~30% means another job shared the machine and the run is low.
# Knobs: SWEEP_CONFIGS (class:workers:threads ..., default below), REPEAT (rounds,
# default 3; the configs are interleaved round by round, so a slow spell of the
# machine does not land on one config), plus every knob of bench/run.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${REDIS_URL:?run through .venv/bin/python -m devtools.with_redis bash bench/sweep.sh}"

SWEEP_CONFIGS=${SWEEP_CONFIGS:-sync:2:1 sync:4:1 sync:6:1 sync:8:1 gthread:2:4 gthread:4:4}
REPEAT=${REPEAT:-3}
mkdir -p bench/results
TABLE="bench/results/sweep-$(date -u +%Y%m%dT%H%M%SZ).txt"

field() { sed -n "s/^BENCH.* $1=\([^ ]*\).*/\1/p" "$2"; }

printf '%-8s %3s %3s %5s %9s %8s %8s %6s %5s %9s %6s %6s  %s\n' class w t round "req/s" "p50 ms" "p99 ms" "4xx%" 5xx "cpu/req" "else" "steal" results |
  tee "$TABLE"
for round in $(seq "$REPEAT"); do
  for config in $SWEEP_CONFIGS; do
    IFS=: read -r class workers threads <<<"$config"
    WORKER_CLASS=$class WORKERS=$workers THREADS=$threads TARGETS=heartbeat \
      LABEL="sweep-$class-w$workers-t$threads-r$round" bash bench/run.sh >/dev/null 2>&1 ||
      echo "run failed: $config round $round (see bench/results/latest)" >&2
    dir=$(readlink -f bench/results/latest)
    f="$dir/heartbeat.txt"
    cpu=$(cat "$dir/cpu.txt" 2>/dev/null || true)
    other=$(sed -n 's/.*everything else[^%]* \([0-9-]*\)%.*/\1/p' <<<"$cpu")
    steal=$(sed -n 's/.*steal \([0-9-]*\)%.*/\1/p' <<<"$cpu")
    per_request=$(sed -n 's/.*CPU per request \([0-9.]*\) ms.*/\1/p' <<<"$cpu")
    printf '%-8s %3s %3s %5s %9s %8s %8s %6s %5s %9s %6s %6s  %s\n' "$class" "$workers" "$threads" "$round" \
      "$(field rps "$f")" "$(field p50_ms "$f")" "$(field p99_ms "$f")" \
      "$(awk -v a="$(field 4xx "$f")" -v r="$(field requests "$f")" 'BEGIN { if (r) printf "%.1f", 100 * a / r }')" \
      "$(field 5xx "$f")" "${per_request:-?}ms" "${other:-?}%" "${steal:-?}%" "$(basename "$dir")" | tee -a "$TABLE"
  done
done
echo "table: $TABLE"
