"""Benchmark: heartbeats and /healthz while many clients trickle a byte a second.

Run: ``.venv/bin/python -m devtools.with_redis .venv/bin/python bench/slow_clients.py
[--worker-class gevent] [--workers 3] [--threads 1] [--slow 200] [--seconds 20]``.

It starts gunicorn with ``gunicorn.conf.py`` (as ``make run`` does) on 127.0.0.1
under a throw-away Redis key prefix, opens ``--slow`` connections that send
their request a byte a second (half of them stuck in the headers, half in the
body), and meanwhile sends heartbeats and ``GET /healthz`` from a few client
threads, each on a new connection, one at a time. It prints the latency of
each (a request that got no answer within 5 s counts as 5 s and as failed),
then deletes its keys. ``SlowClients`` is also used by the test suite.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"userId": "slow-client", "streamId": "movie-1", "sessionId": "slow-client-tv"}'


class SlowClients:
    """Connections that send one byte of a heartbeat request per ``interval`` seconds.

    Half of them are still in the headers, half have sent the headers and
    trickle the body; none ever finishes within a run of a few minutes.
    """

    def __init__(self, port: int, count: int, interval: float = 1.0) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.sockets: list[socket.socket] = []
        self._pending: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)

    def start(self) -> SlowClients:
        """Connect them all (each sends its first byte) and start trickling."""
        headers = (
            f"POST /heartbeat HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode()
        for i in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if i % 2:
                # Headers sent whole: the server reads the body a byte at a time.
                sock.sendall(headers)
                self._pending.append(BODY)
            else:
                self._pending.append(headers + BODY)
            self.sockets.append(sock)
        self._thread.start()
        return self

    def still_open(self) -> int:
        """How many of them the server has not closed (nothing to read, no reset)."""
        return sum(self.still_open_by_kind())

    def still_open_by_kind(self) -> tuple[int, int]:
        """How many of those sending headers, and of those sending a body, are still open."""
        return self._open(self.sockets[0::2]), self._open(self.sockets[1::2])

    @staticmethod
    def _open(sockets: list[socket.socket]) -> int:
        open_count = 0
        for sock in sockets:
            try:
                sock.setblocking(False)
                # Anything to read (an error page, or b"": closed) means the server cut it off.
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                open_count += 1
            except OSError:
                pass
            finally:
                sock.setblocking(True)
        return open_count

    def stop(self) -> None:
        """Stop trickling and close every connection."""
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()

    def _trickle(self) -> None:
        while not self._stop.wait(self.interval):
            for i, sock in enumerate(self.sockets):
                if not self._pending[i][1:]:
                    continue  # keep the last byte back: the request never completes
                try:
                    sock.send(self._pending[i][:1])
                    self._pending[i] = self._pending[i][1:]
                except OSError:
                    self._pending[i] = b""


@dataclass
class Latencies:
    """Latencies (ms) of one kind of request, and how many got no good answer."""

    samples: list[float] = field(default_factory=list)
    failed: int = 0

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (nearest rank), in ms."""
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    def summary(self) -> str:
        """One line: count, p50, p99, max, failures."""
        if not self.samples:
            return "no requests"
        return (
            f"{len(self.samples)} requests, p50 {self.percentile(50):.1f} ms, p99 {self.percentile(99):.1f} ms, "
            f"max {max(self.samples):.1f} ms, failed {self.failed}"
        )


def timed_request(port: int, method: str, path: str, body: bytes | None, timeout: float) -> tuple[float, int]:
    """One request on a new connection: (elapsed ms, status; 0 when it failed or timed out)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0
    finally:
        connection.close()
    elapsed = (time.perf_counter() - started) * 1000
    return (elapsed if status else max(elapsed, timeout * 1000)), status


def probe(port: int, seconds: float, clients: int = 4, timeout: float = 5.0) -> dict[str, Latencies]:
    """Send heartbeats and ``GET /healthz`` from ``clients`` threads for ``seconds``; their latencies."""
    results = {"heartbeat": Latencies(), "healthz": Latencies()}
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
                elapsed, status = timed_request(port, method, path, payload, timeout)
                with lock:
                    results[kind].samples.append(elapsed)
                    results[kind].failed += status not in good
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"],
        cwd=ROOT,
        env={
            "PLAYER_AUTH": "anonymous",
            "NEW_SESSIONS_PER_NETWORK_PER_MINUTE": "0",
            **env,
            "HOST": "127.0.0.1",
            "PORT": str(port),
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}; see {log}")
        if timed_request(port, "GET", "/healthz", None, 1.0)[1] == 200:
            return process
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"gunicorn did not answer /healthz within 60 s; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker-class", default=os.environ.get("GUNICORN_WORKER_CLASS", ""))
    parser.add_argument("--workers", default=os.environ.get("GUNICORN_WORKERS", ""))
    parser.add_argument("--threads", default=os.environ.get("GUNICORN_THREADS", ""))
    parser.add_argument("--slow", type=int, default=200, help="slow connections (default 200)")
    parser.add_argument("--seconds", type=float, default=20, help="how long to probe (default 20)")
    args = parser.parse_args()

    prefix = f"bench-slow-{os.getpid()}"
    env = {
        **os.environ,
        "REDIS_KEY_PREFIX": prefix,
        "STREAMLIMIT_VAR_DIR": tempfile.mkdtemp(prefix="streamlimit-bench-"),
        "LOG_LEVEL": "WARNING",
    }
    for name, value in (
        ("GUNICORN_WORKER_CLASS", args.worker_class),
        ("GUNICORN_WORKERS", args.workers),
        ("GUNICORN_THREADS", args.threads),
    ):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    port = free_port()
    log = Path(env["STREAMLIMIT_VAR_DIR"]) / "gunicorn.log"
    server = start_gunicorn(env, port, log)
    slow = None
    try:
        before = probe(port, 3)
        slow = SlowClients(port, args.slow).start()
        time.sleep(2)  # let the server accept them and start reading
        during = probe(port, args.seconds)
        still_open = slow.still_open()
    finally:
        if slow:
            slow.stop()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        client = redis.Redis.from_url(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    print(
        f"gunicorn {env.get('GUNICORN_WORKER_CLASS', '(default)')} workers={env.get('GUNICORN_WORKERS', '(default)')} "
        f"threads={env.get('GUNICORN_THREADS', '(default)')}; {args.slow} slow connections, "
        f"{still_open} still open at the end; load average {os.getloadavg()[0]:.2f}"
    )
    for kind in ("heartbeat", "healthz"):
        print(f"  before, {kind}: {before[kind].summary()}")
    for kind in ("heartbeat", "healthz"):
        print(f"  during, {kind}: {during[kind].summary()}")


if __name__ == "__main__":
    main()
