"""The failed attempts of pending events, kept in Redis so every worker continues the same schedule.

Where: one small HASH per (stream, endpoint), ``webhook-retries:<endpoint id>``
under the stream's hash tag, field = stream entry id, value = JSON
``{"attempts", "nextAtMs", "lastError"}``. Only entries that failed at least once
are in it; an entry leaves it when it is acknowledged (delivered, dead, or no
longer there), in the same pipeline as the ``XACK``.

Why not the pending-entries list's delivery count (``XPENDING``): Redis raises
it on every read of a consumer's history (``XREADGROUP ... 0``, which a runner
does every round while an entry waits) and on every ``XAUTOCLAIM``, so it counts
reads, not failed attempts; and it holds neither the time the next attempt is
due nor the last error a dead letter must carry. The hash holds exactly those,
sits in the stream's slot (one round trip with the ``XACK``, one Cluster node),
and is read once, when a worker takes the stream over: between take-overs the
lease holder is its only writer, so it keeps a copy in memory and writes through.

Times are wall-clock epoch milliseconds (several hosts read them); a skew
between hosts' clocks shifts one retry by that skew, no more.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from redis import Redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster

from heartbeat.limiter.keys import KeyLayout


@dataclass
class RetryState:
    """The failed attempts of one pending entry for one endpoint."""

    attempts: int = 0
    next_at_ms: int = 0  # epoch ms: not tried again before
    last_error: str = ""

    def to_json(self) -> bytes:
        """The stored form."""
        return orjson.dumps({"attempts": self.attempts, "nextAtMs": self.next_at_ms, "lastError": self.last_error})

    @classmethod
    def from_json(cls, raw: bytes | str) -> RetryState | None:
        """The stored form read back; None when it does not parse (then the count starts again)."""
        try:
            value = orjson.loads(raw)
            return cls(int(value["attempts"]), int(value["nextAtMs"]), str(value.get("lastError", "")))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def _entry_ms(entry_id: str) -> int:
    try:
        return int(entry_id.split("-", 1)[0])
    except ValueError:
        return 0


class RetryBook:
    """One endpoint's retry states in Redis, stream by stream."""

    def __init__(self, client: Redis | RedisCluster, layout: KeyLayout, endpoint_id: int, keep_seconds: float) -> None:
        self.client = client
        self.layout = layout
        self.endpoint_id = endpoint_id
        # Every state is of an event younger than WEBHOOK_MAX_AGE_HOURS (older ones go dead);
        # the key lives a little longer than that after its last write, so nothing is left behind.
        self.keep_ms = int(keep_seconds * 1000)

    def key(self, number: int) -> str:
        """The hash of stream ``number``."""
        return self.layout.shards[number].webhook_retries(self.endpoint_id)

    def load(self, number: int, now_ms: int) -> dict[str, RetryState]:
        """Stream ``number``'s states (on taking it over); drops the ones of events too old to be pending."""
        stored = self.client.hgetall(self.key(number))
        states: dict[str, RetryState] = {}
        stale: list[str] = []
        for field, raw in stored.items():
            entry_id = field.decode() if isinstance(field, bytes) else str(field)
            state = RetryState.from_json(raw)
            if state is None or now_ms - _entry_ms(entry_id) > self.keep_ms:
                stale.append(entry_id)  # left by a worker killed between XACK and HDEL, or garbled
            else:
                states[entry_id] = state
        if stale:
            self.client.hdel(self.key(number), *stale)
        return states

    def save(self, pipe: Pipeline | ClusterPipeline, number: int, states: dict[str, RetryState]) -> None:
        """Queue writing ``states`` (entry id -> state) of stream ``number`` on ``pipe``."""
        if states:
            key = self.key(number)
            pipe.hset(key, mapping={entry_id: state.to_json() for entry_id, state in states.items()})
            pipe.pexpire(key, self.keep_ms)

    def forget(self, pipe: Pipeline | ClusterPipeline, number: int, entry_ids: list[str]) -> None:
        """Queue dropping the states of acknowledged entries of stream ``number`` on ``pipe``."""
        if entry_ids:
            pipe.hdel(self.key(number), *entry_ids)
