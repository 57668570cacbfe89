"""The script connections of a process (heartbeat/store/scripts.py): bounded, reused, gevent-safe."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from redis import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from heartbeat.limiter.outcomes import Outcome
from heartbeat.store.scripts import ScriptConnections
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


def test_a_waiting_caller_gets_the_connection_given_back(redis_client: Redis) -> None:
    pool = ConnectionPool(**{**redis_client.connection_pool.connection_kwargs, "socket_timeout": 10})
    connections = ScriptConnections(pool, size=1)
    held = connections.take()
    got = []
    waiter = threading.Thread(target=lambda: got.append(connections.take()))
    waiter.start()
    deadline = time.monotonic() + 10
    while connections.waiting == 0:
        assert time.monotonic() < deadline, "the second caller never waited"
        time.sleep(0.01)
    connections.give_back(held)
    waiter.join(timeout=10)
    assert got == [held] and connections.opened == 1
    held.disconnect()


def test_a_forked_child_opens_connections_of_its_own(redis_client: Redis) -> None:
    connections = ScriptConnections(redis_client.connection_pool, size=2)
    parents = connections.take()
    parents.send_command("PING")
    assert parents.read_response() in (b"PONG", "PONG")
    connections.give_back(parents)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: must not reuse its parent's socket, nor keep one given back
        try:
            fresh = connections.take()
            fresh.send_command("PING")
            answered = fresh.read_response() in (b"PONG", "PONG")
            connections.give_back(parents)
            ok = answered and fresh is not parents and connections.opened == 1 and connections.idle == 0
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read_end, 1) == b"1"
    assert connections.take() is parents and connections.opened == 1  # the parent's own are untouched
    parents.disconnect()


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
