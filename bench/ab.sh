#!/usr/bin/env bash
# Heartbeat throughput of two set-ups, run alternately (A B A B ...) so that a
# slow spell of the shared machine does not land on one of them.
#
# Run: .venv/bin/python -m devtools.with_redis bash bench/ab.sh
# Knobs: A_DIR / B_DIR (checkouts to run bench/run.sh in; default this one; a
# checkout without .venv uses this one's), A_CLASS / B_CLASS (worker class,
# default sync / gevent), A_WORKERS / B_WORKERS (default cores + 1), A_THREADS /
# B_THREADS (threads per gthread worker, default 1), REPEAT
# (rounds, default 3), AB_TARGET (what bench/run.sh measures: heartbeat, the
# default, or tokens), plus every knob of bench/run.sh (DURATION, CONNECTIONS...).
# Example, today's sync workers on the commit before a change against this checkout:
#   git archive BASE | tar -x -C /tmp/base && A_DIR=/tmp/base bash bench/ab.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HERE=$(pwd)
: "${REDIS_URL:?run through .venv/bin/python -m devtools.with_redis bash bench/ab.sh}"
A_DIR=${A_DIR:-$HERE} B_DIR=${B_DIR:-$HERE}
A_CLASS=${A_CLASS:-sync} B_CLASS=${B_CLASS:-gevent}
A_WORKERS=${A_WORKERS:-$(($(nproc) + 1))} B_WORKERS=${B_WORKERS:-$(($(nproc) + 1))}
A_THREADS=${A_THREADS:-1} B_THREADS=${B_THREADS:-1}
REPEAT=${REPEAT:-3}
AB_TARGET=${AB_TARGET:-heartbeat}
for dir in "$A_DIR" "$B_DIR"; do
  [ -e "$dir/.venv" ] || ln -s "$HERE/.venv" "$dir/.venv"
done
mkdir -p bench/results
TABLE="bench/results/ab-$(date -u +%Y%m%dT%H%M%SZ).txt"
field() { sed -n "s/^BENCH.* $1=\([^ ]*\).*/\1/p" "$2"; }
printf '%-5s %-2s %-8s %3s %4s %9s %8s %8s %6s %7s %s\n' round ab class w t "req/s" "p50 ms" "p99 ms" "else" errors "cpu" | tee "$TABLE"
for round in $(seq "$REPEAT"); do
  for side in A B; do
    if [ "$side" = A ]; then
      dir=$A_DIR class=$A_CLASS workers=$A_WORKERS threads=$A_THREADS
    else
      dir=$B_DIR class=$B_CLASS workers=$B_WORKERS threads=$B_THREADS
    fi
    (cd "$dir" && WORKER_CLASS=$class WORKERS=$workers THREADS=$threads TARGETS=$AB_TARGET \
      LABEL="ab-$side-$AB_TARGET-$class-w$workers-t$threads-r$round" \
      bash bench/run.sh >/dev/null 2>&1) || echo "run failed: $side round $round (see $dir/bench/results/latest)" >&2
    res=$(readlink -f "$dir/bench/results/latest")
    cpu=$(cat "$res/cpu.txt" 2>/dev/null || true)
    other=$(sed -n 's/.*everything else[^%]* \([0-9-]*\)%.*/\1/p' <<<"$cpu")
    per_request=$(sed -n 's/.*CPU per request \([0-9.]*\) ms.*/\1/p' <<<"$cpu")
    printf '%-5s %-2s %-8s %3s %4s %9s %8s %8s %6s %7s %s\n' "$round" "$side" "$class" "$workers" "$threads" \
      "$(field rps "$res/$AB_TARGET.txt")" "$(field p50_ms "$res/$AB_TARGET.txt")" "$(field p99_ms "$res/$AB_TARGET.txt")" \
      "${other:-?}%" "$(field errors "$res/$AB_TARGET.txt")" "${per_request:-?}ms/req" | tee -a "$TABLE"
  done
done
echo "table: $TABLE"
