"""Benchmark: staff dashboard pages with 100,000 live users in Redis.

Run: ``make bench-dashboard`` (or ``.venv/bin/python -m devtools.with_redis
.venv/bin/python bench/dashboard_pages.py [USERS]``). It fills Redis through
the StreamManager under a throw-away key prefix, serves the project with the
same gunicorn config as ``make run``, logs in as a throw-away staff user and
times each page over HTTP on 127.0.0.1, then deletes its keys.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REPEAT = 30


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def time_page(http: requests.Session, url: str) -> tuple[float, float, int]:
    samples = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        response = http.get(url, timeout=30)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], len(response.content)


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    prefix = f"bench-dash-{os.getpid()}"
    var_dir = tempfile.mkdtemp(prefix="streamlimit-bench-")
    env = {
        **os.environ,
        "REDIS_KEY_PREFIX": prefix,
        "STREAMLIMIT_VAR_DIR": var_dir,
        # Long enough that the first users are still live when the fill ends.
        "SESSION_TTL_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
    }
    client = redis.Redis.from_url(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        # Staff status alone shows nothing since the support roles: a superuser sees every page.
        "User.objects.create_superuser('bench', password='bench-pass-123')",
    )
    print(manage(env, "fill_live_users", str(users), "--seed", "7").strip())
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"],
        cwd=ROOT,
        env={
            "PLAYER_AUTH": "anonymous",
            "NEW_SESSIONS_PER_NETWORK_PER_MINUTE": "0",
            **env,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "GUNICORN_WORKERS": "2",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(f"{base}/admin/login/", timeout=5)
                break
            except requests.RequestException:  # still booting (a slow first answer included)
                time.sleep(0.1)
        http = requests.Session()
        login = http.get(f"{base}/admin/login/", timeout=10).text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
        http.post(
            f"{base}/admin/login/?next=/dashboard/",
            data={"username": "bench", "password": "bench-pass-123", "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base}/admin/login/"},
            timeout=10,
        ).raise_for_status()
        pages = {
            "live users, page 1": "/dashboard/users/",
            "live users, page 1000": "/dashboard/users/?page=1000",
            "live users, last page": f"/dashboard/users/?page={-(-users // 50)}",
            "one user": "/dashboard/user/?id=demo-user-4242",
            "overview": "/dashboard/",
        }
        print(f"{users} live users in Redis; {REPEAT} requests per page, one at a time, over HTTP")
        print(f"{'page':45} {'median ms':>10} {'p95 ms':>8} {'bytes':>8}")
        for name, path in pages.items():
            median, p95, size = time_page(http, base + path)
            print(f"{name:45} {median:10.1f} {p95:8.1f} {size:8d}")
    finally:
        server.terminate()
        server.wait(timeout=20)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for start in range(0, len(keys), 5000):
            client.unlink(*keys[start : start + 5000])


if __name__ == "__main__":
    main()
