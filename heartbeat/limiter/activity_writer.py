"""The activity writer: what heartbeats did, written to the dashboard's shared keys in batches.

Request threads note each heartbeat in an ``ActivityBuffer``; the process's
flusher thread (``ActivityFlusher``) writes the batch every
``flush_seconds`` and at exit: one round trip per node for the live index
(``record_activity``), the accounts seen, refused and their new sessions
(``record_accounts``), the heartbeats' events (``record_events``), and the
per-minute counts (``record_minute``). Ended sessions (stopped, evicted,
replaced) leave the live index at once (``forget``), with their
``session.ended`` event. Nothing here decides who may play: a lost batch
costs the dashboard a second of history and the event stream that
second's events, never a limit.

A little over 300 lines: the batch's every write (index, accounts, minutes,
events) is built here, by shard and chunk, so that one flush is one round
trip per node.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import zip_longest
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from heartbeat.limiter.activity import FLUSHER, REFUSALS_KEPT, ActivityBatch, ActivityBuffer, Refusal
from heartbeat.limiter.event_log import EventLog
from heartbeat.limiter.events import EndReason, Event, EventType
from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.scripts import END_SESSIONS, RECORD_ACCOUNTS, RECORD_ACTIVITY, RECORD_MINUTE
from heartbeat.store.helpers import batched
from heartbeat.store.scripts import ScriptCall, ScriptRunner

logger = structlog.get_logger(__name__)

# Per-minute activity is kept a little over the hour the dashboard charts.
MINUTE_KEY_TTL_SECONDS = 2 * 3600
# Sessions (or accounts) per record_activity (record_accounts) call: bounds how long one call holds Redis.
ACTIVITY_CHUNK = 1000
# How long after this process last wrote a live session its flushes go on trimming the
# index though nothing new is noted (past the session TTL), so that a session whose
# account never sends another heartbeat is reported expired within TTL + this margin.
EXPIRY_WATCH_MARGIN_SECONDS = 5.0
# Support's memory of accounts: "seen in the last day" and the prefix search,
# refusals kept a day, the daily sharing signals kept two days.
SEEN_MS = 86_400_000
# "Seen in the last day" needs no second-by-second score: a process rewrites an account's seen
# entries (two ZADDs) at most this often; "last heard" reads the live index too, which is exact.
SEEN_REFRESH_MS = 600_000
# Accounts whose seen write this process remembers; past it the memory starts afresh (one rewrite each).
SEEN_REMEMBERED = 200_000
REFUSALS_TTL_SECONDS = 86_400
DAY_KEY_TTL_SECONDS = 2 * 86_400
# What one account costs the analytics (seen indexes, daily sharing signals, its session
# HyperLogLog): about 690 bytes measured with INFO memory over 5,000 accounts on Redis 7.
ANALYTICS_BYTES_PER_ACCOUNT = 700


def analytics_accounts_per_shard(budget_mb: int, shards: int) -> int:
    """How many accounts each activity shard's analytics keep within ``budget_mb`` (0: no budget)."""
    if budget_mb <= 0:
        return 0
    return max(1, budget_mb * 1024 * 1024 // ANALYTICS_BYTES_PER_ACCOUNT // shards)


class ActivityWriter:
    """Buffers what heartbeats did in this process and writes it to the shared activity keys."""

    def __init__(
        self,
        keys: KeyLayout,
        *,
        request_scripts: ScriptRunner,
        flush_scripts: ScriptRunner,
        session_ttl_ms: int,
        flush_seconds: float,
        analytics_budget_mb: int = 0,
        events: EventLog | None = None,
    ) -> None:
        self.keys = keys
        # EVENTS_ENABLED: None or a disabled log notes and writes no event at all.
        self.events = events if events is not None and events.enabled else None
        # Ended sessions leave the index on the request's own connections; the
        # flusher has connections of its own: a flush waiting on a stalled Redis
        # must not take the connection a heartbeat would reuse.
        self.request_scripts = request_scripts
        self.flush_scripts = flush_scripts
        self.session_ttl_ms = session_ttl_ms
        self.flush_seconds = flush_seconds
        # ACTIVITY_MEMORY_BUDGET_MB as accounts per shard: record_accounts trims the oldest past it.
        self.accounts_per_shard = analytics_accounts_per_shard(analytics_budget_mb, len(keys.shards))
        self.pending = ActivityBuffer()
        self._flush_lock = threading.Lock()
        # user id -> when this process last wrote its seen entries (SEEN_REFRESH_MS); the flusher's only.
        self._seen_written: dict[str, int] = {}
        self._flusher_forks = -1  # FLUSHER.forks when this writer last registered
        # Monotonic time until which an empty batch still flushes (see EXPIRY_WATCH_MARGIN_SECONDS).
        self._watch_expiry_until = 0.0

    def note(
        self,
        user_id: str,
        session_id: str,
        heard_at_ms: int,
        *,
        at_limit: bool,
        new_session: bool,
        refusal: Refusal | None,
        event_data: dict[str, Any] | None = None,
    ) -> None:
        """Note one heartbeat for the next flush (see ``ActivityBuffer.note``).

        ``event_data``: the inputs the heartbeat was decided on (ids, device,
        network, and whatever the policy adds), for its ``session.started``
        (a new session) or ``session.refused`` (with ``code``) event; a repeat
        heartbeat of a live session has none. Ignored with events off.
        """
        event = None
        if self.events is not None:
            if refusal is None:
                self._watch_expiry_until = time.monotonic() + self.session_ttl_ms / 1000 + EXPIRY_WATCH_MARGIN_SECONDS
            if event_data is not None and (new_session or refusal is not None):
                event = Event(
                    EventType.SESSION_STARTED if refusal is None else EventType.SESSION_REFUSED, heard_at_ms, event_data
                )
        self.pending.note(
            user_id, session_id, heard_at_ms, at_limit=at_limit, new_session=new_session, refusal=refusal, event=event
        )
        if self._flusher_forks != FLUSHER.forks:
            # A forked worker has no flusher thread yet: register on its first heartbeat.
            FLUSHER.register(self, self.flush_seconds)
            self._flusher_forks = FLUSHER.forks

    def discard(self, user_id: str, session_ids: list[str]) -> None:
        """Drop noted heartbeats of sessions that ended in this process before they were written."""
        self.pending.discard([f"{user_id}\x00{s}" for s in session_ids])

    @contextmanager
    def earlier_events(self, user_id: str) -> Iterator[list[Event]]:
        """The account's events this process has not written yet, for a write that must come after them.

        Held until the caller's write is done: a flush in flight (the flusher
        thread may have taken the account's ``session.started`` a moment ago)
        lands first, and no flush starts until the caller has written, so an
        account's events reach its stream in the order they happened.
        """
        with self._flush_lock:
            yield self.pending.take_events(user_id)

    def flush_activity(self) -> int:
        """Write the activity noted since the last flush to the shared keys; return the sessions written.

        The flusher thread calls this every ``flush_seconds`` and at exit. A
        batch that cannot be written (Redis down) is dropped with a warning:
        each of its sessions is written again by its next heartbeat.
        """
        # One flush at a time: when this returns, everything noted before it
        # is written, even what the flusher thread had just taken.
        with self._flush_lock:
            batch = self.pending.take()
            # With events on, an empty batch still trims the index for a while: the trim
            # reports the sessions that expired (record_activity.lua).
            watching = self.events is not None and time.monotonic() < self._watch_expiry_until
            return self._write(batch) if batch or watching else 0

    def forget(
        self,
        user_id: str,
        session_ids: list[str],
        *,
        user_has_sessions: bool,
        evicted: int = 0,
        reason: EndReason | None = None,
        ended_data: dict[str, Any] | None = None,
    ) -> None:
        """Take ended sessions out of the activity keys, and out of this process's pending batch.

        With events on and a ``reason``, each gets a ``session.ended`` event
        (``ended_data`` added to its data), written in the same round trip after
        the account's events this process still holds, so they stay in order.
        """
        members = [f"{user_id}\x00{s}" for s in session_ids]
        self.pending.discard(members)
        shard = self.keys.shard_of(user_id)
        calls = [
            ScriptCall(
                END_SESSIONS,
                [shard.live_users, shard.live_sessions, shard.ended_sessions, shard.users_at_limit],
                [user_id, int(user_has_sessions), self.session_ttl_ms, *members],
            )
        ]
        if self.events is not None and reason is not None:
            now_ms = int(time.time() * 1000)
            ended = [
                Event(
                    EventType.SESSION_ENDED,
                    now_ms,
                    {"userId": user_id, "sessionId": s, "reason": str(reason), **(ended_data or {})},
                )
                for s in session_ids
            ]
        if evicted:
            # The API server's clock names the minute; a skewed clock only moves a
            # count into a neighbouring minute of the chart, never a limit.
            minute = self.keys.minute(int(time.time() // 60))
            calls.append(ScriptCall(RECORD_MINUTE, [minute], [0, 0, evicted, 0, MINUTE_KEY_TTL_SECONDS]))
        if self.events is None or reason is None:
            self.request_scripts.run(calls)
            return
        with self.earlier_events(user_id) as earlier:
            events = (e.to_json() for e in (*earlier, *ended))
            self.request_scripts.run([*calls, self.events.record_call(shard.events, events)])

    def _write(self, batch: ActivityBatch) -> int:
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
                zip_longest(batched(sessions, 3 * ACTIVITY_CHUNK), batched(users, 3 * ACTIVITY_CHUNK), fillvalue=[])
            ) or [([], [])]
            if self.events is not None:
                # record_activity reports the shard's expired sessions into its stream.
                keys = [*keys, shard.events]
            for session_chunk, user_chunk in chunks:
                args = [self.session_ttl_ms, len(session_chunk) // 3, *session_chunk, *user_chunk]
                if self.events is not None:
                    args.append(self.events.retention_ms)
                calls.append((shard, ScriptCall(RECORD_ACTIVITY, keys, args)))
        activity_calls = len(calls)
        account_calls, seen_now = self._account_records(batch)
        event_calls = self.events.record_calls(batch.events) if self.events is not None else []
        try:
            written = self.flush_scripts.run([call for _, call in calls] + account_calls + event_calls)
            live: dict[str, int] = {}
            for (shard, _), (_, shard_live) in zip(calls, written[:activity_calls], strict=True):
                live[shard.base] = int(shard_live)  # a shard's last chunk has its count after every write
            if len(self._seen_written) + len(seen_now) > SEEN_REMEMBERED:
                self._seen_written.clear()
            self._seen_written.update(seen_now)
            minutes = sorted(batch.counts)
            if minutes:
                self._record_minutes(batch, minutes, sum(live.values()))
        except RedisError:
            logger.warning(
                "activity flush failed",
                sessions=len(batch.sessions),
                events=sum(len(e) for e in batch.events.values()),
                exc_info=True,
            )
            return 0
        return sum(int(n) for n, _ in written[:activity_calls])

    def _record_minutes(self, batch: ActivityBatch, minutes: list[int], live: int) -> None:
        """The batch's per-minute counts, and the live sessions (all shards) as the newest minute's peak."""
        self.flush_scripts.run(
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

    def _account_records(self, batch: ActivityBatch) -> tuple[list[ScriptCall], dict[str, int]]:
        """The ``record_accounts`` calls of a batch (seen accounts, refusals, new sessions; by shard, chunked),
        and the accounts whose seen entries they write, with when (remembered once the write succeeds)."""
        day = int(time.time() // 86_400)
        shards = self.keys.shards
        seen: list[list[Any]] = [[] for _ in shards]
        refusals: list[list[Any]] = [[] for _ in shards]
        new_sessions: list[list[Any]] = [[] for _ in shards]
        seen_now: dict[str, int] = {}
        for uid, (heard, _) in batch.users.items():
            if heard - self._seen_written.get(uid, -SEEN_REFRESH_MS) < SEEN_REFRESH_MS:
                continue  # written by this process a moment ago (see SEEN_REFRESH_MS)
            seen[self.keys.shard_number(uid)].append((uid, heard))
            seen_now[uid] = heard
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
                args.append(self.accounts_per_shard)
                calls.append(ScriptCall(RECORD_ACCOUNTS, keys, args))
        return calls, seen_now
