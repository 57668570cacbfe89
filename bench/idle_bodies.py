"""Benchmark: heartbeats and /healthz while 10,000 sockets send headers with a Content-Length and no body.

Run: ``.venv/bin/python -m devtools.with_redis .venv/bin/python -m bench.idle_bodies
[--sockets 10000] [--seconds 20] [--reopen] [--worker-class gevent]``.

It starts gunicorn with ``gunicorn.conf.py`` (as ``make run`` does; workers and
``GUNICORN_WORKER_CONNECTIONS`` at their defaults unless set) on 127.0.0.1
under a throw-away Redis key prefix, then opens ``--sockets`` connections
from this machine, each sending ``POST /heartbeat`` headers with
``Content-Length: 100`` and never the body (issue 19: 3,100 of them held an
instance for good). With ``--reopen`` each socket the server closes is opened
again at once, so the attack keeps its count for ``--seconds``. Meanwhile a few
client threads send heartbeats and ``GET /healthz``, each on a new connection
(``bench.slow_clients.probe``), and it prints their p50 and p99 and what became
of the attacking sockets. ``IdleBodyAttack`` is also used by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.slow_clients import Latencies, free_port, probe, start_gunicorn, timed_request

HEADERS = (
    "POST /heartbeat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    "Content-Length: 100\r\n\r\n"
)


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process' open-file limit towards ``wanted`` (at most the hard limit); the new soft limit.

    Child processes (gunicorn and its workers) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class AttackReport:
    """What became of the attacking sockets."""

    connected: int = 0
    failed_to_connect: int = 0
    answered_408: int = 0
    closed_without_answer: int = 0
    other_answers: int = 0
    most_open_at_once: int = 0
    open_now: int = 0
    # Per second of the attack: [connected, answered 408, shed]; where the probes' slow answers fall.
    timeline: dict[int, list[int]] = field(default_factory=dict)
    # The attacking process' own CPU time (user + system), seconds: what it took from the 2 cores.
    cpu_seconds: float = 0.0

    def count(self, started_at: float, column: int) -> None:
        """One event of ``column`` (0 connected, 1 a 408, 2 shed) in the current second since ``started_at``."""
        second = int(time.time() - started_at)
        self.timeline.setdefault(second, [0, 0, 0])[column] += 1

    def summary(self) -> str:
        """One line for the bench's output."""
        return (
            f"connected {self.connected}, most open at once {self.most_open_at_once}, "
            f"408 {self.answered_408}, shed (closed without answer) {self.closed_without_answer}, "
            f"other answers {self.other_answers}, failed to connect {self.failed_to_connect}, "
            f"open when the attack stopped {self.open_now}"
        )


class IdleBodyAttack:
    """``count`` sockets on loopback that send request headers announcing a body, and never send it.

    They run in a process of their own (an asyncio loop), so the attack does
    not take the interpreter lock from the client threads that measure
    latencies here; ``stop()`` closes every socket and returns the report.
    """

    def __init__(self, port: int, count: int, *, reopen: bool = False, nice: int = 0) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._stopping = self._context.Event()
        self._connected = self._context.Value("i", 0, lock=False)
        self._reports = self._context.Queue()
        self._args = (port, count, reopen, nice, self._stopping, self._connected, self._reports)
        self._process: Any = None
        self.started_at = 0.0

    def start(self) -> IdleBodyAttack:
        """Start opening the sockets (returns at once); ``started_at`` is the wall-clock time it began."""
        self.started_at = time.time()  # the timeline's origin, on the caller's clock too
        self._process = self._context.Process(
            target=_attack_process, args=(*self._args, self.started_at), name="idle-body-attack", daemon=True
        )
        self._process.start()
        return self

    @property
    def pid(self) -> int | None:
        """The attacking process' id (to measure its CPU time)."""
        return self._process.pid

    @property
    def connected(self) -> int:
        """How many sockets connected so far (reopened ones counted again)."""
        return self._connected.value

    def stop(self) -> AttackReport:
        """Close every socket; the final report."""
        self._stopping.set()
        try:
            report = self._reports.get(timeout=120)
        finally:
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
        return report


def _attack_process(
    port: int, count: int, reopen: bool, nice: int, stopping: Any, connected: Any, reports: Any, started_at: float
) -> None:
    if nice:
        os.nice(nice)  # below the server: the attack gets only the CPU the server leaves
    report = AttackReport()
    asyncio.run(_attack(port, count, reopen, stopping, connected, report, started_at))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report.cpu_seconds = usage.ru_utime + usage.ru_stime
    reports.put(report)


async def _attack(
    port: int, count: int, reopen: bool, stopping: Any, connected: Any, report: AttackReport, started_at: float
) -> None:
    connecting = asyncio.Semaphore(1024)  # connects in flight at once
    headers = HEADERS.format(port=port).encode()
    started = started_at

    async def hold_one() -> None:
        try:
            async with connecting:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(headers)
        except (TimeoutError, OSError):
            report.failed_to_connect += 1
            await asyncio.sleep(0.1)
            return
        report.connected += 1
        report.count(started, 0)
        connected.value = report.connected
        report.open_now += 1
        report.most_open_at_once = max(report.most_open_at_once, report.open_now)
        try:
            answer = await reader.read(64)
            if answer.startswith(b"HTTP/1.1 408"):
                report.answered_408 += 1
                report.count(started, 1)
            elif answer:
                report.other_answers += 1
            else:
                report.closed_without_answer += 1
                report.count(started, 2)
        except OSError:
            report.closed_without_answer += 1  # reset: shed as well
            report.count(started, 2)
        finally:
            report.open_now -= 1
            writer.close()

    async def one_socket() -> None:
        await hold_one()
        while reopen and not stopping.is_set():
            await hold_one()

    tasks = [asyncio.ensure_future(one_socket()) for _ in range(count)]
    while not stopping.is_set():
        await asyncio.sleep(0.1)
    open_at_stop = report.open_now
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    report.open_now = open_at_stop


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """A process' CPU time so far (user + system), in seconds; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime and stime, fields 14 and 15


def child_pids(pid: int) -> list[int]:
    """The process' children (gunicorn's workers)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, over every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS, sum(values[:8]) / CLOCK_TICKS


def listen_queue_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (this network namespace)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True)).get("ListenOverflows", 0))


def start_own_redis(env: dict[str, str]) -> subprocess.Popen:
    """A throw-away redis-server on a free loopback port, no persistence; ``env["REDIS_URL"]`` points to it."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(env["REDIS_URL"])
    for _ in range(100):
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                return process
        time.sleep(0.1)
    process.kill()
    raise SystemExit("redis-server did not answer within 10 s")


def set_niceness(nice: int) -> None:
    """This process' niceness and its session's, inherited by gunicorn, its workers and the attacking process.

    With autogroups (``/proc/sys/kernel/sched_autogroup_enabled``), the kernel first shares the CPU
    between sessions, and a process' own niceness only counts within its session: the session's
    has to change too.
    """
    os.nice(nice)
    with contextlib.suppress(OSError):  # no autogroups, or not root
        Path("/proc/self/autogroup").write_text(str(nice))


def niceness() -> str:
    """This process' niceness, and its session's when autogroups are on."""
    try:
        group = Path("/proc/self/autogroup").read_text().split()[-1]
    except OSError:
        return str(os.nice(0))
    return f"{os.nice(0)} (session {group})"


@dataclass
class CpuWindow:
    """Where the machine's CPU went while the probes measured: the server, the attacker, the rest."""

    server_pids: list[int]
    attacker_pid: int
    load_before: float = 0.0
    load_after: float = 0.0
    seconds: float = 0.0
    shares: dict[str, float] = field(default_factory=dict)  # % of one core each

    def __enter__(self) -> CpuWindow:
        self.load_before = os.getloadavg()[0]
        self._start = self._snapshot()
        self._started = time.monotonic()
        self._overflows = listen_queue_overflows()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._started
        end = self._snapshot()
        self.shares = {name: 100 * (end[name] - self._start[name]) / self.seconds for name in end}
        self.shares["others"] = max(
            0.0, self.shares["machine"] - self.shares["server"] - self.shares["attacker"] - self.shares["probes"]
        )
        self.listen_overflows = listen_queue_overflows() - self._overflows
        self.load_after = os.getloadavg()[0]

    def _snapshot(self) -> dict[str, float]:
        return {
            "server": sum(process_cpu_seconds(pid) for pid in self.server_pids),
            "attacker": process_cpu_seconds(self.attacker_pid),
            "probes": process_cpu_seconds(os.getpid()),
            "machine": machine_cpu_seconds()[0],
        }

    def summary(self) -> str:
        """One line: load averages and each CPU share, in % of one core (the machine has 200 %)."""
        parts = ", ".join(f"{name} {share:.0f} %" for name, share in self.shares.items())
        return (
            f"load average {self.load_before:.1f} -> {self.load_after:.1f}; CPU over {self.seconds:.0f} s "
            f"(% of one core, {os.cpu_count()} cores): {parts}; listen-queue overflows {self.listen_overflows}"
        )


def probe_with_times(
    port: int, seconds: float, clients: int = 2, timeout: float = 5.0
) -> tuple[dict[str, Latencies], list[tuple[float, str, float]]]:
    """``bench.slow_clients.probe``, also keeping when each request started: (latencies, [(time, kind, ms)])."""
    results = {"heartbeat": Latencies(), "healthz": Latencies()}
    timed: list[tuple[float, str, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            body = json.dumps({"userId": f"probe-{n}-{i % 50}", "streamId": "movie", "sessionId": "tv"}).encode()
            for kind, method, path, payload, good in (
                ("heartbeat", "POST", "/heartbeat", body, (200, 400)),
                ("healthz", "GET", "/healthz", None, (200,)),
            ):
                at = time.time()
                elapsed, status = timed_request(port, method, path, payload, timeout)
                with lock:
                    results[kind].samples.append(elapsed)
                    results[kind].failed += status not in good
                    timed.append((at, kind, elapsed))
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, timed


# What the issue asks of each kind of request during the attack (p99, ms).
TARGET_MS = {"heartbeat": 50.0, "healthz": 100.0}


def print_timeline(report: AttackReport, timed: list[tuple[float, str, float]], started_at: float) -> None:
    """Second by second: the attack's connects, 408s and sheds, and the probes over their target."""
    probes: dict[int, list[float]] = {}
    for at, kind, ms in timed:
        second = probes.setdefault(int(at - started_at), [0, 0, 0.0])
        second[0] += 1
        if ms >= TARGET_MS[kind]:
            second[1] += 1
            second[2] = max(second[2], ms)
    print("  second  connected   408  shed | probes  over target  (slowest ms)")
    for second in sorted(set(report.timeline) | set(probes)):
        connected, answered_408, shed = report.timeline.get(second, [0, 0, 0])
        sent, slow, slowest = probes.get(second, [0, 0, 0.0])
        slowest_text = f"({slowest:.0f})" if slow else ""
        print(f"  {second:6} {connected:10} {answered_408:5} {shed:5} | {sent:6} {slow:12}  {slowest_text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--reopen", action="store_true", help="open again each socket the server closes")
    parser.add_argument("--wait-for", type=int, default=3_500, help="sockets connected before measuring")
    parser.add_argument("--worker-class", default=os.environ.get("GUNICORN_WORKER_CLASS", "gevent"))
    parser.add_argument("--timeline", action="store_true", help="print the attack and the slow probes second by second")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run gunicorn, the attack and the probes at this niceness, their session's autogroup too "
        "(negative needs root): on a machine shared with others' work, -10 measures this server and this "
        "attack rather than the others",
    )
    parser.add_argument(
        "--attacker-nice",
        type=int,
        default=0,
        help="niceness of the attacking process on top of --nice (19: it gets only the CPU the server leaves, "
        "as an attacker on a machine of its own would not take the server's)",
    )
    parser.add_argument(
        "--own-redis",
        action="store_true",
        help="start a redis-server of its own (at the same niceness) instead of the shared one: heartbeats "
        "then wait on this attack, not on others' tests",
    )
    args = parser.parse_args()

    if args.nice:
        set_niceness(args.nice)
    limit = raise_open_file_limit(args.sockets + 5_000)
    prefix = f"bench-idle-{os.getpid()}"
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="streamlimit-idle-bodies-")) / "gunicorn.log"
    env = {**os.environ, "REDIS_KEY_PREFIX": prefix, "LOG_LEVEL": "WARNING", "GUNICORN_WORKER_CLASS": args.worker_class}
    own_redis = start_own_redis(env) if args.own_redis else None
    server = start_gunicorn(env, port, log)
    try:
        before = probe(port, seconds=3, clients=2, timeout=5)
        attack = IdleBodyAttack(port, args.sockets, reopen=args.reopen, nice=args.attacker_nice).start()
        started = time.monotonic()
        # Measure once more sockets have connected than gunicorn's own worker would hold
        # (3 workers x 1,000): from then on it answered nothing until the attacker let go.
        while attack.connected < min(args.sockets, args.wait_for) and time.monotonic() - started < 90:
            time.sleep(0.2)
        reached, waited = attack.connected, time.monotonic() - started
        with CpuWindow(child_pids(server.pid), attack.pid or 0) as cpu:
            during, timed = probe_with_times(port, seconds=args.seconds, clients=2, timeout=5)
        report = attack.stop()
        took = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
        if own_redis:
            own_redis.terminate()
            own_redis.wait(timeout=30)
        else:
            client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(key)
    print(
        f"idle-body sockets: {args.sockets}{' (reopened when closed)' if args.reopen else ''}, "
        f"worker class {args.worker_class}, open-file limit {limit}, niceness {niceness()}, "
        f"{'own' if own_redis else 'shared'} Redis, attacker niceness +{args.attacker_nice}, attack {took:.0f} s; "
        f"gunicorn log {log}"
    )
    print(f"  measured from {waited:.0f} s into the attack ({reached} sockets connected) for {args.seconds:.0f} s")
    print(f"  attack: {report.summary()}; its own CPU {report.cpu_seconds:.1f} s")
    print(f"  during: {cpu.summary()}")
    for name, results in (("before", before), ("during", during)):
        for kind, latencies in results.items():
            print(f"  {name:6} {kind:9}: {latencies.summary()}")
    if args.timeline:
        print_timeline(report, timed, attack.started_at)


if __name__ == "__main__":
    main()
