"""A request body must arrive within ``REQUEST_BODY_TIMEOUT_SECONDS``, or the answer is 408.

gunicorn bounds the wait for a request's line and headers (``keepalive``) but
not for its body: a client that sends ``Content-Length: 100`` and then nothing
held its connection, and its worker's slot, for as long as it liked (issue 19).
So the body is read here, before Django sees the request, under one deadline
for the whole body (``BodyDeadlines``: a client that trickles a byte at a
time gains nothing); the bytes are handed on as ``wsgi.input``. When the
deadline passes the client gets a 408 JSON answer and its connection is
closed: its reading side is shut down, so gunicorn finds the end of the
stream where it would look for the next request.

Only bodies the application would read are read: a declared length over
``max_bytes`` is left to the application, which refuses it by its length
(413 on the player paths, Django's limit elsewhere) without reading it, and
gunicorn's own drain of an unread body is bounded by ``keepalive``. A chunked
body is left to ``heartbeat.edge.request_body`` (player paths, read within the
deadline here too) or to Django (which reads it as empty).

The deadline needs the gevent worker (the default): with ``sync`` or
``gthread`` workers nothing interrupts a blocked read, and the README's advice
for them (a buffering proxy in front) stands.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import socket
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

import gevent
import orjson
import structlog
from gevent import getcurrent

from streamlimit.idle_connections import CountReport

logger = structlog.get_logger(__name__)

TIMEOUT_BODY = {
    "code": "request_body_timeout",
    "message": "The request body did not arrive in time; send it with the request.",
}


class BodyTimeoutError(Exception):
    """The body did not arrive within the deadline."""


class _TimeoutCount:
    """This process' body time-outs, reported in one log line every few seconds at most."""

    total = 0
    report = CountReport()


@functools.cache
def gevent_is_serving() -> bool:
    """Whether this process' sockets are gevent's, so another greenlet can interrupt a read.

    Asked at the first request, after the worker patched the standard library.
    """
    from gevent import monkey

    return monkey.is_module_patched("socket")


def declared_length(environ: dict[str, Any]) -> int:
    """The request's ``Content-Length`` (0 when absent or not a whole number)."""
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


class BodyDeadlines:
    """The greenlets of this process reading a body, with their deadlines; one watcher ends the late ones.

    A gevent ``Timeout`` per request costs a timer started and stopped on
    every heartbeat; here a request only enters and leaves a dict, and a
    watcher greenlet wakes every ``tick`` seconds. Deadlines are ``now +
    seconds`` with one ``seconds`` per process, so the dict (in entry order)
    is in deadline order and the watcher stops at the first one not due.

    The late ones are ended ``batch`` at a time, with a ``pause`` between
    batches. An attack connects in bursts (a thousand sockets within a few
    milliseconds), so its deadlines fall due together; ended all at once,
    their 408s (about 0.3 ms each) ran back to back, ahead of every request
    that arrived meanwhile, and held a probe up for 100 to 300 ms (issue 19).
    Between two batches the worker accepts and serves what came in, so a
    request waits for one batch at most: a 408 may come a little late, a
    probe may not.
    """

    def __init__(self, tick: float = 0.1, batch: int = 16, pause: float = 0.002) -> None:
        self.tick = tick
        self.batch = batch
        self.pause = pause
        self.reading: dict[Any, float] = {}
        self._watching = False
        # A forked worker has no watcher yet: it starts one at its first body.
        # (Not an os.getpid() check per body: on this VM a system call costs
        # about a microsecond, more than the rest of this bookkeeping.)
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.reading = {}
        self._watching = False

    def enter(self, seconds: float) -> None:
        """The current greenlet starts reading a body, due within ``seconds``."""
        if not self._watching:  # first body of this (forked) worker
            self._watching = True
            gevent.spawn(self._watch)
        self.reading[getcurrent()] = monotonic() + seconds

    def leave(self) -> None:
        """The current greenlet is done reading (in time, or not)."""
        self.reading.pop(getcurrent(), None)

    def due(self, now: float) -> list[tuple[Any, float]]:
        """Up to ``batch`` readers whose deadline has passed, the earliest first."""
        late = []
        for glet, due in self.reading.items():
            if due > now or len(late) == self.batch:
                break
            late.append((glet, due))
        return late

    def _watch(self) -> None:
        hub = gevent.get_hub()
        while True:
            gevent.sleep(self.tick)
            while late := self.due(monotonic()):
                for glet, due in late:
                    # Thrown from the hub, once the greenlet is still waiting in its read.
                    hub.loop.run_callback(self._end_if_still_reading, glet, due)
                # A timer, not sleep(0): the loop polls its sockets before the next batch.
                gevent.sleep(self.pause)

    def _end_if_still_reading(self, glet: Any, due: float) -> None:
        if self.reading.get(glet) == due:
            del self.reading[glet]
            glet.throw(BodyTimeoutError())


DEADLINES = BodyDeadlines()


def read_declared_body_within(
    environ: dict[str, Any], length: int, seconds: float, read_chunked: Callable[[dict[str, Any]], None] | None
) -> None:
    """Read ``length`` bytes of body into ``environ["wsgi.input"]`` within ``seconds``, or raise ``BodyTimeoutError``.

    With ``read_chunked``, that reads the body instead (one sent chunked, without a length).
    Raises ``ConnectionResetError`` when the worker shed the connection while
    its body was awaited: nobody is left to answer.
    """
    DEADLINES.enter(seconds)
    try:
        if read_chunked is not None:
            read_chunked(environ)
            return
        stream = environ["wsgi.input"]
        # A heartbeat's body came in the packet of its headers: one read, no join.
        body = stream.read(length)
        if body and len(body) < length:
            parts, got = [body], len(body)
            while got < length:
                part = stream.read(length - got)
                if not part:
                    break  # the client closed early: the application sees a short body
                parts.append(part)
                got += len(part)
            body = b"".join(parts)
        environ["wsgi.input"] = io.BytesIO(body)
    except OSError:
        environ["wsgi.input"] = io.BytesIO(b"")  # the client is gone; its answer will not arrive
    finally:
        DEADLINES.leave()
    if was_shed(environ):
        # Shedding shuts the socket down (gevent wakes the read with EBADF). Running the application
        # for it cost a whole request (a 400 for the short body) per shed socket, thousands of them
        # under an attack; gunicorn closes a reset connection quietly.
        raise ConnectionResetError(errno.ECONNRESET, "connection shed while its body was awaited")


def was_shed(environ: dict[str, Any]) -> bool:
    """Whether the worker shut this connection down to make room (``streamlimit.idle_connections``)."""
    return getattr(environ.get("gunicorn.socket"), "shed", False) is True


def close_after_answer(environ: dict[str, Any]) -> None:
    """Shut the client's reading side, so gunicorn closes the connection once the answer is sent."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # the client left first
        sock.shutdown(socket.SHUT_RD)


def answer_timeout(environ: dict[str, Any], start_response: Callable[..., Any], seconds: float) -> Iterable[bytes]:
    """The 408 for a body that did not arrive in time; the connection closes after it."""
    close_after_answer(environ)
    _TimeoutCount.total += 1
    if count := _TimeoutCount.report.due(_TimeoutCount.total):
        logger.warning(
            "request body timed out",
            requests=count,
            lastPath=environ.get("PATH_INFO", "")[:200],
            timeoutSeconds=seconds,
        )
    body = orjson.dumps(TIMEOUT_BODY)
    start_response("408 Request Timeout", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def with_body_deadline(
    app: Callable[..., Iterable[bytes]],
    seconds: Callable[[], float],
    max_bytes: int,
    read_chunked: Callable[[dict[str, Any]], None] = lambda environ: None,
) -> Callable[..., Iterable[bytes]]:
    """``app`` behind the body deadline (``seconds()`` is read per request, from the settings)."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # This runs on every heartbeat: the common case (a body of a sane
        # declared length) in few steps.
        length = declared_length(environ)
        if 0 < length <= max_bytes:
            chunked = None
        elif not length and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            chunked = read_chunked
        else:
            return app(environ, start_response)
        if gevent_is_serving():
            try:
                read_declared_body_within(environ, length, seconds(), chunked)
            except BodyTimeoutError:
                return answer_timeout(environ, start_response, seconds())
        return app(environ, start_response)

    return application
