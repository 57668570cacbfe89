"""Each endpoint's health: last success and failures (workers write them), backlog and lag (from the streams)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from heartbeat.limiter.keys import KeyLayout
from webhooks.streams import group_name


@dataclass(frozen=True)
class EndpointHealth:
    """What the dashboard and the metrics say of one endpoint."""

    endpoint_id: int
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str
    failures_in_a_row: int
    failures_total: int
    backlog: int
    oldest_undelivered_seconds: float  # 0 when nothing waits


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _when(ms: object) -> datetime | None:
    return datetime.fromtimestamp(int(_text(ms)) / 1000, UTC) if ms else None


def _entry_ms(entry_id: object) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def record_round(
    client: Redis | RedisCluster, layout: KeyLayout, endpoint_id: int, delivered: int, failed: int, error: str
) -> None:
    """After a worker's round: a success resets the failures in a row; failures count and keep the last error."""
    if not delivered and not failed:
        return
    now = int(time.time() * 1000)
    key = layout.webhook_health(endpoint_id)
    pipe = client.pipeline(transaction=False)
    if delivered:
        pipe.hset(key, mapping={"last_success_ms": now, "failures_in_a_row": 0})
    if failed:
        pipe.hset(key, mapping={"last_failure_ms": now, "last_error": error[:300]})
        pipe.hincrby(key, "failures_in_a_row", failed)
        pipe.hincrby(key, "failures_total", failed)
    pipe.execute()


def _stream_backlog(client: Redis | RedisCluster, stream: str, group: str) -> tuple[int, int | None]:
    """(events waiting, epoch ms of the oldest) of one stream for one group."""
    try:
        groups = client.xinfo_groups(stream)
    except ResponseError:
        return 0, None  # no stream yet
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None:
        return 0, None
    pending = int(info.get("pending") or 0)
    oldest: int | None = None
    if pending:
        summary = client.xpending(stream, group)
        oldest = _entry_ms(summary["min"])
    lag = info.get("lag")
    last = _text(info.get("last-delivered-id") or "0-0")
    unread_first = client.xrange(stream, min=f"({last}", count=1)
    if lag is None:  # Redis cannot tell (entries deleted in the middle): count the unread ones
        lag = len(client.xrange(stream, min=f"({last}", count=100_000))
    if unread_first:
        first_ms = _entry_ms(unread_first[0][0])
        oldest = first_ms if oldest is None else min(oldest, first_ms)
    return pending + int(lag), oldest


def read_health(client: Redis | RedisCluster, layout: KeyLayout, endpoint_id: int) -> EndpointHealth:
    """The health of one endpoint over every stream."""
    group = group_name(endpoint_id)
    backlog, oldest = 0, None
    for shard in layout.shards:
        waiting, first = _stream_backlog(client, shard.events, group)
        backlog += waiting
        if first is not None:
            oldest = first if oldest is None else min(oldest, first)
    stored = {_text(k): v for k, v in client.hgetall(layout.webhook_health(endpoint_id)).items()}
    age = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
    return EndpointHealth(
        endpoint_id=endpoint_id,
        last_success=_when(stored.get("last_success_ms")),
        last_failure=_when(stored.get("last_failure_ms")),
        last_error=_text(stored.get("last_error", b"")),
        failures_in_a_row=int(_text(stored.get("failures_in_a_row", b"0"))),
        failures_total=int(_text(stored.get("failures_total", b"0"))),
        backlog=backlog,
        oldest_undelivered_seconds=age,
    )
