"""``make bench-players``: heartbeats paced like real players, open loop at shares of the measured capacity.

    .venv/bin/python -m bench.players [--accounts 200000] [--level-seconds 30] [--out DIR]

Without ``--url`` it starts everything itself: a redis-server of its own on
a free port (so that INFO commandstats counts only this benchmark's
commands), and gunicorn with ``gunicorn.conf.py``, 3 gevent workers, as
``make bench`` runs it. Then:

1. pre-seeds every session into Redis (``bench/players/seed.py``);
2. warms up, then measures the capacity closed-loop (``--capacity-connections``
   connections, each sending its next request as soon as it has its answer);
3. runs open loop at each share of that capacity (``--levels``, default
   50%, 80%, 100%), latency measured from each request's intended send time;
4. writes ``result.json`` and ``latency.png`` to ``--out`` (default
   ``bench/results/players-<UTC time>/``) and prints a summary.

With ``--url`` it sends load to a server started by someone else (the test
does); ``--redis-url`` and ``--key-prefix`` are then the server's, for the
seeding, and ``--own-redis`` says that Redis serves this benchmark only, so its
commandstats may be read (never say so of a shared Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.machine import CORES, bench_lock, loadavg  # noqa: E402
from bench.players.load import Generator, LevelResult  # noqa: E402
from bench.players.population import LIMIT, Population  # noqa: E402
from bench.players.report import counts, latency_summary, plot, write_json  # noqa: E402
from bench.players.seed import seed  # noqa: E402
from bench.players.server import Gunicorn, OwnRedis  # noqa: E402
from bench.players.stats import Snapshot, cost  # noqa: E402

MIN_GAP_SECONDS = 1.0  # no account heard twice within a second, as with real players


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench-players] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.players", description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=200_000, help="accounts (2.1 sessions each on average)")
    parser.add_argument(
        "--churn-share",
        type=float,
        default=0.01,
        help="share of wheel ticks where a session leaves and a new one takes its place",
    )
    parser.add_argument(
        "--refused-share", type=float, default=0.05, help="share of requests that are refused newcomers"
    )
    parser.add_argument("--connections", type=int, default=48, help="keep-alive connections of the open loop")
    parser.add_argument(
        "--capacity-connections", type=int, default=16, help="connections of the closed-loop capacity run"
    )
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--level-seconds", type=float, default=30.0)
    parser.add_argument("--drain-seconds", type=float, default=10.0, help="how long a level waits for its last answers")
    parser.add_argument("--levels", default="0.5,0.8,1.0", help="shares of the capacity, comma-separated")
    parser.add_argument("--workers", type=int, default=CORES + 1, help="gunicorn workers (when starting the server)")
    parser.add_argument("--worker-class", default="gevent")
    parser.add_argument(
        "--session-ttl", type=int, default=3600, help="SESSION_TTL_SECONDS of the server (longer than the run)"
    )
    parser.add_argument("--url", help="a running server (else one is started)")
    parser.add_argument("--redis-url", help="with --url: the Redis that server uses")
    parser.add_argument("--key-prefix", help="with --url: the server's REDIS_KEY_PREFIX")
    parser.add_argument("--server-pid", type=int, help="with --url: gunicorn's master pid, for its CPU")
    parser.add_argument("--own-redis", action="store_true", help="with --url: that Redis serves only this benchmark")
    parser.add_argument(
        "--no-lock",
        action="store_true",
        help="skip the benchmarks' lock (a check of the tool itself, whose speed nobody reads: the test)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="result folder")
    args = parser.parse_args(argv)
    if args.url and not (args.redis_url and args.key_prefix):
        parser.error("--url needs --redis-url and --key-prefix (the seeding writes the server's keys)")
    args.shares = [float(share) for share in args.levels.split(",")]
    return args


def git_commit() -> str:
    """The checkout's commit, marked when it has changes outside bench/."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":!bench"], cwd=ROOT, check=False)
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head.stdout.strip() + (" (+ uncommitted changes)" if dirty.returncode else "")


def cpu_model() -> str:
    """The CPU's model name."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


async def run_levels(
    args: argparse.Namespace, population: Population, url: str, stats_client: redis.Redis | None, server_pid: int | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Warm-up, capacity, then each open-loop level; their results."""
    parts = urlsplit(url)
    generator = Generator(parts.hostname, parts.port, population.next, args.connections, population.unsent)
    redis_measured = stats_client is not None

    def level(mode: str, result: LevelResult, before: Snapshot, after: Snapshot, **extra: Any) -> dict[str, Any]:
        rate = result.answered / result.seconds if result.seconds else 0.0
        out: dict[str, Any] = {"mode": mode, **extra}
        out["achieved_rps"] = round(rate, 1)
        out["interval_seconds"] = round(population.interval_seconds(rate), 1) if rate else None
        out["min_seconds_between_requests_of_one_account"] = (
            round(population.min_gap_seconds(rate), 2) if rate else None
        )
        out["latency_ms"] = latency_summary(result.latencies_ms)
        out.update(counts(result))
        out["cost"] = cost(before, after, result.answered, redis_measured)
        return out

    say(f"warm-up: closed loop, {args.capacity_connections} connections, {args.warmup_seconds:g} s")
    await generator.closed_loop(args.capacity_connections, args.warmup_seconds)
    say(f"capacity: closed loop, {args.capacity_connections} connections, {args.capacity_seconds:g} s")
    before = Snapshot.take(stats_client, server_pid)
    result = await generator.closed_loop(args.capacity_connections, args.capacity_seconds)
    after = Snapshot.take(stats_client, server_pid)
    capacity = level("closed", result, before, after, connections=args.capacity_connections)
    capacity["rps"] = capacity["achieved_rps"]
    say(f"capacity: {capacity['rps']:,.0f} requests/s, p50 {capacity['latency_ms']['p50']} ms")
    if not capacity["rps"]:
        raise SystemExit("[bench-players] the capacity run got no answers")
    cap_rate = population.max_rate(MIN_GAP_SECONDS)
    levels = []
    await generator.warm(args.connections)
    for share in args.shares:
        wanted = share * capacity["rps"]
        rate = min(wanted, cap_rate)
        say(
            f"open loop at {100 * share:.0f}% of capacity: {rate:,.0f} requests/s for {args.level_seconds:g} s"
            + (" (capped: an account would be heard twice within a second)" if rate < wanted else "")
        )
        before = Snapshot.take(stats_client, server_pid)
        result = await generator.open_loop(rate, args.level_seconds, args.drain_seconds)
        after = Snapshot.take(stats_client, server_pid)
        entry = level(
            "open",
            result,
            before,
            after,
            share_of_capacity=share,
            offered_rps=round(rate, 1),
            capped_by_pacing=rate < wanted,
            connections=args.connections,
            arrivals_per_second=round(rate * (1 - population.refused_share) * population.churn_share, 2),
            refusals_per_second=round(rate * population.refused_share, 2),
        )
        lat = entry["latency_ms"]
        say(
            f"  {entry['achieved_rps']:,.0f} answered/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
            f"p99.9 {lat['p99_9']} ms; unanswered {entry['unanswered']}, errors {entry['errors']}"
        )
        levels.append(entry)
    return capacity, levels


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every request got the answer it should."""
    args = parse_args(argv)
    with contextlib.nullcontext() if args.no_lock else bench_lock():
        started_at = datetime.now(UTC)
        out = args.out or ROOT / "bench" / "results" / f"players-{started_at:%Y%m%dT%H%M%SZ}"
        out.mkdir(parents=True, exist_ok=True)
        load_before = loadavg()
        own_redis: OwnRedis | None = None
        server: Gunicorn | None = None
        try:
            if args.url:
                url, redis_url, prefix, server_pid = args.url, args.redis_url, args.key_prefix, args.server_pid
                measure_redis = args.own_redis
            else:
                own_redis = OwnRedis()
                redis_url, prefix, measure_redis = own_redis.url, f"players-{uuid.uuid4().hex[:8]}", True
                say(f"redis-server of the benchmark's own on port {own_redis.port}")
                server = Gunicorn(
                    redis_url,
                    prefix,
                    out / "server.log",
                    workers=args.workers,
                    worker_class=args.worker_class,
                    session_ttl_seconds=args.session_ttl,
                )
                url, server_pid = server.url, server.pid
                say(f"gunicorn {args.worker_class} x{args.workers} on {url}")
            say(f"population: {args.accounts:,} accounts")
            population = Population(
                args.accounts,
                churn_share=args.churn_share,
                refused_share=args.refused_share,
                seed=args.seed,
                salt=uuid.uuid4().hex[:6],
            )
            say(f"seeding {population.sessions:,} sessions straight into Redis (admit.lua + the activity writer)")
            seeded = seed(
                redis_url, prefix, population.seeded_sessions(), limit=LIMIT, session_ttl_seconds=args.session_ttl
            )
            say(f"seeded {seeded['sessions']:,} sessions in {seeded['seconds']:g} s")
            stats_client = redis.Redis.from_url(redis_url) if measure_redis else None
            capacity, levels = asyncio.run(run_levels(args, population, url, stats_client, server_pid))
        finally:
            if server is not None:
                server.stop()
            if own_redis is not None:
                own_redis.stop()
    result: dict[str, Any] = {
        "tool": "bench/players",
        "date": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git_commit(),
        "machine": {
            "cores": CORES,
            "cpu": cpu_model(),
            "load_average_before": load_before,
            "load_average_after": loadavg(),
        },
        "server": {
            "started_by_bench": server is not None,
            "workers": args.workers if server is not None else None,
            "worker_class": args.worker_class if server is not None else None,
            "session_ttl_seconds": args.session_ttl if server is not None else None,
            "redis_stats": "own redis-server" if measure_redis else None,
        },
        "population": {
            "accounts": population.accounts,
            "sessions": population.sessions,
            "accounts_by_sessions": population.mix(),
            "limit": LIMIT,
            "seeded": seeded,
            "churn_share": population.churn_share,
            "refused_share": population.refused_share,
        },
        "capacity": capacity,
        "levels": levels,
    }
    write_json(out / "result.json", result)
    try:
        plot(out / "latency.png", result)
    except ImportError as exc:  # the result stands without its picture
        say(
            f"no plot ({exc}): .venv/bin/pip install -r requirements-dev.txt, then python -m bench.players.report {out}"
        )
    latest = ROOT / "bench" / "results" / "players-latest"
    if out.parent == latest.parent:
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)
    print(summary(result))
    print(f"results: {out}")
    unexpected = sum(part["unexpected_answer"] for entry in [capacity, *levels] for part in entry["by_kind"].values())
    return 1 if unexpected else 0


def summary(result: dict[str, Any]) -> str:
    """A table of the run."""
    lines = [
        f"{result['date']}  {result['machine']['cores']} cores, load {result['machine']['load_average_before']} -> "
        f"{result['machine']['load_average_after']}  git {result['git']}",
        f"{result['population']['accounts']:,} accounts, {result['population']['sessions']:,} sessions; "
        f"capacity (closed loop) {result['capacity']['rps']:,.0f} req/s",
        f"{'level':>6} {'offered':>8} {'answered/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
        f"{'EVALSHA us':>10} {'cmds/req':>8} {'redis us/req':>12} {'gunicorn ms/req':>15}",
    ]
    for entry in [result["capacity"], *result["levels"]]:
        name = "closed" if entry["mode"] == "closed" else f"{100 * entry['share_of_capacity']:.0f}%"
        redis_cost = entry["cost"]["redis"] or {}
        lat = entry["latency_ms"]
        evalsha, commands = redis_cost.get("usec_per_evalsha", ""), redis_cost.get("commands_per_request", "")
        lines.append(
            f"{name:>6} {entry.get('offered_rps', ''):>8} {entry['achieved_rps']:>10,.0f} {lat['p50']:>8} "
            f"{lat['p99']:>8} {lat['p99_9']:>9} {evalsha:>10} {commands:>8} "
            f"{redis_cost.get('cpu_usec_per_request', ''):>12} {entry['cost']['gunicorn_cpu_ms_per_request'] or '':>15}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
