"""Prometheus metrics of the heartbeat service.

Under gunicorn the metrics live in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by gunicorn.conf.py), so a scrape sees the
sum over every worker. Live users and sessions are read from Redis at scrape
time, so they are the same whichever worker answers.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Iterator, Mapping

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


class HeartbeatTally:
    """This process's heartbeat outcomes, limit sources and durations, added to the metrics in batches.

    In multiprocess mode every prometheus-client increment takes a lock, checks
    the process id and writes to a memory-mapped file; the four of a heartbeat
    (outcome, limit source, the duration's bucket and sum) were about 5% of
    its CPU. Here a heartbeat costs a few list and dict updates under one
    lock; ``flush`` adds them to the metrics, from the activity flusher
    thread (every ``ACTIVITY_FLUSH_SECONDS``, and at exit) and before this
    process renders /metrics. A scrape may so miss the last second of the
    other workers' heartbeats, never lose them.
    """

    def __init__(
        self,
        outcomes: Mapping[str, Counter],
        sources: Mapping[str, Counter],
        durations: Histogram,
        *,
        flush_in_background: bool = True,
    ) -> None:
        self._outcome_counters = outcomes
        self._source_counters = sources
        self._durations = durations
        # The histogram's upper bounds, +Inf last, as prometheus-client keeps them.
        self._bounds: list[float] = list(durations._upper_bounds)
        self._lock = threading.Lock()
        self._reset()
        # Without the flusher thread (tests), only ``flush`` adds the counts up.
        self._registered = not flush_in_background
        self._flush_in_background = flush_in_background
        os.register_at_fork(after_in_child=self._start_afresh)

    def _start_afresh(self) -> None:
        # A forked child counts its own heartbeats only, and has no flusher thread yet.
        self._lock = threading.Lock()
        self._reset()
        self._registered = not self._flush_in_background

    def _reset(self) -> None:
        self._outcomes: dict[str, int] = dict.fromkeys(self._outcome_counters, 0)
        self._sources: dict[str, int] = dict.fromkeys(self._source_counters, 0)
        self._buckets = [0] * len(self._bounds)
        self._seconds = 0.0

    def record(self, outcome: str | None, limit_source: str | None, seconds: float) -> None:
        """Count one heartbeat answered in ``seconds`` (``outcome``/``limit_source`` None: counted elsewhere)."""
        # The first bucket whose bound is at least the duration, as Histogram.observe picks it.
        bucket = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            if outcome is not None:
                self._outcomes[outcome] += 1
            if limit_source is not None:
                self._sources[limit_source] += 1
            self._buckets[bucket] += 1
            self._seconds += seconds
        if not self._registered:
            from heartbeat.limiter.activity import FLUSHER

            self._registered = True
            FLUSHER.register(self, settings.ACTIVITY_FLUSH_SECONDS)

    def flush(self) -> None:
        """Add what was counted since the last flush to the Prometheus metrics."""
        with self._lock:
            outcomes, sources, buckets, seconds = self._outcomes, self._sources, self._buckets, self._seconds
            self._reset()
        for outcome, count in outcomes.items():
            if count:
                self._outcome_counters[outcome].inc(count)
        for source, count in sources.items():
            if count:
                self._source_counters[source].inc(count)
        # prometheus-client has no batch observe; its buckets and sum take the sums directly.
        for index, count in enumerate(buckets):
            if count:
                self._durations._buckets[index].inc(count)
        if any(buckets):
            self._durations._sum.inc(seconds)

    def flush_activity(self) -> None:
        """What the activity flusher calls (``heartbeat.limiter.activity.Flushable``)."""
        self.flush()


HEARTBEAT_TALLY = HeartbeatTally(HEARTBEATS_BY_OUTCOME, LIMIT_SOURCES_BY_NAME, HEARTBEAT_SECONDS)


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
    HEARTBEAT_TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_LIVE_STATE)
