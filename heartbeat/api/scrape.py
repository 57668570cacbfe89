"""The Prometheus exposition: every worker's metrics, plus live counts read from Redis at scrape time.

Live users and sessions are read when scraped, so they are the same whichever
worker answers; the build info is outside the multiprocess registry, so it
appears once per scrape, not once per worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from heartbeat.limiter.metrics import HEARTBEAT_TALLY, REDIS_ERRORS
from heartbeat.services import get_live_state, get_stream_manager


class LiveStateCollector(Collector):
    """Gauges of live users and sessions, read from Redis when scraped."""

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("streamlimit_live_users", "Users with at least one live session."),
            GaugeMetricFamily("streamlimit_live_sessions", "Live sessions across all users."),
            GaugeMetricFamily("streamlimit_redis_up", "1 if Redis answered this scrape, else 0."),
            GaugeMetricFamily(
                "streamlimit_analytics_accounts", "Accounts the dashboard's analytics keep (heard in the last day)."
            ),
            GaugeMetricFamily(
                "streamlimit_analytics_budget_accounts",
                "Accounts ACTIVITY_MEMORY_BUDGET_MB keeps at most (0: no budget); past it the oldest are trimmed.",
            ),
            GaugeMetricFamily("streamlimit_redis_memory_used_bytes", "Redis' used memory (INFO memory)."),
            GaugeMetricFamily("streamlimit_redis_maxmemory_bytes", "Redis' maxmemory (0: none set)."),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without it, registering calls collect(), i.e. Redis, while this
        # module is imported: a stalled Redis would then hold the import lock
        # of the URLconf, and every first request of a worker, /healthz
        # included, would wait for it.
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        users, sessions, up, analytics, budget, used, maxmemory = self._families()
        live_state = get_live_state()
        try:
            live_users, live_sessions = live_state.live_counts()
            accounts = live_state.analytics_accounts()
            used_bytes, max_bytes = live_state.memory()
        except RedisError:
            REDIS_ERRORS.labels("metrics").inc()
            up.add_metric([], 0)
            yield up
            return
        users.add_metric([], live_users)
        sessions.add_metric([], live_sessions)
        up.add_metric([], 1)
        analytics.add_metric([], accounts)
        writer = get_stream_manager().activity
        budget.add_metric([], writer.accounts_per_shard * len(writer.keys.shards))
        used.add_metric([], used_bytes)
        maxmemory.add_metric([], max_bytes)
        yield from (users, sessions, up, analytics, budget, used, maxmemory)


class BuildInfoCollector(Collector):
    """``streamlimit_build_info{version=...} 1``: which version each scraped replica runs."""

    def collect(self) -> Iterator[InfoMetricFamily]:
        yield InfoMetricFamily(
            "streamlimit_build", "The StreamLimit version this process runs.", {"version": settings.STREAMLIMIT_VERSION}
        )


_LIVE_STATE = CollectorRegistry(auto_describe=True)
_LIVE_STATE.register(LiveStateCollector())
_LIVE_STATE.register(BuildInfoCollector())


def render_metrics() -> bytes:
    """The text exposition of every metric: all workers' when in multiprocess mode."""
    HEARTBEAT_TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_LIVE_STATE)
