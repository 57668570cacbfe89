"""The Redis key layout: the one place that names StreamLimit's keys.

Per-user keys share the hash tag ``{<user id>}`` so that every script touching
one user runs on one Redis Cluster node. The user id is percent-escaped for
``%``, ``{`` and ``}`` inside the tag: a brace in an id would otherwise cut the
tag short (or empty it), and escaping keeps the mapping one-to-one, so one
user's ids can never reach another user's keys.

Keys shared by all users (the live-user index, per-minute activity) share the
tag ``{<prefix>:global}``.
"""

from __future__ import annotations

from dataclasses import dataclass

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


def escape_tag(value: str) -> str:
    """Make ``value`` safe inside a ``{hash tag}`` (injective: ``%`` is escaped too)."""
    return value.translate(_ESCAPES)


@dataclass(frozen=True)
class UserKeys:
    """All keys of one user, in the order the Lua scripts take them as KEYS."""

    sessions: str  # ZSET session id -> last heartbeat (ms, Redis clock)
    details: str  # HASH "s:<session>" -> stream id, "t:<session>" -> started (ms)
    limit: str  # STRING per-user limit override (no expiry: it is configuration)
    evicted: str  # ZSET session id -> end of its eviction cool-down (ms)

    def as_list(self) -> list[str]:
        """KEYS for the per-user scripts."""
        return [self.sessions, self.details, self.limit, self.evicted]


@dataclass(frozen=True)
class KeyLayout:
    """Builds every key under one prefix (``REDIS_KEY_PREFIX``, or a test's own)."""

    prefix: str

    def user(self, user_id: str) -> UserKeys:
        """The keys of ``user_id``."""
        base = f"{self.prefix}:u:{{{escape_tag(user_id)}}}:"
        return UserKeys(base + "sessions", base + "details", base + "limit", base + "evicted")

    def probe(self, name: str) -> UserKeys:
        """Keys of the readiness canary ``name`` (one process); apart from every user's."""
        base = f"{self.prefix}:probe:{{{escape_tag(name)}}}:"
        return UserKeys(base + "sessions", base + "details", base + "limit", base + "evicted")

    @property
    def _global(self) -> str:
        return f"{self.prefix}:{{{escape_tag(self.prefix)}:global}}:"

    @property
    def live_users(self) -> str:
        """ZSET user id -> last heartbeat (ms): the index behind the dashboard's list."""
        return self._global + "users"

    @property
    def live_sessions(self) -> str:
        """ZSET "<user id>\\x00<session id>" -> last heartbeat (ms): live session count."""
        return self._global + "sessions"

    @property
    def ended_sessions(self) -> str:
        """ZSET "<user id>\\x00<session id>" -> when it was stopped or evicted (ms), kept one TTL."""
        return self._global + "ended"

    @property
    def users_at_limit(self) -> str:
        """ZSET user id -> latest heartbeat (ms) of accounts whose latest heartbeat found them full."""
        return self._global + "at-limit"

    @property
    def limit_overrides(self) -> str:
        """HASH user id -> limit override: a mirror of the per-user limit keys, for totals."""
        return self._global + "overrides"

    def minute(self, epoch_minute: int) -> str:
        """HASH of one minute's activity counters (heartbeats, refused, evicted, peak)."""
        return f"{self._global}minute:{epoch_minute}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern that matches every key of this layout."""
        return self.prefix.replace("*", r"\*").replace("?", r"\?").replace("[", r"\[") + ":*"
