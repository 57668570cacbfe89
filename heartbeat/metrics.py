"""Prometheus metrics of the heartbeat service.

Under gunicorn the metrics live in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by gunicorn.conf.py), so a scrape sees the
sum over every worker. Live users and sessions are read from Redis at scrape
time, so they are the same whichever worker answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

HEARTBEATS = Counter(
    "streamlimit_heartbeats",
    "Heartbeats answered, by outcome (allowed, limit_reached, evicted, invalid, error).",
    ["outcome"],
)
HEARTBEAT_SECONDS = Histogram(
    "streamlimit_heartbeat_duration_seconds",
    "Time to answer a valid heartbeat, Redis round trip included.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
REDIS_ERRORS = Counter("streamlimit_redis_errors", "Redis errors met while answering requests.", ["operation"])
EVICTIONS = Counter("streamlimit_evictions", "Sessions evicted by staff or operators.")
TOKEN_FAILURES = Counter(
    "streamlimit_token_failures",
    "Player requests refused for their playback token, by reason "
    "(missing, malformed, unknown_kid, algorithm, signature, expired, claims, mismatch).",
    ["reason"],
)
LIMIT_SOURCES = Counter(
    "streamlimit_heartbeat_limit_source",
    "Heartbeats answered, by where their limit came from (override, token, plan, default).",
    ["source"],
)
UNKNOWN_PLANS = Counter("streamlimit_unknown_plans", "Heartbeats whose token named a plan not in PLAN_LIMITS.")
WAIT_REPLICAS_SHORT = Counter(
    "streamlimit_wait_replicas_short",
    "New sessions admitted that fewer than REDIS_WAIT_REPLICAS replicas confirmed within REDIS_WAIT_TIMEOUT_MS.",
)
# Per worker process: livesum adds up the workers whose breaker is not closed.
REDIS_BREAKER_OPEN = Gauge(
    "streamlimit_redis_breaker_open",
    "Worker processes whose Redis circuit breaker is open or half-open (heartbeats fail at once).",
    multiprocess_mode="livesum",
)
REDIS_BREAKER_TRANSITIONS = Counter(
    "streamlimit_redis_breaker_transitions",
    "Circuit breaker state changes, by the state entered (open, half_open, closed).",
    ["state"],
)

# Looked up once: ``labels()`` takes a lock and a dict lookup on every call.
# Every outcome is exported from the start, at 0.
HEARTBEATS_BY_OUTCOME = {
    outcome: HEARTBEATS.labels(outcome)
    for outcome in (
        "allowed",
        "limit_reached",
        "evicted",
        "stopped",
        "replaced",
        "blocked",
        "invalid",
        "unauthorized",
        "error",
    )
}
LIMIT_SOURCES_BY_NAME = {source: LIMIT_SOURCES.labels(source) for source in ("override", "token", "plan", "default")}


class LiveStateCollector(Collector):
    """Gauges of live users and sessions, read from Redis when scraped."""

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("streamlimit_live_users", "Users with at least one live session."),
            GaugeMetricFamily("streamlimit_live_sessions", "Live sessions across all users."),
            GaugeMetricFamily("streamlimit_redis_up", "1 if Redis answered this scrape, else 0."),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without it, registering calls collect(), i.e. Redis, while this
        # module is imported: a stalled Redis would then hold the import lock
        # of the URLconf, and every first request of a worker, /healthz
        # included, would wait for it.
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from heartbeat.services import get_stream_manager

        users, sessions, up = self._families()
        try:
            live_users, live_sessions = get_stream_manager().reads.live_counts()
        except RedisError:
            REDIS_ERRORS.labels("metrics").inc()
            up.add_metric([], 0)
            yield up
            return
        users.add_metric([], live_users)
        sessions.add_metric([], live_sessions)
        up.add_metric([], 1)
        yield from (users, sessions, up)


class BuildInfoCollector(Collector):
    """``streamlimit_build_info{version=...} 1``: which version each scraped replica runs.

    Outside the multiprocess registry, so it appears once per scrape, not once per worker.
    """

    def collect(self) -> Iterator[InfoMetricFamily]:
        yield InfoMetricFamily(
            "streamlimit_build", "The StreamLimit version this process runs.", {"version": settings.STREAMLIMIT_VERSION}
        )


_LIVE_STATE = CollectorRegistry(auto_describe=True)
_LIVE_STATE.register(LiveStateCollector())
_LIVE_STATE.register(BuildInfoCollector())


def render_metrics() -> bytes:
    """The text exposition of every metric: all workers' when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_LIVE_STATE)
