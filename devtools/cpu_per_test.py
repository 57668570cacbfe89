"""A pytest plugin that measures the CPU each test costs, with the processes it starts: ``-p devtools.cpu_per_test``.

On 2 shared cores the suite's time is set by its CPU, not its waits, so this is
what to read before making it faster. For each test (setup, call and teardown)
it records the wall time and the CPU-seconds of the pytest process, of the
children it reaped, and of its live descendants and marked processes
(``tests/leftover_processes.py``) with what they reaped in turn. A process that
ends while orphaned is lost, as is what shared servers spend between tests (it
goes to the test that runs when it is spent).

One JSON line per test goes to ``$TEST_CPU_DIR/<worker>.jsonl`` (default
``var/test-cpu``); ``python -m devtools.cpu_per_test [DIR]`` prints the totals per module.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "test-cpu"


def _cpu_of_tree() -> float:
    """CPU-seconds of this process, the children it reaped, and its live descendants and marked processes."""
    from tests import leftover_processes

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    marker = os.environ.get(leftover_processes.RUN_MARKER, "")
    for process in leftover_processes.started_by_this_run(marker):
        try:
            times = psutil.Process(process.pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Measure one test's setup, call and teardown (module and session fixtures fall to the test beside them)."""
    wall, cpu = time.monotonic(), _cpu_of_tree()
    yield
    folder = Path(os.environ.get("TEST_CPU_DIR", DEFAULT_DIR))
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "test": item.nodeid,
        "wall": round(time.monotonic() - wall, 3),
        "cpu": round(_cpu_of_tree() - cpu, 3),
    }
    with open(folder / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl", "a") as out:
        out.write(json.dumps(record) + "\n")


def main(folder: Path) -> None:
    """Print CPU-seconds and wall seconds per module, most CPU first."""
    cpu: dict[str, float] = defaultdict(float)
    wall: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            module = record["test"].split("::", 1)[0]
            cpu[module] += record["cpu"]
            wall[module] += record["wall"]
            count[module] += 1
    print(f"{'module':48} {'tests':>5} {'cpu s':>8} {'wall s':>8}")
    for module in sorted(cpu, key=cpu.get, reverse=True):
        print(f"{module:48} {count[module]:5} {cpu[module]:8.1f} {wall[module]:8.1f}")
    print(f"{'total':48} {sum(count.values()):5} {sum(cpu.values()):8.1f} {sum(wall.values()):8.1f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
