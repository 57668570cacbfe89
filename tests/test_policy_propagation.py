"""A new policy version is in force in every worker within seconds, without a restart; the gauge says which.

A worker checks the version when it decides (``StreamManager.policies.policy()`` on each heartbeat's
admission): the live test needs the admission that decides with the policy (issue 20 item 3).
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from prometheus_client import REGISTRY

from heartbeat.limiter import metrics
from heartbeat.services import get_policy_store, get_stream_manager
from tests.conftest import make_token

# Two checks of POLICY_CHECK_SECONDS (2 s) fit in it; the promise.
IN_FORCE_WITHIN_SECONDS = 5
BASIC_ONE = {"default": {"maxStreams": 3}, "plans": {"basic": {"maxStreams": 1}}}
GAUGE_LINE = re.compile(r'^streamlimit_policy_version\{pid="(\d+)"\} ([0-9.e+]+)$', re.MULTILINE)


def test_the_gauge_follows_the_version_this_process_decides_with(monkeypatch) -> None:
    def gauge() -> float:
        return REGISTRY.get_sample_value("streamlimit_policy_version")

    watcher = get_stream_manager().policies
    monkeypatch.setattr(watcher, "check_seconds", 0)  # every call checks
    metrics.POLICY_VERSION.set(0)
    watcher.policy()
    assert gauge() == 0  # none applied: the settings decide
    get_policy_store().apply(BASIC_ONE, applied_by="test")
    assert watcher.policy().version == 1 and gauge() == 1
    get_policy_store().apply({"default": {"maxStreams": 2}}, applied_by="test")
    watcher.policy()
    assert gauge() == 2


def worker_versions(url: str) -> dict[str, float]:
    """Each live worker's policy version, from the gauge in /metrics (one line per worker pid)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {pid: float(value) for pid, value in GAUGE_LINE.findall(text)}


def heartbeat(url: str, user: str, session: str) -> requests.Response:
    """A first heartbeat of a ``basic`` account's session, on a connection of its own (any worker may answer)."""
    token = make_token(user, sid=session, plan="basic")
    return requests.post(
        f"{url}/heartbeat",
        json={"streamId": "movie", "sessionId": session},
        headers={"Authorization": f"Bearer {token}", "Connection": "close"},
        timeout=30,
    )


@pytest.mark.live_server_gunicorn
def test_every_worker_decides_with_a_new_version_within_five_seconds_without_a_restart(
    live_gunicorn, token_env, tmp_path: Path
) -> None:
    workers = 2
    server = live_gunicorn(workers=workers, **token_env)
    # Before: a basic account plays two sessions (no policy; the default limit 3 decides).
    assert heartbeat(server.url, "before", "tv").status_code == 200
    assert heartbeat(server.url, "before", "phone").status_code == 200
    path = tmp_path / "basic.json"
    path.write_text(json.dumps(BASIC_ONE))
    call_command("policy", "apply", str(path), "--reason", "basic is one screen", stdout=io.StringIO())
    applied = time.monotonic()
    # Heartbeats keep every worker deciding (a worker checks the version when it decides); each says
    # which version it decides with in the gauge. All of them must say 1 within the promise.
    versions: dict[str, float] = {}
    n = 0
    while time.monotonic() - applied < IN_FORCE_WITHIN_SECONDS:
        n += 1
        heartbeat(server.url, f"warm-{n}", "tv")
        versions = worker_versions(server.url)
        if len(versions) == workers and set(versions.values()) == {1.0}:
            break
        time.sleep(0.1)
    assert len(versions) == workers and set(versions.values()) == {1.0}, versions
    # And they decide with it: every basic account's second session is refused, by whichever worker answers.
    for account in range(12):
        user = f"basic-{account}"
        assert heartbeat(server.url, user, "tv").status_code == 200
        second = heartbeat(server.url, user, "phone")
        assert second.status_code == 400 and second.json()["code"] == "concurrency_limit_reached", (
            account,
            second.json(),
        )
    # No worker restarted on the way.
    assert set(worker_versions(server.url)) == set(versions)
