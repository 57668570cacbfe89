"""StreamManager: the player path (admit, stop) and every write to Redis.

The reads that serve the dashboard and the commands live in
``heartbeat/live_state.py`` (``StreamManager.reads``), over the same keys and
connection.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from itertools import zip_longest
from typing import Any

import orjson
import structlog
from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from heartbeat.activity import FLUSHER, REFUSALS_KEPT, ActivityBatch, ActivityBuffer, Refusal
from heartbeat.breaker import CircuitBreaker
from heartbeat.keys import KeyLayout
from heartbeat.live_state import (
    LiveStateReader,
    SessionInfo,
    UserLimit,
    as_text,
    batched,
    ms_to_datetime,
    redis_now_ms,
    sessions_from_admit_reply,
)
from heartbeat.lua import FollowUp, LuaScript, ScriptCall, load_scripts, script_runner_for, scripts_loaded
from heartbeat.validation import require_device_name, require_id

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
RECORD_MINUTE = LuaScript.load("record_minute")
END_SESSIONS = LuaScript.load("end_sessions")
STOP = LuaScript.load("stop")
EVICT = LuaScript.load("evict")
ALL_SCRIPTS = [ADMIT, RECORD_ACTIVITY, RECORD_ACCOUNTS, RECORD_MINUTE, END_SESSIONS, STOP, EVICT]


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
# The only refusal whose reply may list the account's sessions (admit.lua's ARGV[8]).
_LIMIT_REACHED_CODE = 2
# stop.lua's first value for a live session played from another network than the stop's.
_STOP_FROM_OTHER_NETWORK = 2


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
    # The account's live sessions, oldest first: only for a refusal for the limit, when asked.
    sessions: list[SessionInfo] | None = None

    @property
    def allowed(self) -> bool:
        """Whether the player may keep playing."""
        return self.outcome is Outcome.ALLOWED


@dataclass(frozen=True)
class Readiness:
    """Whether a heartbeat could be admitted now, and if not, why."""

    ready: bool
    reason: str | None = None  # "redis_unreachable" or "redis_refuses_writes"
    detail: str = ""
    scripts_reloaded: bool = False


class LimitOutOfRangeError(ValueError):
    """Raised when a limit override is outside 1..50."""


class StopFromOtherNetworkError(Exception):
    """Raised when a stop names a network and the session is live, played from another one (stop.lua)."""


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


class StreamManager:
    """Admits, stops and evicts sessions, and reads them back, on Redis.

    The check-and-admit step is one Lua script (``admit.lua``), so the limit
    holds however many API servers run at once; the time is Redis' own. What
    heartbeats did is written to the shared activity keys in batches (see
    ``heartbeat/activity.py``), every ``activity_flush_seconds``.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        key_prefix: str,
        default_limit: int,
        session_ttl_seconds: int,
        eviction_cooldown_seconds: int,
        activity_flush_seconds: float = 1.0,
        plan_limits: dict[str, int] | None = None,
        limit_policy: str = "reject_new",
        breaker: CircuitBreaker | None = None,
        activity_shards: int = 16,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
    ) -> None:
        self.client = client
        # Guards the player path (admit, stop); staff pages and probes always ask Redis.
        self.breaker = breaker
        self.scripts = script_runner_for(client)
        # The activity flusher has connections of its own: a flush waiting on a
        # stalled Redis must not take the connection a heartbeat would reuse,
        # leaving it a new one whose handshake times out before its script is sent.
        self.activity_scripts = script_runner_for(client)
        self.keys = KeyLayout(key_prefix, activity_shards)
        # REDIS_WAIT_REPLICAS: a new admission waits for replicas (see admit).
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.default_limit = default_limit
        self.session_ttl_seconds = session_ttl_seconds
        self.session_ttl_ms = session_ttl_seconds * 1000
        # The dashboard's and the commands' reads, over the same keys and connection.
        self.reads = LiveStateReader(
            client, self.keys, default_limit=default_limit, session_ttl_seconds=session_ttl_seconds
        )
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
        list_sessions_when_full: bool = False,
        network: str = "",
    ) -> HeartbeatResult:
        """Record a heartbeat and say whether this session may play.

        One round trip, allowed or refused: the admit script, which also
        applies the staff override and, with ``replace_oldest``, replaces the
        account's oldest session. With ``list_sessions_when_full``, a refusal
        for the limit carries the account's live sessions (``sessions``),
        read by the same script. ``network``: the client network of the
        heartbeat, kept as the session's own for ``stop``. What the heartbeat
        did is noted for the next activity flush.
        """
        require_id(user_id, "userId")
        require_id(stream_id, "streamId")
        require_id(session_id, "sessionId")
        if device_name is not None:
            require_device_name(device_name)
        asked, asked_source = self.asked_limit(max_streams, plan)
        reply, replicas = self._run_guarded(
            ADMIT,
            self.keys.user_key_list(user_id),
            [
                session_id,
                stream_id,
                asked,
                asked_source,
                self.session_ttl_ms,
                device_name or "",
                int(self.replace_oldest),
                int(list_sessions_when_full),
                network,
            ],
            follow_up=self._wait_for_replicas if self.wait_replicas else None,
        )
        code, active, limit, pruned, now_ms = (int(v) for v in reply[:5])
        if replicas is not None and int(replicas) < self.wait_replicas:
            self._note_short_wait(user_id, session_id, int(replicas))
        replaced: tuple[str, ...] = ()
        sessions = None
        if code == _LIMIT_REACHED_CODE:
            if list_sessions_when_full:
                sessions = sessions_from_admit_reply(now_ms, self.session_ttl_ms, reply[6:])
        else:
            replaced = tuple(as_text(s) for s in reply[6:])
        result = HeartbeatResult(
            _OUTCOMES[code], active, limit, code == 1, pruned, as_text(reply[5]), replaced, sessions
        )
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

    def stop(self, user_id: str, session_id: str, *, from_other_screen: bool = False, network: str = "") -> bool:
        """Free a session's slot at once; True if it was live. Idempotent.

        ``from_other_screen``: the account stopped it from another player, so
        its next heartbeat is refused (``Outcome.STOPPED``) for a session TTL.
        A session that was not live changes nothing in Redis: no shared key
        grows with stops of made-up sessions. ``network`` (a stop without a
        token): raises ``StopFromOtherNetworkError``, changing nothing, when
        the session is live and its latest heartbeat came from another network.
        """
        require_id(user_id, "userId")
        require_id(session_id, "sessionId")
        user = self.keys.user(user_id)
        reply, _ = self._run_guarded(
            STOP,
            [user.sessions, user.details, user.stopped],
            [session_id, self.session_ttl_ms, int(from_other_screen), network],
        )
        was_live, left = (int(v) for v in reply)
        if was_live == _STOP_FROM_OTHER_NETWORK:
            logger.warning("stop refused from another network", userId=user_id, sessionId=session_id)
            raise StopFromOtherNetworkError(session_id)
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

    def limit_for(self, user_id: str, max_streams: int | None = None, plan: str | None = None) -> UserLimit:
        """The user's limit for a token with these claims, and its source (override first)."""
        require_id(user_id, "userId")
        raw = self.client.get(self.keys.user(user_id).limit)
        asked, source = self.asked_limit(max_streams, plan)
        if raw is not None:
            return UserLimit(int(raw), int(raw), self.default_limit, "override")
        return UserLimit(asked, None, self.default_limit, source)

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
        return self.reads.get_limit(user_id)

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
            as_text(s)
            for s in self._run(
                EVICT,
                [user.sessions, user.details, user.evicted],
                [session_id or "", self.eviction_cooldown_seconds * 1000, self.session_ttl_ms],
            )
        ]
        if evicted:
            left = self.client.zcount(user.sessions, f"({redis_now_ms(self.client) - self.session_ttl_ms}", "+inf")
            self._forget(user_id, evicted, user_has_sessions=left > 0, evicted=len(evicted))
        if evicted:
            logger.info(
                "sessions evicted", userId=user_id, sessionIds=evicted, cooldownSeconds=self.eviction_cooldown_seconds
            )
        else:
            logger.info("no live session to evict", userId=user_id, sessionId=session_id)
        return evicted

    def block_new_sessions(self, user_id: str, seconds: int) -> datetime:
        """Refuse every new session of the account for ``seconds`` (1 s to 7 days); returns when it ends.

        Live sessions play on (evict them first to stop them); a new session
        gets ``Outcome.BLOCKED``. A second block replaces the first.
        """
        require_id(user_id, "userId")
        if not 1 <= seconds <= MAX_BLOCK_SECONDS:
            raise ValueError(f"A block lasts 1 to {MAX_BLOCK_SECONDS} seconds.")
        until = redis_now_ms(self.client) + seconds * 1000
        self.client.set(self.keys.user(user_id).blocked, until, px=seconds * 1000)
        logger.info("new sessions blocked", userId=user_id, seconds=seconds)
        return ms_to_datetime(until)

    def unblock_new_sessions(self, user_id: str) -> bool:
        """Lift a block on the account's new sessions; True if there was one."""
        require_id(user_id, "userId")
        lifted = bool(self.client.delete(self.keys.user(user_id).blocked))
        logger.info("new sessions unblocked", userId=user_id, wasBlocked=lifted)
        return lifted

    def purge(self) -> int:
        """Delete every key under the prefix; returns how many were deleted."""
        deleted = 0
        for batch in batched(self.client.scan_iter(match=self.keys.pattern, count=1000), 500):
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
        """One round trip per node: ``record_activity`` and ``record_accounts`` on every shard, then the minute."""
        shards = self.keys.shards
        by_shard: list[tuple[list[Any], list[Any]]] = [([], []) for _ in shards]
        for member, (uid, heard) in batch.sessions.items():
            by_shard[self.keys.shard_number(uid)][0].extend((uid, member, heard))
        for uid, (heard, full) in batch.users.items():
            by_shard[self.keys.shard_number(uid)][1].extend((uid, heard, int(full)))
        calls = []
        # Every shard, touched or not: each trims its expired entries and counts
        # its live sessions, and the minute's peak is their sum.
        for shard, (sessions, users) in zip(shards, by_shard, strict=True):
            keys = [shard.live_users, shard.live_sessions, shard.ended_sessions, shard.users_at_limit]
            # Chunks bound how long one call holds Redis.
            chunks = list(
                zip_longest(_chunks(sessions, 3 * ACTIVITY_CHUNK), _chunks(users, 3 * ACTIVITY_CHUNK), fillvalue=[])
            ) or [([], [])]
            for session_chunk, user_chunk in chunks:
                args = [self.session_ttl_ms, len(session_chunk) // 3, *session_chunk, *user_chunk]
                calls.append((shard, ScriptCall(RECORD_ACTIVITY, keys, args)))
        activity_calls = len(calls)
        account_calls = self._account_records(batch)
        try:
            written = self.activity_scripts.run([call for _, call in calls] + account_calls)
            live: dict[str, int] = {}
            for (shard, _), (_, shard_live) in zip(calls, written[:activity_calls], strict=True):
                live[shard.base] = int(shard_live)  # a shard's last chunk has its count after every write
            minutes = sorted(batch.counts)
            if minutes:
                self._record_minutes(batch, minutes, sum(live.values()))
        except RedisError:
            logger.warning("activity flush failed", sessions=len(batch.sessions), exc_info=True)
            return 0
        return sum(int(n) for n, _ in written[:activity_calls])

    def _record_minutes(self, batch: ActivityBatch, minutes: list[int], live: int) -> None:
        """The batch's per-minute counts, and the live sessions (all shards) as the newest minute's peak."""
        self.activity_scripts.run(
            [
                ScriptCall(
                    RECORD_MINUTE,
                    [self.keys.minute(minute)],
                    [
                        *batch.counts[minute],
                        0,
                        live if minute == minutes[-1] else 0,
                        MINUTE_KEY_TTL_SECONDS,
                    ],
                )
                for minute in minutes
            ]
        )

    def _account_records(self, batch: ActivityBatch) -> list[ScriptCall]:
        """The ``record_accounts`` calls of a batch: seen accounts, refusals, new sessions; by shard, chunked."""
        day = int(time.time() // 86_400)
        shards = self.keys.shards
        seen: list[list[Any]] = [[] for _ in shards]
        refusals: list[list[Any]] = [[] for _ in shards]
        new_sessions: list[list[Any]] = [[] for _ in shards]
        for uid, (heard, _) in batch.users.items():
            seen[self.keys.shard_number(uid)].append((uid, heard))
        for uid, kept in batch.refusals.items():
            refusals[self.keys.shard_number(uid)].append((uid, kept))
        for uid, sids in batch.new_sessions.items():
            new_sessions[self.keys.shard_number(uid)].append((uid, sids))
        calls = []
        for n, shard in enumerate(shards):
            most = max(len(seen[n]), len(refusals[n]), len(new_sessions[n]))
            for start in range(0, most, ACTIVITY_CHUNK):
                end = start + ACTIVITY_CHUNK
                keys = [
                    shard.seen_users,
                    shard.seen_users_by_name,
                    shard.refused_on(day),
                    shard.distinct_sessions_on(day),
                ]
                args = [SEEN_MS, DAY_KEY_TTL_SECONDS, REFUSALS_TTL_SECONDS, REFUSALS_KEPT]
                args += [len(seen[n][start:end]), *(v for uid, heard in seen[n][start:end] for v in (uid, heard))]
                args.append(len(refusals[n][start:end]))
                for uid, kept in refusals[n][start:end]:
                    keys.append(shard.refusals(uid))
                    args += [uid, len(kept), *(orjson.dumps(dataclasses.asdict(r)).decode() for r in kept)]
                args.append(len(new_sessions[n][start:end]))
                for uid, sids in new_sessions[n][start:end]:
                    keys.append(shard.sessions_seen_on(day, uid))
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

    # --- Internals -----------------------------------------------------------

    def _minute_key(self) -> str:
        # The API server's clock names the minute; a skewed clock only moves a
        # count into a neighbouring minute of the chart, never a limit.
        return self.keys.minute(int(time.time() // 60))

    def _forget(self, user_id: str, session_ids: list[str], *, user_has_sessions: bool, evicted: int = 0) -> None:
        """Take ended sessions out of the activity keys, and out of this process's pending batch."""
        members = [f"{user_id}\x00{s}" for s in session_ids]
        self.pending_activity.discard(members)
        shard = self.keys.shard_of(user_id)
        calls = [
            ScriptCall(
                END_SESSIONS,
                [shard.live_users, shard.live_sessions, shard.ended_sessions, shard.users_at_limit],
                [user_id, int(user_has_sessions), self.session_ttl_ms, *members],
            )
        ]
        if evicted:
            calls.append(ScriptCall(RECORD_MINUTE, [self._minute_key()], [0, 0, evicted, 0, MINUTE_KEY_TTL_SECONDS]))
        self.scripts.run(calls)

    def _run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        return self.scripts.run([ScriptCall(script, keys, args)])[0]

    def _run_guarded(
        self, script: LuaScript, keys: list[str], args: list[Any], follow_up: FollowUp | None = None
    ) -> tuple[Any, Any]:
        """One script call behind the circuit breaker: raises ``CircuitOpenError`` at once while it is open.

        Returns the script's reply and the follow-up command's (None without one).
        """
        if self.breaker is not None:
            self.breaker.before_call()
        try:
            replies, followed = self.scripts.run_replies([ScriptCall(script, keys, args)], follow_up=follow_up)
            if isinstance(replies[0], Exception):
                raise replies[0]
        except (RedisConnectionError, RedisTimeoutError):
            if self.breaker is not None:
                self.breaker.record_failure()
            raise
        except ResponseError:
            # Redis answered: it is up, whatever the error (OOM, read-only, a script bug).
            if self.breaker is not None:
                self.breaker.record_success()
            raise
        if self.breaker is not None:
            self.breaker.record_success()
        return replies[0], followed

    def _wait_for_replicas(self, replies: list[Any]) -> tuple[Any, ...] | None:
        """WAIT after an admission of a new session (code 1) only: a repeat heartbeat changes no slot."""
        reply = replies[-1]
        if isinstance(reply, list) and int(reply[0]) == 1:
            return ("WAIT", self.wait_replicas, self.wait_timeout_ms)
        return None

    def _note_short_wait(self, user_id: str, session_id: str, replicas: int) -> None:
        # Imported here: heartbeat.metrics reads the StreamManager at import.
        from heartbeat.metrics import WAIT_REPLICAS_SHORT

        WAIT_REPLICAS_SHORT.inc()
        logger.warning(
            "new session not confirmed by the replicas in time",
            userId=user_id,
            sessionId=session_id,
            replicas=replicas,
            wanted=self.wait_replicas,
            waitMs=self.wait_timeout_ms,
        )
