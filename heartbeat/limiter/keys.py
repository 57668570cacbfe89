"""The Redis key layout: the one place that names StreamLimit's keys.

Per-user keys share the hash tag ``{<user id>}`` so that every script touching
one user runs on one Redis Cluster node. The user id is percent-escaped for
``%``, ``{`` and ``}`` inside the tag: a brace in an id would otherwise cut the
tag short (or empty it), and escaping keeps the mapping one-to-one, so one
user's ids can never reach another user's keys.

The activity index (live users and sessions, accounts seen, refusals, the
daily sharing signals) is split over ``ACTIVITY_SHARDS`` shards, each with
its own tag ``{<prefix>:a<n>}``; an account's entries always go to the shard
``crc32(user id) % shards``, so every script touches one slot and, on Redis
Cluster, the index spreads over the nodes. The number of shards is fixed for
a deployment: changing it moves every account to another shard (the live
entries come back within a heartbeat interval, the day's history does not).
Per-minute counters and the override mirror, written once a second or by
staff, keep one tag ``{<prefix>:global}``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cached_property

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})
_UNESCAPES = {"%25": "%", "%7B": "{", "%7D": "}"}
_ESCAPED = re.compile("%25|%7B|%7D")


def escape_tag(value: str) -> str:
    """Make ``value`` safe inside a ``{hash tag}`` (injective: ``%`` is escaped too)."""
    return value.translate(_ESCAPES)


def unescape_tag(value: str) -> str:
    """The inverse of ``escape_tag``."""
    return _ESCAPED.sub(lambda found: _UNESCAPES[found.group(0)], value)


# A user's key roles, in the order the Lua scripts take them as KEYS (UserKeys' fields).
USER_KEY_ROLES = ("sessions", "details", "limit", "evicted", "stopped", "replaced", "blocked")


@dataclass(frozen=True)
class UserKeys:
    """All keys of one user, in the order the Lua scripts take them as KEYS."""

    sessions: str  # ZSET session id -> last heartbeat (ms, Redis clock)
    # HASH "s:<session>" -> stream id, "t:<session>" -> started (ms), "d:<session>" -> device
    # name, "n:<session>" -> client network of its latest heartbeat (a prefix, for stops
    # without a token); "limit", "limitSource" -> what the latest allowed heartbeat asked for
    details: str
    limit: str  # STRING per-user limit override (no expiry: it is configuration)
    evicted: str  # ZSET session id -> end of its eviction cool-down (ms)
    stopped: str  # ZSET session id -> end of its block (ms): stopped from another screen
    replaced: str  # ZSET session id -> end of its block (ms): replaced by a newer session
    blocked: str  # STRING end of support's block on new sessions (ms), expiring with it

    @classmethod
    def under(cls, base: str) -> UserKeys:
        """The keys named ``base`` + their role (``base`` holds the hash tag)."""
        return cls(*(base + role for role in USER_KEY_ROLES))

    def as_list(self) -> list[str]:
        """KEYS for the admit script."""
        return [getattr(self, role) for role in USER_KEY_ROLES]


MAX_ACTIVITY_SHARDS = 1024


@dataclass(frozen=True)
class ActivityShard:
    """The activity keys of one shard: one hash tag, so each batch call touches one slot."""

    base: str

    @property
    def live_users(self) -> str:
        """ZSET user id -> last heartbeat (ms): the index behind the dashboard's list."""
        return self.base + "users"

    @property
    def live_sessions(self) -> str:
        """ZSET "<user id>\\x00<session id>" -> last heartbeat (ms): live session count."""
        return self.base + "sessions"

    @property
    def ended_sessions(self) -> str:
        """ZSET "<user id>\\x00<session id>" -> when it was stopped or evicted (ms), kept one TTL."""
        return self.base + "ended"

    @property
    def users_at_limit(self) -> str:
        """ZSET user id -> latest heartbeat (ms) of accounts whose latest heartbeat found them full."""
        return self.base + "at-limit"

    @property
    def seen_users(self) -> str:
        """ZSET user id -> latest heartbeat (ms) of every account heard in the last day."""
        return self.base + "seen"

    @property
    def seen_users_by_name(self) -> str:
        """ZSET of the same user ids, all scored 0, so ZRANGEBYLEX finds them by prefix."""
        return self.base + "seen-lex"

    @property
    def events(self) -> str:
        """STREAM of the shard's accounts' events (``heartbeat.limiter.events``), kept EVENTS_RETENTION_HOURS.

        One stream per shard, under the shard's tag: an account's events all land in
        one stream, in the order they happened, and the streams spread over a
        Cluster's nodes as the rest of the activity index does.
        """
        return self.base + "events"

    def webhook_lease(self, endpoint_id: int) -> str:
        """STRING: the name of the delivery worker that delivers this stream to one webhook endpoint, expiring.

        Under the shard's tag, beside the stream it guards (``webhooks/leases.py``).
        """
        return f"{self.base}webhook-lease:{endpoint_id}"

    def webhook_retries(self, endpoint_id: int) -> str:
        """HASH stream entry id -> its failed attempts for one webhook endpoint (JSON), expiring.

        Under the shard's tag, beside the stream, so every worker continues the same
        retry schedule (``webhooks/retries.py``).
        """
        return f"{self.base}webhook-retries:{endpoint_id}"

    def refusals(self, user_id: str) -> str:
        """LIST of an account's latest refusals (JSON), newest first, kept a day."""
        return f"{self.base}refusals:{user_id}"

    def refused_on(self, day: int) -> str:
        """ZSET user id -> refusals on one UTC day (days since the epoch)."""
        return f"{self.base}refused-day:{day}"

    def distinct_sessions_on(self, day: int) -> str:
        """ZSET user id -> distinct sessions on one UTC day (HyperLogLog estimates)."""
        return f"{self.base}distinct-day:{day}"

    def sessions_seen_on(self, day: int, user_id: str) -> str:
        """HyperLogLog of one account's session ids on one UTC day."""
        return f"{self.base}sessions-hll:{day}:{user_id}"


@dataclass(frozen=True)
class KeyLayout:
    """Builds every key under one prefix (``REDIS_KEY_PREFIX``, or a test's own)."""

    prefix: str
    activity_shards: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.activity_shards <= MAX_ACTIVITY_SHARDS:
            raise ValueError(f"activity_shards must be 1 to {MAX_ACTIVITY_SHARDS}, got {self.activity_shards}")

    def user(self, user_id: str) -> UserKeys:
        """The keys of ``user_id``."""
        return UserKeys.under(self._user_base(user_id))

    def user_key_list(self, user_id: str) -> list[str]:
        """``user(user_id).as_list()``, without building the dataclass (the heartbeat path)."""
        base = self._user_base(user_id)
        return [base + role for role in USER_KEY_ROLES]

    def _user_base(self, user_id: str) -> str:
        return f"{self.prefix}:u:{{{escape_tag(user_id)}}}:"

    def probe(self, name: str) -> UserKeys:
        """Keys of the readiness canary ``name`` (one process); apart from every user's."""
        return UserKeys.under(f"{self.prefix}:probe:{{{escape_tag(name)}}}:")

    @property
    def _global(self) -> str:
        return f"{self.prefix}:{{{escape_tag(self.prefix)}:global}}:"

    def shard_number(self, user_id: str) -> int:
        """Which activity shard holds ``user_id``'s entries (CRC-32 of the id: the same in every process)."""
        return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % self.activity_shards

    def shard_of(self, user_id: str) -> ActivityShard:
        """The activity shard that holds ``user_id``'s entries."""
        return self.shards[self.shard_number(user_id)]

    @cached_property
    def shards(self) -> tuple[ActivityShard, ...]:
        """Every activity shard, in order (their keys are what the dashboard merges)."""
        return tuple(
            ActivityShard(f"{self.prefix}:{{{escape_tag(self.prefix)}:a{n}}}:") for n in range(self.activity_shards)
        )

    @property
    def limit_overrides(self) -> str:
        """HASH user id -> limit override: a mirror of the per-user limit keys, for totals."""
        return self._global + "overrides"

    def webhook_health(self, endpoint_id: int) -> str:
        """HASH of one webhook endpoint's delivery health (last success, failures), written by the workers."""
        return f"{self._global}webhook-health:{endpoint_id}"

    @property
    def webhook_workers(self) -> str:
        """ZSET delivery worker name -> when it was last alive (ms): how many share the streams."""
        return self._global + "webhook-workers"

    @property
    def policy_version(self) -> str:
        """STRING: the version of the policy document in force (absent: none applied, the settings decide)."""
        return self._global + "policy:version"

    @property
    def policy_versions(self) -> str:
        """HASH version -> JSON record of every policy document applied (document, who, why, when)."""
        return self._global + "policy:versions"

    @property
    def risk_scores(self) -> str:
        """ZSET user id -> sharing risk score, from the latest ``score_sharing`` (heartbeat/limiter/risk.py)."""
        return self._global + "risk:scores"

    @property
    def risk_evidence(self) -> str:
        """HASH user id -> JSON list of the evidence lines behind its score."""
        return self._global + "risk:evidence"

    @property
    def risk_flagged(self) -> str:
        """SET of the user ids at or over SHARING_FLAG_SCORE at the latest scoring (each crossing is one event)."""
        return self._global + "risk:flagged"

    @property
    def risk_scored_at(self) -> str:
        """STRING: when the latest scoring ran (epoch ms)."""
        return self._global + "risk:scored-at"

    def new_sessions_of(self, network: str, epoch_minute: int) -> str:
        """STRING: how many new sessions ``network`` started in one minute (anonymous players), kept 2 minutes."""
        return f"{self.prefix}:n:{{{escape_tag(network)}}}:{epoch_minute}"

    def minute(self, epoch_minute: int) -> str:
        """HASH of one minute's activity counters (heartbeats, refused, evicted, peak)."""
        return f"{self._global}minute:{epoch_minute}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern that matches every key of this layout."""
        return self._escaped_prefix + ":*"

    @property
    def limit_pattern(self) -> str:
        """A SCAN pattern that matches every user's limit override key (and perhaps a few others)."""
        return self._escaped_prefix + ":u:{*}:limit"

    def user_of_limit_key(self, key: str) -> str | None:
        """The user id whose limit override ``key`` is, or None when it is no such key of this layout."""
        head, tail = f"{self.prefix}:u:{{", "}:limit"
        if not (key.startswith(head) and key.endswith(tail)):
            return None
        tag = key[len(head) : -len(tail)]
        # An escaped id has no braces: anything else is another layout's key.
        if "{" in tag or "}" in tag:
            return None
        user_id = unescape_tag(tag)
        return user_id if self.user(user_id).limit == key else None

    @property
    def _escaped_prefix(self) -> str:
        return self.prefix.replace("*", r"\*").replace("?", r"\?").replace("[", r"\[")
