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


class ScriptRunner:
    """Sends EVALSHA calls in one write (one round trip) on a connection of the calling thread's own.

    This is a pipeline without redis-py's Pipeline object, whose bookkeeping
    (and, for registered scripts, a SCRIPT EXISTS round trip on every execute)
    costs more than the call on the heartbeat path. The connection is made
    from the pool's settings and kept by the thread (a sync gunicorn worker
    has one request thread, plus the activity flusher): checking one out of
    redis-py's pool and back costs a deprecated-arguments check, two fork
    checks and a poll for stray data, more than this round trip's own Python
    work. A connection that fails mid-call is dropped, so no stray reply is
    ever read by the next call, and the calls are sent once more on a fresh
    one, but only when the connection had served calls before and the failure
    was not a time-out. A kept connection that Redis closed (a restart, a
    failover, an idle time-out) fails at once, and the fresh one then works; a
    time-out is a Redis that stalls, and sending again would make the caller
    wait twice as long for the same answer (and re-run a script that may
    already have run: harmless for the limit, as the admit script is
    idempotent for a session, but no help). So a call waits at most one
    socket time-out. A Redis that restarted or failed over has lost its
    script cache: the calls it answered NOSCRIPT are loaded and sent again,
    once, and only those.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._local = threading.local()

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

    def _connection(self) -> AbstractConnection:
        # A forked child must not share its parent's socket.
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:
            # Built like the pool's own (same class and settings), outside its count.
            self._local.connection = self._pool.connection_class(**self._pool.connection_kwargs)
            self._local.pid = pid
            self._local.used = False
        return self._local.connection

    def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Write ``commands`` at once and read every reply (errors as values)."""
        while True:
            connection = self._connection()
            kept = self._local.used and connection._sock is not None
            try:
                connection.send_packed_command(connection.pack_commands(commands))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except ResponseError as error:
                        replies.append(error)
                self._local.used = True
                return replies
            except RedisTimeoutError:
                # Redis stalls: one wait is all a caller gets (see above).
                connection.disconnect()
                raise
            except RedisConnectionError:
                connection.disconnect()
                self._local.used = False
                if not kept:
                    raise
                # A kept connection that Redis closed: once more on a fresh one.
            except BaseException:
                # Replies may be left unread on the socket: never reuse it.
                connection.disconnect()
                raise


def scripts_loaded(client: Redis, scripts: list[LuaScript]) -> bool:
    """Whether Redis holds every script in its cache (for the readiness probe)."""
    return all(client.script_exists(*[s.sha for s in scripts]))


def load_scripts(client: Redis, scripts: list[LuaScript]) -> None:
    """Put every script in Redis' cache (at start-up and from ``check``)."""
    pipe = client.pipeline(transaction=False)
    for script in scripts:
        pipe.script_load(script.source)
    pipe.execute()
