"""Real parts for the webhook tests: receivers on loopback, a migrated database, deliver_events processes.

The receivers are real HTTP servers (threads of the test process, so the test
can see what arrived and change how they answer); the workers are real
``manage.py deliver_events`` processes on the real Redis, under the test's own
key prefix, with a database (SQLite file or a PostgreSQL database of the test's
own) that ``manage.py migrate`` made.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import psycopg
import pytest
from redis import Redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from heartbeat.limiter.events import STREAM_FIELD, Event, EventType
from heartbeat.limiter.keys import KeyLayout
from tests.conftest import ROOT, free_port

SHARDS = 4


@dataclass
class Arrival:
    """One request a receiver got."""

    webhook_id: str
    body: bytes
    headers: dict[str, str]
    verified: bool


def account_of(body: bytes) -> str:
    """The ``data.userId`` of an event body ("" when there is none)."""
    try:
        return str(orjson.loads(body)["data"]["userId"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""


@dataclass
class Receiver:
    """A real HTTP server on loopback that records what arrives and answers as ``mode`` says.

    Modes: ``ok`` (204), ``status:N`` (N, empty body), ``hang`` (never answers),
    ``garbage`` (bytes that are not HTTP), ``big`` (200 with a 10 MB body),
    ``redirect`` (302 to ``redirect_to``), ``slow`` (204 after ``delay`` s).
    ``stop()`` closes the port (connections refused); ``start()`` opens it again.
    Whatever the mode, events of the accounts in ``failing`` are answered 500.
    """

    secret: str
    mode: str = "ok"
    failing: frozenset[str] = frozenset()
    delay: float = 0.0
    redirect_to: str = ""
    port: int = field(default_factory=free_port)
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self) -> list[str]:
        with self.lock:
            return [arrival.webhook_id for arrival in self.arrivals]

    def events(self) -> list[dict]:
        with self.lock:
            return [orjson.loads(arrival.body) for arrival in self.arrivals if arrival.verified]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                with receiver.lock:
                    receiver.arrivals.append(Arrival(headers.get("webhook-id", ""), body, headers, verified))
                mode = receiver.mode
                if mode == "hang":
                    time.sleep(60)
                    return
                if mode == "garbage":
                    self.wfile.write(b"\x00\x01 this is not HTTP at all\r\n\r\n")
                    self.close_connection = True
                    return
                if mode == "slow":
                    time.sleep(receiver.delay)
                status, extra, payload = 204, {}, b""
                if receiver.failing and account_of(body) in receiver.failing:
                    status = 500
                elif mode.startswith("status:"):
                    status = int(mode.split(":", 1)[1])
                elif mode == "big":
                    status, payload = 200, b"x" * (10 * 1024 * 1024)
                elif mode == "redirect":
                    status, extra = 302, {"Location": receiver.redirect_to}
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the worker stopped reading at its cap and closed
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start receivers; every one is stopped after the test."""
    started: list[Receiver] = []

    def start(secret: str, **options: object) -> Receiver:
        receiver = Receiver(secret, **options).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


def migrated_database(url: str) -> str:
    """Run ``manage.py migrate`` against ``url``; return it."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database the worker processes share: a SQLite file, or a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        return migrated_database(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    return migrated_database(request.getfixturevalue("postgres_database"))


@pytest.fixture
def sqlite_database(tmp_path: Path) -> str:
    """A migrated SQLite file the worker processes share."""
    return migrated_database(f"sqlite:///{tmp_path / 'db.sqlite3'}")


def query(url: str, sql: str, *params: object) -> list[tuple]:
    """Rows of ``sql`` (``%s`` placeholders) on the database at ``url``, read outside Django."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


@dataclass
class Deployment:
    """The processes' shared settings, and what the test started."""

    database: str
    prefix: str
    redis: Redis
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def layout(self) -> KeyLayout:
        return KeyLayout(self.prefix, SHARDS)

    def manage(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run one manage.py command to its end."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def add_endpoint(self, url: str, secret: str, events: str = "") -> int:
        """``manage.py webhooks add``; the new endpoint's id."""
        args = ["webhooks", "add", url, "--secret", secret] + (["--events", events] if events else [])
        done = self.manage(*args)
        assert done.returncode == 0, done.stderr
        assert secret not in done.stdout + done.stderr
        return int(re.search(r"added endpoint (\d+)", done.stdout).group(1))

    def start_worker(self, name: str, **env: str) -> subprocess.Popen:
        """A ``manage.py deliver_events`` process (stopped after the test)."""
        process = subprocess.Popen(
            [sys.executable, "manage.py", "deliver_events", "--name", name, *self._metrics(env)],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        return process

    @staticmethod
    def _metrics(env: dict[str, str]) -> list[str]:
        port = env.pop("METRICS_PORT", "")
        return ["--metrics-port", port] if port else []

    def write_events(
        self, accounts: list[str], per_account: int, kind: EventType = EventType.SESSION_STARTED, start: int = 0
    ) -> list[Event]:
        """XADD events to the streams as the service does (each account's in its shard's stream), interleaved."""
        written = []
        pipe = self.redis.pipeline(transaction=False)
        for sequence in range(start, start + per_account):
            for account in accounts:
                event = Event(kind, int(time.time() * 1000), {"userId": account, "seq": sequence})
                pipe.xadd(self.layout.shard_of(account).events, {STREAM_FIELD: event.to_json()})
                written.append(event)
        pipe.execute()
        return written

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stderr:
                process.stderr.close()


@pytest.fixture
def deployment(key_prefix: str, redis_client: Redis) -> Iterator[Callable[[str], Deployment]]:
    """Build a Deployment on a database; its worker processes are killed after the test."""
    made: list[Deployment] = []

    def build(database: str, **env: str) -> Deployment:
        base = {
            **os.environ,
            "DATABASE_URL": database,
            "REDIS_KEY_PREFIX": key_prefix,
            "ACTIVITY_SHARDS": str(SHARDS),
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "WEBHOOK_TIMEOUT_SECONDS": "2",
            "WEBHOOK_LEASE_SECONDS": "5",
            # The retry schedule scaled down a hundredfold (5 s -> 0.05 s, 10 min -> 6 s): see the manual.
            "WEBHOOK_RETRY_SCALE": "0.01",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        built = Deployment(database, key_prefix, redis_client, base)
        made.append(built)
        return built

    yield build
    for built in made:
        built.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def scrape(port: int) -> str:
    """A worker's metrics page ("" while the worker is not listening yet)."""
    chunks = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except ConnectionRefusedError:
        return ""
    return b"".join(chunks).decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
