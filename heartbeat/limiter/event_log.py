"""Writing events to the activity shards' streams (``heartbeat.limiter.events`` is the wire form).

Two ways in, both ending in ``record_events.lua`` or an ``XADD`` with the same trim:

- heartbeats' events (``session.started``, ``session.refused``) are noted in the
  process's activity buffer and written by the activity flush, in the same round
  trip as the dashboard's index: no heartbeat waits for an event;
- staff actions' events (``account.*``) and ``policy.changed`` are written at
  once, next to the action's own write (``add_now``): they are rare.

``session.ended`` with reason ``expired`` is written by ``record_activity.lua``
itself, atomically with the removal of the expired session from the live index.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from redis.client import Pipeline
from redis.cluster import ClusterPipeline

from heartbeat.limiter.events import STREAM_FIELD, Event, EventType
from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.scripts import RECORD_EVENTS
from heartbeat.store.scripts import ScriptCall

MS_PER_HOUR = 3_600_000
# What one event costs a stream: about 355 bytes measured with MEMORY USAGE over 10,000
# session.started events (291 bytes of JSON each) on Redis 7.0; rounded up.
EVENT_BYTES = 400


class EventLog:
    """Where and for how long events are kept: one stream per activity shard, ``retention_ms`` long.

    ``enabled`` False (``EVENTS_ENABLED=false``): callers note and write nothing at all.
    """

    def __init__(self, keys: KeyLayout, *, enabled: bool, retention_ms: int, memory_budget_mb: int = 0) -> None:
        self.keys = keys
        self.enabled = enabled
        self.retention_ms = retention_ms
        # EVENTS_MEMORY_BUDGET_MB as entries per shard stream (0: no cap): see record_events.lua.
        self.entries_per_shard = (
            max(1, memory_budget_mb * 1024 * 1024 // EVENT_BYTES // len(keys.shards)) if memory_budget_mb > 0 else 0
        )

    def stream_of(self, user_id: str | None) -> str:
        """The stream of ``user_id``'s shard; events of no account (``policy.changed``) go to shard 0's."""
        shard = self.keys.shard_of(user_id) if user_id is not None else self.keys.shards[0]
        return shard.events

    def record_calls(self, events_by_user: dict[str, list[Event]]) -> list[ScriptCall]:
        """One ``record_events`` call per shard for events noted per account, each account's in order."""
        by_stream: dict[str, list[bytes]] = {}
        for user_id, events in events_by_user.items():
            if events:
                by_stream.setdefault(self.stream_of(user_id), []).extend(e.to_json() for e in events)
        return [self.record_call(stream, encoded) for stream, encoded in by_stream.items()]

    def record_call(self, stream: str, encoded: Iterable[bytes]) -> ScriptCall:
        """The ``record_events`` call that appends ``encoded`` events (JSON) to ``stream``."""
        return ScriptCall(RECORD_EVENTS, [stream], [self.retention_ms, self.entries_per_shard, *encoded])

    def add_now(
        self,
        pipe: Pipeline | ClusterPipeline,
        user_id: str | None,
        type_: EventType,
        data: dict[str, Any],
        *,
        earlier: Iterable[Event] = (),
    ) -> Event:
        """Queue one event's XADD (trimmed to the retention) on ``pipe``, beside the action's own write.

        ``earlier``: the account's events this process still holds for its next
        flush, written first so that the account's events stay in order. The
        API server's clock stamps the event (staff actions have no Redis clock
        of their own at hand).
        """
        now_ms = int(time.time() * 1000)
        event = Event(type_, now_ms, data)
        stream = self.stream_of(user_id)
        oldest = str(now_ms - self.retention_ms)
        for each in (*earlier, event):
            pipe.xadd(stream, {STREAM_FIELD: each.to_json()}, minid=oldest, approximate=True)
        pipe.pexpire(stream, self.retention_ms)
        return event
