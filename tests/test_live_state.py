"""heartbeat/limiter/reads.py: the dashboard's reads merge the activity shards exactly."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable

import pytest
from redis import Redis

from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.reads import LiveStateReader
from heartbeat.store.helpers import redis_now_ms
from tests.live_state_helpers import reader_of


def fill_live_index(redis_client: Redis, keys: KeyLayout, scores: dict[str, int], *, at_limit: bool = False) -> None:
    """Put accounts in their shards' live index with chosen scores (ties on purpose)."""
    pipe = redis_client.pipeline(transaction=False)
    for user_id, score in scores.items():
        shard = keys.shard_of(user_id)
        pipe.zadd(shard.users_at_limit if at_limit else shard.live_users, {user_id: score})
    pipe.execute()


def expected_order(scores: dict[str, int]) -> list[str]:
    """Newest heartbeat first, ties by id, descending: the order of one big ZREVRANGE."""
    return [uid for uid, _ in sorted(scores.items(), key=lambda item: (item[1], item[0].encode()), reverse=True)]


@pytest.mark.parametrize("shards", [1, 3, 16])
def test_every_page_of_live_users_is_the_page_of_one_sorted_list(
    redis_client: Redis, key_prefix: str, shards: int
) -> None:
    keys = KeyLayout(key_prefix, shards)
    reader = LiveStateReader(redis_client, keys, default_limit=3, session_ttl_seconds=40)
    now = redis_now_ms(redis_client)
    rng = random.Random(shards)
    # 230 accounts over 40 distinct times 0.1 s apart: many ties, spread over every shard. All within
    # 4 s of now, so that none passes the 40 s TTL however slowly a busy machine runs the test.
    scores = {f"acct-{n:03d}": now - 100 * rng.randint(0, 39) for n in range(230)}
    fill_live_index(redis_client, keys, scores)
    order = expected_order(scores)
    for offset in (0, 1, 7, 49, 50, 51, 100, 173, 222, 229):
        total, rows = reader.live_users(offset, 7)
        assert total == 230
        assert [row.user_id for row in rows] == order[offset : offset + 7], offset
    assert reader.live_users(230, 7) == (230, [])


def test_entries_older_than_the_session_ttl_are_neither_counted_nor_listed(
    redis_client: Redis, key_prefix: str
) -> None:
    keys = KeyLayout(key_prefix, 4)
    reader = LiveStateReader(redis_client, keys, default_limit=3, session_ttl_seconds=40)
    now = redis_now_ms(redis_client)
    live = {f"live-{n}": now - 100 * n for n in range(12)}
    fill_live_index(redis_client, keys, {**live, **{f"gone-{n}": now - 41_000 - n for n in range(12)}})
    assert reader.live_users(0, 50) == (12, reader.live_users(0, 50)[1])
    assert [row.user_id for row in reader.live_users(5, 50)[1]] == expected_order(live)[5:]


def test_the_at_limit_filter_pages_its_own_index(redis_client: Redis, key_prefix: str) -> None:
    keys = KeyLayout(key_prefix, 5)
    reader = LiveStateReader(redis_client, keys, default_limit=3, session_ttl_seconds=40)
    now = redis_now_ms(redis_client)
    full = {f"full-{n:02d}": now - 500 * (n % 6) for n in range(40)}
    fill_live_index(redis_client, keys, {f"other-{n}": now for n in range(40)})
    fill_live_index(redis_client, keys, full, at_limit=True)
    total, rows = reader.live_users(13, 10, at_limit=True)
    assert total == 40 and [row.user_id for row in rows] == expected_order(full)[13:23]


def test_prefix_search_and_sharing_signals_merge_the_shards(
    make_manager: Callable[..., StreamManager], redis_client: Redis
) -> None:
    manager = make_manager(activity_shards=7, default_limit=2)
    tries = {f"family-{n:02d}": n % 4 + 1 for n in range(30)}
    for user_id, sessions in tries.items():
        for n in range(sessions):  # past the second, refused
            manager.admit(user_id, "movie", f"screen-{n}")
    manager.admit("friends-1", "movie", "tv")
    manager.flush_activity()
    found = reader_of(manager).find_users("family-1", count=5)
    assert [f.user_id for f in found] == [f"family-{n}" for n in range(10, 15)]
    assert all(f.watching for f in found)

    def top(counts: dict[str, int]) -> list[tuple[str, int]]:
        ranked = sorted(counts.items(), key=lambda item: (item[1], item[0].encode()), reverse=True)
        return [(uid, n) for uid, n in ranked if n][:8]

    refused, distinct = reader_of(manager).sharing_signals(int(redis_now_ms(redis_client) // 86_400_000), count=8)
    assert [(s.user_id, s.count) for s in refused] == top({uid: max(0, k - 2) for uid, k in tries.items()})
    assert [(s.user_id, s.count) for s in distinct] == top({uid: min(k, 2) for uid, k in tries.items()})


def test_every_process_puts_an_account_in_the_same_shard() -> None:
    # CRC-32, not Python's hash(), which is salted per process: every API server must agree.
    script = (
        "from heartbeat.limiter.keys import KeyLayout; k = KeyLayout('p', 16); "
        "print([k.shard_number(u) for u in ('alice', 'bob', 'ünïcödé', '{x}', '')])"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(seen) == 1
    assert len(set(eval(seen.pop()))) > 1  # noqa: S307 (our own output): the ids spread over shards
