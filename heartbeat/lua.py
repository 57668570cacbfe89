"""Loads the ``.lua`` scripts once per process and runs them by EVALSHA."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import ConnectionPool, Redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(frozen=True)
class LuaScript:
    """One script's source and SHA1, read from ``heartbeat/scripts/<name>.lua``."""

    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> LuaScript:
        """Read the script file shipped with the package."""
        source = resources.files("heartbeat.scripts").joinpath(f"{name}.lua").read_text(encoding="utf-8")
        return cls(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


@dataclass(frozen=True)
class ScriptCall:
    """One EVALSHA to send: the script, its KEYS and its ARGV."""

    script: LuaScript
    keys: list[str]
    args: list[Any]


class ScriptConnections:
    """This process's Redis connections for scripts: idle ones are reused, last used first.

    At most ``size`` are in use at once: under gevent one process serves
    hundreds of requests at a time, and a Redis stall must not turn into
    hundreds of connections per process. A request that finds them all busy
    waits for one, at most the connections' socket timeout
    (``REDIS_SOCKET_TIMEOUT``), then fails with a ``ConnectionError``; in
    normal operation a connection is busy for one round trip, well under a
    millisecond, so nobody waits. Taking one and giving it back is a list pop and
    append, with no fork check, liveness poll or deprecated-arguments check
    (which redis-py's pools do on every checkout, for more Python work than the
    heartbeat's own round trip). A thread-local connection would do too under
    sync and gthread workers, but under gevent ``threading.local`` is
    greenlet-local: every request would open a new connection.
    """

    def __init__(self, pool: ConnectionPool, size: int = 64) -> None:
        self._pool = pool
        self.size = size
        self._wait = pool.connection_kwargs.get("socket_timeout") or 1.0
        self._reset()

    def _reset(self) -> None:
        # A forked child must not share its parent's sockets, nor its counts.
        self._pid = os.getpid()
        self._idle: list[AbstractConnection] = []
        self._free = threading.BoundedSemaphore(self.size)
        self.opened = 0  # connections made by this process (tests, capacity notes)

    def take(self) -> AbstractConnection:
        """An idle connection, or a new one (connected on first use); raises when ``size`` are busy."""
        if self._pid != os.getpid():
            self._reset()
        if not self._free.acquire(timeout=self._wait):
            raise RedisConnectionError(f"all {self.size} Redis connections of this process stayed busy")
        try:
            return self._idle.pop()
        except IndexError:
            # Built like the pool's own (same class and settings), outside its count.
            self.opened += 1
            return self._pool.connection_class(**self._pool.connection_kwargs)

    def give_back(self, connection: AbstractConnection) -> None:
        """Return a connection taken from here (disconnected ones reconnect on their next use)."""
        if self._pid != os.getpid():
            return  # taken before a fork: the child starts afresh
        self._idle.append(connection)
        self._free.release()

    @property
    def idle(self) -> int:
        """How many connections wait for reuse (they stay open)."""
        return len(self._idle)


class ScriptRunner:
    """Sends EVALSHA calls in one write (one round trip) on a connection of ``ScriptConnections``.

    This is a pipeline without redis-py's Pipeline object, whose bookkeeping
    (and, for registered scripts, a SCRIPT EXISTS round trip on every execute)
    costs more than the call on the heartbeat path. A connection that fails
    mid-call is dropped, so no stray reply is ever read by the next call, and
    the calls are sent once more on a fresh one, but only when the connection
    had served calls before and the failure was not a time-out. A kept
    connection that Redis closed (a restart, a failover, an idle time-out)
    fails at once, and the fresh one then works; a time-out is a Redis that
    stalls, and sending again would make the caller wait twice as long for the
    same answer (and re-run a script that may already have run: harmless for
    the limit, as the admit script is idempotent for a session, but no help).
    So a call waits at most one socket time-out on Redis (plus, only when all
    of the process's script connections are busy, at most one more for a free
    one). A Redis that restarted or failed over has lost its script cache: the
    calls it answered NOSCRIPT are loaded and sent again, once, and only those.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.connections = ScriptConnections(pool)

    def run(self, calls: list[ScriptCall]) -> list[Any]:
        """Run ``calls`` and return their replies; raises the first script error."""
        commands = [("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args) for call in calls]
        replies = self._round_trip(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            reload: list[tuple[Any, ...]] = []
            for i in missing:
                reload += [("SCRIPT", "LOAD", calls[i].script.source), commands[i]]
            retried = self._round_trip(reload)
            for i, reply in zip(missing, retried[1::2], strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Write ``commands`` at once and read every reply (errors as values)."""
        while True:
            connection = self.connections.take()
            # Connected means it served calls before: every failure disconnects it.
            kept = connection._sock is not None
            try:
                connection.send_packed_command(connection.pack_commands(commands))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except ResponseError as error:
                        replies.append(error)
                return replies
            except RedisTimeoutError:
                # Redis stalls: one wait is all a caller gets (see above).
                connection.disconnect()
                raise
            except RedisConnectionError:
                connection.disconnect()
                if not kept:
                    raise
                # A kept connection that Redis closed: once more on a fresh one.
            except BaseException:
                # Replies may be left unread on the socket: never reuse it.
                connection.disconnect()
                raise
            finally:
                self.connections.give_back(connection)


def scripts_loaded(client: Redis, scripts: list[LuaScript]) -> bool:
    """Whether Redis holds every script in its cache (for the readiness probe)."""
    return all(client.script_exists(*[s.sha for s in scripts]))


def load_scripts(client: Redis, scripts: list[LuaScript]) -> None:
    """Put every script in Redis' cache (at start-up and from ``check``)."""
    pipe = client.pipeline(transaction=False)
    for script in scripts:
        pipe.script_load(script.source)
    pipe.execute()
