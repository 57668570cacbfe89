"""Webhook delivery rate: events/s from the streams to a local receiver, through real deliver_events processes.

Usage: ``python -m devtools.with_redis .venv/bin/python -m bench.webhook_delivery [EVENTS] [WORKERS] [ROUNDS]``
(defaults 20000 events, 2 workers, 3 rounds; ``make bench-webhooks``).

Starts the shipped receiver (``devtools.webhook_receiver --quiet``: it verifies
every signature) on a free loopback port, a SQLite database with one endpoint,
and WORKERS ``manage.py deliver_events`` processes under a throw-away key prefix.
Each round XADDs EVENTS events (1,000 accounts, interleaved) and times from the
first XADD until every entry is acknowledged for the endpoint (no pending, no
lag on any stream). Prints each round and the median; deletes its keys and
stops every process it started. Bounded: each round gives up after 120 s.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from redis import Redis

from heartbeat.limiter.events import STREAM_FIELD, Event, EventType
from heartbeat.limiter.keys import KeyLayout

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 16
ACCOUNTS = 1000


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def load_average() -> str:
    """The 1-minute load average: how busy the machine was (it is shared)."""
    return Path("/proc/loadavg").read_text().split()[0]


def delivered(redis: Redis, layout: KeyLayout, group: str) -> bool:
    """Whether every stream's entries are acknowledged for ``group``."""
    for shard in layout.shards:
        for info in redis.xinfo_groups(shard.events):
            if info["name"].decode() == group and (info["pending"] or info.get("lag")):
                return False
    return True


def main(argv: list[str]) -> int:
    """Run the rounds and print the rates."""
    events = int(argv[0]) if argv else 20_000
    workers = int(argv[1]) if len(argv) > 1 else 2
    rounds = int(argv[2]) if len(argv) > 2 else 3
    redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    prefix = f"bench-webhooks-{uuid.uuid4().hex[:8]}"
    layout = KeyLayout(prefix, SHARDS)
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "REDIS_KEY_PREFIX": prefix,
        "ACTIVITY_SHARDS": str(SHARDS),
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "LOG_LEVEL": "WARNING",
    }
    secret = subprocess.run(
        [sys.executable, "-c", "from webhooks.signing import new_secret; print(new_secret())"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    started: list[subprocess.Popen] = []
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        port = free_port()
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "devtools.webhook_receiver", "--quiet", "--secret", secret, "--port", str(port)],
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
            )
        )
        added = subprocess.run(
            [sys.executable, "manage.py", "webhooks", "add", f"http://127.0.0.1:{port}/", "--secret", secret],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        endpoint_id = re.search(r"endpoint (\d+)", added.stdout).group(1)
        group = f"webhook-{endpoint_id}"
        for n in range(workers):
            started.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "deliver_events", "--name", f"bench-{n}"],
                    cwd=ROOT,
                    env=env,
                    stderr=(workdir / f"worker-{n}.log").open("w"),
                )
            )
        time.sleep(6)  # Django started, leases shared out
        rates = []
        for number in range(1, rounds + 1):
            # The events are made before the clock starts: the round times writing and delivering, not JSON.
            entries = []
            for sequence in range(events // ACCOUNTS + 1):
                for account in range(ACCOUNTS):
                    if sequence * ACCOUNTS + account >= events:
                        break
                    user = f"acct-{account}"
                    event = Event(EventType.SESSION_STARTED, int(time.time() * 1000), {"userId": user, "seq": sequence})
                    entries.append((layout.shard_of(user).events, event.to_json()))
            receiver_pid, worker_pids = started[0].pid, [process.pid for process in started[1:]]
            cpu_before = cpu_seconds(worker_pids), cpu_seconds([receiver_pid])
            start = time.monotonic()
            pipe = redis.pipeline(transaction=False)
            for stream, body in entries:
                pipe.xadd(stream, {STREAM_FIELD: body})
            pipe.execute()
            written = time.monotonic() - start
            while not delivered(redis, layout, group):
                if time.monotonic() - start > 120:
                    print(f"round {number}: not delivered within 120 s; the workers' logs:", flush=True)
                    for log in sorted(workdir.glob("worker-*.log")):
                        print(log.read_text()[-2000:], flush=True)
                    return 1
                time.sleep(0.05)
            took = time.monotonic() - start
            rates.append(events / took)
            worker_cpu = (cpu_seconds(worker_pids) - cpu_before[0]) / events * 1e6
            receiver_cpu = (cpu_seconds([receiver_pid]) - cpu_before[1]) / events * 1e6
            print(
                f"round {number}: CPU per event: workers {worker_cpu:.0f} us, receiver {receiver_cpu:.0f} us; "
                f"load average {load_average()}",
                flush=True,
            )
            print(
                f"round {number}: {events} events in {took:.2f} s ({written:.2f} s writing) = {rates[-1]:,.0f}/s",
                flush=True,
            )
        print(f"median of {rounds}: {statistics.median(rates):,.0f} events/s with {workers} workers", flush=True)
        return 0
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        keys = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            redis.delete(*keys)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
