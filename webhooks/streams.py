"""The event streams as the webhooks see them: the Redis client, the streams, one consumer group per endpoint."""

from __future__ import annotations

import contextlib

import structlog
from django.conf import settings
from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from heartbeat.limiter.keys import KeyLayout
from heartbeat.services import redis_client

logger = structlog.get_logger(__name__)


def layout() -> KeyLayout:
    """The key layout of the configured prefix and shards."""
    return KeyLayout(settings.REDIS_KEY_PREFIX, settings.ACTIVITY_SHARDS)


def client() -> Redis | RedisCluster:
    """The process's Redis client (the service's own)."""
    return redis_client()


def group_name(endpoint_id: int) -> str:
    """The consumer group of one endpoint: every stream has one per endpoint, so each moves at its own pace."""
    return f"webhook-{endpoint_id}"


def start_id(created_ms: int) -> str:
    """Where an endpoint's groups start: the events from its creation on."""
    return f"{created_ms}-0"


def create_group(redis: Redis | RedisCluster, stream: str, endpoint_id: int, created_ms: int) -> None:
    """Create the endpoint's group on ``stream`` (and the stream) unless it exists."""
    try:
        redis.xgroup_create(stream, group_name(endpoint_id), id=start_id(created_ms), mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def create_groups(endpoint) -> None:
    """Create the endpoint's group on every stream, so its backlog counts from its creation.

    Best effort: with Redis away the endpoint is still saved, and the workers
    make each group, from the same start, when they first take its stream.
    """
    redis, keys = client(), layout()
    created_ms = int(endpoint.created_at.timestamp() * 1000)
    try:
        for shard in keys.shards:
            create_group(redis, shard.events, endpoint.pk, created_ms)
    except RedisError as exc:
        logger.warning("webhook_groups_not_created", endpoint=endpoint.pk, error=str(exc))


def destroy_groups(endpoint_id: int) -> None:
    """Remove the endpoint's groups, leases, retry states and health (after it is deleted); best effort, logged."""
    try:
        _destroy_groups(endpoint_id)
    except RedisError as exc:
        logger.warning("webhook_groups_not_removed", endpoint=endpoint_id, error=str(exc))


def _destroy_groups(endpoint_id: int) -> None:
    redis, keys = client(), layout()
    for shard in keys.shards:
        # No stream (trimmed away or never written): no group either.
        with contextlib.suppress(ResponseError):
            redis.xgroup_destroy(shard.events, group_name(endpoint_id))
        redis.delete(shard.webhook_lease(endpoint_id), shard.webhook_retries(endpoint_id))
    redis.delete(keys.webhook_health(endpoint_id))
