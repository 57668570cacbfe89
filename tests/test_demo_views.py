"""The demo page and its token endpoint: they exist only with STREAMLIMIT_DEMO, and the endpoint's abuse cases."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client
from jwt.algorithms import ECAlgorithm

from heartbeat.limiter.tokens import PlaybackClaims
from heartbeat.services import get_live_state, get_verifier
from tests.conftest import ROOT
from tests.manage_runner import run_manage


@pytest.fixture
def demo_on(settings) -> None:
    settings.STREAMLIMIT_DEMO = True


def post_token(client: Client, body: object, **extra: object):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/demo/token", raw, content_type="application/json", **extra)


def test_the_demo_is_off_unless_set_and_make_run_turns_it_on() -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAMLIMIT_DEMO"}
    env["STREAMLIMIT_VAR_DIR"] = str(ROOT / "var")
    show = "from django.conf import settings; print(settings.STREAMLIMIT_DEMO)"
    run = ["shell", "--no-imports", "-c", show]
    assert run_manage(run, env=env).stdout.strip() == "False"
    env["STREAMLIMIT_DEMO"] = "true"
    assert run_manage(run, env=env).stdout.strip() == "True"
    # `make run` serves with the demo unless the user set STREAMLIMIT_DEMO; the image never sets it.
    run_recipe = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "STREAMLIMIT_DEMO=$${STREAMLIMIT_DEMO:-true}" in run_recipe and "gunicorn" in run_recipe
    assert "STREAMLIMIT_DEMO" not in (ROOT / "Dockerfile").read_text()


def test_page_and_token_endpoint_do_not_exist_when_the_demo_is_off(client: Client, token_keys) -> None:
    assert client.get("/demo/").status_code == 404
    response = post_token(client, {"userId": "alice"})
    assert response.status_code == 404
    assert b"eyJ" not in response.content  # no token of any kind


def test_the_page_says_whether_tokens_are_on(client: Client, demo_on, settings) -> None:
    page = client.get("/demo/")
    assert page.status_code == 200 and page["Cache-Control"].startswith("max-age=0")
    assert b'data-tokens-mode="off"' in page.content and b"PLAYBACK_TOKEN_KEYS=demo=" in page.content
    assert b"demo/demo" in page.content  # its script and style
    settings.PLAYBACK_TOKEN_KEYS = {"k1": "x" * 32}
    assert b'data-tokens-mode="hs256"' in client.get("/demo/").content


def test_the_token_endpoint_signs_an_account_token_the_service_accepts(
    client: Client, demo_on, token_keys, settings
) -> None:
    response = post_token(client, {"userId": "family-1"})
    assert response.status_code == 200 and response["Cache-Control"].startswith("max-age=0")
    body = response.json()
    assert body["expiresIn"] == 600
    assert get_verifier().verify(body["token"]) == PlaybackClaims("family-1")  # no sid: an account token
    answer = client.post(
        "/heartbeat",
        {"streamId": "m", "sessionId": "s"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {body['token']}"},
    )
    assert answer.status_code == 200
    assert [s.session_id for s in get_live_state().sessions("family-1")] == ["s"]
    session_token = post_token(client, {"userId": "family-1", "sessionId": "tab-1"}).json()["token"]
    assert get_verifier().verify(session_token) == PlaybackClaims("family-1", "tab-1")
    planned = post_token(client, {"userId": "family-1", "sessionId": "tab-2", "plan": "family"}).json()["token"]
    assert get_verifier().verify(planned) == PlaybackClaims("family-1", "tab-2", plan="family")
    short = post_token(client, {"userId": "family-1", "ttlSeconds": 5}).json()
    assert short["expiresIn"] == 5
    settings.PLAYBACK_TOKEN_ISSUER, settings.PLAYBACK_TOKEN_AUDIENCE = "https://auth.example", "streamlimit"
    assert get_verifier().verify(post_token(client, {"userId": "x"}).json()["token"]).user_id == "x"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "userId"),
        ({"userId": ""}, "userId"),
        ({"userId": "a\u202eb"}, "userId"),
        ({"userId": "x" * 129}, "userId"),
        ({"userId": 7}, "userId"),
        ({"userId": "a", "sessionId": ""}, "sessionId"),
        ({"userId": "a", "sessionId": ["s"]}, "sessionId"),
        ({"userId": "a", "plan": ""}, "plan"),
        ({"userId": "a", "plan": 3}, "plan"),
        ({"userId": "a", "ttlSeconds": 0}, "ttlSeconds"),
        ({"userId": "a", "ttlSeconds": 601}, "ttlSeconds"),
        ({"userId": "a", "ttlSeconds": True}, "ttlSeconds"),
        ({"userId": "a", "ttlSeconds": "60"}, "ttlSeconds"),
        (["userId"], "body"),
        (b"{not json", "body"),
    ],
)
def test_the_token_endpoint_refuses_bad_input(client: Client, demo_on, token_keys, body: object, field: str) -> None:
    response = post_token(client, body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request" and field in response.json()["errors"]


def test_the_token_endpoint_refuses_other_methods_and_big_bodies(client: Client, demo_on, token_keys) -> None:
    assert client.get("/demo/token").status_code == 405
    assert client.put("/demo/token", "{}", content_type="application/json").status_code == 405
    response = post_token(client, {"userId": "a", "pad": "x" * 2000})
    assert response.status_code == 413


def test_the_token_endpoint_needs_an_hs256_key(client: Client, demo_on, settings) -> None:
    settings.PLAYBACK_TOKEN_KEYS = {}
    assert post_token(client, {"userId": "a"}).status_code == 409
    key = ec.generate_private_key(ec.SECP256R1())
    settings.PLAYBACK_TOKEN_JWKS = {"keys": [{**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "ec-1"}]}
    response = post_token(client, {"userId": "a"})
    assert response.status_code == 409 and response.json()["code"] == "tokens_unavailable"
    assert b'data-tokens-mode="jwks-only"' in client.get("/demo/").content


def test_demo_tokens_never_reach_the_logs(client: Client, demo_on, token_keys, json_log_lines) -> None:
    token = post_token(client, {"userId": "family-2"}).json()["token"]
    text = "\n".join(json.dumps(line) for line in json_log_lines())
    assert "/demo/token" in text  # the request was logged ...
    assert token not in text and token.split(".")[2] not in text  # ... its answer was not
