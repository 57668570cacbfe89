"""A stop without a token is taken only from the network that plays the session (issue 19, item 3).

The attack: with anonymous players, anyone who knows (or guesses) a session
id could stop a viewer who is playing and take the slot. The live tests start
a real gunicorn on loopback and send from two client networks: the source
addresses 127.0.0.1 and 127.0.1.1 (two /24s), or, behind the proxy, two
X-Forwarded-For addresses.
"""

from __future__ import annotations

import http.client
import json

import pytest
from django.test import Client

from dashboard.client_ip import client_ip
from heartbeat.edge.client_network import client_network, network_of
from heartbeat.limiter.manager import StopFromOtherNetworkError, StreamManager
from tests.conftest import make_token

PLAYING = {"userId": "viewer", "streamId": "movie", "sessionId": "living-room"}


def post(port: int, path: str, body: dict, source: str = "127.0.0.1", headers: dict | None = None) -> tuple[int, dict]:
    """POST JSON from the source address ``source`` to gunicorn on 127.0.0.1; (status, JSON body or {})."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else {})
    finally:
        connection.close()


@pytest.mark.parametrize("behind_proxy", [False, True])
@pytest.mark.parametrize(
    ("peer", "forwarded"), [("192.0.2.7", ""), ("192.0.2.7", "198.51.100.1, 203.0.113.9"), ("192.0.2.7", "nonsense")]
)
def test_the_network_is_that_of_the_address_the_login_lockout_uses(
    rf, settings, behind_proxy: bool, peer: str, forwarded: str
) -> None:
    settings.BEHIND_PROXY = behind_proxy
    request = rf.post("/heartbeat/stop", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_network(request) == network_of(client_ip(request))


def test_network_of_keeps_the_prefix_only() -> None:
    assert network_of("192.0.2.77") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2ff:aaaa::1") == "2001:db8:1:200::/56"
    assert network_of("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert network_of("not an address") == "" and network_of("") == ""


@pytest.mark.live_server_gunicorn
def test_an_anonymous_stop_from_another_network_is_refused_and_the_viewer_plays_on(live_gunicorn) -> None:
    server = live_gunicorn(workers=2)
    assert post(server.port, "/heartbeat", PLAYING)[0] == 200

    status, body = post(server.port, "/heartbeat/stop", PLAYING, source="127.0.1.1")
    assert status == 403
    assert body["code"] == "stop_from_other_network" and body["message"]
    # The viewer still holds its slot: its next heartbeat is a repeat, not a new session.
    status, body = post(server.port, "/heartbeat", PLAYING)
    assert status == 200 and body["activeSessions"] == 1

    # From its own network (another address of the same /24) the stop is taken.
    assert post(server.port, "/heartbeat/stop", PLAYING, source="127.0.0.2")[0] == 204
    status, body = post(server.port, "/heartbeat", {**PLAYING, "sessionId": "kitchen"}, source="127.0.1.1")
    assert status == 200 and body["activeSessions"] == 1


@pytest.mark.live_server_gunicorn
def test_behind_the_proxy_the_forwarded_address_is_the_network(live_gunicorn) -> None:
    server = live_gunicorn(workers=1, DJANGO_BEHIND_PROXY="true")
    home, elsewhere = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "203.0.113.9"}
    assert post(server.port, "/heartbeat", PLAYING, headers=home)[0] == 200
    status, body = post(server.port, "/heartbeat/stop", PLAYING, headers=elsewhere)
    assert (status, body["code"]) == (403, "stop_from_other_network")
    assert post(server.port, "/heartbeat/stop", PLAYING, headers={"X-Forwarded-For": "198.51.100.200"})[0] == 204


@pytest.mark.live_server_gunicorn
def test_a_session_follows_its_player_to_a_new_network(live_gunicorn) -> None:
    server = live_gunicorn(workers=1)
    assert post(server.port, "/heartbeat", PLAYING)[0] == 200
    # Wi-Fi to mobile: the latest heartbeat's network is the session's.
    assert post(server.port, "/heartbeat", PLAYING, source="127.0.1.1")[0] == 200
    assert post(server.port, "/heartbeat/stop", PLAYING)[0] == 403
    assert post(server.port, "/heartbeat/stop", PLAYING, source="127.0.1.1")[0] == 204


def test_a_stop_with_an_account_token_is_taken_from_any_network(client: Client, token_keys) -> None:
    token = make_token("viewer")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert (
        client.post("/heartbeat", PLAYING, content_type="application/json", REMOTE_ADDR="192.0.2.1", **auth).status_code
        == 200
    )
    response = client.post(
        "/heartbeat/stop", PLAYING, content_type="application/json", REMOTE_ADDR="203.0.113.1", **auth
    )
    assert response.status_code == 204


def test_the_stop_script_keeps_its_old_contract_for_callers_without_a_network(manager: StreamManager) -> None:
    # A rolling deploy: old processes admit without a network and stop without one.
    manager.admit("viewer", "movie", "old-caller")
    assert manager.stop("viewer", "old-caller", network="192.0.2.0/24") is True  # nothing stored: any network
    manager.admit("viewer", "movie", "new-caller", network="192.0.2.0/24")
    assert manager.stop("viewer", "new-caller") is True  # an old stop names no network


def test_a_refused_stop_changes_nothing_in_redis(manager: StreamManager, redis_client, key_prefix: str) -> None:
    manager.admit("viewer", "movie", "tv", device_name="TV", network="192.0.2.0/24")
    user = manager.keys.user("viewer")
    before = (redis_client.zrange(user.sessions, 0, -1), redis_client.hgetall(user.details))
    with pytest.raises(StopFromOtherNetworkError):
        manager.stop("viewer", "tv", from_other_screen=True, network="203.0.113.0/24")
    assert (redis_client.zrange(user.sessions, 0, -1), redis_client.hgetall(user.details)) == before
    assert redis_client.zscore(user.stopped, "tv") is None
    assert manager.stop("viewer", "tv", network="192.0.2.0/24") is True
    assert b"n:tv" not in redis_client.hgetall(user.details)
