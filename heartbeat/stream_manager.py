"""StreamManager: every Redis access of StreamLimit goes through this class."""

from __future__ import annotations

import enum
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import zip_longest
from typing import Any

import structlog
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from heartbeat.activity import FLUSHER, ActivityBatch, ActivityBuffer
from heartbeat.breaker import CircuitBreaker
from heartbeat.keys import KeyLayout
from heartbeat.lua import LuaScript, ScriptCall, ScriptRunner, load_scripts, scripts_loaded
from heartbeat.validation import require_id

logger = structlog.get_logger(__name__)

# Per-minute activity is kept a little over the hour the dashboard charts.
MINUTE_KEY_TTL_SECONDS = 2 * 3600
MIN_LIMIT_OVERRIDE = 1
MAX_LIMIT_OVERRIDE = 50
# Sessions per record_activity call: bounds how long one call holds Redis.
ACTIVITY_CHUNK = 1000
# The readiness canary: a session on a probe key of the process's own, gone
# soon after the probes stop; a limit no number of processes reaches.
PROBE_TTL_MS = 10_000
PROBE_LIMIT = 1_000_000

ADMIT = LuaScript.load("admit")
RECORD_ACTIVITY = LuaScript.load("record_activity")
END_SESSIONS = LuaScript.load("end_sessions")
STOP = LuaScript.load("stop")
EVICT = LuaScript.load("evict")
ALL_SCRIPTS = [ADMIT, RECORD_ACTIVITY, END_SESSIONS, STOP, EVICT]


class Outcome(enum.Enum):
    """What a heartbeat got."""

    ALLOWED = "allowed"
    LIMIT_REACHED = "limit_reached"
    EVICTED = "evicted"


_OUTCOMES = {0: Outcome.ALLOWED, 1: Outcome.ALLOWED, 2: Outcome.LIMIT_REACHED, 3: Outcome.EVICTED}


@dataclass(frozen=True)
class HeartbeatResult:
    """The answer to one heartbeat."""

    outcome: Outcome
    active_sessions: int
    limit: int
    new_session: bool
    pruned: int

    @property
    def allowed(self) -> bool:
        """Whether the player may keep playing."""
        return self.outcome is Outcome.ALLOWED


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, as the dashboard shows it."""

    session_id: str
    stream_id: str
    started_at: datetime
    last_heartbeat_at: datetime
    expires_in_seconds: float


@dataclass(frozen=True)
class UserLimit:
    """A user's limit: the override when one is set, else the default."""

    limit: int
    override: int | None
    default: int


@dataclass(frozen=True)
class LiveUser:
    """One row of the live-user list."""

    user_id: str
    last_heartbeat_at: datetime
    active_sessions: int


@dataclass(frozen=True)
class ServiceStats:
    """Totals across all users, now."""

    live_users: int
    live_sessions: int
    users_at_limit: int


@dataclass(frozen=True)
class MinuteActivity:
    """Activity counters of one minute."""

    minute: datetime
    heartbeats: int
    refused: int
    evicted: int
    peak_sessions: int


@dataclass(frozen=True)
class Readiness:
    """Whether a heartbeat could be admitted now, and if not, why."""

    ready: bool
    reason: str | None = None  # "redis_unreachable" or "redis_refuses_writes"
    detail: str = ""
    scripts_reloaded: bool = False


class LimitOutOfRangeError(ValueError):
    """Raised when a limit override is outside 1..50."""


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _ms_to_datetime(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamManager:
    """Admits, stops and evicts sessions, and reads them back, on Redis.

    The check-and-admit step is one Lua script (``admit.lua``), so the limit
    holds however many API servers run at once; the time is Redis' own. What
    heartbeats did is written to the shared activity keys in batches (see
    ``heartbeat/activity.py``), every ``activity_flush_seconds``.
    """

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str,
        default_limit: int,
        session_ttl_seconds: int,
        eviction_cooldown_seconds: int,
        activity_flush_seconds: float = 1.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = client
        # Guards the player path (admit, stop); staff pages and probes always ask Redis.
        self.breaker = breaker
        self.scripts = ScriptRunner(client.connection_pool)
        # The activity flusher has connections of its own: a flush waiting on a
        # stalled Redis must not take the connection a heartbeat would reuse,
        # leaving it a new one whose handshake times out before its script is sent.
        self.activity_scripts = ScriptRunner(client.connection_pool)
        self.keys = KeyLayout(key_prefix)
        self.default_limit = default_limit
        self.session_ttl_seconds = session_ttl_seconds
        self.session_ttl_ms = session_ttl_seconds * 1000
        self.eviction_cooldown_seconds = eviction_cooldown_seconds
        self.activity_flush_seconds = activity_flush_seconds
        self.pending_activity = ActivityBuffer()
        self._flush_lock = threading.Lock()
        self._flusher_pid = 0

    # --- The player's side ---------------------------------------------------

    def admit(self, user_id: str, stream_id: str, session_id: str) -> HeartbeatResult:
        """Record a heartbeat and say whether this session may play.

        One round trip, allowed or refused: the admit script. What the
        heartbeat did is noted for the next activity flush.
        """
        require_id(user_id, "userId")
        require_id(stream_id, "streamId")
        require_id(session_id, "sessionId")
        reply = self._run_guarded(
            ADMIT,
            self.keys.user(user_id).as_list(),
            [session_id, stream_id, self.default_limit, self.session_ttl_ms],
        )
        code, active, limit, pruned, now_ms = (int(v) for v in reply)
        result = HeartbeatResult(_OUTCOMES[code], active, limit, code == 1, pruned)
        self.pending_activity.note(
            user_id, f"{user_id}\x00{session_id}", now_ms, now_ms // 60_000, allowed=code < 2, at_limit=active >= limit
        )
        if self._flusher_pid != os.getpid():
            FLUSHER.register(self, self.activity_flush_seconds)
            self._flusher_pid = os.getpid()
        if pruned:
            logger.info("expired sessions pruned", userId=user_id, pruned=pruned)
        if result.allowed:
            # New sessions are the events operators follow; repeat heartbeats
            # are already in the request line.
            logger.log(
                20 if result.new_session else 10,
                "allow stream request",
                userId=user_id,
                sessionId=session_id,
                streamId=stream_id,
                newSession=result.new_session,
                activeSessions=active,
                limit=limit,
            )
        else:
            logger.warning(
                "reject stream request",
                userId=user_id,
                sessionId=session_id,
                streamId=stream_id,
                reason=result.outcome.value,
                activeSessions=active,
                limit=limit,
            )
        return result

    def stop(self, user_id: str, session_id: str) -> bool:
        """Free a session's slot at once; True if it was live. Idempotent."""
        require_id(user_id, "userId")
        require_id(session_id, "sessionId")
        user = self.keys.user(user_id)
        removed, left = (int(v) for v in self._run_guarded(STOP, [user.sessions, user.details], [session_id]))
        self._forget(user_id, [session_id], user_has_sessions=left > 0)
        logger.info("stop stream request", userId=user_id, sessionId=session_id, wasLive=bool(removed))
        return bool(removed)

    # --- Support staff and operators -----------------------------------------

    def sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        require_id(user_id, "userId")
        user = self.keys.user(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(user.sessions, 0, -1, withscores=True)
        pipe.hgetall(user.details)
        (sec, usec), members, details = pipe.execute()
        now = sec * 1000 + usec // 1000
        details = {_text(k): _text(v) for k, v in details.items()}
        found = []
        for raw_sid, last in members:
            if last <= now - self.session_ttl_ms:
                continue
            sid = _text(raw_sid)
            started = float(details.get(f"t:{sid}", last))
            found.append(
                SessionInfo(
                    session_id=sid,
                    stream_id=details.get(f"s:{sid}", ""),
                    started_at=_ms_to_datetime(started),
                    last_heartbeat_at=_ms_to_datetime(last),
                    expires_in_seconds=max(0.0, (last + self.session_ttl_ms - now) / 1000),
                )
            )
        found.sort(key=lambda s: s.started_at)
        return found

    def get_limit(self, user_id: str) -> UserLimit:
        """The user's limit and where it comes from."""
        require_id(user_id, "userId")
        raw = self.client.get(self.keys.user(user_id).limit)
        override = int(raw) if raw is not None else None
        return UserLimit(override if override is not None else self.default_limit, override, self.default_limit)

    def set_limit_override(self, user_id: str, limit: int | None) -> UserLimit:
        """Set (1..50) or, with None, clear the user's limit override.

        Lowering a limit never cuts a live session: it only refuses newcomers.
        """
        require_id(user_id, "userId")
        key = self.keys.user(user_id).limit
        pipe = self.client.pipeline(transaction=False)
        if limit is None:
            pipe.delete(key)
            pipe.hdel(self.keys.limit_overrides, user_id)
        else:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise LimitOutOfRangeError("The limit must be a whole number.")
            if not MIN_LIMIT_OVERRIDE <= limit <= MAX_LIMIT_OVERRIDE:
                raise LimitOutOfRangeError(f"The limit must be between {MIN_LIMIT_OVERRIDE} and {MAX_LIMIT_OVERRIDE}.")
            pipe.set(key, limit)
            pipe.hset(self.keys.limit_overrides, user_id, limit)
        pipe.execute()
        logger.info("limit override set", userId=user_id, override=limit)
        return self.get_limit(user_id)

    def evict(self, user_id: str, session_id: str | None = None) -> list[str]:
        """Evict one live session (or, with None, all of the user's) and start its cool-down.

        Returns the ids of the sessions evicted. The evicted player's next
        heartbeat is refused with ``Outcome.EVICTED`` until the cool-down
        ends; other sessions are untouched. A session that is not live is
        left alone (no cool-down, nothing written).
        """
        require_id(user_id, "userId")
        if session_id is not None:
            require_id(session_id, "sessionId")
        user = self.keys.user(user_id)
        evicted = [
            _text(s)
            for s in self._run(
                EVICT,
                [user.sessions, user.details, user.evicted],
                [session_id or "", self.eviction_cooldown_seconds * 1000, self.session_ttl_ms],
            )
        ]
        if evicted:
            left = self.client.zcount(user.sessions, f"({self._now_ms() - self.session_ttl_ms}", "+inf")
            self._forget(user_id, evicted, user_has_sessions=left > 0, evicted=len(evicted))
        logger.info(
            "sessions evicted", userId=user_id, sessionIds=evicted, cooldownSeconds=self.eviction_cooldown_seconds
        )
        return evicted

    def live_users(self, offset: int = 0, count: int = 50, *, at_limit: bool = False) -> tuple[int, list[LiveUser]]:
        """A page of live users (``at_limit``: only those at their limit), most recent heartbeat first, and how many."""
        since = self._now_ms() - self.session_ttl_ms
        index = self.keys.users_at_limit if at_limit else self.keys.live_users
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(index, f"({since}", "+inf")
        pipe.zrevrangebyscore(index, "+inf", f"({since}", start=offset, num=count, withscores=True)
        total, rows = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for raw_uid, _ in rows:
            pipe.zcount(self.keys.user(_text(raw_uid)).sessions, f"({since}", "+inf")
        counts = pipe.execute() if rows else []
        return total, [
            LiveUser(_text(uid), _ms_to_datetime(last), n) for (uid, last), n in zip(rows, counts, strict=True)
        ]

    def live_counts(self) -> tuple[int, int]:
        """Live users and live sessions across all users (two ZCOUNTs)."""
        since = self._now_ms() - self.session_ttl_ms
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(self.keys.live_users, f"({since}", "+inf")
        pipe.zcount(self.keys.live_sessions, f"({since}", "+inf")
        users, sessions = pipe.execute()
        return users, sessions

    def stats(self) -> ServiceStats:
        """Live users, live sessions and users at their limit, across all users.

        Three ZCOUNTs, O(log n) each: users at their limit are kept by the
        activity batches (the latest heartbeat of each account says whether
        it was full), never recounted here.
        """
        since = self._now_ms() - self.session_ttl_ms
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(self.keys.live_users, f"({since}", "+inf")
        pipe.zcount(self.keys.live_sessions, f"({since}", "+inf")
        pipe.zcount(self.keys.users_at_limit, f"({since}", "+inf")
        live_users, live_sessions, at_limit = pipe.execute()
        return ServiceStats(live_users, live_sessions, at_limit)

    def activity(self, minutes: int = 60) -> list[MinuteActivity]:
        """Per-minute counters of the last ``minutes`` minutes, oldest first."""
        current = int(time.time() // 60)
        epoch_minutes = list(range(current - minutes + 1, current + 1))
        pipe = self.client.pipeline(transaction=False)
        for m in epoch_minutes:
            pipe.hgetall(self.keys.minute(m))
        rows = []
        for m, raw in zip(epoch_minutes, pipe.execute(), strict=True):
            counters = {_text(k): int(v) for k, v in raw.items()}
            rows.append(
                MinuteActivity(
                    minute=datetime.fromtimestamp(m * 60, tz=UTC),
                    heartbeats=counters.get("heartbeats", 0),
                    refused=counters.get("refused", 0),
                    evicted=counters.get("evicted", 0),
                    peak_sessions=counters.get("peak", 0),
                )
            )
        return rows

    def key_count_and_memory(self) -> tuple[int, int]:
        """How many keys the service holds under its prefix, and their bytes (MEMORY USAGE)."""
        count = used = 0
        for batch in self._batched(self.client.scan_iter(match=self.keys.pattern, count=1000), 500):
            pipe = self.client.pipeline(transaction=False)
            for key in batch:
                pipe.memory_usage(key)
            for size in pipe.execute():
                count += 1
                used += size or 0
        return count, used

    def purge(self) -> int:
        """Delete every key under the prefix; returns how many were deleted."""
        deleted = 0
        for batch in self._batched(self.client.scan_iter(match=self.keys.pattern, count=1000), 500):
            deleted += self.client.unlink(*batch)
        logger.warning("keys purged", prefix=self.keys.prefix, deleted=deleted)
        return deleted

    def flush_activity(self) -> int:
        """Write the activity noted since the last flush to the shared keys; return the sessions written.

        The flusher thread calls this every ``activity_flush_seconds`` and at
        exit. A batch that cannot be written (Redis down) is dropped with a
        warning: each of its sessions is written again by its next heartbeat.
        """
        # One flush at a time: when this returns, everything noted before it
        # is written, even what the flusher thread had just taken.
        with self._flush_lock:
            batch = self.pending_activity.take()
            return self._write_activity(batch) if batch else 0

    def _write_activity(self, batch: ActivityBatch) -> int:
        shared = [self.keys.live_users, self.keys.live_sessions, self.keys.ended_sessions]
        minutes = sorted(batch.counts)
        sessions = [value for member, (uid, heard) in batch.sessions.items() for value in (uid, member, heard)]
        users = [value for uid, (heard, full) in batch.users.items() for value in (uid, heard, int(full))]
        # Sessions and accounts go with the newest minute, in chunks (each chunk
        # bounds how long one call holds Redis); counts with the first chunk.
        chunks = list(
            zip_longest(_chunks(sessions, 3 * ACTIVITY_CHUNK), _chunks(users, 3 * ACTIVITY_CHUNK), fillvalue=[])
        ) or [([], [])]
        calls = []
        for minute in minutes:
            heartbeats, refused = batch.counts[minute]
            for n, (session_chunk, user_chunk) in enumerate(chunks if minute == minutes[-1] else [([], [])]):
                counts = [heartbeats, refused] if n == 0 else [0, 0]
                calls.append(
                    ScriptCall(
                        RECORD_ACTIVITY,
                        [*shared, self.keys.minute(minute), self.keys.users_at_limit],
                        [
                            self.session_ttl_ms,
                            MINUTE_KEY_TTL_SECONDS,
                            *counts,
                            len(session_chunk) // 3,
                            *session_chunk,
                            *user_chunk,
                        ],
                    )
                )
        try:
            written = self.activity_scripts.run(calls)
        except RedisError:
            logger.warning("activity flush failed", sessions=len(batch.sessions), exc_info=True)
            return 0
        return sum(int(n) for n in written)

    def check_ready(self) -> Readiness:
        """Exercise the heartbeat's own write path, as readiness probes must.

        A PING alone says yes to a Redis at ``maxmemory`` or to a replica
        after a failover, while every heartbeat fails: so this runs the admit
        script itself on a probe key of this process's own, which expires
        within seconds and is never a user's. Scripts Redis lost (a restart)
        are loaded first, since no heartbeat arrives while the probe says no.
        """
        try:
            self.client.ping()
            reloaded = not self.scripts_loaded()
            if reloaded:
                self.load_scripts()
            probe = self.keys.probe(f"{socket.gethostname()}:{os.getpid()}")
            self._run(ADMIT, probe.as_list(), ["canary", "canary", PROBE_LIMIT, PROBE_TTL_MS])
        except ResponseError as exc:
            return Readiness(False, "redis_refuses_writes", f"Redis refuses the heartbeat's writes: {exc}")
        except RedisError as exc:
            return Readiness(False, "redis_unreachable", f"Redis does not answer: {exc}")
        return Readiness(True, scripts_reloaded=reloaded)

    def ping(self) -> bool:
        """Whether Redis answers (raises the connection error when it does not)."""
        return bool(self.client.ping())

    def scripts_loaded(self) -> bool:
        """Whether Redis has every script of the service in its cache."""
        return scripts_loaded(self.client, ALL_SCRIPTS)

    def load_scripts(self) -> None:
        """Load every script into Redis' cache."""
        load_scripts(self.client, ALL_SCRIPTS)

    def server_info(self) -> dict[str, Any]:
        """Redis' version and mode, from INFO server."""
        info = self.client.info("server")
        return {"redis_version": info.get("redis_version"), "redis_mode": info.get("redis_mode")}

    # --- Internals -----------------------------------------------------------

    def _minute_key(self) -> str:
        # The API server's clock names the minute; a skewed clock only moves a
        # count into a neighbouring minute of the chart, never a limit.
        return self.keys.minute(int(time.time() // 60))

    def _now_ms(self) -> int:
        sec, usec = self.client.time()
        return sec * 1000 + usec // 1000

    def _forget(self, user_id: str, session_ids: list[str], *, user_has_sessions: bool, evicted: int = 0) -> None:
        """Take ended sessions out of the activity keys, and out of this process's pending batch."""
        members = [f"{user_id}\x00{s}" for s in session_ids]
        self.pending_activity.discard(members)
        self._run(
            END_SESSIONS,
            [
                self.keys.live_users,
                self.keys.live_sessions,
                self.keys.ended_sessions,
                self._minute_key(),
                self.keys.users_at_limit,
            ],
            [user_id, int(user_has_sessions), evicted, self.session_ttl_ms, MINUTE_KEY_TTL_SECONDS, *members],
        )

    def _run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        return self.scripts.run([ScriptCall(script, keys, args)])[0]

    def _run_guarded(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        """``_run`` behind the circuit breaker: raises ``CircuitOpenError`` at once while it is open."""
        if self.breaker is None:
            return self._run(script, keys, args)
        self.breaker.before_call()
        try:
            reply = self._run(script, keys, args)
        except (RedisConnectionError, RedisTimeoutError):
            self.breaker.record_failure()
            raise
        except ResponseError:
            # Redis answered: it is up, whatever the error (OOM, read-only, a script bug).
            self.breaker.record_success()
            raise
        self.breaker.record_success()
        return reply

    @staticmethod
    def _batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for item in items:
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch
