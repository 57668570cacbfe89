"""The guarantee the product sells, against a live gunicorn with several workers."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests

from tests.conftest import make_token

pytestmark = pytest.mark.live_server_gunicorn

PLAYERS = 50
USERS = 20
LIMIT = 3


def fire_first_heartbeats(url: str, user: str, players: int) -> Counter:
    """``players`` distinct sessions of ``user`` send their first heartbeat at the same instant."""
    # Bounded: a player that fails before the barrier breaks it for all (none waits forever).
    barrier = threading.Barrier(players, timeout=120)
    statuses: Counter = Counter()
    lock = threading.Lock()

    def player(i: int) -> None:
        try:
            with requests.Session() as http:
                # Connect before the barrier, so the requests really race.
                http.get(f"{url}/heartbeat", timeout=60)
                barrier.wait()
                response = http.post(
                    f"{url}/heartbeat",
                    json={"userId": user, "streamId": f"movie-{i % 4}", "sessionId": f"{user}-device-{i}"},
                    timeout=60,
                )
            outcome: int | str = response.status_code
        except Exception as error:  # counted, so that the caller's exact comparison shows it
            barrier.abort()
            outcome = f"{type(error).__name__}: {error}"
        with lock:
            statuses[outcome] += 1

    threads = [threading.Thread(target=player, args=(i,)) for i in range(players)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_fifty_racing_first_heartbeats_admit_exactly_the_limit_for_each_of_twenty_users(live_gunicorn) -> None:
    server = live_gunicorn(workers=4, MAX_CONCURRENT_STREAMS=str(LIMIT))
    for n in range(USERS):
        statuses = fire_first_heartbeats(server.url, f"family-{n}", PLAYERS)
        assert statuses == Counter({200: LIMIT, 400: PLAYERS - LIMIT}), (n, statuses)


def race(url: str, requests_by_player: list[dict]) -> list[requests.Response]:
    """Send each player's request at the same instant (connected first); the answers in player order."""
    barrier = threading.Barrier(len(requests_by_player))
    answers: list = [None] * len(requests_by_player)

    def player(i: int) -> None:
        with requests.Session() as http:
            http.get(f"{url}/heartbeat", timeout=10)
            barrier.wait()
            answers[i] = http.post(f"{url}/heartbeat", timeout=30, **requests_by_player[i])

    threads = [threading.Thread(target=player, args=(i,)) for i in range(len(requests_by_player))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_replace_oldest_under_a_race_keeps_exactly_the_limit_and_tells_every_replaced_player(
    live_gunicorn, token_env
) -> None:
    server = live_gunicorn(workers=3, MAX_CONCURRENT_STREAMS=str(LIMIT), LIMIT_POLICY="replace_oldest", **token_env)
    for n in range(USERS):
        user = f"family-{n}"
        players = [
            {
                "json": {"streamId": "movie", "sessionId": f"{user}-device-{i}", "deviceName": f"screen {i}"},
                "headers": {"Authorization": f"Bearer {make_token(user, sid=f'{user}-device-{i}')}"},
            }
            for i in range(PLAYERS)
        ]
        first = race(server.url, players)
        # Under replace_oldest every newcomer plays, each taking the slot of the oldest.
        assert Counter(r.status_code for r in first) == Counter({200: PLAYERS}), n
        assert all(r.json()["activeSessions"] <= LIMIT for r in first)
        listed = requests.get(
            f"{server.url}/sessions", headers={"Authorization": f"Bearer {make_token(user)}"}, timeout=10
        ).json()["sessions"]
        assert len(listed) == LIMIT, (n, listed)
        second = race(server.url, players)
        codes = Counter(r.json().get("code", "playing") for r in second)
        assert codes == Counter({"playing": LIMIT, "session_replaced": PLAYERS - LIMIT}), (n, codes)
        still_playing = {players[i]["json"]["sessionId"] for i, r in enumerate(second) if r.status_code == 200}
        assert still_playing == {s["sessionId"] for s in listed}


def test_gunicorn_logs_one_json_object_per_line_with_the_request_fields(live_gunicorn) -> None:
    server = live_gunicorn(workers=2)
    response = requests.post(
        f"{server.url}/heartbeat/",
        json={"userId": "u", "streamId": "m", "sessionId": "s"},
        headers={"X-Correlation-ID": "live-1"},
        timeout=10,
    )
    assert response.status_code == 200 and response.headers["X-Correlation-ID"] == "live-1"
    server.stop()
    lines = server.log_lines()
    assert all("unparsed" not in line for line in lines), [line for line in lines if "unparsed" in line]
    [finished] = [
        line for line in lines if line.get("correlationId") == "live-1" and line["message"] == "request_finished"
    ]
    for field in ("hostname", "url", "reqBody", "message", "status", "level", "timestamp", "correlationId"):
        assert field in finished, field
    assert any("Booting worker" in line["message"] for line in lines)
    # No token keys in this environment: the start-up says what that means.
    [warning] = [line for line in lines if "playback tokens are off" in line["message"]]
    assert warning["level"] == "warning" and "lock that account out" in warning["message"]


def test_through_gunicorn_every_player_and_probe_answer_is_json(live_gunicorn) -> None:
    server = live_gunicorn(workers=1)
    body = b'{"userId": "chunky", "streamId": "movie", "sessionId": "tv"}'

    def chunks():
        yield body[:10]
        yield body[10:]

    # requests sends a generator body with Transfer-Encoding: chunked and no Content-Length.
    chunked = requests.post(
        f"{server.url}/heartbeat", data=chunks(), headers={"Content-Type": "application/json"}, timeout=10
    )
    assert chunked.status_code == 200 and chunked.json()["activeSessions"] == 1
    for method, path, status in [
        ("POST", "/heartbeat//", 404),
        ("POST", "/HEARTBEAT", 404),
        ("POST", "/healthz", 405),
        ("GET", "/heartbeat", 405),
    ]:
        response = requests.request(method, f"{server.url}{path}", timeout=10)
        assert response.status_code == status, (method, path)
        assert response.headers["Content-Type"] == "application/json" and response.json()["code"], (method, path)
    head = requests.head(f"{server.url}/healthz", timeout=10)
    assert head.status_code == 200 and head.content == b""
    wrong_host = requests.post(f"{server.url}/heartbeat", data=body, headers={"Host": "evil.example.com"}, timeout=10)
    assert wrong_host.status_code == 400 and wrong_host.json()["code"] == "invalid_host"
