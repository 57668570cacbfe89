"""PLAYER_AUTH: a production gunicorn without playback token keys refuses to start (issue 19, item 3).

Each test starts the real gunicorn master with gunicorn.conf.py, as the image
does, against the shared Redis on its own key prefix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import ROOT, TOKEN_SECRETS, free_port

# Run first under xdist (tests/conftest.py): it starts gunicorn and manage.py as processes of its own.
pytestmark = pytest.mark.slow

GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"]
# Everything that decides how players authenticate; a test states each it wants.
AUTH_VARIABLES = ("PLAYER_AUTH", "PLAYBACK_TOKEN_KEYS", "PLAYBACK_TOKEN_JWKS_FILE", "DJANGO_DEBUG", "STREAMLIMIT_DEMO")


def production_env(key_prefix: str, **overrides: str) -> dict[str, str]:
    """The environment of a production start (DJANGO_DEBUG unset, so false), on this test's keys."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARIABLES and not k.startswith("GUNICORN_")}
    env.update(
        PORT=str(free_port()),
        HOST="127.0.0.1",
        GUNICORN_WORKERS="1",
        REDIS_KEY_PREFIX=key_prefix,
        STREAMLIMIT_VAR_DIR=str(ROOT / "var"),
    )
    return {**env, **overrides}


def heartbeat(url: str, session_id: str) -> requests.Response:
    body = {"userId": "victim", "streamId": "movie", "sessionId": session_id}
    return requests.post(f"{url}/heartbeat", json=body, timeout=10)


def run_until_exit_or_serving(env: dict[str, str], timeout: float = 60) -> tuple[subprocess.Popen, str | None]:
    """Start gunicorn; return it once it exited, or with its URL once /healthz answers."""
    process = subprocess.Popen(GUNICORN, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{env['PORT']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process, None
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("gunicorn neither exited nor served /healthz within a minute")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_without_keys_gunicorn_refuses_to_start_so_nobody_can_lock_an_account_out(key_prefix: str) -> None:
    process, url = run_until_exit_or_serving(production_env(key_prefix))
    if url is not None:
        # Today's behaviour: it serves anonymous players, and the lock-out works.
        try:
            taken = [heartbeat(url, f"made-up-{n}").status_code for n in range(3)]
            viewer = heartbeat(url, "the-real-viewer")
        finally:
            stop(process)
        pytest.fail(f"gunicorn served players without keys: made-up sessions {taken}, the viewer {viewer.status_code}")
    stderr = process.stderr.read()
    assert process.returncode == 2, stderr
    [line] = stderr.splitlines()
    assert line.startswith("gunicorn: configuration error: PLAYER_AUTH=tokens"), line
    assert "PLAYBACK_TOKEN_KEYS=" in line and "PLAYER_AUTH=anonymous" in line and ".env.example" in line, line


@pytest.mark.parametrize(
    "allowed_by",
    [
        {"PLAYER_AUTH": "anonymous"},
        {"PLAYBACK_TOKEN_KEYS": ",".join(f"{kid}={secret}" for kid, secret in TOKEN_SECRETS.items())},
        {"DJANGO_DEBUG": "true"},
    ],
    ids=["anonymous-said-so", "token-keys", "debug"],
)
def test_gunicorn_starts_with_keys_with_anonymous_players_said_so_or_in_development(
    key_prefix: str, allowed_by: dict[str, str]
) -> None:
    process, url = run_until_exit_or_serving(production_env(key_prefix, **allowed_by))
    try:
        assert url is not None, process.stderr.read()
        expected = 401 if "PLAYBACK_TOKEN_KEYS" in allowed_by else 200
        assert heartbeat(url, "one-screen").status_code == expected
    finally:
        stop(process)


def test_a_bad_player_auth_value_stops_gunicorn_with_one_line(key_prefix: str) -> None:
    result = subprocess.run(
        GUNICORN,
        cwd=ROOT,
        env=production_env(key_prefix, PLAYER_AUTH="nobody"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line == "gunicorn: configuration error: PLAYER_AUTH must be one of tokens, anonymous, got 'nobody'"


def test_manage_py_commands_run_without_keys(key_prefix: str) -> None:
    # Operators migrate and inspect before keys exist; only serving players needs them.
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=production_env(key_prefix),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_files_require_token_keys() -> None:
    for name in ("compose.yaml", "deploy/compose.sentinel.yaml", "deploy/compose.cluster.yaml"):
        assert "PLAYBACK_TOKEN_KEYS: ${PLAYBACK_TOKEN_KEYS:?" in (ROOT / name).read_text(), name
