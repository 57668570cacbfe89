"""The cost of REDIS_WAIT_REPLICAS=1: new-session admissions with and without WAIT, on a Sentinel set.

Starts a ``SentinelSet`` of its own (``devtools/redis_topology.py``: a primary,
one replica, three sentinels, on loopback ports) and reaches it as the service
does with ``REDIS_SENTINELS`` and ``REDIS_SENTINEL_MASTER`` (the client of
``heartbeat.services.redis_client()``, django-redis' Sentinel client).
Then ``StreamManager.admit`` is called from ``--threads`` threads (1, and
several), four ways, interleaved over ``--rounds``:

- new sessions (a fresh account each: every call admits a session, outcome 1),
  without WAIT and with ``wait_replicas=1`` (``WAIT 1 REDIS_WAIT_TIMEOUT_MS``
  after the admission, on the same connection);
- repeat heartbeats of live sessions, without and with ``wait_replicas=1``:
  they must not wait (the primary's ``INFO commandstats`` counts the WAITs).

For each: admissions per second, p50 / p99 / max of a call's time, the WAITs
Redis ran, those that came back short (fewer replicas than asked within the
time-out), and the primary's CPU. The whole ``admit`` is timed, Python side
included, as a request sees it; the activity batches are written by the
service's flusher thread as in production.

Run:  .venv/bin/python -m bench.wait_cost [--seconds 8] [--rounds 3] [--threads 1,8]
Numbers go to bench/README.md by hand, with the date.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import MachineCpu, bench_lock, loadavg, redis_cpu_seconds  # noqa: E402
from devtools.redis_topology import SentinelSet  # noqa: E402

PREFIX = "waitcost"
REPEAT_ACCOUNTS = 2000


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[wait-cost] {message}", file=sys.stderr, flush=True)


def percentile(samples: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass
class Run:
    """One measured run."""

    kind: str  # "new" or "repeat"
    wait: int
    threads: int
    round: int
    calls: int
    seconds: float
    latencies_ms: list[float]
    waits: int  # WAIT commands the primary ran
    short: int  # WAITs that came back with fewer replicas than asked
    redis_cpu: float
    machine_busy: float
    load: str

    def line(self) -> str:
        """The run as a table row."""
        lat = self.latencies_ms
        return (
            f"| {self.round} | {self.kind} | {self.wait} | {self.threads} | {self.calls / self.seconds:,.0f} | "
            f"{statistics.median(lat):.2f} | {percentile(lat, 99):.2f} | {max(lat):.1f} | {self.waits:,} | "
            f"{self.short} | {100 * self.redis_cpu / self.seconds:.0f}% | "
            f"{100 * self.machine_busy / self.seconds:.0f}% | {self.load} |"
        )


HEADER = (
    "| round | heartbeats | REDIS_WAIT_REPLICAS | threads | admissions/s | p50 ms | p99 ms | max ms | "
    "WAITs run | short | primary CPU | machine busy (all cores) | load avg |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> str:
    """Run the bench; return the report (also printed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8, help="seconds per run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved (default 3)")
    parser.add_argument("--threads", default="1,8", help="client threads, comma-separated (default 1,8)")
    args = parser.parse_args(argv)
    with bench_lock(), SentinelSet() as sentinel_set:
        return measure_all(sentinel_set, args)


def measure_all(sentinel_set: SentinelSet, args: argparse.Namespace) -> str:
    """Every run on the started set; the report."""
    # The service's own client for this topology, from its settings.
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("REDIS_CLUSTER_NODES", None)
    os.environ["REDIS_SENTINELS"] = sentinel_set.sentinels
    os.environ["REDIS_SENTINEL_MASTER"] = sentinel_set.master_name
    os.environ["REDIS_KEY_PREFIX"] = PREFIX
    os.environ["DJANGO_SETTINGS_MODULE"] = "streamlimit.settings"
    os.environ["SESSION_TTL_SECONDS"] = "600"
    import django

    django.setup()
    from django.conf import settings

    from heartbeat.limiter.manager import StreamManager
    from heartbeat.limiter.metrics import WAIT_REPLICAS_SHORT
    from heartbeat.services import redis_client
    from streamlimit.logging import SINK

    SINK.target = open(os.devnull, "wb")  # noqa: SIM115  # one log line per new session
    client = redis_client()
    primary = sentinel_set.client(sentinel_set.primary_address())
    replicas = sentinel_set.replica_addresses()
    say(f"Sentinel set: primary {sentinel_set.primary_address()}, replicas {replicas}, via {sentinel_set.sentinels}")

    def manager(wait: int) -> StreamManager:
        return StreamManager(
            client,
            key_prefix=PREFIX,
            default_limit=3,
            session_ttl_seconds=600,
            eviction_cooldown_seconds=300,
            activity_shards=settings.ACTIVITY_SHARDS,
            wait_replicas=wait,
            wait_timeout_ms=settings.REDIS_WAIT_TIMEOUT_MS,
        )

    managers = {0: manager(0), 1: manager(1)}
    repeat_sessions = [(f"repeat-account-{n:06d}", f"session-{n:06d}") for n in range(REPEAT_ACCOUNTS)]
    for user, session in repeat_sessions:
        managers[0].admit(user, "title-00001", session)
    serial = iter(range(10**9))
    serial_lock = threading.Lock()

    def short_total() -> float:
        return next(s.value for s in WAIT_REPLICAS_SHORT.collect()[0].samples if s.name.endswith("_total"))

    def one_run(kind: str, wait: int, threads: int, rnd: int) -> Run:
        m = managers[wait]
        end = time.monotonic() + args.seconds
        latencies: list[list[float]] = [[] for _ in range(threads)]

        def work(index: int) -> None:
            mine = latencies[index]
            n = index
            while time.monotonic() < end:
                if kind == "new":
                    with serial_lock:
                        number = next(serial)
                    user, session = f"new-account-{number:08d}", f"new-session-{number:08d}"
                else:
                    user, session = repeat_sessions[n % REPEAT_ACCOUNTS]
                    n += threads
                started = time.perf_counter()
                result = m.admit(user, "title-00001", session)
                mine.append((time.perf_counter() - started) * 1000)
                if result.new_session != (kind == "new"):
                    raise RuntimeError(f"{kind} heartbeat answered {result}")

        waits_before = int(primary.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
        short_before, cpu_before, machine_before = short_total(), redis_cpu_seconds(primary), MachineCpu.now()
        started = time.monotonic()
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - started
        waits = int(primary.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)) - waits_before
        flat = [ms for mine in latencies for ms in mine]
        run = Run(
            kind,
            wait,
            threads,
            rnd,
            len(flat),
            elapsed,
            flat,
            waits,
            int(short_total() - short_before),
            redis_cpu_seconds(primary) - cpu_before,
            MachineCpu.now().busy_since(machine_before),
            loadavg(),
        )
        say(
            f"round {rnd} {kind} wait={wait} threads={threads}: {run.calls / run.seconds:,.0f}/s, "
            f"p50 {statistics.median(flat):.2f} ms, p99 {percentile(flat, 99):.2f} ms, WAITs {waits}, short {run.short}"
        )
        return run

    thread_counts = [int(t) for t in args.threads.split(",") if t]
    runs = [
        one_run(kind, wait, threads, rnd)
        for rnd in range(1, args.rounds + 1)
        for threads in thread_counts
        for kind in ("new", "repeat")
        for wait in (0, 1)
    ]
    for m in managers.values():
        m.flush_activity()
    SINK.target.close()
    SINK.target = None
    version = primary.info("server")["redis_version"]
    lines = [
        f"REDIS_WAIT_REPLICAS cost on a Sentinel set (redis-server {version}: primary + 1 replica, 3 sentinels, "
        f"loopback), the service's Sentinel client; REDIS_WAIT_TIMEOUT_MS={settings.REDIS_WAIT_TIMEOUT_MS}; "
        f"{args.seconds:.0f} s per run",
        "",
        HEADER,
        *(run.line() for run in runs),
        "",
    ]
    for threads in thread_counts:
        for kind in ("new", "repeat"):
            parts = []
            for wait in (0, 1):
                mine = [r for r in runs if r.kind == kind and r.wait == wait and r.threads == threads]
                rates = [r.calls / r.seconds for r in mine]
                p50 = [statistics.median(r.latencies_ms) for r in mine]
                p99 = [percentile(r.latencies_ms, 99) for r in mine]
                parts.append(
                    f"WAIT {'on' if wait else 'off'}: {statistics.median(rates):,.0f}/s "
                    f"({min(rates):,.0f} to {max(rates):,.0f}), p50 {statistics.median(p50):.2f} ms "
                    f"({min(p50):.2f} to {max(p50):.2f}), p99 {statistics.median(p99):.2f} ms "
                    f"({min(p99):.2f} to {max(p99):.2f})"
                )
            lines.append(f"{kind} heartbeats, {threads} thread(s): " + "; ".join(parts) + " (median of rounds, range)")
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
