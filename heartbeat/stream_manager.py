"""StreamManager: every Redis access of StreamLimit goes through this class."""

from __future__ import annotations

import dataclasses
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

import orjson
import structlog
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from heartbeat.activity import FLUSHER, REFUSALS_KEPT, ActivityBatch, ActivityBuffer, Refusal
from heartbeat.breaker import CircuitBreaker
from heartbeat.keys import KeyLayout
from heartbeat.lua import LuaScript, ScriptCall, ScriptRunner, load_scripts, scripts_loaded
from heartbeat.validation import id_error, require_device_name, require_id

logger = structlog.get_logger(__name__)

# Per-minute activity is kept a little over the hour the dashboard charts.
MINUTE_KEY_TTL_SECONDS = 2 * 3600
MIN_LIMIT_OVERRIDE = 1
MAX_LIMIT_OVERRIDE = 50
LIMIT_POLICIES = ("reject_new", "replace_oldest")
# The longest block support may put on an account's new sessions.
MAX_BLOCK_SECONDS = 7 * 86_400
# Sessions (or accounts) per record_activity (record_accounts) call: bounds how long one call holds Redis.
ACTIVITY_CHUNK = 1000
# Support's memory of accounts: "seen in the last day" and the prefix search,
# refusals kept a day, the daily sharing signals kept two days.
SEEN_MS = 86_400_000
REFUSALS_TTL_SECONDS = 86_400
DAY_KEY_TTL_SECONDS = 2 * 86_400
# The readiness canary: a session on a probe key of the process's own, gone
# soon after the probes stop; a limit no number of processes reaches.
PROBE_TTL_MS = 10_000
PROBE_LIMIT = 1_000_000

ADMIT = LuaScript.load("admit")
RECORD_ACTIVITY = LuaScript.load("record_activity")
RECORD_ACCOUNTS = LuaScript.load("record_accounts")
END_SESSIONS = LuaScript.load("end_sessions")
STOP = LuaScript.load("stop")
EVICT = LuaScript.load("evict")
ALL_SCRIPTS = [ADMIT, RECORD_ACTIVITY, RECORD_ACCOUNTS, END_SESSIONS, STOP, EVICT]


class Outcome(enum.Enum):
    """What a heartbeat got."""

    ALLOWED = "allowed"
    LIMIT_REACHED = "limit_reached"
    EVICTED = "evicted"
    STOPPED = "stopped"
    REPLACED = "replaced"
    BLOCKED = "blocked"


_OUTCOMES = {
    0: Outcome.ALLOWED,
    1: Outcome.ALLOWED,
    2: Outcome.LIMIT_REACHED,
    3: Outcome.EVICTED,
    4: Outcome.STOPPED,
    5: Outcome.REPLACED,
    6: Outcome.BLOCKED,
}


@dataclass(frozen=True)
class HeartbeatResult:
    """The answer to one heartbeat."""

    outcome: Outcome
    active_sessions: int
    limit: int
    new_session: bool
    pruned: int
    limit_source: str = "default"
    replaced: tuple[str, ...] = ()

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
    device_name: str | None = None


@dataclass(frozen=True)
class UserLimit:
    """A user's limit and where it comes from (``source``: override, token, plan or default).

    Without an override, the limit is what the user's latest allowed heartbeat
    asked for (its token's maxStreams or plan), while a session is live.
    """

    limit: int
    override: int | None
    default: int
    source: str = "default"


@dataclass(frozen=True)
class LiveUser:
    """One row of the live-user list."""

    user_id: str
    last_heartbeat_at: datetime
    active_sessions: int
    limit: int | None = None


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


@dataclass(frozen=True)
class FoundUser:
    """An account found by its id's prefix among those heard in the last day."""

    user_id: str
    last_heartbeat_at: datetime
    watching: bool


@dataclass(frozen=True)
class RecentRefusal:
    """A refused heartbeat of an account, newest first on its page."""

    at: datetime
    session_id: str
    stream_id: str
    device_name: str
    code: str


@dataclass(frozen=True)
class AccountSignal:
    """An account and its count on a sharing signal (refusals, or distinct sessions, in a day)."""

    user_id: str
    count: int


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
        plan_limits: dict[str, int] | None = None,
        limit_policy: str = "reject_new",
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
        self.plan_limits = dict(plan_limits or {})
        if limit_policy not in LIMIT_POLICIES:
            raise ValueError(f"limit_policy must be one of {LIMIT_POLICIES}, got {limit_policy!r}")
        self.replace_oldest = limit_policy == "replace_oldest"
        self._warned_plans: set[str] = set()
        self.pending_activity = ActivityBuffer()
        self._flush_lock = threading.Lock()
        self._flusher_pid = 0

    # --- The player's side ---------------------------------------------------

    def asked_limit(self, max_streams: int | None = None, plan: str | None = None) -> tuple[int, str]:
        """The limit a heartbeat asks for, and its source, before any staff override.

        The token's ``maxStreams``, else the plan's limit (``PLAN_LIMITS``), else
        the default. An unknown plan falls back to the default, with a metric
        and one warning line per plan and process (plans come from signed
        tokens, so the set of names stays small).
        """
        if max_streams is not None:
            return max_streams, "token"
        if plan is not None:
            if plan in self.plan_limits:
                return self.plan_limits[plan], "plan"
            # Imported here: heartbeat.metrics reads the StreamManager at import.
            from heartbeat.metrics import UNKNOWN_PLANS

            UNKNOWN_PLANS.inc()
            if plan not in self._warned_plans and len(self._warned_plans) < 100:
                self._warned_plans.add(plan)
                logger.warning("unknown plan, default limit used", plan=plan, limit=self.default_limit)
        return self.default_limit, "default"

    def admit(
        self,
        user_id: str,
        stream_id: str,
        session_id: str,
        *,
        device_name: str | None = None,
        max_streams: int | None = None,
        plan: str | None = None,
    ) -> HeartbeatResult:
        """Record a heartbeat and say whether this session may play.

        One round trip, allowed or refused: the admit script, which also
        applies the staff override and, with ``replace_oldest``, replaces the
        account's oldest session. What the heartbeat did is noted for the next
        activity flush.
        """
        require_id(user_id, "userId")
        require_id(stream_id, "streamId")
        require_id(session_id, "sessionId")
        if device_name is not None:
            require_device_name(device_name)
        asked, asked_source = self.asked_limit(max_streams, plan)
        reply = self._run_guarded(
            ADMIT,
            self.keys.user(user_id).as_list(),
            [
                session_id,
                stream_id,
                asked,
                asked_source,
                self.session_ttl_ms,
                device_name or "",
                int(self.replace_oldest),
            ],
        )
        code, active, limit, pruned, now_ms = (int(v) for v in reply[:5])
        replaced = tuple(_text(s) for s in reply[6:])
        result = HeartbeatResult(_OUTCOMES[code], active, limit, code == 1, pruned, _text(reply[5]), replaced)
        if replaced:
            self._forget(user_id, list(replaced), user_has_sessions=True)
            logger.info("sessions replaced", userId=user_id, sessionIds=list(replaced), bySessionId=session_id)
        self.pending_activity.note(
            user_id,
            session_id,
            now_ms,
            at_limit=active >= limit,
            new_session=result.new_session,
            refusal=None
            if result.allowed
            else Refusal(now_ms, session_id, stream_id, device_name or "", result.outcome.value),
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
                limitSource=result.limit_source,
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

    def stop(self, user_id: str, session_id: str, *, from_other_screen: bool = False) -> bool:
        """Free a session's slot at once; True if it was live. Idempotent.

        ``from_other_screen``: the account stopped it from another player, so
        its next heartbeat is refused (``Outcome.STOPPED``) for a session TTL.
        A session that was not live changes nothing in Redis: no shared key
        grows with stops of made-up sessions.
        """
        require_id(user_id, "userId")
        require_id(session_id, "sessionId")
        user = self.keys.user(user_id)
        was_live, left = (
            int(v)
            for v in self._run_guarded(
                STOP,
                [user.sessions, user.details, user.stopped],
                [session_id, self.session_ttl_ms, int(from_other_screen)],
            )
        )
        member = f"{user_id}\x00{session_id}"
        if was_live:
            self._forget(user_id, [session_id], user_has_sessions=left > 0)
        else:
            self.pending_activity.discard([member])
        logger.info(
            "stop stream request",
            userId=user_id,
            sessionId=session_id,
            wasLive=bool(was_live),
            fromOtherScreen=from_other_screen,
        )
        return bool(was_live)

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
        return self._live_sessions(sec * 1000 + usec // 1000, members, details)

    def limit_for(self, user_id: str, max_streams: int | None = None, plan: str | None = None) -> UserLimit:
        """The user's limit for a token with these claims, and its source (override first)."""
        require_id(user_id, "userId")
        raw = self.client.get(self.keys.user(user_id).limit)
        asked, source = self.asked_limit(max_streams, plan)
        if raw is not None:
            return UserLimit(int(raw), int(raw), self.default_limit, "override")
        return UserLimit(asked, None, self.default_limit, source)

    def _live_sessions(self, now: int, members: list[Any], details: dict[Any, Any]) -> list[SessionInfo]:
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
                    device_name=details.get(f"d:{sid}"),
                )
            )
        found.sort(key=lambda s: s.started_at)
        return found

    def get_limit(self, user_id: str) -> UserLimit:
        """The user's limit and where it comes from: the override, else what the latest heartbeat asked for."""
        require_id(user_id, "userId")
        user = self.keys.user(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(user.limit)
        pipe.hmget(user.details, "limit", "limitSource")
        raw, (asked, source) = pipe.execute()
        if raw is not None:
            return UserLimit(int(raw), int(raw), self.default_limit, "override")
        if asked is not None and source is not None:
            return UserLimit(int(asked), None, self.default_limit, _text(source))
        return UserLimit(self.default_limit, None, self.default_limit, "default")

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

    def limit_overrides(self) -> Iterator[tuple[str, int]]:
        """Every user's limit override, as (user id, limit), in no particular order.

        Read from the per-user keys the admission script reads (not the
        dashboard's mirror), with SCAN: O(keys under the prefix), for backups.
        """
        for batch in self._batched(self.client.scan_iter(match=self.keys.limit_pattern, count=1000), 500):
            found = [(key, self._user_of_limit_key(key)) for key in batch]
            found = [(key, user_id) for key, user_id in found if user_id is not None]
            pipe = self.client.pipeline(transaction=False)
            for key, _ in found:
                pipe.get(key)  # not MGET: the keys are in different cluster slots
            for (_, user_id), raw in zip(found, pipe.execute() if found else [], strict=True):
                if raw is not None:  # cleared between SCAN and GET
                    yield user_id, int(raw)

    def _user_of_limit_key(self, key: bytes) -> str | None:
        try:
            user_id = self.keys.user_of_limit_key(_text(key))
        except UnicodeDecodeError:
            return None
        return user_id if user_id is not None and id_error(user_id) is None else None

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
        if count < 1:
            raise ValueError("count must be at least 1")
        since = self._now_ms() - self.session_ttl_ms
        index = self.keys.users_at_limit if at_limit else self.keys.live_users
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(index, f"({since}", "+inf")
        # By rank, not by score with LIMIT: Redis reaches rank r in O(log n), but
        # skips an offset one entry at a time, so deep pages would cost O(offset).
        # Entries older than the TTL (not trimmed yet) rank after every live one,
        # so the page holds live entries only, once those are dropped.
        pipe.zrevrange(index, offset, offset + count - 1, withscores=True)
        total, rows = pipe.execute()
        rows = [(uid, last) for uid, last in rows if last > since]
        pipe = self.client.pipeline(transaction=False)
        for raw_uid, _ in rows:
            user = self.keys.user(_text(raw_uid))
            pipe.zcount(user.sessions, f"({since}", "+inf")
            pipe.get(user.limit)
            pipe.hget(user.details, "limit")
        replies = pipe.execute() if rows else []
        found = []
        for n, (uid, last) in enumerate(rows):
            count, override, asked = replies[3 * n : 3 * n + 3]
            # As get_limit: the override, else what the latest heartbeat asked for.
            limit = int(override) if override is not None else int(asked) if asked is not None else None
            found.append(LiveUser(_text(uid), _ms_to_datetime(last), count, limit or self.default_limit))
        return total, found

    def find_users(self, prefix: str, count: int = 50) -> list[FoundUser]:
        """Accounts heard in the last day whose id starts with ``prefix``, in id order (at most ``count``).

        One ZRANGEBYLEX on the prefix index (O(log n + count)), then two
        ZSCOREs per account found.
        """
        raw = prefix.encode()
        # 0xff never occurs in UTF-8, so it closes the range of every id with this prefix.
        ids = self.client.zrangebylex(self.keys.seen_users_by_name, b"[" + raw, b"[" + raw + b"\xff", 0, count)
        if not ids:
            return []
        since = self._now_ms() - self.session_ttl_ms
        pipe = self.client.pipeline(transaction=False)
        for uid in ids:
            pipe.zscore(self.keys.seen_users, uid)
            pipe.zscore(self.keys.live_users, uid)
        scores = pipe.execute()
        found = []
        for n, uid in enumerate(ids):
            seen, live = scores[2 * n], scores[2 * n + 1]
            if seen is not None:
                found.append(FoundUser(_text(uid), _ms_to_datetime(seen), live is not None and live > since))
        return found

    def block_new_sessions(self, user_id: str, seconds: int) -> datetime:
        """Refuse every new session of the account for ``seconds`` (1 s to 7 days); returns when it ends.

        Live sessions play on (evict them first to stop them); a new session
        gets ``Outcome.BLOCKED``. A second block replaces the first.
        """
        require_id(user_id, "userId")
        if not 1 <= seconds <= MAX_BLOCK_SECONDS:
            raise ValueError(f"A block lasts 1 to {MAX_BLOCK_SECONDS} seconds.")
        until = self._now_ms() + seconds * 1000
        self.client.set(self.keys.user(user_id).blocked, until, px=seconds * 1000)
        logger.info("new sessions blocked", userId=user_id, seconds=seconds)
        return _ms_to_datetime(until)

    def unblock_new_sessions(self, user_id: str) -> bool:
        """Lift a block on the account's new sessions; True if there was one."""
        require_id(user_id, "userId")
        lifted = bool(self.client.delete(self.keys.user(user_id).blocked))
        logger.info("new sessions unblocked", userId=user_id, wasBlocked=lifted)
        return lifted

    def blocked_until(self, user_id: str) -> datetime | None:
        """When support's block on the account's new sessions ends, if there is one."""
        require_id(user_id, "userId")
        raw = self.client.get(self.keys.user(user_id).blocked)
        return None if raw is None else _ms_to_datetime(int(raw))

    def cooldowns(self, user_id: str) -> list[tuple[str, float]]:
        """The account's evicted sessions still cooling down, with the seconds left, soonest free first."""
        require_id(user_id, "userId")
        now = self._now_ms()
        ending = self.client.zrangebyscore(self.keys.user(user_id).evicted, f"({now}", "+inf", withscores=True)
        return [(_text(sid), (end - now) / 1000) for sid, end in ending]

    def last_heard(self, user_id: str) -> datetime | None:
        """When the account's latest heartbeat came, if it came in the last day."""
        require_id(user_id, "userId")
        seen = self.client.zscore(self.keys.seen_users, user_id)
        return None if seen is None else _ms_to_datetime(seen)

    def recent_refusals(self, user_id: str) -> list[RecentRefusal]:
        """The account's latest refused heartbeats (at most 20, from the last day), newest first."""
        require_id(user_id, "userId")
        found = []
        for raw in self.client.lrange(self.keys.refusals(user_id), 0, REFUSALS_KEPT - 1):
            record = orjson.loads(raw)
            found.append(
                RecentRefusal(
                    _ms_to_datetime(record["at_ms"]),
                    record["session_id"],
                    record["stream_id"],
                    record["device_name"],
                    record["code"],
                )
            )
        return found

    def sharing_signals(self, day: int, count: int = 20) -> tuple[list[AccountSignal], list[AccountSignal]]:
        """The accounts refused most often, and with the most distinct sessions, on a UTC day (days since 1970)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrevrange(self.keys.refused_on(day), 0, count - 1, withscores=True)
        pipe.zrevrange(self.keys.distinct_sessions_on(day), 0, count - 1, withscores=True)
        refused, distinct = pipe.execute()
        return (
            [AccountSignal(_text(uid), int(n)) for uid, n in refused],
            [AccountSignal(_text(uid), int(n)) for uid, n in distinct],
        )

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
        activity_calls = len(calls)
        calls += self._account_records(batch)
        try:
            written = self.activity_scripts.run(calls)
        except RedisError:
            logger.warning("activity flush failed", sessions=len(batch.sessions), exc_info=True)
            return 0
        return sum(int(n) for n in written[:activity_calls])

    def _account_records(self, batch: ActivityBatch) -> list[ScriptCall]:
        """The ``record_accounts`` calls of a batch: seen accounts, refusals, new sessions; chunked by account."""
        day = int(time.time() // 86_400)
        shared = [
            self.keys.seen_users,
            self.keys.seen_users_by_name,
            self.keys.refused_on(day),
            self.keys.distinct_sessions_on(day),
        ]
        seen = list(batch.users.items())
        refusals = list(batch.refusals.items())
        new_sessions = list(batch.new_sessions.items())
        calls = []
        for start in range(0, max(len(seen), len(refusals), len(new_sessions)), ACTIVITY_CHUNK):
            end = start + ACTIVITY_CHUNK
            keys, args = list(shared), [SEEN_MS, DAY_KEY_TTL_SECONDS, REFUSALS_TTL_SECONDS, REFUSALS_KEPT]
            args += [len(seen[start:end]), *(v for uid, (heard, _) in seen[start:end] for v in (uid, heard))]
            args.append(len(refusals[start:end]))
            for uid, kept in refusals[start:end]:
                keys.append(self.keys.refusals(uid))
                args += [uid, len(kept), *(orjson.dumps(dataclasses.asdict(r)).decode() for r in kept)]
            args.append(len(new_sessions[start:end]))
            for uid, sids in new_sessions[start:end]:
                keys.append(self.keys.sessions_seen_on(day, uid))
                args += [uid, len(sids), *sids]
            calls.append(ScriptCall(RECORD_ACCOUNTS, keys, args))
        return calls

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
            self._run(ADMIT, probe.as_list(), ["canary", "canary", PROBE_LIMIT, "default", PROBE_TTL_MS, "", 0])
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
