"""deploy/nginx.conf run by a real nginx on loopback, in front of a header echo and of a live gunicorn.

The compose file's upstream (``api:8080`` through Docker's DNS) is replaced by a
loopback address; every other line of the configuration is the one deployed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, wait_for_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make test installs nginx-light)")


def site_config(upstream_port: int, listen_port: int) -> str:
    """deploy/nginx.conf with a loopback upstream and port instead of compose's."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "http://api:8080" in text and "listen 8080;" in text
    text = text.replace("http://api:8080", f"http://127.0.0.1:{upstream_port}")
    return text.replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Start nginx with the deployed site configuration in front of ``upstream_port``; returns its URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(upstream_port: int) -> str:
        port = free_port()
        (tmp_path / "site.conf").write_text(site_config(upstream_port, port))
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read this test's folder
        (tmp_path / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log stderr warn;\n"
            "events { worker_connections 64; }\n"
            f"http {{ access_log off; client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;\n"
            f"  include {tmp_path}/site.conf; }}\n"
        )
        process = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "nginx.err", "wb"),  # noqa: SIM115
        )
        processes.append(process)
        wait_for_port(port, process, timeout=10)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


class EchoHeaders(BaseHTTPRequestHandler):
    """Answers every request with the headers it received, as JSON."""

    def do_GET(self) -> None:
        body = json.dumps({name.lower(): value for name, value in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHeaders)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_upstream_sees_the_host_with_its_port_and_only_the_proxy_forwarded_headers(nginx, echo_port) -> None:
    url = nginx(echo_port)
    port = url.rsplit(":", 1)[1]
    spoofed = {
        "X-Forwarded-For": "203.0.113.66",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "Forwarded": "for=203.0.113.66;proto=https",
        "X-Real-IP": "203.0.113.66",
    }
    seen = requests.get(f"{url}/anything", headers=spoofed, timeout=10).json()
    assert seen["host"] == f"127.0.0.1:{port}"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-real-ip"] == "127.0.0.1"
    assert "x-forwarded-host" not in seen and "forwarded" not in seen


def test_metrics_are_not_served_through_the_proxy(nginx, echo_port) -> None:
    url = nginx(echo_port)
    for path in ("/metrics", "/metrics/", "/%6detrics"):
        response = requests.get(f"{url}{path}", timeout=10)
        assert response.status_code == 403, path
        assert response.json()["code"] == "forbidden"


@pytest.mark.live_server_gunicorn
def test_staff_can_sign_in_through_the_proxy(nginx, live_gunicorn, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'staff.sqlite3'}",
        "DJANGO_SUPERUSER_PASSWORD": "proxy-test-pass-123",
        "DJANGO_BEHIND_PROXY": "true",
        # This nginx serves plain http (no certificate in the test): cookies that go over HTTPS
        # only, the default behind the proxy, would never come back.
        "DJANGO_SECURE_COOKIES": "false",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            "ops",
            "--email",
            "ops@example.com",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    server = live_gunicorn(
        workers=1, **{k: env[k] for k in ("DATABASE_URL", "DJANGO_BEHIND_PROXY", "DJANGO_SECURE_COOKIES")}
    )
    url = nginx(server.port)
    browser = requests.Session()
    login = f"{url}/admin/login/"
    page = browser.get(login, timeout=10)
    assert page.status_code == 200
    # What a browser sends with a form post: its own origin, port included.
    answer = browser.post(
        login,
        data={
            "username": "ops",
            "password": "proxy-test-pass-123",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            "next": "/dashboard/",
        },
        headers={"Origin": url, "Referer": login},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, answer.text[:500]
    assert answer.headers["Location"] == "/dashboard/"
    assert browser.get(f"{url}/dashboard/", timeout=10).status_code == 200
