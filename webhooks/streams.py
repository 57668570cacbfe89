"""The event streams as the webhooks see them: the Redis client, the streams, one consumer group per endpoint."""

from __future__ import annotations

import contextlib

from django.conf import settings
from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from heartbeat.limiter.keys import KeyLayout
from heartbeat.services import redis_client


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
    """Create the endpoint's group on every stream, so its backlog counts from its creation."""
    redis, keys = client(), layout()
    created_ms = int(endpoint.created_at.timestamp() * 1000)
    for shard in keys.shards:
        create_group(redis, shard.events, endpoint.pk, created_ms)


def destroy_groups(endpoint_id: int) -> None:
    """Remove the endpoint's groups, leases and health (after the endpoint is deleted)."""
    redis, keys = client(), layout()
    for shard in keys.shards:
        # No stream (trimmed away or never written): no group either.
        with contextlib.suppress(ResponseError):
            redis.xgroup_destroy(shard.events, group_name(endpoint_id))
        redis.delete(shard.webhook_lease(endpoint_id))
    redis.delete(keys.webhook_health(endpoint_id))
