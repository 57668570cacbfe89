"""Small helpers over redis-py values: Redis' clock, text of replies, batches of keys."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster


def redis_now_ms(client: Redis | RedisCluster) -> int:
    """Redis' clock, in ms: the one the scripts use, so no server's clock matters."""
    sec, usec = client.time()
    return sec * 1000 + usec // 1000


def ms_to_datetime(ms: float) -> datetime:
    """A Redis time in ms as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def as_text(value: bytes | str) -> str:
    """A reply value as text (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else value


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
