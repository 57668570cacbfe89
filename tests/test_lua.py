"""The script connections of a process (heartbeat/lua.py): bounded, reused, gevent-safe."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from redis import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from heartbeat.lua import ScriptConnections
from heartbeat.stream_manager import Outcome
from tests.conftest import ROOT


def test_racing_threads_share_a_bounded_set_of_connections(make_manager) -> None:
    manager = make_manager(default_limit=5)
    manager.scripts.connections = ScriptConnections(manager.client.connection_pool, size=4)
    barrier = threading.Barrier(50)
    outcomes: list[Outcome] = []

    def player(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            outcomes.append(manager.admit("family", "movie", f"device-{i}").outcome)

    threads = [threading.Thread(target=player, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 250 and outcomes.count(Outcome.ALLOWED) == 25  # 5 sessions x 5 beats
    assert 1 <= manager.scripts.connections.opened <= 4
    assert manager.scripts.connections.idle == manager.scripts.connections.opened


def test_a_caller_that_finds_every_connection_busy_fails_after_the_socket_timeout(redis_client: Redis) -> None:
    pool = ConnectionPool(**{**redis_client.connection_pool.connection_kwargs, "socket_timeout": 0.2})
    connections = ScriptConnections(pool, size=1)
    held = connections.take()
    with pytest.raises(RedisConnectionError, match="stayed busy"):
        connections.take()
    connections.give_back(held)
    assert connections.take() is held  # the idle one is reused, not a new one
    held.disconnect()


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import django, gevent, os, sys
django.setup()
from heartbeat.services import get_stream_manager
manager = get_stream_manager()
results = []
def player(i):
    for beat in range(5):
        results.append(manager.admit(f"gevent-user-{i % 20}", "movie", f"s{i}").outcome.value)
gevent.joinall([gevent.spawn(player, i) for i in range(200)], timeout=60)
print(len(results), manager.scripts.connections.opened, manager.scripts.connections.size)
"""


def test_under_gevent_two_hundred_greenlets_share_the_bounded_connections(key_prefix: str) -> None:
    # Under gevent threading.local is per greenlet: a connection per thread
    # would have been a new connection per request.
    result = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "streamlimit.settings", "REDIS_KEY_PREFIX": key_prefix},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    heartbeats, opened, size = map(int, result.stdout.split()[-3:])
    assert heartbeats == 1000
    assert 1 <= opened <= size == 64
