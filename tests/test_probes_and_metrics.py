"""Health, readiness and Prometheus metrics: in-process, and through a live gunicorn."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
import tomllib

import pytest
import requests
from django.test import Client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from heartbeat.limiter.metrics import HEARTBEAT_SECONDS, HeartbeatTally
from streamlimit.version import read_version
from tests.conftest import ROOT
from tests.test_wsgi import call


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_healthz_answers_without_redis(client: Client, settings) -> None:
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "version": project_version()}


def project_version() -> str:
    """The version pyproject.toml declares, read here independently of the service."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def test_version_is_read_from_pyproject(tmp_path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\nversion = "9.8.7"\n')
    assert read_version(pyproject) == "9.8.7"
    assert read_version() == project_version()


def test_build_info_metric_names_the_version(client: Client) -> None:
    text = client.get("/metrics").content.decode()
    assert metric(text, "streamlimit_build_info", f'{{version="{project_version()}"}}') == 1
    assert "# TYPE streamlimit_build_info gauge" in text


def test_readyz_is_ready_and_reloads_scripts_redis_forgot(client: Client, own_redis, use_redis) -> None:
    redis = own_redis()
    use_redis(redis.url)
    redis.client().script_flush()  # our own server: the shared one's scripts are never flushed
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["scripts"] == "loaded"
    from heartbeat.services import get_stream_manager

    assert get_stream_manager().scripts_loaded()


def test_readyz_is_503_with_a_reason_when_redis_is_down(client: Client, settings) -> None:
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "code": "redis_unreachable", "reason": "redis_unreachable"}


def test_probes_are_not_logged_at_info(client: Client, json_log_lines) -> None:
    client.get("/healthz")
    client.get("/readyz")
    client.get("/metrics")
    assert [line for line in json_log_lines() if line["message"] == "request_finished"] == []


def test_metrics_are_refused_outside_the_allowed_networks(client: Client, settings) -> None:
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 403


def test_metrics_accept_the_bearer_token_from_anywhere(client: Client, settings) -> None:
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_BEARER_TOKEN = "s3cret-token"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 200 and b"streamlimit_heartbeats_total" in response.content


def test_live_gauges_read_redis(client: Client) -> None:
    from heartbeat.services import get_stream_manager

    for i in range(3):
        get_stream_manager().admit("alice", "movie", f"s{i}")
    get_stream_manager().admit("bob", "movie", "s0")
    get_stream_manager().flush_activity()
    text = client.get("/metrics").content.decode()
    assert metric(text, "streamlimit_live_users") == 2
    assert metric(text, "streamlimit_live_sessions") == 4
    assert metric(text, "streamlimit_redis_up") == 1


def test_analytics_and_redis_memory_gauges_read_redis(client: Client, settings, redis_client) -> None:
    from heartbeat.limiter.activity_writer import analytics_accounts_per_shard
    from heartbeat.services import get_stream_manager

    settings.ACTIVITY_MEMORY_BUDGET_MB = 2
    for user in ("alice", "bob", "carol"):
        get_stream_manager().admit(user, "movie", "s0")
    get_stream_manager().flush_activity()
    text = client.get("/metrics").content.decode()
    assert metric(text, "streamlimit_analytics_accounts") == 3
    assert metric(text, "streamlimit_analytics_budget_accounts") == analytics_accounts_per_shard(2, 16) * 16
    info = redis_client.info("memory")
    assert metric(text, "streamlimit_redis_maxmemory_bytes") == info["maxmemory"]
    assert 0 < metric(text, "streamlimit_redis_memory_used_bytes") < 2 * info["used_memory"] + 10_000_000


def post_heartbeat(url: str, user: str, session: str) -> int:
    body = {"userId": user, "streamId": "movie", "sessionId": session}
    return requests.post(f"{url}/heartbeat", json=body, timeout=10).status_code


def test_counters_add_up_over_several_workers(live_gunicorn) -> None:
    server = live_gunicorn(workers=3)
    statuses = [post_heartbeat(server.url, f"user-{n % 5}", f"s{n}") for n in range(40)]
    for _ in range(7):
        requests.post(f"{server.url}/heartbeat", json={"userId": ""}, timeout=10)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    # Live gauges read the shared activity keys, and the heartbeat counters add up the workers'
    # tallies: each worker writes both about once a second.
    deadline = time.monotonic() + 15
    while (
        metric(text, "streamlimit_live_sessions") != 15
        or metric(text, "streamlimit_heartbeat_duration_seconds_count") < 40
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
        text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert statuses.count(200) == 15 and statuses.count(400) == 25
    assert metric(text, "streamlimit_heartbeats_total", '{outcome="allowed"}') == 15
    assert metric(text, "streamlimit_heartbeats_total", '{outcome="limit_reached"}') == 25
    assert metric(text, "streamlimit_heartbeats_total", '{outcome="invalid"}') == 7
    assert metric(text, "streamlimit_heartbeat_duration_seconds_count") == 40
    assert metric(text, "streamlimit_live_users") == 5 and metric(text, "streamlimit_live_sessions") == 15
    # One build_info sample per replica, however many workers answered before.
    assert text.count("streamlimit_build_info{") == 1


def test_the_heartbeat_tally_adds_up_as_prometheus_client_would_observe_each_heartbeat() -> None:
    # Metrics of the test's own: the service's tally flushes the other tests' heartbeats meanwhile.
    registry = CollectorRegistry()
    heartbeats = Counter("t_heartbeats", "", ["outcome"], registry=registry)
    sources = Counter("t_sources", "", ["source"], registry=registry)
    durations = Histogram("t_seconds", "", buckets=HEARTBEAT_SECONDS._upper_bounds[:-1], registry=registry)
    tally = HeartbeatTally(
        {o: heartbeats.labels(o) for o in ("allowed", "limit_reached")},
        {s: sources.labels(s) for s in ("plan", "default")},
        durations,
        flush_in_background=False,
    )
    reference = Histogram("reference_seconds", "", buckets=HEARTBEAT_SECONDS._upper_bounds[:-1], registry=None)
    # On the bounds, between them and past the last one.
    durations_seen = [0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.05, 0.9, 1.0, 2.5, 0.0005]
    for n, seconds in enumerate(durations_seen):
        tally.record("allowed" if n % 2 else "limit_reached", "plan" if n < 3 else "default", seconds)
        reference.observe(seconds)
    assert samples(registry) == {}  # nothing until flushed
    tally.flush()
    assert samples(registry, "t_heartbeats_total", "t_sources_total", "t_seconds_count", "t_seconds_sum") == {
        ("t_heartbeats_total", (("outcome", "allowed"),)): 5,
        ("t_heartbeats_total", (("outcome", "limit_reached"),)): 5,
        ("t_sources_total", (("source", "plan"),)): 3,
        ("t_sources_total", (("source", "default"),)): 7,
        ("t_seconds_count", ()): 10,
        ("t_seconds_sum", ()): pytest.approx(sum(durations_seen)),
    }
    buckets = samples(registry, "t_seconds_bucket")
    assert {dict(labels)["le"]: value for (_, labels), value in buckets.items()} == {
        s.labels["le"]: s.value for s in reference.collect()[0].samples if s.name.endswith("_bucket")
    }
    tally.flush()
    assert samples(registry, "t_seconds_bucket") == buckets  # a flush adds each heartbeat once


EXITING_WORKER = """
import django
django.setup()
from heartbeat.limiter.metrics import HEARTBEAT_TALLY
for seconds in (0.001, 0.002, 0.003):
    HEARTBEAT_TALLY.record("allowed", "default", seconds)
# No flush here: the process ends at once, well before its flusher thread's first second.
"""


def test_a_worker_that_exits_adds_its_last_heartbeats_to_the_metrics(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", EXITING_WORKER],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "streamlimit.settings",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            "ACTIVITY_FLUSH_SECONDS": "10",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("streamlimit_heartbeats_total", {"outcome": "allowed"}) == 3
    assert registry.get_sample_value("streamlimit_heartbeat_duration_seconds_count") == 3


def samples(registry: CollectorRegistry, *names: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The registry's non-zero samples named ``names`` (all when none is named)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if s.value and (not names or s.name in names) and not s.name.endswith("_created")
    }


def test_readyz_follows_redis_away_and_back_without_a_restart(live_gunicorn, own_redis) -> None:
    redis = own_redis()
    server = live_gunicorn(workers=2, REDIS_URL=redis.url)
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert post_heartbeat(server.url, "alice", "s0") == 200

    redis.stop()
    down = [requests.get(f"{server.url}/readyz", timeout=10) for _ in range(4)]
    assert {r.status_code for r in down} == {503}
    assert down[0].json()["status"] == "not_ready"
    assert post_heartbeat(server.url, "alice", "s0") == 500
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200

    redis.start()  # a new, empty Redis: no scripts in its cache
    up = [requests.get(f"{server.url}/readyz", timeout=10) for _ in range(4)]
    assert {r.status_code for r in up} == {200}
    assert post_heartbeat(server.url, "alice", "s0") == 200
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    # A gunicorn of the test's own: its metrics count this test's requests only.
    assert metric(text, "streamlimit_heartbeats_total", '{outcome="error"}') == 1
    assert metric(text, "streamlimit_redis_errors_total", '{operation="readyz"}') == len(down)


def test_metrics_are_scraped_by_address_from_an_allowed_network(settings) -> None:
    # Prometheus reaches each replica by its IP and sends that as Host.
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("172.30.99.0/24")]
    status, _, content = call("GET", "/metrics", HTTP_HOST="172.30.99.2:8080", REMOTE_ADDR="172.30.99.9")
    assert status == "200 OK" and b"streamlimit_build_info" in content


def test_a_foreign_host_is_refused_to_other_clients_and_on_other_paths(settings) -> None:
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("172.30.99.0/24")]
    status, _, content = call("GET", "/metrics", HTTP_HOST="172.30.99.2:8080", REMOTE_ADDR="10.1.2.3")
    assert status == "400 Bad Request" and json.loads(content)["code"] == "invalid_host"
    status, _, _ = call("GET", "/healthz", HTTP_HOST="172.30.99.2:8080", REMOTE_ADDR="172.30.99.9")
    assert status == "400 Bad Request"


@pytest.mark.django_db
def test_the_evictions_metric_counts_sessions_evicted_and_nothing_for_a_no_op(staff_client: Client) -> None:
    from heartbeat.services import get_stream_manager

    for session in ("s0", "s1", "s2"):
        get_stream_manager().admit("alice", "movie", session)

    def evictions() -> float:
        return metric(staff_client.get("/metrics").content.decode(), "streamlimit_evictions_total")

    before = evictions()
    staff_client.post("/dashboard/user/evict/", {"id": "alice", "session": "nobody"})  # not live: nothing evicted
    assert evictions() == before
    staff_client.post("/dashboard/user/evict/", {"id": "alice", "session": "s0"})
    assert evictions() == before + 1
    staff_client.post("/dashboard/user/evict-all/", {"id": "alice"})  # s1 and s2
    assert evictions() == before + 3
    staff_client.post("/dashboard/user/evict-all/", {"id": "alice"})  # none left
    assert evictions() == before + 3
