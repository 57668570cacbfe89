"""A Redis that stalls, fills up or turns read-only: on a redis-server of the test's own.

Pausing (SIGSTOP), CONFIG SET maxmemory and REPLICAOF are never done to the
shared Redis.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.scripts import ADMIT
from heartbeat.store.breaker import BreakerState, CircuitBreaker
from tests.tcp_state import wait_for
from tests.test_probes_and_metrics import metric

ERRORS = "streamlimit_redis_errors_total"
BODY = {"userId": "alice", "streamId": "movie", "sessionId": "tv"}


def heartbeat(client: Client, session: str = "tv") -> object:
    return client.post("/heartbeat", {**BODY, "sessionId": session}, content_type="application/json")


def wait_until_busy(redis) -> None:
    """Wait until the server runs a slow command: another client's PING gets no answer in 0.25 s (idle: µs)."""

    def busy() -> bool:
        try:
            redis.client(socket_timeout=0.25, retry=Retry(NoBackoff(), 0)).ping()  # no retry: one PING, one answer
        except RedisTimeoutError:
            return True
        return False

    wait_for("Redis busy with the slow command", busy, timeout=10)


def heartbeats_while_paused(client: Client, redis, count: int) -> list:
    """Send ``count`` heartbeats while the test's own Redis is frozen; it is resumed after, whatever happens."""
    redis.pause()
    try:
        return [heartbeat(client) for _ in range(count)]
    finally:
        redis.resume()


def manager_on(redis, key_prefix: str, socket_timeout: float, **options: object) -> StreamManager:
    """A StreamManager on the test's own Redis, with a short socket time-out (limit 3, sessions live 40 s)."""
    return StreamManager(
        redis.client(socket_timeout=socket_timeout),
        key_prefix=key_prefix,
        default_limit=3,
        session_ttl_seconds=40,
        eviction_cooldown_seconds=300,
        **options,
    )


def test_a_stalled_redis_costs_a_heartbeat_one_socket_timeout_and_the_script_is_not_sent_twice(
    own_redis, key_prefix
) -> None:
    redis = own_redis()
    manager = manager_on(redis, key_prefix, 0.5)
    manager.admit("alice", "movie", "warm-up")  # scripts loaded, connection kept
    with redis.monitor() as seen:
        redis.pause()
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            manager.admit("alice", "movie", "tv")
        waited = time.monotonic() - started
        redis.resume()
        # The timed-out script was sent once, never again.
        assert seen().count(ADMIT.sha) == 1
    # It waited for the socket time-out (0.5 s): a lower bound a busy machine cannot break. That it waited
    # once, not twice, is the single ADMIT above; the upper bound only leaves 5x room to a busy machine.
    assert 0.45 <= waited < 2.5


def test_after_consecutive_failures_the_breaker_fails_heartbeats_at_once_without_calling_redis(
    client: Client, own_redis, use_redis, settings, json_log_lines
) -> None:
    redis = own_redis()
    use_redis(redis.url, SOCKET_TIMEOUT=1.0)
    settings.REDIS_BREAKER_FAILURES = 2
    settings.REDIS_BREAKER_SECONDS = 60
    assert heartbeat(client).status_code == 200
    redis.pause()
    try:
        answers, waits = [], []
        for _ in range(8):
            started = time.monotonic()
            answers.append(heartbeat(client))
            waits.append(time.monotonic() - started)
    finally:
        redis.resume()
    assert [a.status_code for a in answers] == [500] * 8
    assert {a.json()["code"] for a in answers} == {"internal_error"}
    # The two that opened the breaker each waited for the socket time-out; the six after did not wait.
    assert all(wait >= 0.9 for wait in waits[:2])
    assert all(wait < 0.5 for wait in waits[2:]), waits
    reasons = [line.get("reason") for line in json_log_lines() if line["message"] == "heartbeat failed"]
    assert reasons == ["redis_error"] * 2 + ["redis_breaker_open"] * 6


def test_an_open_breaker_is_a_metric_and_a_log_line(
    client: Client, own_redis, use_redis, settings, json_log_lines
) -> None:
    redis = own_redis()
    use_redis(redis.url, SOCKET_TIMEOUT=0.3)
    settings.REDIS_BREAKER_FAILURES = 2
    settings.REDIS_BREAKER_SECONDS = 60
    # The counter is the process'; what this test adds to it is known exactly.
    refused_before = metric(client.get("/metrics").content.decode(), ERRORS, '{operation="breaker_open"}')
    answers = heartbeats_while_paused(client, redis, 8)
    assert {a.json()["code"] for a in answers} == {"internal_error"}
    # Redis is back, but the breaker stays open for its time: the answer is still at once, 500.
    assert heartbeat(client).status_code == 500
    text = client.get("/metrics").content.decode()
    assert metric(text, "streamlimit_redis_breaker_open") == 1
    # Two heartbeats opened it; the six after and the one once Redis was back were refused by it.
    assert metric(text, ERRORS, '{operation="breaker_open"}') - refused_before == 7
    messages = [line["message"] for line in json_log_lines()]
    assert "redis circuit breaker open" in messages


def test_after_the_open_time_one_trial_call_closes_the_breaker(
    client: Client, own_redis, use_redis, settings, json_log_lines
) -> None:
    redis = own_redis()
    use_redis(redis.url, SOCKET_TIMEOUT=0.3)
    settings.REDIS_BREAKER_FAILURES = 1
    settings.REDIS_BREAKER_SECONDS = 0.5
    # The first opens it, the second is refused at once.
    assert [a.status_code for a in heartbeats_while_paused(client, redis, 2)] == [500, 500]
    time.sleep(0.6)
    assert heartbeat(client).status_code == 200  # the trial
    assert heartbeat(client, "phone").status_code == 200
    messages = [line["message"] for line in json_log_lines()]
    assert messages.index("redis circuit breaker open") < messages.index("redis circuit breaker closed")
    assert metric(client.get("/metrics").content.decode(), "streamlimit_redis_breaker_open") == 0


def test_with_fail_open_an_open_breaker_answers_degraded_at_once(
    client: Client, own_redis, use_redis, settings
) -> None:
    redis = own_redis()
    use_redis(redis.url, SOCKET_TIMEOUT=0.3)
    settings.REDIS_BREAKER_FAILURES = 1
    settings.REDIS_BREAKER_SECONDS = 60
    settings.STREAMLIMIT_FAIL_OPEN = True
    answers = heartbeats_while_paused(client, redis, 3)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.json()["degraded"] is True and a.json()["activeSessions"] is None for a in answers)


def test_a_heartbeat_that_timed_out_may_have_been_admitted_and_the_next_one_finds_it(own_redis, key_prefix) -> None:
    redis = own_redis("--enable-debug-command", "yes")
    manager = manager_on(redis, key_prefix, 0.3)
    manager.admit("alice", "movie", "tv")  # scripts loaded
    # Redis is busy for two seconds (another client's slow command) while the next heartbeat waits.
    busy = threading.Thread(target=lambda: redis.client(socket_timeout=10).execute_command("DEBUG", "SLEEP", "2"))
    busy.start()
    wait_until_busy(redis)
    with pytest.raises(RedisTimeoutError):
        manager.admit("alice", "movie", "phone")  # the player is told 500
    busy.join()
    # Once free, Redis reads and runs the admission the timed-out client had sent: "phone" is live.
    sessions = KeyLayout(key_prefix).user("alice").sessions
    wait_for("the timed-out admission run", lambda: redis.client().zscore(sessions, "phone") is not None, timeout=10)
    # Redis ran the admission after all: the next heartbeat of that session finds it live.
    result = manager.admit("alice", "movie", "phone")
    assert result.allowed and not result.new_session and result.active_sessions == 2


def test_readyz_is_503_while_redis_is_full_and_ready_again_after(
    client: Client, own_redis, use_redis, json_log_lines
) -> None:
    redis = own_redis()
    use_redis(redis.url)
    assert client.get("/readyz").status_code == 200
    redis.client().config_set("maxmemory", 1)
    response = client.get("/readyz")
    assert response.status_code == 503
    # The caller learns the reason code; Redis' own words go to the log.
    assert response.json() == {"status": "not_ready", "code": "redis_refuses_writes", "reason": "redis_refuses_writes"}
    assert any("maxmemory" in line.get("error", "") for line in json_log_lines() if line["message"] == "not ready")
    assert heartbeat(client).status_code == 500  # what the probe foresaw
    redis.client().config_set("maxmemory", 0)
    assert client.get("/readyz").status_code == 200
    assert heartbeat(client).status_code == 200


def test_readyz_is_503_on_a_read_only_replica(client: Client, own_redis, use_redis) -> None:
    redis = own_redis()
    use_redis(redis.url)
    primary = own_redis()
    redis.client().replicaof("127.0.0.1", primary.port)  # what a failover does to an old primary
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["code"] == "redis_refuses_writes" and response.json()["reason"] == "redis_refuses_writes"
    assert heartbeat(client).status_code == 500
    redis.client().replicaof("NO", "ONE")
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_check_service_fails_with_the_reason_when_redis_refuses_writes(own_redis, use_redis) -> None:
    redis = own_redis()
    use_redis(redis.url)
    redis.client().config_set("maxmemory", 1)
    with pytest.raises(CommandError, match=r"not ready: Redis refuses the heartbeat.s writes: .*maxmemory"):
        call_command("check_service")


def test_a_heartbeat_whose_policy_check_falls_due_while_redis_is_down_is_one_failure(own_redis, key_prefix) -> None:
    # The check of the policy version (every POLICY_CHECK_SECONDS) and the admission script were
    # counted as two failures: a heartbeat opened a breaker of three a failure early.
    redis = own_redis()
    breaker = CircuitBreaker(failure_threshold=2, open_seconds=60)
    manager = manager_on(redis, key_prefix, 0.5, breaker=breaker)
    manager.policies.check_seconds = 0  # every heartbeat's check is due
    assert manager.admit("alice", "movie", "tv").allowed
    redis.stop()
    with pytest.raises(RedisConnectionError):
        manager.admit("alice", "movie", "tv")
    assert breaker.state is BreakerState.CLOSED  # one failure of two
    redis.start()  # a new, empty Redis
    assert manager.admit("alice", "movie", "tv").allowed
