"""The shedding gevent worker's server (streamlimit/gevent_worker.py), driven in one gevent loop.

Two ``NewestFirstServer`` on one listening socket stand for two gunicorn
workers: which of them accepts a connection is what spreads a proxy's or a
load test's connections over the workers. The attack side (batches, newest
first, shedding) is tested on a real gunicorn in tests/test_idle_bodies.py.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest

from streamlimit.gevent_worker import NewestFirstServer
from streamlimit.idle_connections import ConnectionTracker, TrackedSocket


@pytest.fixture
def listener() -> Iterator[gevent.socket.socket]:
    sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock
    sock.close()


def serve_two_workers(listener: gevent.socket.socket, cap: int, connections: int) -> Counter[str]:
    """Open ``connections`` at once to two servers sharing ``listener``; how many each accepted.

    Accepted is served or shed (past ``cap`` the oldest idle are shed before they start).
    """
    served: Counter[str] = Counter()
    servers: dict[str, NewestFirstServer] = {}
    for name in ("one", "two"):

        def handle(client: TrackedSocket, _address: object, name: str = name) -> None:
            served[name] += 1
            client.idle = False  # kept open and busy, as a keep-alive connection in the application

        servers[name] = NewestFirstServer(listener, handle, tracker=ConnectionTracker(cap))

    def accepted() -> Counter[str]:
        return Counter({name: served[name] + server.tracker.shed_total for name, server in servers.items()})

    # Queued in the kernel before either server looks, as when a proxy opens its pool.
    clients = [socket.create_connection(listener.getsockname()) for _ in range(connections)]
    try:
        for server in servers.values():
            server.start()
        deadline = gevent.get_hub().loop.now() + 5
        while sum(accepted().values()) < connections and gevent.get_hub().loop.now() < deadline:
            gevent.sleep(0.01)
    finally:
        for server in servers.values():
            server.stop(timeout=0)
        for client in clients:
            client.close()
    return accepted()


def test_connections_opened_at_once_are_shared_by_the_workers(listener: gevent.socket.socket) -> None:
    taken = serve_two_workers(listener, cap=1000, connections=16)
    assert sum(taken.values()) == 16
    assert taken["one"] == taken["two"] == 8, taken


def test_under_pressure_a_worker_accepts_what_is_queued_at_once(listener: gevent.socket.socket) -> None:
    # With a cap of 8, two connections are a quarter of it: from then on the server that looks
    # takes everything queued in one batch (newest first, shedding the oldest idle past the cap),
    # as under an idle-body attack.
    taken = serve_two_workers(listener, cap=8, connections=16)
    assert sum(taken.values()) == 16
    assert max(taken.values()) >= 12, taken
