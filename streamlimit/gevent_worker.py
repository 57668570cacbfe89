"""gunicorn's gevent worker, shedding its oldest idle connections past its cap.

The one module that touches gunicorn's internals (``tests/test_idle_bodies.py``
fails if gunicorn changes under it): ``GeventWorker.run`` sizes each
listener's greenlet pool from ``self.worker_connections`` and serves every
accepted connection through ``handle(listener, client, addr)``. The pool is
made a little larger than ``GUNICORN_WORKER_CONNECTIONS`` so the worker keeps
accepting at the cap, and each accepted socket is wrapped so the worker
knows which connections wait on their client (``streamlimit/idle_connections.py``);
past the cap, the oldest of those are shut down.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.ggevent import GeventWorker

from streamlimit.idle_connections import ConnectionTracker, CountReport


def pool_headroom(cap: int) -> int:
    """Greenlets past the cap: room to accept while the oldest idle connections are shed."""
    return max(10, cap // 10)


class SheddingGeventWorker(GeventWorker):
    """A gevent worker that keeps at most ``worker_connections`` open, shedding the oldest idle ones first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cap = self.cfg.worker_connections
        self.connections = ConnectionTracker(cap)
        self._shed_report = CountReport()
        # Read by GeventWorker.run for each listener's pool.
        self.worker_connections = cap + pool_headroom(cap)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection, tracked; log now and then how many idle ones were shed."""
        tracked = self.connections.track(client)
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
