"""Where policy documents live: every version in Redis, shared by every API server, and the one in force.

Redis, not the database: the database may be each host's own SQLite, and the
document must be the same everywhere the limit is decided. Each process keeps
the policy it decides with (``PolicyWatcher``) and asks Redis for the version
number at most every ``POLICY_CHECK_SECONDS``, so a new version is in force
everywhere within a few seconds, without a restart and without a read per
heartbeat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.policy import Policy, parse_policy
from heartbeat.limiter.scripts import APPLY_POLICY
from heartbeat.store.breaker import BreakerState, CircuitBreaker, CircuitOpenError
from heartbeat.store.cluster_scripts import script_runner_for
from heartbeat.store.scripts import ScriptCall

logger = structlog.get_logger(__name__)

# How often a process asks which version is in force: "within 5 seconds" with room for a slow check.
POLICY_CHECK_SECONDS = 2.0
# After a first check failed, how long the other callers fail at once instead of asking again.
FIRST_CHECK_RETRY_SECONDS = 0.25
# A history longer than this is cut in the dashboard's list (every version stays stored).
HISTORY_SHOWN = 100


class PolicyConflictError(Exception):
    """Raised by ``PolicyStore.apply`` when another version was applied since the caller read ``current``."""

    def __init__(self, in_force: int) -> None:
        super().__init__(f"version {in_force} was applied meanwhile: read it and apply again")
        self.in_force = in_force


@dataclass(frozen=True)
class PolicyRecord:
    """One applied version: the document, who applied it, why and when."""

    version: int
    document: dict[str, Any]
    applied_by: str
    reason: str
    applied_at: datetime

    @property
    def policy(self) -> Policy:
        """The document parsed (it was checked when applied)."""
        return parse_policy(self.document, version=self.version)

    def as_json(self) -> dict[str, Any]:
        """The record as ``policy show --json`` prints it."""
        return {
            "version": self.version,
            "appliedBy": self.applied_by,
            "reason": self.reason,
            "appliedAt": self.applied_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "document": self.document,
        }


class PolicyStore:
    """Applies, reads and lists the policy documents of one key layout."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        keys: KeyLayout,
        *,
        on_applied: Callable[[PolicyRecord], None] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.scripts = script_runner_for(client)
        # Called with each new version once it is in force (the StreamManager writes policy.changed).
        self.on_applied = on_applied

    def apply(
        self, document: Any, *, applied_by: str, reason: str = "", expected_version: int | None = None
    ) -> PolicyRecord:
        """Check ``document`` (raises ``PolicyInvalidError``) and put it in force as the next version.

        ``expected_version``: the version the caller edited; when another one
        was applied since, nothing is stored (``PolicyConflictError``).
        """
        parse_policy(document)
        at = datetime.now(UTC)
        record = {
            "document": document,
            "appliedBy": applied_by,
            "reason": reason,
            "appliedAtMs": int(at.timestamp() * 1000),
        }
        keys = [self.keys.policy_version, self.keys.policy_versions]
        args = [orjson.dumps(record), "" if expected_version is None else expected_version]
        applied, version = self.scripts.run([ScriptCall(APPLY_POLICY, keys, args)])[0]
        if not int(applied):
            raise PolicyConflictError(int(version))
        logger.info("policy applied", version=int(version), appliedBy=applied_by, reason=reason)
        record = PolicyRecord(
            int(version), document, applied_by, reason, at.replace(microsecond=(at.microsecond // 1000) * 1000)
        )
        if self.on_applied is not None:
            self.on_applied(record)
        return record

    def current_version(self) -> int:
        """The version in force (0: none applied; the settings decide)."""
        return int(self.client.get(self.keys.policy_version) or 0)

    def load(self, version: int) -> PolicyRecord | None:
        """One version's record, or None when there is no such version."""
        raw = self.client.hget(self.keys.policy_versions, str(version))
        return None if raw is None else _record(version, raw)

    def current(self) -> PolicyRecord | None:
        """The record in force, or None when no document was ever applied."""
        version = self.current_version()
        return self.load(version) if version else None

    def history(self) -> list[PolicyRecord]:
        """The newest ``HISTORY_SHOWN`` versions, newest first."""
        newest = self.current_version()
        versions = [str(v) for v in range(newest, max(0, newest - HISTORY_SHOWN), -1)]
        if not versions:
            return []
        raws = self.client.hmget(self.keys.policy_versions, versions)
        return [_record(int(v), raw) for v, raw in zip(versions, raws, strict=True) if raw is not None]


def _record(version: int, raw: bytes | str) -> PolicyRecord:
    body = orjson.loads(raw)
    return PolicyRecord(
        version,
        body["document"],
        body.get("appliedBy", ""),
        body.get("reason", ""),
        datetime.fromtimestamp(body["appliedAtMs"] / 1000, UTC),
    )


class PolicyWatcher:
    """The policy this process decides with: the settings' own until a document is applied, then the newest.

    ``policy()`` is called on every heartbeat and costs a clock read; every
    ``POLICY_CHECK_SECONDS`` one call asks Redis for the version number (one
    GET) and loads the document when it changed. A failed check keeps the
    policy in force and tries again at the next interval: a policy is never
    dropped because Redis blinked (a check Redis does not answer fails its
    heartbeat, as the heartbeat's own call would have).
    """

    def __init__(
        self,
        store: PolicyStore,
        fallback: Policy,
        *,
        check_seconds: float = POLICY_CHECK_SECONDS,
        on_change: Callable[[Policy], None] | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.store = store
        self.fallback = fallback
        self.check_seconds = check_seconds
        self.on_change = on_change
        # The player path's breaker: while it is open, Redis is not asked (a stalled Redis would hold
        # a heartbeat for a socket time-out every check) and the policy in force stays. A check that
        # Redis does not answer fails its heartbeat at once, counted as the one failure the
        # heartbeat's own call would have been: it neither waits out a second time-out nor counts
        # twice (a check and then the call opened the breaker a failure early).
        self.breaker = breaker
        self._policy = fallback
        self._next_check = 0.0
        self._checked_once = False
        self._first_failed_until = 0.0
        self._lock = threading.Lock()

    def policy(self) -> Policy:
        """The policy in force (checked against Redis at most every ``check_seconds``)."""
        if not self._checked_once or time.monotonic() >= self._next_check:
            if self.breaker is not None and self.breaker.state is BreakerState.OPEN:
                if not self._checked_once:
                    raise CircuitOpenError("redis circuit breaker open: the policy version is unknown")
                return self._policy
            self.refresh()
        return self._policy

    def refresh(self) -> Policy:
        """Ask Redis for the version in force now, and load it when it changed.

        Until a first check has answered, callers wait for one check at a time
        (a new process must not decide its first heartbeats by the settings while
        a document is in force, and one GET, not one per heartbeat, keeps a
        bounded connection pool free); when it fails, the callers waiting fail
        at once for a moment instead of each waiting out its own time-out. After
        that one check at a time, and it never holds a heartbeat up: the others
        decide by the policy in force meanwhile.
        """
        if not self._checked_once:
            with self._lock:
                if self._checked_once:
                    return self._policy  # another caller's check answered while this one waited
                if time.monotonic() < self._first_failed_until:
                    # Another caller's check failed a moment ago: fail at once rather than wait in turn
                    # (counted by the breaker as the failure it stands for).
                    if self.breaker is not None:
                        self.breaker.record_failure()
                    raise RedisConnectionError("the policy version could not be read from Redis a moment ago")
                return self._check()
        if not self._lock.acquire(blocking=False):
            return self._policy
        try:
            if time.monotonic() < self._next_check:
                return self._policy  # another thread checked meanwhile
            return self._check()
        finally:
            self._lock.release()

    def _check(self) -> Policy:
        try:
            self._next_check = time.monotonic() + self.check_seconds
            version = self.store.current_version()
            if version != self._policy.version:
                record = self.store.load(version) if version else None
                self._policy = record.policy if record else self.fallback
                logger.debug("policy version in force", version=self._policy.version)
                if self.on_change:
                    self.on_change(self._policy)
            self._checked_once = True
        except (RedisError, ValueError, KeyError) as error:
            unanswered = isinstance(error, (RedisConnectionError, RedisTimeoutError))
            if unanswered and self.breaker is not None:
                self.breaker.record_failure()
            if not self._checked_once:
                # Never decide by the settings while a document may be in force: the heartbeat fails
                # as any Redis failure does (the breaker, fail-open), and a later one asks again.
                self._next_check = 0.0
                self._first_failed_until = time.monotonic() + FIRST_CHECK_RETRY_SECONDS
                raise
            if unanswered:
                raise
            logger.warning(
                "policy check failed, the version in force stays", version=self._policy.version, exc_info=True
            )
        return self._policy


def describe_version(policy: Policy) -> str:
    """How logs and metrics name a policy: its version, or "settings" when none was applied."""
    return str(policy.version) if policy.is_applied else "settings"
