"""CPU accounting for the benchmarks: processes, Redis servers and the shared machine.

This machine is shared with other people's test runs, so every measured run
records who else used the cores (``MachineCpu``) next to its own figures, and
per-request costs are taken as CPU time (less disturbed by a busy machine than
throughput).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

HZ = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
# Set for the benchmarks a benchmark runs itself, which already holds the lock.
LOCK_HELD = "STREAMLIMIT_BENCH_LOCK_HELD"


@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    """The lock bench/run.sh takes: one benchmark at a time, from any checkout (two would share the cores)."""
    if os.environ.get(LOCK_HELD) == "1":
        yield
        return
    with (Path(tempfile.gettempdir()) / "streamlimit-bench.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("[bench] another benchmark holds the bench lock; waiting for it to finish", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        os.environ[LOCK_HELD] = "1"
        try:
            yield
        finally:
            os.environ.pop(LOCK_HELD, None)


def process_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ


def tree_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (a gunicorn master and its workers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    total = process_seconds(pid)
    for child in children.split():
        with contextlib.suppress(ValueError):
            total += process_seconds(int(child))
    return total


def redis_cpu_seconds(client: redis.Redis) -> float:
    """used_cpu_sys + used_cpu_user of a Redis server, from its own INFO (all its threads)."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def evalsha_calls(client: redis.Redis) -> int:
    """How many EVALSHA calls a Redis server has run (INFO commandstats)."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass(frozen=True)
class MachineCpu:
    """/proc/stat's totals: all ticks and busy ticks (not idle, iowait or steal), in seconds of one core."""

    total: float
    busy: float
    steal: float

    @classmethod
    def now(cls) -> MachineCpu:
        """The totals since boot."""
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:9]]
                total = sum(v)
                return cls(total / HZ, (total - v[3] - v[4] - v[7]) / HZ, v[7] / HZ)
        raise RuntimeError("no cpu line in /proc/stat")

    def busy_since(self, before: MachineCpu) -> float:
        """Busy CPU seconds (all cores) since ``before``."""
        return self.busy - before.busy
