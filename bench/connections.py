"""Redis connections held per gunicorn worker, measured.

Starts a redis-server of its own and the service with gunicorn.conf.py (as
``make run`` does) against it, sends heartbeats from several threads at once,
plus the probes, a scrape and a stop, then counts the clients Redis sees
(``CLIENT LIST``, this script's own connection left out).

Run:  .venv/bin/python bench/connections.py [--workers 3] [--requests 3000]
Numbers go to bench/README.md by hand, with the date.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.with_redis import find_redis_server, free_port, start_redis  # noqa: E402


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait for /healthz to answer, or exit with the reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited with {process.returncode}")
        try:
            requests.get(f"{url}/healthz", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    sys.exit("gunicorn did not answer /healthz")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (default 3)")
    parser.add_argument("--requests", type=int, default=3000, help="heartbeats to send (default 3000)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    options = parser.parse_args()
    binary = find_redis_server()
    if binary is None:
        sys.exit("no redis-server binary")
    redis_process, redis_port, workdir = start_redis(binary)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tempfile.NamedTemporaryFile(prefix="streamlimit-connections-", suffix=".log", delete=False)  # noqa: SIM115
    env = {
        "PLAYER_AUTH": "anonymous",
        "NEW_SESSIONS_PER_NETWORK_PER_MINUTE": "0",
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GUNICORN_WORKERS": str(options.workers),
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"],
        cwd=ROOT,
        env=env,
        stdout=logs,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_up(url, server)
        session_local = requests.Session

        def heartbeat(n: int) -> int:
            body = {"userId": f"user-{n % 500}", "streamId": "movie", "sessionId": f"s{(n // 500) % 4}"}
            return session_local().post(f"{url}/heartbeat", json=body, timeout=10).status_code

        with ThreadPoolExecutor(options.concurrency) as pool:
            statuses = list(pool.map(heartbeat, range(options.requests)))
        for path in ("/readyz", "/metrics", "/healthz"):
            for _ in range(options.workers * 3):
                requests.get(f"{url}{path}", timeout=10)
        body = {"userId": "user-1", "streamId": "movie", "sessionId": "s1"}
        requests.post(f"{url}/heartbeat/stop", json=body, timeout=10)
        time.sleep(2)  # the activity flushers write their batches
        client = Redis(host="127.0.0.1", port=redis_port)
        me = client.client_id()
        clients = [c for c in client.client_list() if int(c["id"]) != me]
    finally:
        server.terminate()
        server.wait(timeout=30)
        redis_process.terminate()
        redis_process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
        logs.close()
        os.unlink(logs.name)
    worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
    print(
        f"gunicorn {worker_class} x{options.workers}, {options.requests} heartbeats from "
        f"{options.concurrency} threads ({statuses.count(200)} x 200, {statuses.count(400)} x 400)"
    )
    print(f"Redis clients: {len(clients)} = {len(clients) / options.workers:.1f} per worker")
    for c in sorted(clients, key=lambda c: (c["addr"], c["cmd"])):
        print(f"  {c['addr']:<22} age {c['age']:>3}s  last command {c['cmd']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
