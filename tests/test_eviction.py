"""Eviction as a player sees it, through the API."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from heartbeat.services import get_stream_manager


def heartbeat(client: Client, session: str, user: str = "alice"):
    data = {"userId": user, "streamId": "movie", "sessionId": session}
    return client.post("/heartbeat", json.dumps(data), content_type="application/json")


@pytest.fixture
def client() -> Client:
    return Client()


def test_evicted_session_is_told_to_stop_with_its_own_code(client: Client) -> None:
    for i in range(3):
        heartbeat(client, f"s{i}")
    get_stream_manager().evict("alice", "s1")
    response = heartbeat(client, "s1")
    assert response.status_code == 400
    data = response.json()
    assert data["code"] == "session_evicted" and data["allowed"] is False
    assert "support" in data["message"]
    assert data["activeSessions"] == 2


def test_other_sessions_play_on_and_a_new_one_takes_the_freed_slot(client: Client) -> None:
    for i in range(3):
        heartbeat(client, f"s{i}")
    get_stream_manager().evict("alice", "s1")
    assert heartbeat(client, "s0").status_code == 200
    assert heartbeat(client, "s2").status_code == 200
    assert heartbeat(client, "new").status_code == 200
    assert heartbeat(client, "s1").json()["code"] == "session_evicted"


def test_evict_all_stops_every_session_of_the_user_only(client: Client) -> None:
    for i in range(3):
        heartbeat(client, f"s{i}")
        heartbeat(client, f"s{i}", user="bob")
    assert sorted(get_stream_manager().evict("alice")) == ["s0", "s1", "s2"]
    assert all(heartbeat(client, f"s{i}").json()["code"] == "session_evicted" for i in range(3))
    assert all(heartbeat(client, f"s{i}", user="bob").status_code == 200 for i in range(3))


def test_the_cool_down_ends(client: Client, settings) -> None:
    settings.EVICTION_COOLDOWN_SECONDS = 1
    heartbeat(client, "s0")
    get_stream_manager().evict("alice", "s0")
    assert heartbeat(client, "s0").json()["code"] == "session_evicted"
    time.sleep(1.1)
    response = heartbeat(client, "s0")
    assert response.status_code == 200 and response.json()["activeSessions"] == 1


def test_an_evicted_session_waiting_out_its_cool_down_holds_no_slot(client: Client) -> None:
    for i in range(3):
        heartbeat(client, f"s{i}")
    get_stream_manager().evict("alice", "s0")
    for _ in range(3):
        heartbeat(client, "s0")
    assert [heartbeat(client, n).status_code for n in ("a", "b")] == [200, 400]


def test_a_session_that_expired_but_is_not_pruned_yet_is_not_evicted(client: Client, settings, redis_client) -> None:
    settings.SESSION_TTL_SECONDS = 2
    manager = get_stream_manager()
    heartbeat(client, "s0")
    heard = time.monotonic()  # s0's last heartbeat was before this
    # s1's heartbeat keeps the account's keys alive after s0 expired: s0 stays in them until the next prune.
    time.sleep(1.0)
    heartbeat(client, "s1")
    time.sleep(max(0.0, heard + 2.3 - time.monotonic()))
    user = manager.keys.user("alice")
    assert redis_client.zscore(user.sessions, "s0") is not None
    assert manager.evict("alice", "s0") == []
    assert not redis_client.exists(user.evicted)
    # No cool-down was armed: s0 may start again as a new session.
    response = heartbeat(client, "s0")
    assert response.status_code == 200 and response.json()["activeSessions"] == 2
