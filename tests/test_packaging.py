"""`pip install .`: the wheel holds the apps and their files, and the `streamlimit` command runs the service.

The wheel is built from a copy of the checkout (a build writes build/ and
*.egg-info beside the sources), installed into a fresh venv, and run from a
folder outside the checkout, so nothing can be imported from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

# Run first under xdist (tests/conftest.py): it builds a wheel and a venv, and starts the service.
pytestmark = pytest.mark.slow

# Not part of what a wheel is built from.
LEFT_OUT = (".git", ".venv", "var", "tests", "bench", "build", "dist", "test-output", "*.egg-info", "__pycache__")
# The user's settings that would change what this test checks.
DROPPED = {
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "DJANGO_SETTINGS_MODULE",
    "STREAMLIMIT_VAR_DIR",
    "STREAMLIMIT_STATIC_ROOT",
    "STREAMLIMIT_DEMO",
    "PLAYBACK_TOKEN_KEYS",
    "PLAYBACK_TOKEN_JWKS_FILE",
    "PORT",
    "HOST",
}
FILES_IN_THE_WHEEL = [
    "streamlimit/settings.py",
    "streamlimit/gunicorn_config.py",
    "streamlimit/home/templates/home/index.html",
    "streamlimit/home/static/home/favicon.ico",
    "heartbeat/static/streamlimit/player.js",
    "heartbeat/static/streamlimit/player.d.ts",
    "dashboard/templates/dashboard/overview.html",
    "dashboard/static/dashboard/dashboard.css",
    "dashboard/migrations/0001_audit_record.py",
    "demo/templates/demo/player.html",
    "demo/static/demo/demo.js",
]


def run(args: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **options)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LEFT_OUT))
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(tmp_path), "."],
        cwd=source,
    )
    (wheel,) = tmp_path.glob("streamlimit-*.whl")
    return wheel


def pinned_requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def check_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        requires = [
            line.split(": ", 1)[1]
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist: ")
        ]
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    missing = [name for name in FILES_IN_THE_WHEEL if name not in names]
    assert not missing, missing
    # Every Lua script, wherever under heartbeat/ it lives.
    lua_in_checkout = {str(path.relative_to(ROOT)) for path in ROOT.glob("heartbeat/**/*.lua")}
    assert len(lua_in_checkout) >= 7 and lua_in_checkout <= names
    assert not any(name.startswith(("tests/", "bench/", "devtools/")) for name in names)
    assert requires == pinned_requirements()
    assert "streamlimit = streamlimit.cli:main" in entry_points


def test_the_wheel_installs_into_a_fresh_venv_and_serves_a_heartbeat(tmp_path: Path, key_prefix: str) -> None:
    wheel = build_wheel(tmp_path)
    check_wheel_contents(wheel)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    # --no-compile: no .pyc for the thousands of modules installed (CPU the test does not need; what runs
    # is compiled as it is imported).
    run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-compile",
            "-q",
            str(wheel),
        ]
    )

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env.update(REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), REDIS_KEY_PREFIX=key_prefix)
    command = str(venv / "bin" / "streamlimit")

    where = run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import heartbeat, streamlimit; print(streamlimit.__file__, heartbeat.__file__)",
        ],
        cwd=workdir,
        env=env,
    )
    assert all(path.startswith(str(venv)) for path in where.stdout.split())

    # Before collectstatic, check says the pages would fail without their files.
    assert "streamlimit.W020" in run([command, "check"], cwd=workdir, env=env).stderr
    run([command, "collectstatic", "--noinput", "--verbosity", "0"], cwd=workdir, env=env)
    checked = run([command, "check"], cwd=workdir, env=env)
    assert "System check identified no issues" in checked.stdout, checked.stderr
    # An installed package keeps its state in var/ of the working directory, not in site-packages.
    assert (workdir / "var" / "secret_key").is_file() and (workdir / "var" / "static" / "staticfiles.json").is_file()
    assert not list(venv.glob("lib/python*/site-packages/var"))

    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [command, "serve"],
            cwd=workdir,
            # Players without tokens, said so: else gunicorn refuses to start (streamlimit/player_auth.py).
            env={**env, "PORT": str(port), "GUNICORN_WORKERS": "1", "PLAYER_AUTH": "anonymous"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, server, log_path)
        body = {"userId": "account-42", "streamId": "movie-1138", "sessionId": "tv"}
        answer = requests.post(f"{base}/heartbeat", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "allowed": True,
            "activeSessions": 1,
            "limit": 3,
            "limitSource": "default",
            "heartbeatInterval": 20,
        }
        landing = requests.get(f"{base}/", timeout=10)
        assert landing.status_code == 200 and 'id="link-dashboard"' in landing.text
        types = requests.get(f"{base}/static/streamlimit/player.d.ts", timeout=10)
        assert types.status_code == 200 and types.headers["Content-Type"].startswith("text/typescript")
    finally:
        stop(server)
    # The project's gunicorn configuration ran: gevent workers, JSON log lines.
    messages = [
        json.loads(line).get("message", "") for line in log_path.read_text().splitlines() if line.startswith("{")
    ]
    assert "Using worker: streamlimit.gevent_worker.SheddingGeventWorker" in messages, log_path.read_text()[-3000:]


def wait_until_healthy(base: str, server: subprocess.Popen, log_path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, log_path.read_text()[-3000:]
        try:
            if requests.get(f"{base}/healthz", timeout=10).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or the worker still booting
            pass
        time.sleep(0.3)
    raise AssertionError(f"streamlimit serve did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """End gunicorn's master and workers (their own process group), on success and failure alike."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
