"""The read model beside a test's own StreamManager (same client, keys and settings)."""

from __future__ import annotations

from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.reads import LiveStateReader


def reader_of(manager: StreamManager) -> LiveStateReader:
    """What the dashboard would read of ``manager``'s keys."""
    return LiveStateReader(
        manager.client,
        manager.keys,
        default_limit=manager.default_limit,
        session_ttl_seconds=manager.session_ttl_seconds,
    )
