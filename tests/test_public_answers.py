"""What anyone on the internet gets from a real gunicorn (issue 19, items 4 and 6).

Each attack against the real processes: a signed token with extreme claims
(was a 500), /readyz while Redis refuses writes (showed Redis' own error text),
OPTIONS on a player path (showed the view's docstring), and the headers every
player answer carries.
"""

from __future__ import annotations

import time

import jwt
import pytest
import requests

from tests.conftest import TOKEN_SECRETS

SITE = "https://www.example.com"
BODY = {"streamId": "movie", "sessionId": "tv"}


def signed(**claims: object) -> str:
    return jwt.encode({"sub": "alice", **claims}, TOKEN_SECRETS["k1"], algorithm="HS256", headers={"kid": "k1"})


def later() -> int:
    return int(time.time()) + 300


@pytest.fixture
def service(live_gunicorn, token_env):
    """One gunicorn worker with tokens on and SITE allowed to call it from a browser."""
    return live_gunicorn(workers=1, **token_env, PLAYER_ALLOWED_ORIGINS=SITE)


def extreme_claims() -> list[dict]:
    """Made when the test runs: an ``exp`` of ``later()`` taken at collection may have passed since."""
    return [
        {"exp": 10**400},
        {"exp": later(), "nbf": 10**400},
        {"exp": later(), "nbf": -(10**400)},
        {"exp": float("inf")},
        {"exp": str(later())},
        {"exp": later(), "plan": "basic\u0000"},
    ]


def test_a_signed_token_with_extreme_claims_is_a_401_not_a_500(service) -> None:
    # One gunicorn for every case: starting one costs seconds.
    for claims in extreme_claims():
        token = signed(**claims)
        for method, path in (("POST", "/heartbeat"), ("GET", "/sessions"), ("POST", "/heartbeat/stop")):
            response = requests.request(
                method, service.url + path, json=BODY, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            assert response.status_code == 401, (claims, path, response.status_code, response.text[:300])
            assert response.json()["code"] == "invalid_token"
    assert not [line for line in service.log_lines() if line.get("level") == "error"]


def test_readyz_tells_anonymous_callers_the_reason_code_only(live_gunicorn, own_redis) -> None:
    redis = own_redis()
    service = live_gunicorn(workers=1, REDIS_URL=redis.url)
    assert requests.get(service.url + "/readyz", timeout=10).status_code == 200
    redis.client().config_set("maxmemory", 1)  # Redis answers, but refuses the heartbeat's writes
    response = requests.get(service.url + "/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "code": "redis_refuses_writes", "reason": "redis_refuses_writes"}
    # The operator still finds Redis' own words in the log.
    [logged] = [line for line in service.log_lines() if line.get("message") == "not ready"]
    assert "maxmemory" in logged["error"] and logged["reason"] == "redis_refuses_writes"


def test_options_answers_allow_and_nothing_else_unless_it_is_a_preflight(service) -> None:
    not_preflights = ({}, {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, {"Origin": SITE})
    for path in ("/heartbeat", "/heartbeat/stop", "/sessions"):
        for headers in not_preflights:
            response = requests.options(service.url + path, headers=headers, timeout=10)
            assert (response.status_code, response.content) == (204, b""), (path, headers, response.text[:300])
            assert "OPTIONS" in response.headers["Allow"]
            assert "Access-Control-Allow-Methods" not in response.headers
    # An allowed site's preflight is answered as before (heartbeat/edge/cors.py).
    response = requests.options(
        service.url + "/heartbeat",
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=10,
    )
    assert response.status_code == 204 and response.content == b""
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_every_player_answer_is_nosniff_and_no_store(service) -> None:
    good = {"Authorization": f"Bearer {signed(exp=later(), sid='tv')}"}
    answers = [
        requests.post(service.url + "/heartbeat", json=BODY, headers=good, timeout=10),  # 200
        requests.post(service.url + "/heartbeat", json={"streamId": ""}, headers=good, timeout=10),  # 400
        requests.post(service.url + "/heartbeat", json=BODY, timeout=10),  # 401
        requests.get(service.url + "/sessions", headers=good, timeout=10),  # 200
        requests.post(service.url + "/heartbeat/stop", json=BODY, headers=good, timeout=10),  # 204
        requests.options(service.url + "/heartbeat", timeout=10),  # 204
        requests.get(service.url + "/heartbeat", timeout=10),  # 405
        requests.get(service.url + "/readyz", timeout=10),
        requests.get(service.url + "/healthz", timeout=10),
    ]
    assert sorted({a.status_code for a in answers}) == [200, 204, 400, 401, 405]
    for answer in answers:
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", (answer.request.method, answer.url)
        assert answer.headers.get("Cache-Control") == "no-store", (answer.request.method, answer.url)
