"""`make run` as a newcomer meets it: a busy port, the demo switch, the development token key."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.live_server_gunicorn

# The user's own settings that would change what `make run` does; make's own
# variables of an outer `make test`.
DROPPED = {
    "PORT",
    "HOST",
    "STREAMLIMIT_DEMO",
    "PLAYBACK_TOKEN_KEYS",
    "PLAYBACK_TOKEN_JWKS_FILE",
    "PLAYBACK_TOKENS_REQUIRED",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
}
EXPORT_KEYS = re.compile(
    r"^\[make run\] to run manage\.py issue_token in another shell: export (PLAYBACK_TOKEN_KEYS=\S+)$"
)


def make_env(key_prefix: str, var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env.update(REDIS_KEY_PREFIX=key_prefix, STREAMLIMIT_VAR_DIR=str(var_dir), GUNICORN_WORKERS="1", **extra)
    return env


class MakeRun:
    """A `make run` in a process group of its own, its stderr in a file."""

    def __init__(self, env: dict[str, str], stderr_path: Path) -> None:
        self.port = int(env["PORT"])
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                ["make", "run"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def wait_until_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.stderr()
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=10).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or a worker still booting
                pass
            time.sleep(0.3)
        raise AssertionError(f"make run did not serve within {timeout} s:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def our_lines(self) -> list[str]:
        return [line for line in self.stderr().splitlines() if line.startswith("[make run]")]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def make_run(key_prefix: str, tmp_path: Path) -> Iterator[Callable[..., MakeRun]]:
    """Start `make run` on a free port with this test's key prefix and a state folder of its own."""
    started: list[MakeRun] = []

    def start(**extra: str) -> MakeRun:
        env = make_env(key_prefix, tmp_path / "var", PORT=str(free_port()), **extra)
        run = MakeRun(env, tmp_path / f"make-run-{len(started)}.err")
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


def test_a_busy_port_stops_make_run_with_one_line_naming_a_free_one(key_prefix: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = make_env(key_prefix, tmp_path / "var", PORT=str(port))
        result = subprocess.run(["make", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("[make run]")]
    assert len(ours) == 1, result.stderr
    found = re.fullmatch(rf"\[make run\] port {port} is taken: PORT=(\d+) make run", ours[0])
    assert found, ours[0]
    # The port it names is free, and nothing was set up or started.
    with socket.socket() as suggested:
        suggested.bind(("127.0.0.1", int(found.group(1))))
    assert "Traceback" not in result.stderr and "gunicorn" not in result.stderr.lower()
    assert not (tmp_path / "var").exists()


def test_make_run_prints_the_export_line_that_lets_issue_token_work_in_another_shell(
    make_run: Callable[..., MakeRun], tmp_path: Path
) -> None:
    run = make_run()
    run.wait_until_serving()
    lines = run.our_lines()
    assert any(f"http://localhost:{run.port}/demo/" in line for line in lines), lines
    exported = [match.group(1) for line in lines if (match := EXPORT_KEYS.match(line))]
    assert len(exported) == 1, lines
    name, _, value = exported[0].partition("=")
    # "Another shell": none of make run's variables but the pasted one.
    shell = {k: v for k, v in os.environ.items() if k not in DROPPED}
    shell.update({name: value, "STREAMLIMIT_VAR_DIR": str(tmp_path / "other-shell")})
    issued = subprocess.run(
        [sys.executable, "manage.py", "issue_token", "alice", "--session", "tv"],
        cwd=ROOT,
        env=shell,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    url = f"http://127.0.0.1:{run.port}/heartbeat"
    body = {"userId": "alice", "streamId": "movie-1", "sessionId": "tv"}
    answer = requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["allowed"] is True, answer.text
    # The service checks the token: the same one for another session is refused.
    other = requests.post(
        url, json={**body, "sessionId": "phone"}, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert other.status_code == 403 and other.json()["code"] == "token_mismatch"


def test_with_the_demo_off_make_run_does_not_advertise_it(make_run: Callable[..., MakeRun]) -> None:
    run = make_run(STREAMLIMIT_DEMO="false")
    run.wait_until_serving()
    lines = run.our_lines()
    assert any(f"http://localhost:{run.port}/ " in line for line in lines), lines
    # Its development key stays (its kid is "demo"): without keys gunicorn would refuse to start (PLAYER_AUTH).
    keys = [line for line in lines if "export PLAYBACK_TOKEN_KEYS=" in line]
    assert len(keys) == 1, lines
    assert not any("demo" in line.lower() for line in lines if line not in keys), lines
    assert requests.get(f"http://127.0.0.1:{run.port}/demo/", timeout=10).status_code == 404
    assert "/demo/" not in requests.get(f"http://127.0.0.1:{run.port}/", timeout=10).text
