"""StreamManager: the player path (admit, stop) and every write support and operators make.

What heartbeats did goes to the activity writer (``activity_writer.py``);
the reads that serve the dashboard and the commands are the read model
(``reads.py``), beside it, over the same keys. No Django here: settings
arrive as arguments (``heartbeat.services`` builds one per process).

About 750 lines on purpose: this is the one writer, and every write a player,
support or an operator makes is one method here, next to the breaker,
replica-wait, policy and event rules they share; the policy's document and
decisions (``policy.py``, ``decisions.py``), the events' wire form and
streams (``events.py``, ``event_log.py``) and the activity batches
(``activity_writer.py``) live beside it; about half of the lines are docstrings.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from redis import Redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from heartbeat.limiter import metrics
from heartbeat.limiter.activity import Refusal
from heartbeat.limiter.activity_writer import ActivityWriter
from heartbeat.limiter.decisions import RuleHit, SessionInputs, rule_message
from heartbeat.limiter.event_log import MS_PER_HOUR, EventLog
from heartbeat.limiter.events import EndReason, EventType, timestamp_of
from heartbeat.limiter.ids import require_device_name, require_id
from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.limits import LIMIT_POLICIES, MAX_BLOCK_SECONDS, check_limit
from heartbeat.limiter.new_sessions import NewSessionRate, seconds_left_in_minute
from heartbeat.limiter.outcomes import (
    BY_SCRIPT_CODE,
    HANDED_OFF_CODE,
    LIMIT_REACHED_CODE,
    NEW_SESSION_CODE,
    ROWS,
    TOO_MANY_NEW_SESSIONS_CODE,
    Outcome,
)
from heartbeat.limiter.policy import Policy, policy_from_settings
from heartbeat.limiter.policy_store import PolicyRecord, PolicyStore, PolicyWatcher
from heartbeat.limiter.read_models import SessionInfo, UserLimit, sessions_from_admit_reply, user_limit
from heartbeat.limiter.scripts import ADMIT, ALL_SCRIPTS, EVICT, STOP
from heartbeat.store.breaker import CircuitBreaker
from heartbeat.store.cluster_scripts import script_runner_for
from heartbeat.store.helpers import as_text, batched, ms_to_datetime, redis_now_ms
from heartbeat.store.scripts import FollowUp, LuaScript, ScriptCall, load_scripts, scripts_loaded

logger = structlog.get_logger(__name__)

# The readiness canary: a session on a probe key of the process's own, gone
# soon after the probes stop; a limit no number of processes reaches.
PROBE_TTL_MS = 10_000
PROBE_LIMIT = 1_000_000

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
    # Seconds until the player may try again: only for too_many_new_sessions (429's Retry-After).
    retry_after_seconds: int | None = None
    # Under a policy: the rule that refused a new session, and the id support finds the decision by.
    rule: RuleHit | None = None
    decision_id: str | None = None
    # The words for a refusal by ``rule`` (None: the outcome's own), and the device a hand-off moved to.
    message: str | None = None
    handed_off_to: str | None = None
    # Sessions this admission ended, each with why: "replaced" (takeover, replace_oldest) or "handed_off".
    ended: tuple[tuple[str, str], ...] = ()
    network_flagged: bool = False

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


class StopFromOtherNetworkError(Exception):
    """Raised when a stop names a network and the session is live, played from another one (stop.lua)."""


class StreamManager:
    """Admits, stops and evicts sessions, blocks accounts and sets their limits, on Redis.

    The check-and-admit step is one Lua script (``admit.lua``), so the limit
    holds however many API servers run at once; the time is Redis' own. What
    heartbeats did goes to the ``ActivityWriter`` (``self.activity``), which
    writes it to the shared activity keys every ``activity_flush_seconds``.
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
        activity_memory_budget_mb: int = 0,
        new_sessions_per_network_per_minute: int = 0,
        events_enabled: bool = False,
        events_retention_hours: int = 72,
        events_memory_budget_mb: int = 0,
    ) -> None:
        self.client = client
        # Guards the player path (admit, stop); staff pages and probes always ask Redis.
        self.breaker = breaker
        self.scripts = script_runner_for(client)
        self.keys = KeyLayout(key_prefix, activity_shards)
        # REDIS_WAIT_REPLICAS: a new admission waits for replicas (see admit).
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
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
        # NEW_SESSIONS_PER_NETWORK_PER_MINUTE, for anonymous players (see admit).
        self.new_sessions = NewSessionRate(client, self.keys, new_sessions_per_network_per_minute)
        # The policy document in force (the settings' own until an operator applies one).
        self.policy_store = PolicyStore(client, self.keys, on_applied=self._policy_applied)
        self.policies = PolicyWatcher(
            self.policy_store, policy_from_settings(default_limit, self.plan_limits), breaker=breaker
        )
        # EVENTS_ENABLED, EVENTS_RETENTION_HOURS: the event streams (heartbeat/limiter/event_log.py).
        self.events = EventLog(
            self.keys,
            enabled=events_enabled,
            retention_ms=events_retention_hours * MS_PER_HOUR,
            memory_budget_mb=events_memory_budget_mb,
        )
        # The activity flusher has connections of its own (see ActivityWriter).
        self.activity = ActivityWriter(
            self.keys,
            request_scripts=self.scripts,
            flush_scripts=script_runner_for(client),
            session_ttl_ms=self.session_ttl_ms,
            flush_seconds=activity_flush_seconds,
            analytics_budget_mb=activity_memory_budget_mb,
            events=self.events,
        )

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
            metrics.UNKNOWN_PLANS.inc()
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
        limit_new_sessions_of_network: bool = False,
        inputs: SessionInputs | None = None,
    ) -> HeartbeatResult:
        """Record a heartbeat and say whether this session may play.

        One round trip, allowed or refused: the admit script, which also
        applies the staff override and, with ``replace_oldest``, replaces the
        account's oldest session. With ``list_sessions_when_full``, a refusal
        for the limit carries the account's live sessions (``sessions``),
        read by the same script. ``network``: the client network of the
        heartbeat, kept as the session's own for ``stop``. What the heartbeat
        did is noted for the next activity flush.

        Under a policy document (or for a hand-off, ``inputs.replaces``), the
        same script decides by every rule of the account's plan (device
        class, pool, weight, networks, same-device takeover) with the
        session's ``inputs``; a refusal for a limit names its ``rule``.
        """
        require_id(user_id, "userId")
        require_id(stream_id, "streamId")
        require_id(session_id, "sessionId")
        if device_name is not None:
            require_device_name(device_name)
        policy = self.policies.policy()
        by_policy = policy.is_applied or bool(inputs and inputs.replaces)
        if by_policy:
            asked, asked_source, policy_args = self._policy_args(policy, stream_id, max_streams, plan, inputs)
        else:
            asked, asked_source = self.asked_limit(max_streams, plan)
            policy_args = []
        rated = limit_new_sessions_of_network and bool(network) and self.new_sessions.enabled
        # This process's clock only decides how long it remembers a network over its rate.
        over_rate = rated and self.new_sessions.is_over(network, int(time.time() * 1000))
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
                int(over_rate),
                *policy_args,
            ],
            follow_up=self._wait_for_replicas if self.wait_replicas else None,
        )
        code, active, limit, pruned, now_ms = (int(v) for v in reply[:5])
        rule, flags, extra = None, 0, reply[6:]
        if by_policy and code in (0, 1, LIMIT_REACHED_CODE):
            if name := as_text(reply[6]):
                rule = RuleHit(name, int(reply[7]), int(reply[8]))
            flags, extra = int(reply[9]), reply[10:]
        if rated and code == NEW_SESSION_CODE and self.new_sessions.count_new_session(network, now_ms):
            # One new session too many for its network this minute: ended at once, told to retry later.
            user = self.keys.user(user_id)
            self._run(STOP, [user.sessions, user.details, user.stopped], [session_id, self.session_ttl_ms, 0, ""])
            code, active = TOO_MANY_NEW_SESSIONS_CODE, active - 1
        if replicas is not None and int(replicas) < self.wait_replicas:
            self._note_short_wait(user_id, session_id, int(replicas))
        replaced: tuple[str, ...] = ()
        ended: tuple[tuple[str, str], ...] = ()
        sessions = None
        handed_off_to = None
        if code == LIMIT_REACHED_CODE:
            if list_sessions_when_full:
                sessions = sessions_from_admit_reply(now_ms, self.session_ttl_ms, extra)
        elif code == HANDED_OFF_CODE:
            handed_off_to = as_text(reply[6])
        elif by_policy:
            ended = tuple((as_text(sid), as_text(why)) for sid, why in batched(iter(extra), 2))
            replaced = tuple(sid for sid, _ in ended)
        else:
            replaced = tuple(as_text(s) for s in extra)
            ended = tuple((sid, "replaced") for sid in replaced)
        retry_after = seconds_left_in_minute(now_ms) if code == TOO_MANY_NEW_SESSIONS_CODE else None
        outcome = BY_SCRIPT_CODE[code]
        message = None
        if rule is not None:
            message = rule_message(policy, rule, ROWS[outcome].player_message.format(limit=limit))
        result = HeartbeatResult(
            outcome,
            active,
            limit,
            code == NEW_SESSION_CODE,
            pruned,
            as_text(reply[5]),
            replaced,
            sessions,
            retry_after,
            rule,
            # 64 random bits: support reads it out from the player's screen; the log line has it too.
            os.urandom(8).hex() if rule is not None else None,
            message,
            handed_off_to,
            ended,
            bool(flags & 1),
        )
        if by_policy:
            self._count_policy_decision(result, flags)
        for reason in (EndReason.REPLACED, EndReason.HANDED_OFF):
            if ids := [sid for sid, why in ended if why == reason.value]:
                self.activity.forget(
                    user_id, ids, user_has_sessions=True, reason=reason, ended_data={"bySessionId": session_id}
                )
        if replaced:
            logger.info("sessions replaced", userId=user_id, sessionIds=list(replaced), bySessionId=session_id)
        self.activity.note(
            user_id,
            session_id,
            now_ms,
            at_limit=active >= limit,
            new_session=result.new_session,
            refusal=None
            if result.allowed
            else Refusal(
                now_ms,
                session_id,
                stream_id,
                device_name or "",
                result.outcome.value,
                rule.name if rule else "",
                result.decision_id or "",
            ),
            event_data=self._heartbeat_event_data(
                result,
                user_id,
                session_id,
                stream_id,
                device_name,
                network,
                plan=plan,
                inputs=inputs,
                policy=policy if by_policy else None,
                rule=rule,
            ),
        )
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
                **({"rule": rule.name, "decisionId": result.decision_id} if rule else {}),
            )
        return result

    def _policy_args(
        self, policy: Policy, stream_id: str, max_streams: int | None, plan: str | None, inputs: SessionInputs | None
    ) -> tuple[int, str, list[Any]]:
        """The limit asked for under ``policy``, its source, and admit.lua's ARGV[11..25] for this session."""
        inputs = inputs or SessionInputs()
        rules, named = policy.rules_for(plan)
        if max_streams is not None:
            asked, source = max_streams, "token"
        elif named:
            asked, source = rules.max_streams, "plan"
        else:
            if plan is not None:
                metrics.UNKNOWN_PLANS.inc()
            asked, source = rules.max_streams, "default"
        pool = inputs.pool or policy.pool_of(stream_id)
        return (
            asked,
            source,
            [
                1,
                rules.weight_of(inputs.quality),
                inputs.device_class,
                rules.devices.get(inputs.device_class, 0) if inputs.device_class else 0,
                pool,
                rules.pools.get(pool, 0) if pool else 0,
                int(policy.counts(pool)),
                rules.max_networks,
                rules.network_rule,
                inputs.device_id,
                int(policy.same_device_takeover and inputs.takeover_proof != "none"),
                inputs.quality,
                inputs.replaces,
                inputs.replace_proof,
                "network" if inputs.takeover_proof == "network" else "",
            ],
        )

    @staticmethod
    def _count_policy_decision(result: HeartbeatResult, flags: int) -> None:
        if result.rule is not None:
            metrics.POLICY_REFUSALS.labels(result.rule.name).inc()
        if flags & 1:
            metrics.NETWORK_FLAGS.inc()
        if flags & 2:
            metrics.TAKEOVERS.inc()
        if flags & 4:
            metrics.HANDOFFS.inc()

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
        if was_live:
            self.activity.forget(
                user_id,
                [session_id],
                user_has_sessions=left > 0,
                reason=EndReason.STOPPED,
                ended_data={"fromOtherScreen": from_other_screen},
            )
        else:
            self.activity.discard(user_id, [session_id])
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

    def set_limit_override(self, user_id: str, limit: int | None, *, actor: str = "") -> UserLimit:
        """Set (MIN_LIMIT..MAX_LIMIT) or, with None, clear the user's limit override.

        Lowering a limit never cuts a live session: it only refuses newcomers.
        ``actor`` (who did it, as the audit trail names them) goes into the
        ``account.limit_changed`` event, written in the same round trip.
        """
        require_id(user_id, "userId")
        user = self.keys.user(user_id)
        if limit is not None:
            check_limit(limit)
        pipe = self.client.pipeline(transaction=False)
        if limit is None:
            pipe.delete(user.limit)
            pipe.hdel(self.keys.limit_overrides, user_id)
        else:
            pipe.set(user.limit, limit)
            pipe.hset(self.keys.limit_overrides, user_id, limit)
        # Without an override, what the latest heartbeat asked for (kept with the sessions) is the limit:
        # read in the same round trip.
        pipe.hmget(user.details, "limit", "limitSource")
        data = {"userId": user_id, "override": limit, "by": actor}
        replies = self._execute_with_event(pipe, user_id, EventType.ACCOUNT_LIMIT_CHANGED, data)
        asked, source = replies[2]
        logger.info("limit override set", userId=user_id, override=limit)
        return user_limit(limit, asked, source, self.default_limit)

    def evict(self, user_id: str, session_id: str | None = None, *, actor: str = "") -> list[str]:
        """Evict one live session (or, with None, all of the user's) and start its cool-down.

        Returns the ids of the sessions evicted. The evicted player's next
        heartbeat is refused with ``Outcome.EVICTED`` until the cool-down
        ends; other sessions are untouched. A session that is not live is
        left alone (no cool-down, nothing written). ``actor``: who evicted,
        for the ``session.ended`` events.
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
            self.activity.forget(
                user_id,
                evicted,
                user_has_sessions=left > 0,
                evicted=len(evicted),
                reason=EndReason.EVICTED,
                ended_data={"by": actor},
            )
        if evicted:
            logger.info(
                "sessions evicted", userId=user_id, sessionIds=evicted, cooldownSeconds=self.eviction_cooldown_seconds
            )
        else:
            logger.info("no live session to evict", userId=user_id, sessionId=session_id)
        return evicted

    def block_new_sessions(self, user_id: str, seconds: int, *, actor: str = "") -> datetime:
        """Refuse every new session of the account for ``seconds`` (1 s to 7 days); returns when it ends.

        Live sessions play on (evict them first to stop them); a new session
        gets ``Outcome.BLOCKED``. A second block replaces the first. ``actor``:
        who blocked, for the ``account.blocked`` event (same round trip).
        """
        require_id(user_id, "userId")
        if not 1 <= seconds <= MAX_BLOCK_SECONDS:
            raise ValueError(f"A block lasts 1 to {MAX_BLOCK_SECONDS} seconds.")
        until = redis_now_ms(self.client) + seconds * 1000
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.user(user_id).blocked, until, px=seconds * 1000)
        data = {"userId": user_id, "seconds": seconds, "until": timestamp_of(until), "by": actor}
        self._execute_with_event(pipe, user_id, EventType.ACCOUNT_BLOCKED, data)
        logger.info("new sessions blocked", userId=user_id, seconds=seconds)
        return ms_to_datetime(until)

    def unblock_new_sessions(self, user_id: str, *, actor: str = "") -> bool:
        """Lift a block on the account's new sessions; True if there was one (then ``account.unblocked``)."""
        require_id(user_id, "userId")
        lifted = bool(self.client.delete(self.keys.user(user_id).blocked))
        if lifted:
            pipe = self.client.pipeline(transaction=False)
            self._execute_with_event(pipe, user_id, EventType.ACCOUNT_UNBLOCKED, {"userId": user_id, "by": actor})
        logger.info("new sessions unblocked", userId=user_id, wasBlocked=lifted)
        return lifted

    def emit_policy_changed(self, actor: str, data: dict[str, Any]) -> None:
        """Write a ``policy.changed`` event now (``data`` says what changed; ``by`` is added).

        For the policy engine's writes; an event of no account, in shard 0's stream.
        Nothing with events off.
        """
        if not self.events.enabled:
            return
        pipe = self.client.pipeline(transaction=False)
        self.events.add_now(pipe, None, EventType.POLICY_CHANGED, {**data, "by": actor})
        pipe.execute()

    def _policy_applied(self, record: PolicyRecord) -> None:
        self.emit_policy_changed(record.applied_by, {"version": record.version, "reason": record.reason})

    def emit_sharing_flagged(self, user_id: str, score: int, evidence: list[str]) -> None:
        """Write an ``account.sharing_flagged`` event now: the account crossed SHARING_FLAG_SCORE (risk.py).

        Nothing with events off.
        """
        if not self.events.enabled:
            return
        pipe = self.client.pipeline(transaction=False)
        data = {"userId": user_id, "score": score, "evidence": evidence}
        self._execute_with_event(pipe, user_id, EventType.ACCOUNT_SHARING_FLAGGED, data)

    def purge(self) -> int:
        """Delete every key under the prefix; returns how many were deleted."""
        deleted = 0
        for batch in batched(self.client.scan_iter(match=self.keys.pattern, count=1000), 500):
            deleted += self.client.unlink(*batch)
        logger.warning("keys purged", prefix=self.keys.prefix, deleted=deleted)
        return deleted

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

    def scripts_loaded(self) -> bool:
        """Whether Redis has every script of the service in its cache."""
        return scripts_loaded(self.client, ALL_SCRIPTS)

    def load_scripts(self) -> None:
        """Load every script into Redis' cache."""
        load_scripts(self.client, ALL_SCRIPTS)

    def flush_activity(self) -> int:
        """Write what this manager's heartbeats did to the activity keys now (see ``ActivityWriter``)."""
        return self.activity.flush_activity()

    # --- Internals -----------------------------------------------------------

    def _execute_with_event(
        self, pipe: Pipeline | ClusterPipeline, user_id: str, type_: EventType, data: dict[str, Any]
    ) -> list[Any]:
        """Run a staff action's ``pipe`` with its event appended (nothing added with events off).

        The account's events this process still holds go first, and no flush
        runs meanwhile (``ActivityWriter.earlier_events``): its stream keeps them in order.
        """
        if not self.events.enabled:
            return pipe.execute()
        with self.activity.earlier_events(user_id) as earlier:
            self.events.add_now(pipe, user_id, type_, data, earlier=earlier)
            return pipe.execute()

    def _heartbeat_event_data(
        self,
        result: HeartbeatResult,
        user_id: str,
        session_id: str,
        stream_id: str,
        device_name: str | None,
        network: str,
        *,
        plan: str | None,
        inputs: SessionInputs | None,
        policy: Policy | None,
        rule: RuleHit | None,
    ) -> dict[str, Any] | None:
        """The data of a heartbeat's event: a new session's or a refusal's (None for a repeat, or events off).

        The inputs the answer was decided on, never a token: the ids, the
        device and network, the plan, the policy's inputs (device class, id,
        quality, a hand-off's ``replaces``), the pool when a ``policy`` decided,
        and the rule that refused. Only what this heartbeat said or was decided
        by: no empty fields.
        """
        if not self.events.enabled or not (result.new_session or not result.allowed):
            return None
        data: dict[str, Any] = {
            "userId": user_id,
            "sessionId": session_id,
            "streamId": stream_id,
            "deviceName": device_name or "",
            "network": network,
            "activeSessions": result.active_sessions,
            "limit": result.limit,
            "limitSource": result.limit_source,
        }
        if not result.allowed:
            data["code"] = ROWS[result.outcome].api_code
        decided_by: dict[str, Any] = {"plan": plan}
        if policy is not None:
            decided_by["pool"] = (inputs.pool if inputs else "") or policy.pool_of(stream_id)
        if inputs is not None:
            decided_by |= {
                "replaces": inputs.replaces,
                "deviceClass": inputs.device_class,
                "deviceId": inputs.device_id,
                "quality": inputs.quality,
            }
        if rule is not None:
            decided_by |= {"rule": rule.name, "decisionId": result.decision_id}
        data.update((key, value) for key, value in decided_by.items() if value)
        return data

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
        metrics.WAIT_REPLICAS_SHORT.inc()
        logger.warning(
            "new session not confirmed by the replicas in time",
            userId=user_id,
            sessionId=session_id,
            replicas=replicas,
            wanted=self.wait_replicas,
            waitMs=self.wait_timeout_ms,
        )
