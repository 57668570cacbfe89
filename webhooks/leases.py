"""Which worker delivers which stream to which endpoint: one expiring lease per (endpoint, stream).

One holder per (endpoint, stream) keeps an account's events in order for that
endpoint even with several workers; a crashed holder's lease expires and
another worker takes the stream over, claiming its pending entries
(``XAUTOCLAIM``). Workers register in a sorted set, so each takes a fair share.
"""

from __future__ import annotations

import math
import random
import time

from redis import Redis, WatchError
from redis.cluster import RedisCluster

from heartbeat.limiter.keys import KeyLayout


class Leases:
    """The leases of one worker process."""

    def __init__(self, client: Redis | RedisCluster, layout: KeyLayout, name: str, lease_seconds: float) -> None:
        self.client = client
        self.layout = layout
        self.name = name
        self.lease_ms = int(lease_seconds * 1000)

    def register(self) -> int:
        """Say this worker is alive; how many workers are (itself included)."""
        now = int(time.time() * 1000)
        key = self.layout.webhook_workers
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(key, {self.name: now})
        # A worker not heard for a lease is gone (it renews every half second): its share goes to the others.
        pipe.zremrangebyscore(key, "-inf", now - self.lease_ms)
        pipe.zcard(key)
        pipe.pexpire(key, 4 * self.lease_ms)
        return max(1, int(pipe.execute()[2]))

    def leave(self) -> None:
        """Say this worker is gone (a clean stop)."""
        self.client.zrem(self.layout.webhook_workers, self.name)

    def share(self, workers: int) -> int:
        """How many streams of one endpoint this worker should hold."""
        return math.ceil(self.layout.activity_shards / workers)

    def acquire(self, endpoint_id: int, shards: list[int], wanted: int) -> list[int]:
        """Take up to ``wanted`` of the free leases among ``shards`` (in random order); the ones taken."""
        keys = [self.layout.shards[number].webhook_lease(endpoint_id) for number in shards]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        free = [number for number, held in zip(shards, pipe.execute(), strict=True) if not held]
        # Random: workers starting together do not all race for the same streams.
        candidates = random.sample(free, min(wanted, len(free)))
        for number in candidates:
            pipe.set(self.layout.shards[number].webhook_lease(endpoint_id), self.name, nx=True, px=self.lease_ms)
        return [number for number, taken in zip(candidates, pipe.execute(), strict=True) if taken]

    def renew(self, endpoint_id: int, number: int) -> bool:
        """Extend a lease if this worker still holds it (compare and extend, in a transaction)."""
        return self._if_mine(endpoint_id, number, lambda pipe, key: pipe.pexpire(key, self.lease_ms))

    def release(self, endpoint_id: int, number: int) -> None:
        """Give a lease up if this worker holds it."""
        self._if_mine(endpoint_id, number, lambda pipe, key: pipe.delete(key))

    def _if_mine(self, endpoint_id: int, number: int, change) -> bool:
        key = self.layout.shards[number].webhook_lease(endpoint_id)
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                holder = pipe.get(key)
                if holder is None or (holder.decode() if isinstance(holder, bytes) else holder) != self.name:
                    return False
                pipe.multi()
                change(pipe, key)
                pipe.execute()
                return True
            except WatchError:
                return False
