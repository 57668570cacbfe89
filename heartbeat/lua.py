"""Loads the ``.lua`` scripts once per process and runs them by EVALSHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import Redis
from redis.exceptions import NoScriptError


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
    """Send ``calls`` as EVALSHA in one pipeline (one round trip) and return their replies.

    redis-py's own pipeline scripts cost an extra SCRIPT EXISTS round trip on
    every execute, so this sends EVALSHA itself. A Redis that restarted or
    failed over has lost its script cache: the calls it answered NOSCRIPT are
    loaded and sent again, once, and only those, so no script runs twice.
    """
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    replies = pipe.execute(raise_on_error=False)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        pipe = client.pipeline(transaction=False)
        for i in missing:
            call = calls[i]
            pipe.script_load(call.script.source)
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        retried = pipe.execute(raise_on_error=False)
        for i, reply in zip(missing, retried[1::2], strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def scripts_loaded(client: Redis, scripts: list[LuaScript]) -> bool:
    """Whether Redis holds every script in its cache (for the readiness probe)."""
    return all(client.script_exists(*[s.sha for s in scripts]))


def load_scripts(client: Redis, scripts: list[LuaScript]) -> None:
    """Put every script in Redis' cache (at start-up and from ``check``)."""
    pipe = client.pipeline(transaction=False)
    for script in scripts:
        pipe.script_load(script.source)
    pipe.execute()
