"""New sessions per client network per minute, for anonymous players (heartbeat/limiter/new_sessions.py)."""

from __future__ import annotations

from collections.abc import Callable

from django.test import Client
from redis import Redis

from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.new_sessions import seconds_left_in_minute
from heartbeat.limiter.outcomes import Outcome
from heartbeat.store.helpers import redis_now_ms
from tests.live_state_helpers import reader_of

HOME = "192.0.2.0/24"


def test_a_network_past_its_rate_gets_its_next_new_session_refused_and_nothing_kept(
    make_manager: Callable[..., StreamManager],
) -> None:
    manager = make_manager(new_sessions_per_network_per_minute=2)
    rated = {"network": HOME, "limit_new_sessions_of_network": True}
    assert [manager.admit(f"fake-{n}", "movie", "s0", **rated).allowed for n in range(2)] == [True, True]
    third = manager.admit("fake-2", "movie", "s0", **rated)
    assert (third.outcome, third.active_sessions) == (Outcome.TOO_MANY_NEW_SESSIONS, 0)
    assert 1 <= third.retry_after_seconds <= 60
    assert reader_of(manager).sessions("fake-2") == []
    # Remembered by this process: the script refuses the next one without writing (no INCR either).
    fourth = manager.admit("fake-3", "movie", "s0", **rated)
    assert fourth.outcome is Outcome.TOO_MANY_NEW_SESSIONS
    assert manager.client.get(manager.keys.new_sessions_of(HOME, redis_now_ms(manager.client) // 60_000)) in (
        b"3",
        None,  # the minute turned between the calls
    )
    assert reader_of(manager).sessions("fake-3") == []
    # Live sessions of that network play on; other networks and verified players are not counted.
    assert manager.admit("fake-0", "movie", "s0", **rated).allowed
    assert manager.admit("viewer", "movie", "s0", network="198.51.100.0/24", limit_new_sessions_of_network=True).allowed
    assert manager.admit("token-viewer", "movie", "s0", network=HOME).allowed


def test_another_process_learns_the_rate_from_redis(make_manager: Callable[..., StreamManager]) -> None:
    first, second = (
        make_manager(new_sessions_per_network_per_minute=1),
        make_manager(new_sessions_per_network_per_minute=1),
    )
    rated = {"network": HOME, "limit_new_sessions_of_network": True}
    assert first.admit("a", "movie", "s0", **rated).allowed
    assert second.admit("b", "movie", "s0", **rated).outcome is Outcome.TOO_MANY_NEW_SESSIONS


def test_without_a_rate_nothing_is_counted(make_manager: Callable[..., StreamManager], redis_client: Redis) -> None:
    manager = make_manager(new_sessions_per_network_per_minute=0)
    for n in range(5):
        assert manager.admit(f"a{n}", "movie", "s0", network=HOME, limit_new_sessions_of_network=True).allowed
    assert redis_client.exists(manager.keys.new_sessions_of(HOME, redis_now_ms(redis_client) // 60_000)) == 0


def test_the_api_answers_429_with_retry_after_to_anonymous_players(client: Client, settings) -> None:
    settings.NEW_SESSIONS_PER_NETWORK_PER_MINUTE = 2

    def heartbeat(user: str, address: str = "192.0.2.7"):
        body = {"userId": user, "streamId": "movie", "sessionId": "s0"}
        return client.post("/heartbeat", body, content_type="application/json", REMOTE_ADDR=address)

    assert [heartbeat(f"fake-{n}").status_code for n in range(2)] == [200, 200]
    refused = heartbeat("fake-2")
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_new_sessions" and refused.json()["allowed"] is False
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert heartbeat("fake-0").status_code == 200  # a live session is not new
    assert heartbeat("fake-3", address="192.0.2.200").status_code == 429  # the same /24
    assert heartbeat("fake-4", address="198.51.100.7").status_code == 200


def test_retry_after_is_the_rest_of_the_minute() -> None:
    assert seconds_left_in_minute(60_000 * 7) == 60
    assert seconds_left_in_minute(60_000 * 7 + 59_500) == 1
    assert seconds_left_in_minute(60_000 * 7 + 30_000) == 30
