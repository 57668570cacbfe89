"""Prometheus metrics of the heartbeat service: their definitions and the heartbeat tally.

Under gunicorn the metrics live in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by gunicorn.conf.py), so a scrape sees the
sum over every worker. The exposition (with the live counts read from Redis
at scrape time) is ``heartbeat.api.scrape``.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from heartbeat.adapters.prometheus import add_observations, histogram_bounds
from heartbeat.limiter.activity import FLUSHER
from heartbeat.limiter.outcomes import LIMIT_SOURCES as LIMIT_SOURCES_NAMES
from heartbeat.limiter.outcomes import METRIC_LABELS

HEARTBEATS = Counter(
    "streamlimit_heartbeats",
    "Heartbeats answered, by outcome (" + ", ".join(METRIC_LABELS) + ").",
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
    "Heartbeats answered, by where their limit came from (" + ", ".join(LIMIT_SOURCES_NAMES) + ").",
    ["source"],
)
POLICY_REFUSALS = Counter(
    "streamlimit_policy_refusals",
    "New sessions refused for a limit of the policy, by rule (maxStreams, devices.<class>, pools.<pool>, "
    "networks: names from the policy document, never from a request).",
    ["rule"],
)
TAKEOVERS = Counter(
    "streamlimit_takeovers", "New sessions that took the place of their device's own (sameDeviceTakeover)."
)
HANDOFFS = Counter("streamlimit_handoffs", "Sessions handed off to another device in one step (replaces).")
NETWORK_FLAGS = Counter(
    "streamlimit_network_flags", "Sessions admitted from one network more than maxNetworks (networkRule flag)."
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
# Per worker process (liveall: one line per live worker, by pid): the policy version each decides with.
POLICY_VERSION = Gauge(
    "streamlimit_policy_version",
    "The policy document version each worker process decides with (0: none applied, the settings decide).",
    multiprocess_mode="liveall",
)
REDIS_BREAKER_TRANSITIONS = Counter(
    "streamlimit_redis_breaker_transitions",
    "Circuit breaker state changes, by the state entered (open, half_open, closed).",
    ["state"],
)

# Looked up once: ``labels()`` takes a lock and a dict lookup on every call.
# Every outcome is exported from the start, at 0.
HEARTBEATS_BY_OUTCOME = {outcome: HEARTBEATS.labels(outcome) for outcome in METRIC_LABELS}
LIMIT_SOURCES_BY_NAME = {source: LIMIT_SOURCES.labels(source) for source in LIMIT_SOURCES_NAMES}


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
        self._bounds: list[float] = histogram_bounds(durations)
        self._lock = threading.Lock()
        # How often the flusher thread adds the counts up (ACTIVITY_FLUSH_SECONDS, set by heartbeat.services).
        self.flush_seconds = 1.0
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
            self._registered = True
            FLUSHER.register(self, self.flush_seconds)

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
        add_observations(self._durations, buckets, seconds)

    def flush_activity(self) -> None:
        """What the activity flusher calls (``heartbeat.limiter.activity.Flushable``)."""
        self.flush()


HEARTBEAT_TALLY = HeartbeatTally(HEARTBEATS_BY_OUTCOME, LIMIT_SOURCES_BY_NAME, HEARTBEAT_SECONDS)
