"""StreamManager on a real Redis: admission, expiry, stop, overrides, keys, odd ids."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from redis import Redis

from heartbeat.limiter.ids import InvalidIdError
from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.limits import LimitOutOfRangeError
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.outcomes import Outcome
from heartbeat.limiter.read_models import ServiceStats, UserLimit
from tests.live_state_helpers import reader_of


def admit_sessions(manager: StreamManager, user: str, count: int, stream: str = "movie") -> list:
    return [manager.admit(user, stream, f"s{i}") for i in range(count)]


def test_sessions_up_to_the_limit_are_admitted(manager: StreamManager) -> None:
    results = admit_sessions(manager, "alice", 3)
    assert [r.outcome for r in results] == [Outcome.ALLOWED] * 3
    assert [r.active_sessions for r in results] == [1, 2, 3]
    assert all(r.new_session and r.limit == 3 for r in results)


def test_fourth_session_is_refused(manager: StreamManager) -> None:
    admit_sessions(manager, "alice", 3)
    result = manager.admit("alice", "movie", "s4")
    assert result.outcome is Outcome.LIMIT_REACHED
    assert (result.active_sessions, result.limit, result.allowed) == (3, 3, False)
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["s0", "s1", "s2"]


def test_a_refusal_for_the_limit_lists_the_live_sessions_only_when_asked(manager: StreamManager) -> None:
    manager.admit("alice", "movie-0", "s0", device_name="Living room TV")
    manager.admit("alice", "movie-1", "s1")
    manager.admit("alice", "movie-2", "s2", device_name="Phone")
    assert manager.admit("alice", "movie", "s3").sessions is None
    refused = manager.admit("alice", "movie", "s3", device_name="Laptop", list_sessions_when_full=True)
    assert refused.outcome is Outcome.LIMIT_REACHED
    # The same sessions, times and devices as the dashboard's read gives (which reads the clock later).
    without_countdown = [dataclasses.replace(s, expires_in_seconds=0) for s in refused.sessions]
    assert without_countdown == [
        dataclasses.replace(s, expires_in_seconds=0) for s in reader_of(manager).sessions("alice")
    ]
    assert all(0 < s.expires_in_seconds <= manager.session_ttl_ms / 1000 for s in refused.sessions)
    assert [(s.session_id, s.stream_id, s.device_name) for s in refused.sessions] == [
        ("s0", "movie-0", "Living room TV"),
        ("s1", "movie-1", None),
        ("s2", "movie-2", "Phone"),
    ]
    # Only a refusal for the limit carries the list.
    assert manager.admit("alice", "movie-0", "s0", list_sessions_when_full=True).sessions is None


def test_users_do_not_share_slots(manager: StreamManager) -> None:
    admit_sessions(manager, "alice", 3)
    assert manager.admit("bob", "movie", "s0").allowed


def test_same_session_again_keeps_its_slot_without_counting_twice(manager: StreamManager) -> None:
    admit_sessions(manager, "alice", 3)
    again = manager.admit("alice", "movie", "s1")
    assert again.allowed and not again.new_session and again.active_sessions == 3


def test_stream_change_keeps_the_slot_and_records_the_new_stream(manager: StreamManager) -> None:
    admit_sessions(manager, "alice", 3, stream="episode-1")
    result = manager.admit("alice", "episode-2", "s0")
    assert result.allowed and result.active_sessions == 3
    streams = {s.session_id: s.stream_id for s in reader_of(manager).sessions("alice")}
    assert streams == {"s0": "episode-2", "s1": "episode-1", "s2": "episode-1"}


def test_expired_session_frees_its_slot(make_manager) -> None:
    manager = make_manager(session_ttl_seconds=1)
    admit_sessions(manager, "alice", 3)
    assert not manager.admit("alice", "movie", "late").allowed
    time.sleep(1.1)
    result = manager.admit("alice", "movie", "late")
    assert result.allowed and result.active_sessions == 1
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["late"]


def test_expired_sessions_are_pruned_while_others_play_on(make_manager) -> None:
    manager = make_manager(session_ttl_seconds=1)
    admit_sessions(manager, "alice", 3)
    time.sleep(0.6)
    manager.admit("alice", "movie", "s0")
    time.sleep(0.6)
    result = manager.admit("alice", "movie", "new")
    assert (result.allowed, result.active_sessions, result.pruned) == (True, 2, 2)
    assert {s.session_id for s in reader_of(manager).sessions("alice")} == {"s0", "new"}


def test_heartbeats_keep_a_session_alive_past_its_first_ttl(make_manager) -> None:
    # Three heartbeats 0.75 s apart outlive the 2 s TTL; each comes 1.25 s before its session would
    # expire (with a 1 s TTL and 0.5 s apart, a loaded machine once let one expire in between).
    manager = make_manager(session_ttl_seconds=2)
    manager.admit("alice", "movie", "s0")
    [first] = reader_of(manager).sessions("alice")
    for _ in range(3):
        time.sleep(0.75)
        # Not expired and admitted again (that too is allowed): the same session, refreshed.
        again = manager.admit("alice", "movie", "s0")
        assert (again.outcome, again.new_session, again.active_sessions, again.pruned) == (Outcome.ALLOWED, False, 1, 0)
    [session] = reader_of(manager).sessions("alice")
    assert (session.session_id, session.started_at) == ("s0", first.started_at)
    assert session.last_heartbeat_at > first.last_heartbeat_at


def test_stop_frees_a_slot_at_once(manager: StreamManager) -> None:
    admit_sessions(manager, "alice", 3)
    assert manager.stop("alice", "s1") is True
    assert manager.admit("alice", "movie", "s4").allowed
    assert {s.session_id for s in reader_of(manager).sessions("alice")} == {"s0", "s2", "s4"}


def test_stop_of_an_unknown_session_is_harmless(manager: StreamManager) -> None:
    manager.admit("alice", "movie", "s0")
    assert manager.stop("alice", "nobody") is False
    assert manager.stop("alice", "nobody") is False
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["s0"]


def test_limit_override_wins_over_the_default(manager: StreamManager) -> None:
    manager.set_limit_override("alice", 5)
    results = admit_sessions(manager, "alice", 6)
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[-1].limit == 5
    assert reader_of(manager).get_limit("alice").override == 5


def test_clearing_the_override_restores_the_default(manager: StreamManager) -> None:
    manager.set_limit_override("alice", 1)
    manager.set_limit_override("alice", None)
    limit = reader_of(manager).get_limit("alice")
    assert (limit.limit, limit.override, limit.default) == (3, None, 3)


def test_lowering_the_limit_never_displaces_a_live_session(manager: StreamManager) -> None:
    admit_sessions(manager, "alice", 3)
    manager.set_limit_override("alice", 1)
    assert all(manager.admit("alice", "movie", f"s{i}").allowed for i in range(3))
    assert manager.admit("alice", "movie", "new").outcome is Outcome.LIMIT_REACHED


@pytest.mark.parametrize("bad", [0, 51, -1, True, "3"])
def test_limit_override_outside_1_to_50_is_refused(manager: StreamManager, bad: object) -> None:
    with pytest.raises(LimitOutOfRangeError):
        manager.set_limit_override("alice", bad)  # type: ignore[arg-type]
    assert reader_of(manager).get_limit("alice").override is None


def test_every_session_key_carries_an_expiry(manager: StreamManager, redis_client: Redis, key_prefix: str) -> None:
    manager.admit("alice", "movie", "s0")
    manager.evict("alice", "s0")
    manager.admit("alice", "movie", "s1")
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{key_prefix}:*")]
    user = manager.keys.user("alice")
    assert {k for k in keys if ":u:" in k} == {user.sessions, user.details, user.evicted}
    for key in keys:
        assert redis_client.pttl(key) > 0, key


def test_a_user_who_stops_watching_leaves_nothing_behind(make_manager, redis_client: Redis, key_prefix: str) -> None:
    manager = make_manager(session_ttl_seconds=1, eviction_cooldown_seconds=1)
    manager.admit("alice", "movie", "s0")
    manager.admit("alice", "movie", "s1")
    manager.evict("alice", "s1")
    time.sleep(1.2)
    leftover = [k.decode() for k in redis_client.scan_iter(match=f"{key_prefix}:*")]
    # The user's own keys are gone; the shared indexes no longer count the user
    # and expire by themselves within two minutes of the last heartbeat; what
    # support may look up later (seen in the last day, the daily signals)
    # expires within two days.
    assert [k for k in leftover if ":u:" in k] == []
    support = (":seen", ":refusals:", "-day:", ":sessions-hll:")
    assert all(0 < redis_client.pttl(k) <= 2 * 86_400_000 for k in leftover)
    assert all(redis_client.pttl(k) <= 2 * 3600 * 1000 for k in leftover if not any(s in k for s in support))
    assert all(
        redis_client.pttl(k) <= 120_000 for k in leftover if ":minute:" not in k and not any(s in k for s in support)
    )
    assert reader_of(manager).stats() == ServiceStats(live_users=0, live_sessions=0, users_at_limit=0)
    assert reader_of(manager).live_users() == (0, [])


ODD_IDS = ["{a}", "a}", "}", "{", "*", "a:b|c@d/e", "with space", "名前", "%7D", "x" * 128, "ünïcødé 🎬"]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_odd_ids_are_valid_and_round_trip(manager: StreamManager, odd: str) -> None:
    assert manager.admit(odd, odd, odd).allowed
    [session] = reader_of(manager).sessions(odd)
    assert (session.session_id, session.stream_id) == (odd, odd)


def test_one_users_ids_never_reach_another_users_keys(manager: StreamManager) -> None:
    # "}" escapes to "%7D": escaping "%" too keeps these two apart.
    users = ["}", "%7D", "a", "a}", "{a}", "a}:sessions", "*"]
    for user in users:
        admit_sessions(manager, user, 3)
    for user in users:
        assert len(reader_of(manager).sessions(user)) == 3
        assert manager.admit(user, "movie", "extra").outcome is Outcome.LIMIT_REACHED


def test_all_keys_of_one_user_share_one_hash_tag() -> None:
    layout = KeyLayout("streamlimit")
    for user in ["plain", "}", "{x}", "a{b}c", "%"]:
        keys = layout.user(user).as_list()
        tags = {k[k.index("{") + 1 : k.index("}", k.index("{"))] for k in keys}
        assert len(tags) == 1 and tags != {""}, (user, keys)
        assert layout.user_key_list(user) == keys  # the heartbeat path's shortcut, in the scripts' order


@pytest.mark.parametrize("bad", ["", "x" * 129, "tab\there", "nul\x00", "del\x7f", 42, None])
def test_invalid_ids_are_refused_before_redis_is_touched(
    manager: StreamManager, redis_client: Redis, key_prefix: str, bad: object
) -> None:
    with pytest.raises(InvalidIdError):
        manager.admit(bad, "movie", "s0")  # type: ignore[arg-type]
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []


def test_concurrent_first_heartbeats_admit_exactly_the_limit(make_manager) -> None:
    manager = make_manager(default_limit=5)
    barrier = threading.Barrier(100)
    outcomes: list[Outcome] = []

    def player(i: int) -> None:
        barrier.wait()
        outcomes.append(manager.admit("family", "movie", f"device-{i}").outcome)

    threads = [threading.Thread(target=player, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(Outcome.ALLOWED) == 5
    assert outcomes.count(Outcome.LIMIT_REACHED) == 95
    assert len(reader_of(manager).sessions("family")) == 5


def test_scripts_are_reloaded_after_redis_forgets_them(own_redis, key_prefix: str) -> None:
    # SCRIPT FLUSH only ever on a Redis of the test's own.
    redis_client = own_redis().client()
    manager = StreamManager(
        redis_client, key_prefix=key_prefix, default_limit=3, session_ttl_seconds=40, eviction_cooldown_seconds=300
    )
    manager.admit("alice", "movie", "s0")
    redis_client.script_flush()
    assert not manager.scripts_loaded()
    result = manager.admit("alice", "movie", "s1")
    assert result.allowed and result.new_session and result.active_sessions == 2
    assert manager.scripts_loaded() is False  # only the scripts that ran were reloaded
    assert manager.stop("alice", "s1") is True


def test_session_details_show_start_last_heartbeat_and_expiry(manager: StreamManager) -> None:
    manager.admit("alice", "movie", "s0")
    time.sleep(0.05)
    manager.admit("alice", "movie", "s0")
    [session] = reader_of(manager).sessions("alice")
    assert session.last_heartbeat_at > session.started_at
    assert 39 < session.expires_in_seconds <= 40


def test_live_users_are_listed_most_recent_first(manager: StreamManager) -> None:
    for user in ["u1", "u2", "u3"]:
        manager.admit(user, "movie", "s0")
        time.sleep(0.002)
    manager.admit("u2", "movie", "s1")
    manager.flush_activity()
    total, page = reader_of(manager).live_users(offset=0, count=2)
    assert total == 3
    assert [(u.user_id, u.active_sessions) for u in page] == [("u2", 2), ("u3", 1)]
    total, page = reader_of(manager).live_users(offset=2, count=2)
    assert [u.user_id for u in page] == ["u1"]


def test_refused_and_stopped_sessions_leave_the_live_counts(manager: StreamManager) -> None:
    admit_sessions(manager, "alice", 3)
    manager.admit("alice", "movie", "refused")
    manager.admit("bob", "movie", "s0")
    manager.flush_activity()
    manager.stop("bob", "s0")
    stats = reader_of(manager).stats()
    assert (stats.live_users, stats.live_sessions, stats.users_at_limit) == (1, 3, 1)


def test_activity_counts_heartbeats_refusals_and_evictions(manager: StreamManager) -> None:
    admit_sessions(manager, "alice", 3)
    manager.admit("alice", "movie", "refused")
    manager.admit("alice", "movie", "s0")
    manager.flush_activity()
    manager.evict("alice", "s2")
    minutes = reader_of(manager).activity(minutes=2)
    assert len(minutes) == 2
    assert sum(m.heartbeats for m in minutes) == 5
    assert sum(m.refused for m in minutes) == 1
    assert sum(m.evicted for m in minutes) == 1
    assert max(m.peak_sessions for m in minutes) == 3


# --- Issue 8: limits asked by tokens and plans, device names, blocks, replace_oldest ---


def test_the_asked_limit_is_token_then_plan_then_default(make_manager) -> None:
    manager = make_manager(plan_limits={"basic": 1, "premium": 4})
    assert manager.asked_limit(2, "premium") == (2, "token")
    assert manager.asked_limit(None, "premium") == (4, "plan")
    assert manager.asked_limit(None, "gold") == (3, "default")
    assert manager.asked_limit() == (3, "default")


def test_the_override_in_redis_wins_over_the_asked_limit(manager: StreamManager) -> None:
    assert manager.admit("alice", "movie", "s0", max_streams=1).limit_source == "token"
    manager.set_limit_override("alice", 2)
    result = manager.admit("alice", "movie", "s1", max_streams=1)
    assert (result.allowed, result.limit, result.limit_source) == (True, 2, "override")


def test_get_limit_reports_the_source_the_latest_heartbeat_asked_for(make_manager) -> None:
    manager = make_manager(plan_limits={"premium": 4})
    assert reader_of(manager).get_limit("alice").source == "default"
    manager.admit("alice", "movie", "s0", plan="premium")
    assert (reader_of(manager).get_limit("alice").limit, reader_of(manager).get_limit("alice").source) == (4, "plan")
    manager.set_limit_override("alice", 1)
    assert (reader_of(manager).get_limit("alice").limit, reader_of(manager).get_limit("alice").source) == (
        1,
        "override",
    )


def test_the_device_name_is_kept_and_forgotten_with_its_session(
    manager: StreamManager, redis_client: Redis, key_prefix: str
) -> None:
    manager.admit("alice", "movie", "s0", device_name="TV")
    manager.admit("alice", "movie", "s0")  # a heartbeat without the name keeps it
    assert reader_of(manager).sessions("alice")[0].device_name == "TV"
    manager.stop("alice", "s0")
    left = redis_client.hgetall(manager.keys.user("alice").details)
    assert left == {b"limit": b"3", b"limitSource": b"default"}
    with pytest.raises(InvalidIdError):
        manager.admit("alice", "movie", "s1", device_name="x" * 65)


def test_a_session_stopped_from_another_screen_is_refused_for_a_ttl(make_manager) -> None:
    manager = make_manager(session_ttl_seconds=1)
    manager.admit("alice", "movie", "s0")
    assert manager.stop("alice", "s0", from_other_screen=True) is True
    assert manager.admit("alice", "movie", "s0").outcome is Outcome.STOPPED
    assert manager.admit("alice", "movie", "s1").allowed
    time.sleep(1.1)
    assert manager.admit("alice", "movie", "s0").allowed


def test_stopping_a_session_that_is_not_live_blocks_nothing(manager: StreamManager, redis_client: Redis) -> None:
    assert manager.stop("alice", "s0", from_other_screen=True) is False
    assert not redis_client.exists(manager.keys.user("alice").stopped)
    assert manager.admit("alice", "movie", "s0").allowed


def test_replace_oldest_gives_a_new_session_the_slot_of_the_first_started(make_manager) -> None:
    manager = make_manager(limit_policy="replace_oldest")
    admit_sessions(manager, "alice", 3)
    manager.admit("alice", "movie", "s0")  # the oldest stays the oldest by start, not by heartbeat
    result = manager.admit("alice", "movie", "s3")
    assert (result.outcome, result.active_sessions, result.replaced) == (Outcome.ALLOWED, 3, ("s0",))
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["s1", "s2", "s3"]
    assert manager.admit("alice", "movie", "s0").outcome is Outcome.REPLACED
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["s1", "s2", "s3"]


def admit_in_reverse_id_order(manager: StreamManager, user: str) -> None:
    """s2, then s1, then s0, each in a millisecond of its own: the ids sort opposite to the start order."""
    for sid in ("s2", "s1", "s0"):
        manager.admit(user, "movie", sid)
        time.sleep(0.005)
    starts = {s.session_id: s.started_at for s in reader_of(manager).sessions(user)}
    assert starts["s2"] < starts["s1"] < starts["s0"]


def test_replace_oldest_goes_by_start_time_not_by_id(make_manager) -> None:
    manager = make_manager(limit_policy="replace_oldest")
    admit_in_reverse_id_order(manager, "alice")
    assert manager.admit("alice", "movie", "s3").replaced == ("s2",)
    assert manager.admit("alice", "movie", "s4").replaced == ("s1",)
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["s0", "s3", "s4"]


def test_replace_oldest_under_a_lowered_limit_replaces_in_start_order(make_manager) -> None:
    manager = make_manager(limit_policy="replace_oldest")
    admit_in_reverse_id_order(manager, "alice")
    manager.set_limit_override("alice", 2)
    assert manager.admit("alice", "movie", "new").replaced == ("s2", "s1")
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["s0", "new"]


def test_the_replaced_sessions_key_expires_with_the_ttl(make_manager, redis_client: Redis, key_prefix: str) -> None:
    manager = make_manager(limit_policy="replace_oldest", default_limit=1)
    manager.admit("alice", "movie", "s0")
    manager.admit("alice", "movie", "s1")
    replaced = manager.keys.user("alice").replaced
    assert redis_client.zrange(replaced, 0, -1) == [b"s0"]
    assert 0 < redis_client.pttl(replaced) <= manager.session_ttl_ms
    for key in redis_client.scan_iter(match=f"{key_prefix}:*"):
        assert redis_client.pttl(key) > 0, key


def test_replace_oldest_makes_room_under_a_lowered_limit(make_manager) -> None:
    manager = make_manager(limit_policy="replace_oldest")
    admit_sessions(manager, "alice", 3)
    manager.set_limit_override("alice", 1)
    result = manager.admit("alice", "movie", "new")
    assert result.replaced == ("s0", "s1", "s2") and result.active_sessions == 1
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["new"]


def test_replaced_sessions_leave_the_live_counts_at_once(make_manager) -> None:
    manager = make_manager(limit_policy="replace_oldest", default_limit=1)
    manager.admit("alice", "movie", "s0")
    manager.flush_activity()
    manager.admit("alice", "movie", "s1")
    manager.flush_activity()
    assert reader_of(manager).live_counts() == (1, 1)


def test_an_unknown_limit_policy_is_refused(make_manager) -> None:
    with pytest.raises(ValueError):
        make_manager(limit_policy="kick_everyone")


def test_concurrent_new_sessions_under_replace_oldest_keep_exactly_the_limit(make_manager) -> None:
    manager = make_manager(default_limit=3, limit_policy="replace_oldest")
    barrier = threading.Barrier(50)
    results: list = []

    def player(i: int) -> None:
        barrier.wait()
        results.append(manager.admit("family", "movie", f"device-{i}"))

    threads = [threading.Thread(target=player, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.allowed for r in results) and all(r.active_sessions <= 3 for r in results)
    replaced = [sid for r in results for sid in r.replaced]
    assert len(replaced) == len(set(replaced)) == 47
    live = {s.session_id for s in reader_of(manager).sessions("family")}
    assert len(live) == 3 and not live & set(replaced)
    assert all(manager.admit("family", "movie", sid).outcome is Outcome.REPLACED for sid in replaced)


def test_limit_for_is_the_override_else_what_the_token_or_plan_asks(make_manager) -> None:
    manager = make_manager(plan_limits={"premium": 4})
    assert manager.limit_for("alice", 2, "premium") == UserLimit(2, None, 3, "token")
    assert manager.limit_for("alice", None, "premium") == UserLimit(4, None, 3, "plan")
    assert manager.limit_for("alice") == UserLimit(3, None, 3, "default")
    manager.set_limit_override("alice", 5)
    assert manager.limit_for("alice", 2, "premium") == UserLimit(5, 5, 3, "override")


def test_limit_overrides_of_1_and_50_are_allowed(manager: StreamManager) -> None:
    assert manager.set_limit_override("alice", 50) == UserLimit(50, 50, 3, "override")
    assert manager.set_limit_override("alice", 1) == UserLimit(1, 1, 3, "override")


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.limit_for("bad\tid"),
        lambda m: m.set_limit_override("bad\tid", 2),
        lambda m: m.evict("bad\tid"),
        lambda m: m.stop("bad\tid", "s0"),
        lambda m: m.block_new_sessions("bad\tid", 60),
    ],
    ids=["limit_for", "set_limit_override", "evict", "stop", "block_new_sessions"],
)
def test_a_bad_user_id_is_refused_naming_the_field(manager: StreamManager, call) -> None:
    with pytest.raises(InvalidIdError) as caught:
        call(manager)
    assert str(caught.value).startswith("userId: ")


@pytest.mark.parametrize(
    "call",
    [lambda m: m.evict("alice", "bad\tid"), lambda m: m.stop("alice", "bad\tid")],
    ids=["evict", "stop"],
)
def test_a_bad_session_id_is_refused_naming_the_field(manager: StreamManager, call) -> None:
    with pytest.raises(InvalidIdError) as caught:
        call(manager)
    assert str(caught.value).startswith("sessionId: ")


def test_a_plain_stop_blocks_nothing_and_counts_no_eviction(manager: StreamManager) -> None:
    manager.admit("alice", "movie", "s0")
    manager.flush_activity()
    assert manager.stop("alice", "s0") is True
    # The same player may start again at once (only a stop from another screen blocks it).
    again = manager.admit("alice", "movie", "s0")
    assert (again.outcome, again.new_session) == (Outcome.ALLOWED, True)
    manager.flush_activity()
    assert sum(m.evicted for m in reader_of(manager).activity(minutes=2)) == 0
