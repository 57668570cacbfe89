"""The composition root: the process's StreamManager, read model, breaker and metrics wiring, built once from settings.

The one place that reads Django settings for the limiter; every setting that
shapes them is in ``_MANAGER_SETTINGS``, and changing one (tests do) builds
them anew on next use.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_redis import get_redis_connection
from redis import Redis
from redis.cluster import RedisCluster

from heartbeat.limiter import metrics
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.policy import Policy
from heartbeat.limiter.policy_store import PolicyStore
from heartbeat.limiter.reads import LiveStateReader
from heartbeat.limiter.risk import RiskStore
from heartbeat.limiter.tokens import TokenVerifier
from heartbeat.store.breaker import BreakerState, CircuitBreaker
from heartbeat.store.connection import cluster_client


def redis_client() -> Redis | RedisCluster:
    """This process's Redis client for the configured topology (django-redis' for one server or Sentinel)."""
    if settings.REDIS_TOPOLOGY.mode == "cluster":
        return cluster_client(settings.REDIS_TOPOLOGY)
    return get_redis_connection("default")


def _breaker_changed(state: BreakerState) -> None:
    metrics.REDIS_BREAKER_OPEN.set(0 if state is BreakerState.CLOSED else 1)
    metrics.REDIS_BREAKER_TRANSITIONS.labels(state.name.lower()).inc()


def build_breaker() -> CircuitBreaker | None:
    """The player path's circuit breaker from settings (None when REDIS_BREAKER_SECONDS is 0)."""
    if not settings.REDIS_BREAKER_SECONDS:
        return None
    return CircuitBreaker(
        failure_threshold=settings.REDIS_BREAKER_FAILURES,
        open_seconds=settings.REDIS_BREAKER_SECONDS,
        on_change=_breaker_changed,
    )


def _policy_changed(policy: Policy) -> None:
    metrics.POLICY_VERSION.set(policy.version)


@functools.cache
def get_stream_manager() -> StreamManager:
    """The StreamManager of this process, on the configured topology's client (``redis_client``)."""
    metrics.HEARTBEAT_TALLY.flush_seconds = settings.ACTIVITY_FLUSH_SECONDS
    manager = StreamManager(
        redis_client(),
        key_prefix=settings.REDIS_KEY_PREFIX,
        default_limit=settings.MAX_CONCURRENT_STREAMS,
        session_ttl_seconds=settings.SESSION_TTL_SECONDS,
        eviction_cooldown_seconds=settings.EVICTION_COOLDOWN_SECONDS,
        activity_flush_seconds=settings.ACTIVITY_FLUSH_SECONDS,
        plan_limits=settings.PLAN_LIMITS,
        limit_policy=settings.LIMIT_POLICY,
        breaker=build_breaker(),
        activity_shards=settings.ACTIVITY_SHARDS,
        wait_replicas=settings.REDIS_WAIT_REPLICAS,
        wait_timeout_ms=settings.REDIS_WAIT_TIMEOUT_MS,
        activity_memory_budget_mb=settings.ACTIVITY_MEMORY_BUDGET_MB,
        new_sessions_per_network_per_minute=settings.NEW_SESSIONS_PER_NETWORK_PER_MINUTE,
        events_enabled=settings.EVENTS_ENABLED,
        events_retention_hours=settings.EVENTS_RETENTION_HOURS,
        events_memory_budget_mb=settings.EVENTS_MEMORY_BUDGET_MB,
    )
    # The gauge of the version this process decides with (0 until its watcher loads an applied one).
    manager.policies.on_change = _policy_changed
    return manager


def get_policy_store() -> PolicyStore:
    """Where policy documents are applied and read (the commands and the dashboard's Policy page)."""
    return get_stream_manager().policy_store


def get_risk_store() -> RiskStore:
    """The latest sharing risk scores (score_sharing writes them; the dashboard's risk view reads them)."""
    manager = get_stream_manager()
    return RiskStore(manager.client, manager.keys)


@functools.cache
def get_live_state() -> LiveStateReader:
    """The read model of this process (dashboard, commands, /sessions, metrics), beside the manager's writes."""
    manager = get_stream_manager()
    return LiveStateReader(
        manager.client,
        manager.keys,
        default_limit=settings.MAX_CONCURRENT_STREAMS,
        session_ttl_seconds=settings.SESSION_TTL_SECONDS,
    )


@functools.cache
def get_verifier() -> TokenVerifier:
    """The playback-token verifier of this process, from the settings checked at start-up."""
    return TokenVerifier(
        settings.PLAYBACK_TOKEN_KEYS,
        settings.PLAYBACK_TOKEN_JWKS,
        issuer=settings.PLAYBACK_TOKEN_ISSUER,
        audience=settings.PLAYBACK_TOKEN_AUDIENCE,
        leeway_seconds=settings.PLAYBACK_TOKEN_LEEWAY_SECONDS,
    )


_MANAGER_SETTINGS = {
    "REDIS_KEY_PREFIX",
    "MAX_CONCURRENT_STREAMS",
    "SESSION_TTL_SECONDS",
    "EVICTION_COOLDOWN_SECONDS",
    "ACTIVITY_FLUSH_SECONDS",
    "PLAN_LIMITS",
    "LIMIT_POLICY",
    "REDIS_BREAKER_FAILURES",
    "REDIS_BREAKER_SECONDS",
    "CACHES",
    "REDIS_TOPOLOGY",
    "ACTIVITY_SHARDS",
    "REDIS_WAIT_REPLICAS",
    "REDIS_WAIT_TIMEOUT_MS",
    "ACTIVITY_MEMORY_BUDGET_MB",
    "NEW_SESSIONS_PER_NETWORK_PER_MINUTE",
    "EVENTS_ENABLED",
    "EVENTS_RETENTION_HOURS",
    "EVENTS_MEMORY_BUDGET_MB",
}


_TOKEN_SETTINGS = {
    "PLAYBACK_TOKEN_KEYS",
    "PLAYBACK_TOKEN_JWKS",
    "PLAYBACK_TOKEN_ISSUER",
    "PLAYBACK_TOKEN_AUDIENCE",
    "PLAYBACK_TOKEN_LEEWAY_SECONDS",
}


@receiver(setting_changed)
def _rebuild_on_setting_change(setting: str, **_kwargs: object) -> None:
    # Tests override these settings; the next request must see them.
    if setting in _MANAGER_SETTINGS:
        get_stream_manager.cache_clear()
        get_live_state.cache_clear()
    if setting in _TOKEN_SETTINGS:
        get_verifier.cache_clear()
