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
    """

    def __init__(self, tick: float = 0.1) -> None:
        self.tick = tick
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

    def _watch(self) -> None:
        hub = gevent.get_hub()
        while True:
            gevent.sleep(self.tick)
            now = monotonic()
            for glet, due in list(self.reading.items()):
                if due > now:
                    break
                # Thrown from the hub, once the greenlet is still waiting in its read.
                hub.loop.run_callback(self._end_if_still_reading, glet, due)

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
