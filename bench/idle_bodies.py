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
import multiprocessing
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.slow_clients import free_port, probe, start_gunicorn

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

    def __init__(self, port: int, count: int, *, reopen: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self._stopping = context.Event()
        self._connected = context.Value("i", 0, lock=False)
        self._reports = context.Queue()
        self._process = context.Process(
            target=_attack_process,
            args=(port, count, reopen, self._stopping, self._connected, self._reports),
            name="idle-body-attack",
            daemon=True,
        )

    def start(self) -> IdleBodyAttack:
        """Start opening the sockets (returns at once)."""
        self._process.start()
        return self

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


def _attack_process(port: int, count: int, reopen: bool, stopping: Any, connected: Any, reports: Any) -> None:
    report = AttackReport()
    asyncio.run(_attack(port, count, reopen, stopping, connected, report))
    reports.put(report)


async def _attack(port: int, count: int, reopen: bool, stopping: Any, connected: Any, report: AttackReport) -> None:
    connecting = asyncio.Semaphore(1024)  # connects in flight at once
    headers = HEADERS.format(port=port).encode()

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
        connected.value = report.connected
        report.open_now += 1
        report.most_open_at_once = max(report.most_open_at_once, report.open_now)
        try:
            answer = await reader.read(64)
            if answer.startswith(b"HTTP/1.1 408"):
                report.answered_408 += 1
            elif answer:
                report.other_answers += 1
            else:
                report.closed_without_answer += 1
        except OSError:
            report.closed_without_answer += 1  # reset: shed as well
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--reopen", action="store_true", help="open again each socket the server closes")
    parser.add_argument("--wait-for", type=int, default=3_500, help="sockets connected before measuring")
    parser.add_argument("--worker-class", default=os.environ.get("GUNICORN_WORKER_CLASS", "gevent"))
    args = parser.parse_args()

    limit = raise_open_file_limit(args.sockets + 5_000)
    prefix = f"bench-idle-{os.getpid()}"
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="streamlimit-idle-bodies-")) / "gunicorn.log"
    env = {**os.environ, "REDIS_KEY_PREFIX": prefix, "LOG_LEVEL": "WARNING", "GUNICORN_WORKER_CLASS": args.worker_class}
    server = start_gunicorn(env, port, log)
    try:
        before = probe(port, seconds=3, clients=2, timeout=5)
        attack = IdleBodyAttack(port, args.sockets, reopen=args.reopen).start()
        started = time.monotonic()
        # Measure once more sockets have connected than gunicorn's own worker would hold
        # (3 workers x 1,000): from then on it answered nothing until the attacker let go.
        while attack.connected < min(args.sockets, args.wait_for) and time.monotonic() - started < 90:
            time.sleep(0.2)
        reached, waited = attack.connected, time.monotonic() - started
        during = probe(port, seconds=args.seconds, clients=2, timeout=5)
        report = attack.stop()
        took = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
        client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    print(
        f"idle-body sockets: {args.sockets}{' (reopened when closed)' if args.reopen else ''}, "
        f"worker class {args.worker_class}, open-file limit {limit}, attack {took:.0f} s; gunicorn log {log}"
    )
    print(f"  measured from {waited:.0f} s into the attack ({reached} sockets connected) for {args.seconds:.0f} s")
    print(f"  attack: {report.summary()}")
    for name, results in (("before", before), ("during", during)):
        for kind, latencies in results.items():
            print(f"  {name:6} {kind:9}: {latencies.summary()}")


if __name__ == "__main__":
    main()
