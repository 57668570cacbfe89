"""Fixtures of the browser tests: static files from the source, a browser closed before its server, screenshots.

Registered in tests/conftest.py's ``pytest_plugins``.
"""

from __future__ import annotations

import fcntl
import http.client
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def source_static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A STATIC_ROOT collected from this checkout's sources, once per test run (shared by its xdist workers).

    A live gunicorn serves collected static files (whitenoise, manifest); the
    project's own ``var/static`` is whatever the last ``collectstatic`` left,
    so a plain ``pytest`` run would test an old player.js. This run's own copy
    is collected from the source, in the run's temporary folder. Compressing
    every file costs seconds of CPU: the first worker to need it collects it,
    under a lock, and the others use that copy.
    """
    # Under xdist each worker's base folder is popen-gwN inside the run's own; without xdist, the run's.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "static-root"
    with open(shared / "static-root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "staticfiles.json").is_file():
            subprocess.run(
                [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                cwd=ROOT,
                env={**os.environ, "STREAMLIMIT_STATIC_ROOT": str(root)},
                check=True,
            )
    return root


@pytest.fixture
def static_from_source(source_static_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make every live gunicorn this test starts serve the static files collected from the source."""
    # live_gunicorn builds the server's environment from os.environ when it starts one.
    monkeypatch.setenv("STREAMLIMIT_STATIC_ROOT", str(source_static_root))
    return source_static_root


@pytest.fixture
def live_browser(live_gunicorn, chromium, static_from_source):
    """conftest's headless Chromium, whose pages are closed before the test's live gunicorns stop.

    A page still open holds keep-alive connections to the service, and
    gunicorn's graceful stop waits for them (about 6 s per test); closed
    first, the servers stop at once. Depending on ``live_gunicorn`` (before
    ``chromium``) makes it set up before and torn down after ``chromium``,
    which closes the test's pages.
    """
    return chromium


def screenshot_folder(config: pytest.Config) -> Path:
    """Where this run's screenshots go: ``screenshots`` in the run's own pytest temporary folder."""
    return config._tmp_path_factory.getbasetemp() / "screenshots"  # type: ignore[attr-defined]


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """This run's screenshot folder (per run, so parallel runs never write the same files)."""
    folder = screenshot_folder(request.config)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Say where the screenshots of this run went, when a browser test took some."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:
        return
    folder = screenshot_folder(config)
    if folder.is_dir() and any(folder.iterdir()):
        terminalreporter.write_line(f"browser screenshots of this run: {folder}")


class HoldingProxy:
    """An HTTP proxy of the test's own on loopback, in front of a live service, that can hold requests back.

    Playwright cannot route the beacon a page sends as it goes away, so a test
    that must make such a request late (after the next page's first heartbeat)
    opens the pages through this proxy: ``hold(path)`` makes the proxy keep
    every request for that path until ``release()``; the rest goes straight
    through. One request per connection (HTTP/1.0), which browsers accept.
    """

    HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"})

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.held_path: str | None = None
        self.arrived: list[tuple[str, bytes]] = []  # (path, body) of each request held
        self.answered: list[tuple[str, int]] = []  # (path, status) of each request answered
        self.released = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold(self, path: str) -> None:
        """Hold back every request for ``path`` (query string aside) from now on."""
        self.released.clear()
        self.held_path = path

    def release(self) -> None:
        """Let the held requests (and later ones) through."""
        self.held_path = None
        self.released.set()

    def close(self) -> None:
        """Let everything go and stop the proxy."""
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.held_path is not None and self.path.split("?")[0] == proxy.held_path:
                    proxy.arrived.append((self.path, body))
                    # Bounded: a test that never releases still ends.
                    proxy.released.wait(timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_BY_HOP}
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    proxy.answered.append((self.path, answer.status))
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():
                        if key.lower() not in proxy.HOP_BY_HOP:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    upstream.close()

            def do_GET(self) -> None:
                self.forward()

            def do_POST(self) -> None:
                self.forward()

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def holding_proxy() -> Iterator:
    """``holding_proxy(service)``: a HoldingProxy in front of a live gunicorn; closed after the test."""
    started: list[HoldingProxy] = []

    def start(service) -> HoldingProxy:
        proxy = HoldingProxy(service.port)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.close()
