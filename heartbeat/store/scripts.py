"""Loads the ``.lua`` scripts once per process and runs them by EVALSHA."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import ConnectionPool, Redis
from redis.cluster import RedisCluster
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A command sent after a round trip's replies, on the same connection (WAIT), or None.
FollowUp = Callable[[list[Any]], tuple[Any, ...] | None]


@dataclass(frozen=True)
class LuaScript:
    """One script's source and SHA1, read from a ``<name>.lua`` file shipped in a package."""

    name: str
    source: str
    sha: str

    @classmethod
    def from_package(cls, package: str, name: str) -> LuaScript:
        """Read ``<name>.lua`` from ``package`` (a script file shipped with the code)."""
        source = resources.files(package).joinpath(f"{name}.lua").read_text(encoding="utf-8")
        return cls(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


@dataclass(frozen=True)
class ScriptCall:
    """One EVALSHA to send: the script, its KEYS and its ARGV."""

    script: LuaScript
    keys: list[str]
    args: list[Any]


# Every ScriptConnections of this process, so that a forked child starts each one afresh.
_ALL_SCRIPT_CONNECTIONS: weakref.WeakSet[ScriptConnections] = weakref.WeakSet()


def _start_afresh_after_fork() -> None:
    for connections in list(_ALL_SCRIPT_CONNECTIONS):
        connections._reset()


os.register_at_fork(after_in_child=_start_afresh_after_fork)


class ScriptConnections:
    """This process's Redis connections for scripts: idle ones are reused, last used first.

    At most ``size`` are open at once: under gevent one process serves
    hundreds of requests at a time, and a Redis stall must not turn into
    hundreds of connections per process. A request that finds them all busy
    waits for one, at most the connections' socket timeout
    (``REDIS_SOCKET_TIMEOUT``), then fails with a ``ConnectionError``; in
    normal operation a connection is busy for one round trip, well under a
    millisecond, so nobody waits. Taking an idle connection and giving it
    back is a list pop and append (atomic, so no lock; a lock is taken only
    to open a connection or to wait for one), with no fork check, liveness
    poll or deprecated-arguments check (which redis-py's pools do on every
    checkout, for more Python work than the heartbeat's own round trip); a
    forked child starts afresh through ``os.register_at_fork``. A
    thread-local connection would do too under sync and gthread workers, but
    under gevent ``threading.local`` is greenlet-local: every request would
    open a new connection.
    """

    def __init__(self, pool: ConnectionPool, size: int = 64) -> None:
        self._pool = pool
        self.size = size
        self._wait = pool.connection_kwargs.get("socket_timeout") or 1.0
        self._reset()
        _ALL_SCRIPT_CONNECTIONS.add(self)

    def _reset(self) -> None:
        # A forked child must not share its parent's sockets, nor its counts.
        self._pid = os.getpid()
        self._idle: list[AbstractConnection] = []
        self._changed = threading.Condition(threading.Lock())
        self._waiting = 0
        self._open = 0
        self.opened = 0  # connections made by this process (tests, capacity notes)

    def take(self) -> AbstractConnection:
        """An idle connection, or a new one (connected on first use); raises when ``size`` stay busy."""
        try:
            return self._idle.pop()
        except IndexError:
            return self._open_or_wait()

    def _open_or_wait(self) -> AbstractConnection:
        deadline = time.monotonic() + self._wait
        with self._changed:
            # Counted before looking, so a give_back that comes after the look notifies us.
            self._waiting += 1
            try:
                while True:
                    if self._idle:
                        return self._idle.pop()
                    if self._open < self.size:
                        self._open += 1
                        self.opened += 1
                        # Built like the pool's own (same class and settings), outside its count.
                        return self._pool.connection_class(**self._pool.connection_kwargs)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RedisConnectionError(f"all {self.size} Redis connections of this process stayed busy")
                    self._changed.wait(remaining)
            finally:
                self._waiting -= 1

    def give_back(self, connection: AbstractConnection) -> None:
        """Return a connection taken from here (disconnected ones reconnect on their next use)."""
        if connection.pid != self._pid:
            return  # opened before a fork: the child starts afresh
        self._idle.append(connection)
        if self._waiting:
            with self._changed:
                self._changed.notify()

    @property
    def idle(self) -> int:
        """How many connections wait for reuse (they stay open)."""
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """How many callers wait for a connection now."""
        return self._waiting


def raise_first_error(replies: list[Any]) -> list[Any]:
    """``replies``, unless one is an error: then that error is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


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
        self.pool = pool
        self.connections = ScriptConnections(pool)

    def run(self, calls: list[ScriptCall]) -> list[Any]:
        """Run ``calls`` and return their replies; raises the first script error."""
        return raise_first_error(self.run_replies(calls)[0])

    def run_replies(
        self, calls: list[ScriptCall], *, follow_up: FollowUp | None = None, asking: bool = False
    ) -> tuple[list[Any], Any]:
        """Run ``calls``; return their replies, errors as values, and the follow-up's reply (or None).

        ``follow_up`` sees the replies of the round trip that ran the scripts
        and may name one more command for the same connection: ``WAIT`` acts
        on the writes of the connection it is sent on. ``asking`` sends
        ``ASKING`` first (a Redis Cluster slot being migrated here).
        """
        commands = [("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args) for call in calls]
        replies, followed = self._round_trip(commands, follow_up, asking)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            reload: list[tuple[Any, ...]] = []
            for i in missing:
                reload += [("SCRIPT", "LOAD", calls[i].script.source), commands[i]]
            retried, followed = self._round_trip(reload, follow_up, asking)
            for i, reply in zip(missing, retried[1::2], strict=True):
                replies[i] = reply
        return replies, followed

    def _round_trip(
        self, commands: list[tuple[Any, ...]], follow_up: FollowUp | None = None, asking: bool = False
    ) -> tuple[list[Any], Any]:
        """Write ``commands`` at once and read every reply (errors as values), then the follow-up's."""
        if asking:
            # ASKING lasts for one command: each script of the slot gets its own.
            commands = [c for command in commands for c in (("ASKING",), command)]
        while True:
            connection = self.connections.take()
            # Connected means it served calls before: every failure disconnects it.
            kept = connection.is_connected
            try:
                if not kept:
                    # connect() itself, not the implicit connect of a send: a Sentinel-managed
                    # connection asks the sentinels for the primary's address there.
                    connection.connect()
                connection.send_packed_command(connection.pack_commands(commands))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except ResponseError as error:
                        replies.append(error)
                if asking:
                    replies = replies[1::2]
                followed = None
                extra = follow_up(replies) if follow_up is not None else None
                if extra is not None:
                    connection.send_command(*extra)
                    followed = connection.read_response()
                return replies, followed
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


def scripts_loaded(client: Redis | RedisCluster, scripts: list[LuaScript]) -> bool:
    """Whether Redis (on a cluster, every primary) holds every script in its cache (for the readiness probe)."""
    return all(client.script_exists(*[s.sha for s in scripts]))


def load_scripts(client: Redis | RedisCluster, scripts: list[LuaScript]) -> None:
    """Put every script in Redis' cache (at start-up and from ``check``); on a cluster, on every primary."""
    if isinstance(client, RedisCluster):
        for script in scripts:
            client.script_load(script.source)  # redis-py sends it to every primary
        return
    pipe = client.pipeline(transaction=False)
    for script in scripts:
        pipe.script_load(script.source)
    pipe.execute()
