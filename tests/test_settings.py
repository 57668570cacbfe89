"""Bad settings stop start-up with one line naming the variable, and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port
from tests.manage_runner import run_manage

# (variable, a bad value, a piece of what the line must say it accepts)
BAD_SETTINGS = [
    ("PORT", "eighty", "whole number"),
    ("PORT", "70000", "at most 65535"),
    ("REDIS_URL", "http://user:hunter2@cache:6379", "redis://"),
    ("REDIS_KEY_PREFIX", "{oops}", "without braces"),
    ("REDIS_KEY_PREFIX", "a b", "without braces or spaces"),
    ("REDIS_KEY_PREFIX", "tab\tin", "without braces or spaces"),
    ("REDIS_SENTINELS", "sentinel-a", "host:port pairs"),
    ("REDIS_SENTINEL_MASTER", "mymaster", "without REDIS_SENTINELS"),
    ("REDIS_SENTINEL_PASSWORD", "hunter2", "without REDIS_SENTINELS"),
    ("REDIS_CLUSTER_NODES", "node-a:99999", "host:port pairs"),
    ("REDIS_TLS", "maybe", "true or false"),
    ("REDIS_TLS_CA_FILE", "/nowhere/ca.pem", "not a readable file"),
    ("ACTIVITY_SHARDS", "0", "at least 1"),
    ("REDIS_WAIT_REPLICAS", "-1", "at least 0"),
    ("REDIS_WAIT_TIMEOUT_MS", "0", "at least 1"),
    ("REDIS_SOCKET_TIMEOUT", "soon", "a number"),
    ("REDIS_SOCKET_TIMEOUT", "0", "at least 0.01"),
    ("REDIS_BREAKER_FAILURES", "0", "at least 1"),
    ("REDIS_BREAKER_SECONDS", "-1", "at least 0"),
    ("MAX_CONCURRENT_STREAMS", "three", "whole number"),
    ("MAX_CONCURRENT_STREAMS", "0", "at least 1"),
    ("HEARTBEAT_INTERVAL_SECONDS", "0", "at least 1"),
    ("SESSION_TTL_SECONDS", "5", "at least HEARTBEAT_INTERVAL_SECONDS"),
    ("EVICTION_COOLDOWN_SECONDS", "-5", "at least 0"),
    ("ACTIVITY_FLUSH_SECONDS", "30", "at most 10"),
    ("STREAMLIMIT_FAIL_OPEN", "maybe", "true or false"),
    ("METRICS_ALLOWED_NETWORKS", "the office", "IP networks"),
    ("DJANGO_SECRET_KEY", "short", "at least 32 characters"),
    ("DJANGO_DEBUG", "sometimes", "true or false"),
    ("DJANGO_ALLOWED_HOSTS", " , ", "at least one host"),
    ("DJANGO_CSRF_TRUSTED_ORIGINS", "limits.example.com", "with their scheme"),
    ("DJANGO_SECURE_COOKIES", "2", "true or false"),
    ("DJANGO_HSTS_SECONDS", "a year", "whole number"),
    ("DJANGO_HSTS_SECONDS", "-1", "at least 0"),
    ("STAFF_SESSION_HOURS", "0", "at least 1"),
    ("STAFF_SESSION_HOURS", "forever", "whole number"),
    ("STAFF_SESSION_IDLE_MINUTES", "0", "at least 1"),
    ("STAFF_SESSION_IDLE_MINUTES", "721", "at most STAFF_SESSION_HOURS"),
    ("STAFF_REQUIRE_2FA", "maybe", "true or false"),
    ("DJANGO_SECRET_KEY_FALLBACKS", "short", "at least 32 characters"),
    ("DATABASE_URL", "mongodb://admin:hunter2@db/x", "postgres://"),
    ("LOG_LEVEL", "loud", "one of DEBUG"),
    ("DJANGO_BEHIND_PROXY", "nginx", "true or false"),
    ("STAFF_LOGIN_FAILURE_LIMIT", "0", "at least 1"),
    ("STAFF_LOGIN_LOCKOUT_MINUTES", "soon", "whole number"),
    ("STREAMLIMIT_DEMO", "maybe", "true or false"),
    ("PLAYER_ALLOWED_ORIGINS", "*", "an origin such as https://www.example.com"),
    ("STREAMLIMIT_VAR_DIR", "/proc/streamlimit-cannot-be-here", "a folder this user can write"),
]


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {name for name, _, _ in BAD_SETTINGS}}
    env["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if "STREAMLIMIT_VAR_DIR" not in overrides:
        env["STREAMLIMIT_VAR_DIR"] = str(ROOT / "var")
    return {**env, **overrides}


def assert_one_line_naming(result: subprocess.CompletedProcess, name: str, accepts: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert name in lines[0] and accepts in lines[0]
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


@pytest.mark.parametrize(("name", "value", "accepts"), BAD_SETTINGS, ids=[f"{n}={v}" for n, v, _ in BAD_SETTINGS])
def test_a_bad_setting_stops_manage_py_with_one_line(name: str, value: str, accepts: str) -> None:
    env = clean_env(**{name: value})
    if name == "SESSION_TTL_SECONDS":
        env["HEARTBEAT_INTERVAL_SECONDS"] = "20"
    if name in ("REDIS_SENTINELS", "REDIS_CLUSTER_NODES"):
        del env["REDIS_URL"]  # each names a whole topology: alone, only its own value is wrong
    result = run_manage(["check"], env=env)
    assert_one_line_naming(result, name, accepts)


def test_a_bad_setting_stops_gunicorn_before_any_worker_boots() -> None:
    env = clean_env(MAX_CONCURRENT_STREAMS="many", PORT=str(free_port()))
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_naming(result, "MAX_CONCURRENT_STREAMS", "whole number")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("REDIS_URL", "REDIS_SENTINELS"),
        ("REDIS_URL", "REDIS_CLUSTER_NODES"),
        ("REDIS_SENTINELS", "REDIS_CLUSTER_NODES"),
    ],
)
def test_two_redis_topologies_stop_start_up_with_a_line_naming_both(first: str, second: str) -> None:
    values = {
        "REDIS_URL": "redis://:hunter2@127.0.0.1:6379/0",
        "REDIS_SENTINELS": "127.0.0.1:26379",
        "REDIS_CLUSTER_NODES": "127.0.0.1:7000",
    }
    env = clean_env(**{first: values[first], second: values[second], "REDIS_SENTINEL_MASTER": "mymaster"})
    if "REDIS_URL" not in (first, second):
        del env["REDIS_URL"]
    if "REDIS_SENTINELS" not in (first, second):
        del env["REDIS_SENTINEL_MASTER"]
    result = run_manage(["check"], env=env)
    assert_one_line_naming(result, first, second)
    assert "only one of" in result.stderr


def test_good_settings_pass_the_same_check() -> None:
    # A plain `python manage.py` (the tests above fork theirs from a warm interpreter: run_manage).
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_setting_read_at_start_up_has_a_line_in_the_readme() -> None:
    import re

    read = set(re.findall(r'env_\w+\(\s*"([A-Z_]+)"', (ROOT / "streamlimit" / "settings.py").read_text()))
    manual = ROOT / "docs" / "operators" / "configuration.md"
    table = set(re.findall(r"^\| `([A-Z_]+)` \|", manual.read_text(), re.MULTILINE))
    assert read - table == set()


STAFF_PROBE = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps([s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_AGE,
                  s.STAFF_SESSION_IDLE_MINUTES, s.STAFF_REQUIRE_2FA]))
"""


def staff_settings(**env: str) -> list:
    # clean_env drops every variable BAD_SETTINGS names (the proxy and cookie ones included).
    env = clean_env(DJANGO_SETTINGS_MODULE="streamlimit.settings", **env)
    result = subprocess.run(
        [sys.executable, "-c", STAFF_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_staff_session_defaults_and_secure_cookies_whenever_https_is_in_use() -> None:
    # Direct, plain http: cookies plain; a 12-hour login, an idle hour; HSTS a year (sent over HTTPS only).
    assert staff_settings() == [False, False, 31_536_000, 12 * 3600, 60, False]
    assert staff_settings(DJANGO_BEHIND_PROXY="true")[:2] == [True, True]
    assert staff_settings(DJANGO_CSRF_TRUSTED_ORIGINS="https://limits.example.com")[:2] == [True, True]
    # A lab proxy on plain http may still turn them off, explicitly.
    assert staff_settings(DJANGO_BEHIND_PROXY="true", DJANGO_SECURE_COOKIES="false")[:2] == [False, False]
    tuned = staff_settings(
        STAFF_SESSION_HOURS="8", STAFF_SESSION_IDLE_MINUTES="30", STAFF_REQUIRE_2FA="true", DJANGO_HSTS_SECONDS="0"
    )
    assert tuned[2:] == [0, 8 * 3600, 30, True]
