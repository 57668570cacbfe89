"""Which of a worker's connections wait on their client, and shedding the oldest of them.

A gevent worker serves each connection in a greenlet from a pool of
``GUNICORN_WORKER_CONNECTIONS``; once the pool is full it stops accepting, and
probes and players queue behind clients that send nothing (issue 19: 3,100
sockets that sent headers and no body took an instance down). So a worker
tracks its connections in the order it accepted them, and whether each is
idle, i.e. blocked reading from its client (request headers, a body, the
next request of a keep-alive connection), as opposed to busy in the
application (waiting on Redis, writing an answer). Past the cap, the oldest
idle connections are shut down, so the newest (a probe, a player's next
heartbeat) get their slot. Nothing here knows gunicorn: see
``streamlimit/gevent_worker.py`` for where it plugs in.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import OrderedDict
from typing import Any


class TrackedSocket:
    """A client socket that tells its ``ConnectionTracker`` while it waits for the client to send.

    Every other attribute is the socket's own; gunicorn reads the request
    with ``recv`` only, and writes each answer with ``sendall``, bound here
    once rather than looked up through ``__getattr__`` per answer.
    """

    __slots__ = ("_sock", "_tracker", "idle", "sendall", "shed")

    def __init__(self, sock: socket.socket, tracker: ConnectionTracker) -> None:
        self._sock = sock
        self._tracker = tracker
        self.sendall = sock.sendall
        self.idle = True  # accepted, its request line not read yet
        self.shed = False

    def recv(self, *args: Any) -> bytes:
        """The socket's ``recv``, counted as idle for as long as it blocks."""
        self.idle = True
        try:
            return self._sock.recv(*args)
        finally:
            self.idle = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ConnectionTracker:
    """A worker's open connections, oldest first, and the shedding of idle ones past ``cap``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: OrderedDict[int, TrackedSocket] = OrderedDict()
        self.shed_total = 0

    def __len__(self) -> int:
        return len(self._open)

    def track(self, sock: socket.socket) -> TrackedSocket:
        """Wrap a newly accepted socket, and shed the oldest idle connections if there are now too many."""
        tracked = TrackedSocket(sock, self)
        self._open[id(tracked)] = tracked
        if len(self._open) > self.cap:
            self.shed_oldest_idle(len(self._open) - self.cap)
        return tracked

    def forget(self, tracked: TrackedSocket) -> None:
        """The connection closed (or was shed): it no longer counts."""
        self._open.pop(id(tracked), None)

    def shed_oldest_idle(self, count: int) -> int:
        """Shut down up to ``count`` idle connections, oldest first; how many were shut down.

        A shutdown wakes the greenlet blocked in ``recv`` with the end of the
        stream, so gunicorn closes the connection its usual way (no error, no
        answer: the client sent no complete request, or sent it too slowly).
        """
        shed = []
        newest = next(reversed(self._open), None)
        for key, tracked in self._open.items():
            if len(shed) >= count or key == newest:
                break  # the connection just accepted keeps its chance
            if tracked.idle:
                shed.append((key, tracked))
        for key, tracked in shed:
            del self._open[key]
            tracked.shed = True
            with contextlib.suppress(OSError):  # the client left first
                tracked.shutdown(socket.SHUT_RDWR)
        self.shed_total += len(shed)
        return len(shed)


class CountReport:
    """At most one log line per ``every`` seconds for a running count (shed connections, body time-outs).

    Under an attack each event would otherwise be a log line of its own.
    """

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last_at = 0.0
        self._last_total = 0

    def due(self, total: int) -> int:
        """How many since the last report, when a report is due; else 0."""
        now = time.monotonic()
        if total == self._last_total or now - self._last_at < self.every:
            return 0
        new = total - self._last_total
        self._last_at, self._last_total = now, total
        return new
