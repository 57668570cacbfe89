"""gunicorn.conf.py: its environment variables, default worker count and request limits, on real gunicorn processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.conftest import ROOT, free_port, wait_for_port, wait_until_http_answers

# Run first under xdist (tests/conftest.py): it starts gunicorn (and manage.py) as processes of its own.
pytestmark = pytest.mark.slow

GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"]
# Variables read by gunicorn.conf.py, which a test must not inherit from the shell.
OWN_VARIABLES = ("HOST", "PORT", "LOG_LEVEL", "GUNICORN_CMD_ARGS")


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUNICORN_") and k not in OWN_VARIABLES}
    # Players without tokens, said so: else gunicorn refuses to start (streamlimit/player_auth.py).
    return {**env, "PLAYER_AUTH": "anonymous", **overrides}


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("GUNICORN_WORKERS", "two", "must be a whole number from 1 to 256"),
        ("GUNICORN_WORKERS", "0", "must be a whole number from 1 to 256"),
        ("GUNICORN_WORKER_CLASS", "eventlet", "must be one of gevent, gthread, sync"),
        ("GUNICORN_THREADS", "-4", "must be a whole number from 1 to 1000"),
        ("GUNICORN_WORKER_CONNECTIONS", "lots", "must be a whole number from 1 to 100000"),
        ("GUNICORN_TIMEOUT", "30s", "must be a whole number from 1 to 3600"),
        ("GUNICORN_MAX_REQUESTS", "1e5", "must be a whole number from 0 to 1000000000"),
        # PORT and LOG_LEVEL are Django settings too, checked first (streamlimit/settings.py).
        ("PORT", "http", "must be a whole number"),
        ("PORT", "70000", "must be at most 65535"),
        ("HOST", "local host", "must be an IP address or a host name"),
        ("HOST", "127.0.0.1:8080", "must be an IP address or a host name"),
        ("LOG_LEVEL", "loud", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)
def test_a_bad_value_stops_gunicorn_with_one_line_and_status_2(variable: str, value: str, accepted: str) -> None:
    env = clean_env(**{"PORT": str(free_port()), variable: value})
    result = subprocess.run(GUNICORN, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"gunicorn: configuration error: {variable} {accepted}"), line
    assert value in line or value.upper() in line, line
    assert result.stdout == ""


def start_gunicorn(env: dict[str, str], log: Path, prefix: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [*(prefix or []), *GUNICORN],
        cwd=ROOT,
        env={**env, "PORT": str(port), "STREAMLIMIT_VAR_DIR": str(ROOT / "var")},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process)
    wait_until_http_answers(port, process)
    return process, port


def worker_count(master: subprocess.Popen, expected: int, timeout: float = 30) -> int:
    """The master's children, once there are ``expected`` (or what there are after ``timeout``)."""
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children")
    deadline = time.monotonic() + timeout
    while True:
        count = len(children.read_text().split())
        if count >= expected or time.monotonic() > deadline:
            time.sleep(1)  # one more would have been forked by now
            return len(children.read_text().split())
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def test_the_default_worker_count_follows_the_cpus_this_process_may_use(tmp_path: Path, key_prefix: str) -> None:
    # taskset leaves one CPU to gunicorn, as a container's --cpus=1 or cpuset would.
    process, port = start_gunicorn(
        clean_env(REDIS_KEY_PREFIX=key_prefix), tmp_path / "one-cpu.log", ["taskset", "-c", "0"]
    )
    try:
        assert worker_count(process, 2) == 2  # one CPU + 1
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        stop(process)


def test_gunicorn_workers_sets_the_worker_count_and_gevent_boots_without_warnings(
    tmp_path: Path, key_prefix: str
) -> None:
    log = tmp_path / "one.log"
    process, port = start_gunicorn(clean_env(REDIS_KEY_PREFIX=key_prefix, GUNICORN_WORKERS="1"), log)
    try:
        assert worker_count(process, 1) == 1
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        stop(process)
    text = log.read_text()
    assert "Using worker: streamlimit.gevent_worker.SheddingGeventWorker" in text
    assert "Warning" not in text, text


def status_of(port: int, request: bytes) -> int:
    """Send raw request bytes; the status code of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def get(path: str, headers: list[tuple[str, str]] = ()) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_request_line_and_header_limits_are_the_documented_ones(live_gunicorn) -> None:
    server = live_gunicorn(workers=1)
    # The request line: "GET " + path + " HTTP/1.1" may be 4094 bytes.
    longest = "/healthz?" + "a" * (4094 - len("GET /healthz? HTTP/1.1"))
    assert status_of(server.port, get(longest)) == 200
    assert status_of(server.port, get(longest + "a")) == 414
    # 50 header fields (Host and Connection included), each up to 8190 bytes.
    fields = [(f"X-Field-{n}", "x") for n in range(48)]
    assert status_of(server.port, get("/healthz", fields)) == 200
    assert status_of(server.port, get("/healthz", [*fields, ("X-One-More", "x")])) == 431
    value = "v" * (8190 - len("X-Big: \r\n"))  # the CRLF counts
    assert status_of(server.port, get("/healthz", [("X-Big", value)])) == 200
    assert status_of(server.port, get("/healthz", [("X-Big", value + "v")])) == 431


def test_the_longest_legitimate_staff_url_fits_the_request_line_limit(live_gunicorn) -> None:
    server = live_gunicorn(workers=1)
    # A 128-character user id of 4-byte characters, in a dashboard URL that the
    # login page gets back as ?next= (so encoded twice).
    user_page = "/dashboard/user/?id=" + quote("\U0001f3ac" * 128, safe="")
    login = "/admin/login/?next=" + quote(user_page, safe="")
    assert 1900 < len(f"GET {login} HTTP/1.1") < 4094
    response = requests.get(server.url + user_page, timeout=10)  # not signed in: sent to the login page
    assert response.status_code == 200 and response.url.startswith(server.url + "/admin/login/")
    assert status_of(server.port, get(login)) == 200
