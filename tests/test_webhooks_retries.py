"""Retries that outlive a worker: the schedule and the dead-letter "retry" claims, with killed processes."""

from __future__ import annotations

import os
import signal
from collections import Counter

import orjson

from tests.webhook_fixtures import query, wait_for
from webhooks.signing import new_secret


def held_by(redis_client, layout, endpoint_id: int, account: str) -> str:
    """The worker holding the lease on ``account``'s stream for the endpoint ("" when none)."""
    holder = redis_client.get(layout.shard_of(account).webhook_lease(endpoint_id))
    return holder.decode() if holder else ""


def stored_attempts(redis_client, layout, endpoint_id: int, account: str) -> dict[str, int]:
    """Entry id -> failed attempts, as kept in Redis for the endpoint on ``account``'s stream."""
    stored = redis_client.hgetall(layout.shard_of(account).webhook_retries(endpoint_id))
    return {key.decode(): orjson.loads(value)["attempts"] for key, value in stored.items()}


def test_a_worker_taking_over_continues_the_retry_schedule_and_dead_letters_count_every_attempt(
    sqlite_database, deployment, receivers, redis_client
):
    secret = new_secret()
    # The schedule scaled by 0.05 (5 s -> 0.25 s, 30 s -> 1.5 s, 2 min -> 6 s, 5 min -> 15 s, 10 min -> 30 s)
    # and a maximum age of 36 s: 5 attempts, the 4th at least 6 s after the 3rd, which leaves time to kill
    # the holder while it waits. A new holder that started the count again would try 1, 2, 3... again,
    # soon after taking over, and the dead letter would count fewer attempts than the receiver saw.
    site = deployment(
        sqlite_database, WEBHOOK_RETRY_SCALE="0.05", WEBHOOK_MAX_AGE_HOURS="0.01", WEBHOOK_LEASE_SECONDS="5"
    )
    receiver = receivers(secret, failing=frozenset({"acct-down"}))
    endpoint_id = site.add_endpoint(receiver.url, secret)
    workers = {name: site.start_worker(name) for name in ("w1", "w2")}
    wait_for(
        lambda: {held_by(redis_client, site.layout, endpoint_id, f"a{n}") for n in range(40)} == {"w1", "w2"},
        30,
        "both workers holding streams",
    )
    before = site.write_events([f"acct-{n}" for n in range(10)], 3)
    wait_for(lambda: set(receiver.ids()) >= {event.id for event in before}, 30, "the healthy accounts' events")
    (failing,) = site.write_events(["acct-down"], 1)
    wait_for(lambda: receiver.ids().count(failing.id) >= 3, 30, "three failed attempts")
    wait_for(
        lambda: list(stored_attempts(redis_client, site.layout, endpoint_id, "acct-down").values()) == [3],
        10,
        "three attempts kept in Redis",
    )
    assert receiver.ids().count(failing.id) == 3  # the 4th is not due yet

    holder = held_by(redis_client, site.layout, endpoint_id, "acct-down")
    survivor = next(name for name in workers if name != holder)
    os.kill(workers[holder].pid, signal.SIGKILL)
    workers[holder].wait()
    after = site.write_events([f"acct-{n}" for n in range(10)], 2, start=3)

    # The survivor takes the stream over once the lease expires, and continues at the 4th attempt.
    wait_for(lambda: held_by(redis_client, site.layout, endpoint_id, "acct-down") == survivor, 30, "the take-over")
    wait_for(lambda: receiver.ids().count(failing.id) >= 4, 30, "the 4th attempt, by the survivor")
    wait_for(
        lambda: list(stored_attempts(redis_client, site.layout, endpoint_id, "acct-down").values()) == [4],
        10,
        "the 4th attempt counted after the 3 of the killed worker",
    )

    def dead() -> list[tuple]:
        return query(sqlite_database, "SELECT event_id, attempts, last_error FROM webhooks_deadletter")

    wait_for(lambda: len(dead()) == 1, 60, "the dead letter after WEBHOOK_MAX_AGE_HOURS")
    ((event_id, attempts, last_error),) = dead()
    assert event_id == failing.id
    assert last_error.startswith("5xx")
    # Every attempt the receiver saw, whichever worker made it, is counted: the schedule went on, not again.
    assert attempts == receiver.ids().count(failing.id)
    assert attempts in (4, 5)  # 5 on time; 4 if the machine was so slow that the 4th came late
    wait_for(lambda: set(receiver.ids()) >= {event.id for event in after}, 30, "the events written after the kill")
    # The normal case (no worker killed mid-send): each healthy event delivered exactly once.
    counts = Counter(receiver.ids())
    assert all(counts[event.id] == 1 for event in before + after)
    assert stored_attempts(redis_client, site.layout, endpoint_id, "acct-down") == {}  # dead: forgotten
    assert workers[survivor].poll() is None


def test_a_dead_letter_retry_claimed_by_a_killed_worker_is_taken_over_after_the_lease(
    sqlite_database, deployment, receivers
):
    secret = new_secret()
    # Dead after 1.8 s; a send may take 4 s, so a claim lasts the 9 s lease.
    site = deployment(
        sqlite_database, WEBHOOK_MAX_AGE_HOURS="0.0005", WEBHOOK_TIMEOUT_SECONDS="4", WEBHOOK_LEASE_SECONDS="9"
    )
    receiver = receivers(secret, mode="status:500")
    site.add_endpoint(receiver.url, secret)
    first = site.start_worker("first")
    (event,) = site.write_events(["acct-a"], 1)

    def letters() -> list[tuple]:
        return query(sqlite_database, "SELECT event_id, retry_claimed_by, retry_requested_at FROM webhooks_deadletter")

    wait_for(lambda: len(letters()) == 1, 30, "the dead letter")
    failed_attempts = receiver.ids().count(event.id)
    receiver.mode = "hang"  # the retry's request never answers: the first worker is mid-send when killed
    query(sqlite_database, "UPDATE webhooks_deadletter SET retry_requested_at = CURRENT_TIMESTAMP")
    wait_for(lambda: receiver.ids().count(event.id) == failed_attempts + 1, 30, "the retry sent by the first worker")
    assert letters()[0][1] == "first"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()

    receiver.mode = "ok"
    site.start_worker("second")
    wait_for(lambda: letters() == [], 60, "the retry taken over and delivered by the second worker")
    assert receiver.ids().count(event.id) == failed_attempts + 2
