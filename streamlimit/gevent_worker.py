"""gunicorn's gevent worker, shedding its oldest idle connections past its cap, serving the newest first.

The one module that touches gunicorn's and gevent's internals
(``tests/test_idle_bodies.py`` fails if they change under it):
``GeventWorker.run`` sizes each listener's greenlet pool from
``self.worker_connections``, builds its server with the module's
``StreamServer`` and serves every accepted connection through
``handle(listener, client, addr)``; gevent's ``StreamServer._do_read`` accepts
up to ``max_accept`` connections per wake-up and hands each to ``do_handle``.
The pool is made a little larger than ``GUNICORN_WORKER_CONNECTIONS`` so the
worker keeps accepting at the cap, and each accepted socket is wrapped so the
worker knows which connections wait on their client
(``streamlimit/idle_connections.py``); past the cap, the oldest of those are
shut down.

Under an attack the connections arrive faster than a worker can read their
requests, and the queue forms somewhere. gunicorn's server accepts one
connection per turn of the event loop, so it formed in the kernel's listen
queue (up to 2,048 deep, in order): a probe or a heartbeat waited there behind
the attacker's connections for about a second (issue 19, measured with
``ss``). ``NewestFirstServer`` accepts what is queued at once, so the queue
forms here instead, and starts the newest connections first: a probe that
just connected is served within a turn, and the attacker's older connections
wait, until shed past the cap without their request ever being read.

It does so only under pressure (a quarter of the cap open): accepting 64 at a
time otherwise gave one worker every connection that a proxy or a load test
opens at once (16 of 16, two workers idle), which is why gunicorn accepts one
at a time when it runs several workers.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any

import gevent
from gevent.server import StreamServer
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from streamlimit.idle_connections import ConnectionTracker, CountReport, TrackedSocket


def pool_headroom(cap: int) -> int:
    """Greenlets past the cap: room to accept while the oldest idle connections are shed."""
    return max(10, cap // 10)


class NewestFirstServer(StreamServer):
    """gevent's ``StreamServer`` accepting up to ``accept_batch`` at once and starting the newest connections first.

    Accepted connections are tracked at once (``ConnectionTracker``: past the
    cap the oldest idle ones are shut down, those not started yet included)
    and wait in a stack; a starter greenlet starts ``starts_per_turn`` of the
    newest, then lets the event loop turn (sockets polled, new connections
    accepted) before the next ones.
    """

    accept_batch = 64
    starts_per_turn = 8
    # Open connections (a share of the cap) from which a worker accepts in batches.
    pressure_share = 0.25

    def __init__(self, *args: Any, tracker: ConnectionTracker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = tracker
        self._accepted: list[tuple[Any, ...]] | None = None
        self._waiting: deque[tuple[TrackedSocket, Any]] = deque()
        self._starter: Any = None

    def under_pressure(self) -> bool:
        """Whether to accept in batches: a quarter of the cap open (accepted ones not started yet included)."""
        return len(self.tracker) >= self.tracker.cap * self.pressure_share

    def _do_read(self) -> None:
        # gevent's accept loop (it reads max_accept on each wake-up), with each accepted
        # connection collected instead of spawned. One per wake-up otherwise: the kernel then
        # hands the next connection to whichever worker wakes next, as gunicorn intends.
        self.max_accept = self.accept_batch if self.under_pressure() else 1
        self._accepted = []
        try:
            super()._do_read()
        finally:
            accepted, self._accepted = self._accepted, None
        for client, address in accepted:
            self._waiting.append((self.tracker.track(client), address))
        if self._waiting and self._starter is None:
            self._starter = gevent.spawn(self._start_newest)

    def do_handle(self, *args: Any) -> None:
        """Collect a connection accepted in ``_do_read``; it is started later, newest first."""
        if self._accepted is None:
            super().do_handle(*args)
        else:
            self._accepted.append(args)

    def _start_newest(self) -> None:
        try:
            while self._waiting:
                # Shed ones wait at the old end (shedding goes oldest first): let their sockets go.
                while self._waiting and self._waiting[0][0].shed:
                    self._close(self._waiting.popleft()[0])
                for _ in range(min(self.starts_per_turn, len(self._waiting))):
                    tracked, address = self._waiting.pop()
                    if tracked.shed:
                        self._close(tracked)  # shed before it started: its request is never read
                    else:
                        super().do_handle(tracked, address)  # waits for a free greenlet if the pool is full
                # A timer, not sleep(0): the loop polls its sockets before the next ones start.
                gevent.sleep(0.0001)
        finally:
            self._starter = None

    @staticmethod
    def _close(tracked: TrackedSocket) -> None:
        with contextlib.suppress(OSError):
            tracked.close()


class SheddingGeventWorker(GeventWorker):
    """A gevent worker that keeps at most ``worker_connections`` open, shedding the oldest idle ones first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cap = self.cfg.worker_connections
        self.connections = ConnectionTracker(cap)
        self._shed_report = CountReport()
        # Read by GeventWorker.run for each listener's pool.
        self.worker_connections = cap + pool_headroom(cap)

    def run(self) -> None:
        """gunicorn's run, its listeners served by ``NewestFirstServer`` (plain HTTP; TLS keeps gevent's server)."""
        if not self.cfg.is_ssl:
            # GeventWorker.run builds its servers with this module-level name; this process only.
            ggevent.StreamServer = self._newest_first_server
        super().run()

    def _newest_first_server(self, *args: Any, **kwargs: Any) -> NewestFirstServer:
        return NewestFirstServer(*args, tracker=self.connections, **kwargs)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection, tracked; log now and then how many idle ones were shed."""
        # NewestFirstServer tracked it when accepted; under TLS it is tracked here.
        tracked = client if isinstance(client, TrackedSocket) else self.connections.track(client)
        try:
            super().handle(listener, tracked, addr)
        finally:
            self.connections.forget(tracked)
        if shed := self._shed_report.due(self.connections.shed_total):
            self.log.warning(
                "idle connections shed: %d (cap %d per worker, GUNICORN_WORKER_CONNECTIONS)",
                shed,
                self.connections.cap,
            )
