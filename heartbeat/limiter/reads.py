"""Read models for the staff dashboard and the operator commands, on the live Redis keys.

The player path and every write to Redis belong to the ``StreamManager``;
this module answers the questions support and operators ask (who is
watching, who was seen, an account's limit, refusals and cool-downs, totals,
activity) over the same key layout (``heartbeat/limiter/keys.py``) and connection.
Every read is a count, a bounded range or one account's keys: none reads a
shared collection whole, whatever the number of viewers.

A little over 300 lines: one reader whose queries share the shard merge
(``_page``, ``_score_at_rank``, ``_live_totals``); the answers' types are in
``read_models.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from redis import Redis

from heartbeat.limiter.activity import REFUSALS_KEPT
from heartbeat.limiter.ids import id_error, require_id
from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.read_models import (
    AccountSignal,
    FoundUser,
    LiveUser,
    MinuteActivity,
    RecentRefusal,
    ServiceStats,
    SessionInfo,
    UserLimit,
    session_infos,
    user_limit,
)
from heartbeat.store.helpers import as_text, batched, ms_to_datetime, redis_now_ms

logger = structlog.get_logger(__name__)


class LiveStateReader:
    """What is live and what was seen, read from Redis for the dashboard and the commands."""

    def __init__(self, client: Redis, keys: KeyLayout, *, default_limit: int, session_ttl_seconds: int) -> None:
        self.client = client
        self.keys = keys
        self.default_limit = default_limit
        self.session_ttl_ms = session_ttl_seconds * 1000

    def sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        require_id(user_id, "userId")
        user = self.keys.user(user_id)
        # TIME apart: a cluster pipeline cannot carry it (it has no key to route by).
        now = redis_now_ms(self.client)
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(user.sessions, 0, -1, withscores=True)
        pipe.hgetall(user.details)
        members, details = pipe.execute()
        return self._live_sessions(now, members, details)

    def _live_sessions(self, now: int, members: list[Any], details: dict[Any, Any]) -> list[SessionInfo]:
        details = {as_text(k): as_text(v) for k, v in details.items()}
        rows = []
        for raw_sid, last in members:
            if last <= now - self.session_ttl_ms:
                continue
            sid = as_text(raw_sid)
            started = float(details.get(f"t:{sid}", last))
            rows.append((sid, last, details.get(f"s:{sid}", ""), started, details.get(f"d:{sid}")))
        return [
            info.with_policy_inputs(details.get(f"p:{info.session_id}"), details.get(f"n:{info.session_id}"))
            for info in session_infos(now, self.session_ttl_ms, rows)
        ]

    def get_limit(self, user_id: str) -> UserLimit:
        """The user's limit and where it comes from: the override, else what the latest heartbeat asked for."""
        require_id(user_id, "userId")
        user = self.keys.user(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(user.limit)
        pipe.hmget(user.details, "limit", "limitSource")
        override, (asked, source) = pipe.execute()
        return self._user_limit(override, asked, source)

    def _user_limit(self, override: bytes | None, asked: bytes | None, source: bytes | None) -> UserLimit:
        return user_limit(override, asked, source, self.default_limit)

    def limit_overrides(self) -> Iterator[tuple[str, int]]:
        """Every user's limit override, as (user id, limit), in no particular order.

        Read from the per-user keys the admission script reads (not the
        dashboard's mirror), with SCAN: O(keys under the prefix), for backups.
        """
        for batch in batched(self.client.scan_iter(match=self.keys.limit_pattern, count=1000), 500):
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
            user_id = self.keys.user_of_limit_key(as_text(key))
        except UnicodeDecodeError:
            return None
        return user_id if user_id is not None and id_error(user_id) is None else None

    def live_users(self, offset: int = 0, count: int = 50, *, at_limit: bool = False) -> tuple[int, list[LiveUser]]:
        """A page of live users (``at_limit``: only those at their limit), most recent heartbeat first, and how many."""
        if count < 1:
            raise ValueError("count must be at least 1")
        since = redis_now_ms(self.client) - self.session_ttl_ms
        indexes = [s.users_at_limit if at_limit else s.live_users for s in self.keys.shards]
        total, rows = self._page(indexes, since, offset, count)
        pipe = self.client.pipeline(transaction=False)
        for raw_uid, _ in rows:
            user = self.keys.user(as_text(raw_uid))
            pipe.zcount(user.sessions, f"({since}", "+inf")
            pipe.get(user.limit)
            pipe.hmget(user.details, "limit", "limitSource")
        replies = pipe.execute() if rows else []
        found = []
        for n, (uid, last) in enumerate(rows):
            count, override, (asked, source) = replies[3 * n : 3 * n + 3]
            limit = self._user_limit(override, asked, source).limit
            found.append(LiveUser(as_text(uid), ms_to_datetime(last), count, limit))
        return total, found

    def _page(self, indexes: list[str], since: int, offset: int, count: int) -> tuple[int, list[tuple[bytes, float]]]:
        """Rows ``offset`` to ``offset + count`` of the union of the shards' ``indexes``, and the union's size.

        The union is ordered by score (a heartbeat's time), newest first, ties
        by member, descending. Only entries newer than ``since`` count. Rank
        ``offset`` is found without reading the entries before it: a search
        on the score, ``PROBES`` scores per round trip, each counted with a
        ZCOUNT per shard (O(log n)), narrows the score of that rank to one
        millisecond in a few round trips over the TTL window; then each shard
        is read from that score on by rank (O(log n + page)). Deep pages cost
        what the first one does, whatever the number of viewers.
        """
        pipe = self.client.pipeline(transaction=False)
        for key in indexes:
            pipe.zcount(key, f"({since}", "+inf")
            if offset:
                pipe.zrevrange(key, 0, 0, withscores=True)
        replies = pipe.execute()
        total = sum(replies[0 :: 2 if offset else 1])
        if offset >= total:
            return total, []
        top, skip = "+inf", 0
        if offset:
            newest = max(int(first[0][1]) for first in replies[1::2] if first)
            score = self._score_at_rank(indexes, since + 1, newest, offset)
            pipe = self.client.pipeline(transaction=False)
            for key in indexes:
                pipe.zcount(key, f"({score}", "+inf")
            top, skip = str(score), offset - sum(pipe.execute())
        pipe = self.client.pipeline(transaction=False)
        for key in indexes:
            pipe.zrevrangebyscore(key, top, f"({since}", start=0, num=skip + count, withscores=True)
        merged = sorted((row for rows in pipe.execute() for row in rows), key=lambda r: (r[1], r[0]), reverse=True)
        return total, merged[skip : skip + count]

    PROBES = 16

    def _score_at_rank(self, indexes: list[str], low: int, high: int, rank: int) -> int:
        """The score of the entry at ``rank`` (0: the newest) of the union.

        That is the highest score t with more than ``rank`` entries at t or above.
        """
        while low < high:
            step = max(1, (high - low) // self.PROBES)
            probes = list(range(low + step, high + 1, step))[: self.PROBES]
            pipe = self.client.pipeline(transaction=False)
            for probe in probes:
                for key in indexes:
                    pipe.zcount(key, probe, "+inf")
            counts = pipe.execute()
            at_or_above = [sum(counts[n * len(indexes) : (n + 1) * len(indexes)]) for n in range(len(probes))]
            above = [probe for probe, n in zip(probes, at_or_above, strict=True) if n > rank]
            if above:
                low = above[-1]
            following = [probe for probe in probes if probe > low]
            high = following[0] - 1 if following else high
        return low

    def find_users(self, prefix: str, count: int = 50) -> list[FoundUser]:
        """Accounts heard in the last day whose id starts with ``prefix``, in id order (at most ``count``).

        One ZRANGEBYLEX per shard on its prefix index (O(log n + count)),
        merged, then two ZSCOREs per account found.
        """
        raw = prefix.encode()
        pipe = self.client.pipeline(transaction=False)
        for shard in self.keys.shards:
            # 0xff never occurs in UTF-8, so it closes the range of every id with this prefix.
            pipe.zrangebylex(shard.seen_users_by_name, b"[" + raw, b"[" + raw + b"\xff", 0, count)
        ids = sorted(uid for found in pipe.execute() for uid in found)[:count]
        if not ids:
            return []
        since = redis_now_ms(self.client) - self.session_ttl_ms
        pipe = self.client.pipeline(transaction=False)
        for uid in ids:
            shard = self.keys.shard_of(as_text(uid))
            pipe.zscore(shard.seen_users, uid)
            pipe.zscore(shard.live_users, uid)
        scores = pipe.execute()
        found = []
        for n, uid in enumerate(ids):
            seen, live = scores[2 * n], scores[2 * n + 1]
            if seen is not None:
                # The seen index is refreshed every few minutes; the live index has the latest heartbeat.
                heard = max(seen, live or 0)
                found.append(FoundUser(as_text(uid), ms_to_datetime(heard), live is not None and live > since))
        return found

    def cooldowns(self, user_id: str) -> list[tuple[str, float]]:
        """The account's evicted sessions still cooling down, with the seconds left, soonest free first."""
        require_id(user_id, "userId")
        now = redis_now_ms(self.client)
        ending = self.client.zrangebyscore(self.keys.user(user_id).evicted, f"({now}", "+inf", withscores=True)
        return [(as_text(sid), (end - now) / 1000) for sid, end in ending]

    def blocked_until(self, user_id: str) -> datetime | None:
        """When support's block on the account's new sessions ends, if there is one."""
        require_id(user_id, "userId")
        raw = self.client.get(self.keys.user(user_id).blocked)
        return None if raw is None else ms_to_datetime(int(raw))

    def last_heard(self, user_id: str) -> datetime | None:
        """When the account's latest heartbeat came, if it came in the last day."""
        require_id(user_id, "userId")
        shard = self.keys.shard_of(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.zscore(shard.seen_users, user_id)
        pipe.zscore(shard.live_users, user_id)
        seen, live = pipe.execute()
        # The seen index is refreshed every few minutes (SEEN_REFRESH_MS); the live index has the latest heartbeat.
        return None if seen is None else ms_to_datetime(max(seen, live or 0))

    def recent_refusals(self, user_id: str) -> list[RecentRefusal]:
        """The account's latest refused heartbeats (at most 20, from the last day), newest first."""
        require_id(user_id, "userId")
        found = []
        for raw in self.client.lrange(self.keys.shard_of(user_id).refusals(user_id), 0, REFUSALS_KEPT - 1):
            record = orjson.loads(raw)
            found.append(
                RecentRefusal(
                    ms_to_datetime(record["at_ms"]),
                    record["session_id"],
                    record["stream_id"],
                    record["device_name"],
                    record["code"],
                    record.get("rule", ""),
                    record.get("decision_id", ""),
                )
            )
        return found

    def sharing_signals(self, day: int, count: int = 20) -> tuple[list[AccountSignal], list[AccountSignal]]:
        """The accounts refused most often, and with the most distinct sessions, on a UTC day (days since 1970)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self.keys.shards:
            pipe.zrevrange(shard.refused_on(day), 0, count - 1, withscores=True)
            pipe.zrevrange(shard.distinct_sessions_on(day), 0, count - 1, withscores=True)
        replies = pipe.execute()

        def top(per_shard: list[list[tuple[bytes, float]]]) -> list[AccountSignal]:
            merged = sorted((row for rows in per_shard for row in rows), key=lambda r: (r[1], r[0]), reverse=True)
            return [AccountSignal(as_text(uid), int(n)) for uid, n in merged[:count]]

        return top(replies[0::2]), top(replies[1::2])

    def _live_totals(self, indexes: list[str]) -> list[int]:
        """Entries newer than the session TTL in each of ``indexes``, summed over the shards (ZCOUNT each)."""
        since = redis_now_ms(self.client) - self.session_ttl_ms
        pipe = self.client.pipeline(transaction=False)
        for shard in self.keys.shards:
            for index in indexes:
                pipe.zcount(getattr(shard, index), f"({since}", "+inf")
        counts = pipe.execute()
        return [sum(counts[n :: len(indexes)]) for n in range(len(indexes))]

    def live_counts(self) -> tuple[int, int]:
        """Live users and live sessions across all users (two ZCOUNTs per shard)."""
        users, sessions = self._live_totals(["live_users", "live_sessions"])
        return users, sessions

    def stats(self) -> ServiceStats:
        """Live users, live sessions and users at their limit, across all users.

        Three ZCOUNTs per shard, O(log n) each: users at their limit are kept
        by the activity batches (the latest heartbeat of each account says
        whether it was full), never recounted here.
        """
        return ServiceStats(*self._live_totals(["live_users", "live_sessions", "users_at_limit"]))

    def activity(self, minutes: int = 60) -> list[MinuteActivity]:
        """Per-minute counters of the last ``minutes`` minutes, oldest first."""
        current = int(time.time() // 60)
        epoch_minutes = list(range(current - minutes + 1, current + 1))
        pipe = self.client.pipeline(transaction=False)
        for m in epoch_minutes:
            pipe.hgetall(self.keys.minute(m))
        rows = []
        for m, raw in zip(epoch_minutes, pipe.execute(), strict=True):
            counters = {as_text(k): int(v) for k, v in raw.items()}
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
        for batch in batched(self.client.scan_iter(match=self.keys.pattern, count=1000), 500):
            pipe = self.client.pipeline(transaction=False)
            for key in batch:
                pipe.memory_usage(key)
            for size in pipe.execute():
                count += 1
                used += size or 0
        return count, used

    def analytics_accounts(self) -> int:
        """Accounts the analytics keep (heard in the last day, within the memory budget): one ZCARD per shard."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self.keys.shards:
            pipe.zcard(shard.seen_users)
        return sum(pipe.execute())

    def memory(self) -> tuple[int, int]:
        """Redis' used memory and its ``maxmemory`` (0: none set), in bytes, from INFO memory."""
        info = self.client.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def server_info(self) -> dict[str, Any]:
        """Redis' version and mode, from INFO server."""
        info = self.client.info("server")
        return {"redis_version": info.get("redis_version"), "redis_mode": info.get("redis_mode")}
