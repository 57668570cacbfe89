"""A circuit breaker in front of Redis on the player path.

While Redis stalls, every heartbeat would wait ``REDIS_SOCKET_TIMEOUT`` before
it fails, and a worker busy waiting is a worker that answers nobody else. After
``failure_threshold`` consecutive Redis failures the breaker opens: heartbeats
fail at once, without a Redis call, for ``open_seconds``. Then one request is
let through as a trial; its success closes the breaker, its failure opens it
again. Each process has its own breaker: a process never waits on another's
opinion of Redis, and a stall seen by one process is seen by all soon enough.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError

logger = structlog.get_logger(__name__)


class BreakerState(enum.Enum):
    """Where the breaker stands; the value is the metric's number."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitOpenError(RedisConnectionError):
    """Raised instead of calling Redis while the breaker is open.

    A ``RedisError``, so every caller that handles a Redis failure handles
    this one the same way, without having waited for it.
    """


class CircuitBreaker:
    """Counts consecutive Redis failures and stops calls for a while after too many.

    ``on_change`` is called with the new state on every transition (the
    metric); the transition is logged here.
    """

    def __init__(
        self,
        *,
        failure_threshold: int,
        open_seconds: float,
        on_change: Callable[[BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started_at = 0.0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose time is up reads as half-open)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.open_seconds:
                return BreakerState.HALF_OPEN
            return self._state

    def before_call(self) -> None:
        """Let the call through, or raise ``CircuitOpenError`` at once.

        Once the open time is up, exactly one caller gets through as the
        trial; the others are refused until it reports. A trial that never
        reports (its thread died) is replaced after another ``open_seconds``.
        """
        if self._state is BreakerState.CLOSED:  # the common case, without the lock
            return
        with self._lock:
            now = self._clock()
            if self._state is BreakerState.OPEN:
                if now - self._opened_at < self.open_seconds:
                    raise CircuitOpenError("Redis circuit breaker is open: not calling Redis")
                self._set(BreakerState.HALF_OPEN)
                self._trial_started_at = now
                return
            if self._state is BreakerState.HALF_OPEN:
                if now - self._trial_started_at < self.open_seconds:
                    raise CircuitOpenError("Redis circuit breaker is half-open: a trial call is in flight")
                self._trial_started_at = now

    def record_success(self) -> None:
        """A Redis call succeeded: close the breaker, forget the failures."""
        if self._state is BreakerState.CLOSED and self._failures == 0:
            return
        with self._lock:
            self._failures = 0
            if self._state is not BreakerState.CLOSED:
                self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A Redis call failed: open the breaker after enough failures in a row, or after a failed trial."""
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                self._opened_at = self._clock()
                self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        previous, self._state = self._state, state
        log = logger.info if state is BreakerState.CLOSED else logger.warning
        log(
            "redis circuit breaker " + state.name.lower().replace("_", "-"),
            previous=previous.name.lower(),
            consecutiveFailures=self._failures,
            openSeconds=self.open_seconds,
        )
        if self._on_change is not None:
            self._on_change(state)
