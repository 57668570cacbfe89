"""Loads the ``.lua`` scripts once per process and runs them by EVALSHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import Redis
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


def run_scripts(client: Redis, calls: list[ScriptCall]) -> list[Any]:
    """Send ``calls`` as EVALSHA in one write (one round trip) and return their replies.

    This is a pipeline without redis-py's Pipeline object, whose bookkeeping
    (and, for registered scripts, a SCRIPT EXISTS round trip on every execute)
    costs more than the call on the heartbeat path. A connection that fails is
    dropped and the calls are sent once more on a fresh one: the admit script
    is idempotent for a session, so a retry never admits more than the limit.
    A Redis that restarted or failed over has lost its script cache: the calls
    it answered NOSCRIPT are loaded and sent again, once, and only those.
    """
    commands = [("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args) for call in calls]
    replies = _round_trip(client, commands)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        reload: list[tuple[Any, ...]] = []
        for i in missing:
            reload += [("SCRIPT", "LOAD", calls[i].script.source), commands[i]]
        retried = _round_trip(client, reload)
        for i, reply in zip(missing, retried[1::2], strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _round_trip(client: Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Write ``commands`` at once on a pooled connection and read every reply (errors as values)."""
    pool = client.connection_pool
    for attempt in (1, 2):
        connection = pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except ResponseError as error:
                    replies.append(error)
            return replies
        except (RedisConnectionError, RedisTimeoutError):
            # A pooled connection may be stale (Redis restarted): try one fresh one.
            connection.disconnect()
            if attempt == 2:
                raise
        finally:
            pool.release(connection)
    raise AssertionError("unreachable")


def scripts_loaded(client: Redis, scripts: list[LuaScript]) -> bool:
    """Whether Redis holds every script in its cache (for the readiness probe)."""
    return all(client.script_exists(*[s.sha for s in scripts]))


def load_scripts(client: Redis, scripts: list[LuaScript]) -> None:
    """Put every script in Redis' cache (at start-up and from ``check``)."""
    pipe = client.pipeline(transaction=False)
    for script in scripts:
        pipe.script_load(script.source)
    pipe.execute()
