"""What this process's heartbeats did, waiting to be written to the shared indexes.

The live-user and live-session indexes and the per-minute counters behind the
dashboard and the metrics are keys shared by every user. Writing them in each
heartbeat's own round trip doubled Redis' work per heartbeat, cost a second
round trip for every refusal, and would have to reach a second node on Redis
Cluster. So each process notes what its heartbeats did here, and a daemon
thread hands the batch to ``StreamManager.flush_activity`` every
``ACTIVITY_FLUSH_SECONDS``: one EVALSHA per batch instead of one per heartbeat.
The dashboard sees a heartbeat that much later; the limit never depends on
these keys.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from heartbeat.limiter.events import Event


class Flushable(Protocol):
    """What the flusher calls: the StreamManager."""

    def flush_activity(self) -> object:
        """Write what is pending to Redis."""


# Refusals kept per account for the dashboard (a batch keeps no more either).
REFUSALS_KEPT = 20


@dataclass(frozen=True)
class Refusal:
    """One refused heartbeat, as support sees it on the account's page."""

    at_ms: int
    session_id: str
    stream_id: str
    device_name: str
    code: str
    # Under a policy: the rule that refused, and the decision's id (the player's answer and the log have it).
    rule: str = ""
    decision_id: str = ""


@dataclass
class ActivityBatch:
    """Heartbeats noted since the last flush."""

    # "<user id>\x00<session id>" -> (user id, time of its latest allowed heartbeat, ms, Redis clock)
    sessions: dict[str, tuple[str, int]] = field(default_factory=dict)
    # user id -> (time of its latest heartbeat, ms; whether that heartbeat found the account at its limit)
    users: dict[str, tuple[int, bool]] = field(default_factory=dict)
    # user id -> sessions admitted for the first time (for the distinct-sessions-per-day signal)
    new_sessions: dict[str, list[str]] = field(default_factory=dict)
    # user id -> its latest refusals, oldest first, at most REFUSALS_KEPT
    refusals: dict[str, list[Refusal]] = field(default_factory=dict)
    # epoch minute -> [heartbeats, refused]
    counts: dict[int, list[int]] = field(default_factory=dict)
    # user id -> its events (session.started, session.refused), in the order they happened
    events: dict[str, list[Event]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.counts or self.users or self.new_sessions or self.refusals or self.events)


class ActivityBuffer:
    """A thread-safe ``ActivityBatch`` that request threads add to and the flusher takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch = ActivityBatch()

    def note(
        self,
        user_id: str,
        session_id: str,
        heard_at_ms: int,
        *,
        at_limit: bool,
        new_session: bool = False,
        refusal: Refusal | None = None,
        event: Event | None = None,
    ) -> None:
        """Count one heartbeat; an allowed one (``refusal`` None) marks its session live at ``heard_at_ms``.

        ``event``: what the heartbeat tells the rest of the company (a new session or a
        refusal), written by the next flush after the account's earlier ones.

        ``at_limit``: whether the account was full after this heartbeat (its
        live sessions at least its limit); the latest heartbeat of each
        account decides, so "users at their limit" is kept here, not
        recounted over every live session by each dashboard view.
        """
        minute = heard_at_ms // 60_000
        with self._lock:
            batch = self._batch
            counts = batch.counts.get(minute)
            if counts is None:
                counts = batch.counts[minute] = [0, 0]
            counts[0] += 1
            if refusal is None:
                batch.sessions[f"{user_id}\x00{session_id}"] = (user_id, heard_at_ms)
                if new_session:
                    batch.new_sessions.setdefault(user_id, []).append(session_id)
            else:
                counts[1] += 1
                kept = batch.refusals.setdefault(user_id, [])
                kept.append(refusal)
                if len(kept) > REFUSALS_KEPT:
                    del kept[0]
            latest = batch.users.get(user_id)
            if latest is None or latest[0] <= heard_at_ms:
                batch.users[user_id] = (heard_at_ms, at_limit)
            if event is not None:
                batch.events.setdefault(user_id, []).append(event)

    def discard(self, members: Iterable[str]) -> None:
        """Drop pending sessions that have just ended (stopped or evicted) in this process."""
        with self._lock:
            for member in members:
                self._batch.sessions.pop(member, None)

    def take_events(self, user_id: str) -> list[Event]:
        """The account's pending events, taken out of the batch (to be written before a later one)."""
        with self._lock:
            return self._batch.events.pop(user_id, [])

    def take(self) -> ActivityBatch:
        """Everything noted so far; the buffer starts empty again."""
        with self._lock:
            batch, self._batch = self._batch, ActivityBatch()
        return batch


class ActivityFlusher:
    """One daemon thread per process that calls every registered flush function periodically.

    Threads do not survive ``fork``: a gunicorn worker starts its own on its
    first heartbeat. Whatever is pending when the process exits is flushed by
    an ``atexit`` hook, so a graceful restart loses nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: weakref.WeakSet[Flushable] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._interval = 1.0
        # Forks of this process so far: what a writer compares on every heartbeat
        # to know it must register again (cheaper than os.getpid(), a system call).
        self.forks = 0
        atexit.register(self.flush_all)
        os.register_at_fork(after_in_child=self._count_fork)

    def _count_fork(self) -> None:
        self.forks += 1

    def register(self, target: Flushable, interval: float) -> None:
        """Flush ``target`` every ``interval`` seconds (the shortest interval registered wins)."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child inherits the parent's state but not its thread.
                self._targets = weakref.WeakSet()
                self._thread = None
                self._pid = os.getpid()
                self._interval = interval
            self._targets.add(target)
            self._interval = min(self._interval, interval)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="activity-flusher", daemon=True)
                self._thread.start()

    def flush_all(self) -> None:
        """Flush every registered target now (also at exit)."""
        for target in list(self._targets):
            target.flush_activity()

    def _run(self) -> None:
        # Flushes start on a fixed cadence, not an interval after the previous one ended:
        # what a killed process loses (its events noted since its last flush) stays
        # within one interval however long each flush takes.
        due = time.monotonic()
        while True:
            due += self._interval
            time.sleep(max(0.0, due - time.monotonic()))
            self.flush_all()
            if time.monotonic() > due + self._interval:
                due = time.monotonic()  # far behind (a stalled Redis): no burst of catch-up flushes


FLUSHER = ActivityFlusher()
