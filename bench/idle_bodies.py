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
import os
import resource
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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
            f"still open at the end {self.open_now}"
        )


class IdleBodyAttack:
    """``count`` sockets on loopback that send request headers announcing a body, and never send it.

    Runs an asyncio loop in a thread of its own; ``stop()`` closes every socket.
    """

    def __init__(self, port: int, count: int, *, reopen: bool = False, connect_timeout: float = 10.0) -> None:
        self.port = port
        self.count = count
        self.reopen = reopen
        self.connect_timeout = connect_timeout
        self.report = AttackReport()
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="idle-body-attack", daemon=True)

    def start(self) -> IdleBodyAttack:
        """Start opening the sockets (returns at once)."""
        self._thread.start()
        return self

    def stop(self) -> AttackReport:
        """Close every socket; the final report."""
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=60)
        return self.report

    def _run(self) -> None:
        self._loop.run_until_complete(self._attack())
        self._loop.close()

    async def _attack(self) -> None:
        self._stopping = asyncio.Event()
        connecting = asyncio.Semaphore(1024)  # connects in flight at once

        async def one_socket() -> None:
            await self._hold_one(connecting)
            while self.reopen and not self._stopping.is_set():
                await self._hold_one(connecting)

        tasks = [asyncio.ensure_future(one_socket()) for _ in range(self.count)]
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _hold_one(self, connecting: asyncio.Semaphore) -> None:
        report = self.report
        try:
            async with connecting:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), self.connect_timeout
                )
                writer.write(HEADERS.format(port=self.port).encode())
        except (TimeoutError, OSError):
            report.failed_to_connect += 1
            await asyncio.sleep(0.1)
            return
        report.connected += 1
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--reopen", action="store_true", help="open again each socket the server closes")
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
    print(f"  attack: {report.summary()}")
    for name, results in (("before", before), ("during", during)):
        for kind, latencies in results.items():
            print(f"  {name:6} {kind:9}: {latencies.summary()}")


if __name__ == "__main__":
    main()
