"""The activity batches behind the dashboard's lists and counts (heartbeat/limiter/activity.py).

Heartbeats are admitted in one round trip each; what they did reaches the
shared activity keys in one write per process per ``ACTIVITY_FLUSH_SECONDS``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from redis import Redis

from heartbeat.limiter import activity_writer
from heartbeat.limiter.activity_writer import ActivityWriter
from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.outcomes import Outcome
from heartbeat.limiter.reads import LiveStateReader
from heartbeat.store.cluster_scripts import script_runner_for
from heartbeat.store.helpers import redis_now_ms
from tests.live_state_helpers import reader_of
from tests.redis_monitor import commands_seen


def commands_sent_by(client: Redis, action: Callable[[], object]) -> dict[str, int]:
    """The commands clients sent Redis while ``action`` ran, by name, seen through MONITOR.

    Commands run inside scripts are left out: they cost no round trip.
    """
    return dict(Counter(line.split()[0].lower() for source, line in commands_seen(client, action) if source != "lua"))


def test_a_heartbeat_is_one_command_allowed_or_refused(own_redis, key_prefix: str) -> None:
    # On a Redis of the test's own: MONITOR on the shared one would count other clients' commands.
    redis_client = own_redis().client()
    manager = StreamManager(
        redis_client, key_prefix=key_prefix, default_limit=3, session_ttl_seconds=40, eviction_cooldown_seconds=300
    )
    manager.admit("alice", "movie", "s0")  # the scripts are loaded
    assert commands_sent_by(redis_client, lambda: manager.admit("alice", "movie", "s0")) == {"evalsha": 1}
    for i in range(1, 3):
        manager.admit("alice", "movie", f"s{i}")
    refused = {}
    assert commands_sent_by(redis_client, lambda: refused.update(r=manager.admit("alice", "movie", "s-new"))) == {
        "evalsha": 1
    }
    assert refused["r"].outcome is Outcome.LIMIT_REACHED and refused["r"].sessions is None
    # A player with a token is told who is watching: read by the same script, still one command.
    assert commands_sent_by(
        redis_client, lambda: refused.update(r=manager.admit("alice", "movie", "s-new", list_sessions_when_full=True))
    ) == {"evalsha": 1}
    assert [s.session_id for s in refused["r"].sessions] == ["s0", "s1", "s2"]


def commands_scripts_ran(client: Redis, action: Callable[[], object]) -> list[str]:
    """The commands Redis ran inside scripts while ``action`` ran, in order, by name (through MONITOR)."""
    return [line.split()[0].lower() for source, line in commands_seen(client, action) if source == "lua"]


def test_a_repeat_heartbeat_runs_nine_small_commands_in_redis(own_redis, key_prefix: str) -> None:
    # The most common call runs the fewest commands: no GET of an absent override, one HSET.
    client = own_redis().client()
    manager = StreamManager(
        client, key_prefix=key_prefix, default_limit=3, session_ttl_seconds=40, eviction_cooldown_seconds=300
    )
    for session in ("s0", "s1"):
        manager.admit("alice", "movie", session, device_name="tv", network="192.0.2.0/24")
    ran = commands_scripts_ran(
        client, lambda: manager.admit("alice", "movie", "s0", device_name="tv", network="192.0.2.0/24")
    )
    assert ran == ["time", "zrangebyscore", "zscore", "zcard", "exists", "zadd", "hset", "pexpire", "pexpire"]
    # What it wrote is what the separate writes wrote: every field, both keys' TTL.
    details = {k.decode(): v.decode() for k, v in client.hgetall(manager.keys.user("alice").details).items()}
    assert {k: details[k] for k in ("s:s0", "d:s0", "n:s0", "limit", "limitSource")} == {
        "s:s0": "movie",
        "d:s0": "tv",
        "n:s0": "192.0.2.0/24",
        "limit": "3",
        "limitSource": "default",
    }
    assert 39_000 < client.pttl(manager.keys.user("alice").sessions) <= 40_000
    assert 39_000 < client.pttl(manager.keys.user("alice").details) <= 40_000


def test_a_batch_writes_each_index_with_one_command_whatever_its_size(own_redis, key_prefix: str) -> None:
    # A player is heard once per interval, so a batch holds about one heartbeat per session: written
    # one command per member, the index writes cost Redis as much as admission itself.
    client = own_redis().client()
    keys = KeyLayout(key_prefix, 1)
    # A writer of the test's own, noted through its buffer: no flusher thread writes its batches meanwhile.
    writer = ActivityWriter(
        keys,
        request_scripts=script_runner_for(client),
        flush_scripts=script_runner_for(client),
        session_ttl_ms=40_000,
        flush_seconds=1.0,
    )
    reader = LiveStateReader(client, keys, default_limit=3, session_ttl_seconds=40)

    def flush_of(accounts: list[str]) -> Counter[str]:
        """The commands the flush of one repeat heartbeat per account runs (half of them full, half not)."""
        for _ in range(2):  # the first heartbeats' batch (new sessions, seen entries) is not the one measured
            now = redis_now_ms(client)
            for n, user in enumerate(accounts):
                writer.pending.note(user, "tv", now, at_limit=n % 2 == 0, new_session=False)
            ran = commands_scripts_ran(client, writer.flush_activity)
        return Counter(ran)

    assert flush_of(["a0", "a1"]) == flush_of([f"b{n}" for n in range(40)])
    assert reader.live_counts() == (42, 42)
    assert reader.stats().users_at_limit == 21
    # An account no longer full leaves the at-limit index (one ZMSCORE, one ZREM for the batch).
    writer.pending.note("b0", "tv", redis_now_ms(client), at_limit=False, new_session=False)
    writer.flush_activity()
    assert reader.stats().users_at_limit == 20


def test_heartbeats_reach_the_live_index_when_flushed(manager: StreamManager) -> None:
    manager.admit("alice", "movie", "s0")
    manager.admit("bob", "movie", "s0")
    assert reader_of(manager).live_counts() == (0, 0)
    assert manager.flush_activity() == 2
    assert reader_of(manager).live_counts() == (2, 2)
    assert manager.flush_activity() == 0  # nothing pending twice


def test_the_index_keeps_each_sessions_latest_heartbeat(manager: StreamManager) -> None:
    manager.admit("alice", "movie", "s0")
    manager.flush_activity()
    first = reader_of(manager).live_users()[1][0].last_heartbeat_at
    time.sleep(0.01)
    manager.admit("alice", "movie", "s0")
    manager.flush_activity()
    total, [row] = reader_of(manager).live_users()
    assert total == 1 and row.active_sessions == 1 and row.last_heartbeat_at > first


def test_refused_heartbeats_are_counted_but_never_listed(manager: StreamManager) -> None:
    for i in range(3):
        manager.admit("alice", "movie", f"s{i}")
    manager.admit("alice", "movie", "refused")
    manager.flush_activity()
    assert reader_of(manager).stats().live_sessions == 3
    assert sum(m.heartbeats for m in reader_of(manager).activity(2)) == 4
    assert sum(m.refused for m in reader_of(manager).activity(2)) == 1
    assert max(m.peak_sessions for m in reader_of(manager).activity(2)) == 3


def test_a_session_stopped_before_the_flush_stays_out_of_the_index(manager: StreamManager) -> None:
    manager.admit("alice", "movie", "s0")
    manager.admit("alice", "movie", "s1")
    manager.stop("alice", "s0")
    manager.flush_activity()
    total, [row] = reader_of(manager).live_users()
    assert total == 1 and row.active_sessions == 1
    assert reader_of(manager).stats().live_sessions == 1


def test_a_session_ended_on_another_server_stays_out_when_this_one_flushes(
    make_manager: Callable[..., StreamManager],
) -> None:
    this_server, other_server = make_manager(), make_manager()
    this_server.admit("alice", "movie", "s0")
    other_server.evict("alice", "s0")
    this_server.flush_activity()
    assert reader_of(this_server).live_counts() == (0, 0)
    # A heartbeat after the eviction's cool-down, or a new session, is listed again.
    this_server.admit("alice", "movie", "s1")
    this_server.flush_activity()
    assert reader_of(this_server).live_counts() == (1, 1)


def test_a_batch_larger_than_one_call_is_written_whole(manager: StreamManager, monkeypatch) -> None:
    monkeypatch.setattr(activity_writer, "ACTIVITY_CHUNK", 4)
    for user in range(10):
        manager.admit(f"user-{user}", "movie", "s0")
    assert manager.flush_activity() == 10
    assert reader_of(manager).live_counts() == (10, 10)
    assert sum(m.heartbeats for m in reader_of(manager).activity(2)) == 10


def test_the_flusher_thread_writes_pending_activity_by_itself(make_manager: Callable[..., StreamManager]) -> None:
    manager = make_manager(activity_flush_seconds=0.05)
    manager.admit("alice", "movie", "s0")
    deadline = time.monotonic() + 10
    while reader_of(manager).live_counts() != (1, 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader_of(manager).live_counts() == (1, 1)


def test_a_batch_that_cannot_be_written_is_dropped_with_a_warning(key_prefix: str, json_log_lines) -> None:
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)  # nothing listens on port 1
    manager = StreamManager(
        unreachable, key_prefix=key_prefix, default_limit=3, session_ttl_seconds=40, eviction_cooldown_seconds=300
    )
    manager.activity.pending.note("alice", "s0", int(time.time() * 1000), at_limit=False)
    assert manager.flush_activity() == 0
    [line] = [entry for entry in json_log_lines() if entry["message"] == "activity flush failed"]
    assert line["level"] == "warning" and line["sessions"] == 1 and "ConnectionError" in line["stack"]
    assert manager.flush_activity() == 0  # dropped, not retried forever


def test_users_at_their_limit_are_kept_by_the_batches(manager: StreamManager) -> None:
    for i in range(3):
        manager.admit("alice", "movie", f"s{i}")  # full
    manager.admit("bob", "movie", "s0")
    manager.admit("carol", "movie", "s0")
    manager.admit("carol", "movie", "s1")
    manager.flush_activity()
    assert reader_of(manager).stats().users_at_limit == 1
    manager.admit("bob", "movie", "s1")
    manager.admit("bob", "movie", "s2")  # bob fills up
    manager.flush_activity()
    assert reader_of(manager).stats().users_at_limit == 2
    manager.stop("alice", "s0")  # alice has a free slot again, at once
    assert reader_of(manager).stats().users_at_limit == 1
    manager.admit("alice", "movie", "s1")  # her next heartbeat agrees
    manager.flush_activity()
    assert reader_of(manager).stats() == type(reader_of(manager).stats())(
        live_users=3, live_sessions=7, users_at_limit=1
    )


def test_a_refused_heartbeat_marks_the_account_full(manager: StreamManager) -> None:
    for i in range(3):
        manager.admit("alice", "movie", f"s{i}")
    manager.flush_activity()
    manager.set_limit_override("alice", 5)
    manager.admit("alice", "movie", "s0")
    manager.flush_activity()
    assert reader_of(manager).stats().users_at_limit == 0
    manager.set_limit_override("alice", 2)  # lowered below her live sessions: she is over it
    manager.admit("alice", "movie", "s3")  # refused
    manager.flush_activity()
    assert reader_of(manager).stats().users_at_limit == 1


def test_the_overview_reads_no_collection_whole(own_redis, key_prefix: str) -> None:
    """Every dashboard read is a count or a bounded range: checked through MONITOR on a Redis of our own."""
    redis_client = own_redis().client()
    manager = StreamManager(
        redis_client, key_prefix=key_prefix, default_limit=3, session_ttl_seconds=40, eviction_cooldown_seconds=300
    )
    for n in range(50):
        manager.admit(f"user-{n}", "movie", "s0")
    manager.flush_activity()
    sent = commands_sent_by(
        redis_client,
        lambda: (reader_of(manager).stats(), reader_of(manager).activity(60), reader_of(manager).live_users()),
    )
    # Counts, the first page of each activity shard (ZREVRANGEBYSCORE ... LIMIT 0 50: O(log n + 50))
    # with one account's count and limit per row, and the 60 small per-minute hashes; never a
    # range over the live sessions, as the overview did before.
    assert set(sent) - {"hello", "client"} <= {"time", "zcount", "hgetall", "zrevrangebyscore", "get", "hmget"}, sent
    assert sent["hgetall"] == 60 and sent["zrevrangebyscore"] == len(manager.keys.shards)


def test_analytics_past_the_memory_budget_lose_the_accounts_heard_longest_ago(
    make_manager: Callable[..., StreamManager], redis_client: Redis
) -> None:
    # 1 MB over one shard: room for 1,497 accounts of about 700 bytes.
    manager = make_manager(activity_shards=1, activity_memory_budget_mb=1)
    cap = activity_writer.analytics_accounts_per_shard(1, 1)
    assert cap == 1497
    for n in range(cap + 200):
        manager.admit(f"viewer-{n:05d}", "movie", "s0")
        if n % 500 == 499:
            manager.flush_activity()  # a flood arrives over several flushes, oldest first
    manager.flush_activity()
    shard = manager.keys.shards[0]
    day = int(time.time() // 86_400)
    assert redis_client.zcard(shard.seen_users) == cap
    assert redis_client.zcard(shard.seen_users_by_name) == cap
    # The first 200 accounts are gone from every analytics key, their own keys included; the newest stay.
    assert reader_of(manager).find_users("viewer-0019") == []
    assert [u.user_id for u in reader_of(manager).find_users("viewer-00200")] == ["viewer-00200"]
    assert redis_client.exists(shard.sessions_seen_on(day, "viewer-00000")) == 0
    assert redis_client.exists(shard.sessions_seen_on(day, f"viewer-{cap + 199:05d}")) == 1
    assert redis_client.zscore(shard.distinct_sessions_on(day), "viewer-00000") is None
    # Admission itself never depended on the analytics: the newest viewers still play.
    assert manager.admit(f"viewer-{cap + 199:05d}", "movie", "s0").allowed


def test_without_a_budget_no_account_is_trimmed(
    make_manager: Callable[..., StreamManager], redis_client: Redis
) -> None:
    manager = make_manager(activity_shards=1, activity_memory_budget_mb=0)
    for n in range(300):
        manager.admit(f"viewer-{n:05d}", "movie", "s0")
    manager.flush_activity()
    assert redis_client.zcard(manager.keys.shards[0].seen_users) == 300
