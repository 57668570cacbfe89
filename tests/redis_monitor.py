"""What Redis ran while an action ran, through MONITOR: for tests that count commands.

On a Redis of the test's own (``own_redis``): on the shared one MONITOR sees
every client's commands.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from redis import ConnectionPool, Redis

from heartbeat.limiter.activity import FLUSHER


def commands_seen(client: Redis, action: Callable[[], object]) -> list[tuple[str, str]]:
    """Every command Redis ran while ``action`` ran (client or Lua), in order: (source, command line).

    Pending activity is flushed first, so that nothing an earlier test noted is
    written meanwhile; a marker command (ECHO) ends the capture.
    """
    FLUSHER.flush_all()
    marker = f"end-of-action-{uuid.uuid4()}"
    # Clients of their own, connected beforehand: MONITOR holds its connection for good.
    watcher, signaller = (
        Redis(connection_pool=ConnectionPool(**client.connection_pool.connection_kwargs)) for _ in "ab"
    )
    signaller.ping()
    seen = []
    with watcher.monitor() as monitor:
        action()
        signaller.echo(marker)
        for command in monitor.listen():
            if marker in command["command"]:
                break
            seen.append((command["client_type"], command["command"]))
    watcher.close()
    signaller.close()
    return seen
