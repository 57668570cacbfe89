"""CORS on the player paths: only the origins of PLAYER_ALLOWED_ORIGINS may call them from a browser."""

from __future__ import annotations

import pytest
from django.test import Client

from heartbeat.edge.cors import parse_origins

SITE = "https://www.example.com"


@pytest.fixture
def allowed_site(settings) -> str:
    settings.PLAYER_ALLOWED_ORIGINS = parse_origins(f"{SITE},https://tv.example.com:8443")
    return SITE


def preflight(client: Client, path: str, origin: str):
    return client.options(
        path,
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip


def test_origins_parse_and_bad_ones_are_refused() -> None:
    assert parse_origins(" https://WWW.example.com, http://localhost:3000 ,") == {
        "https://www.example.com",
        "http://localhost:3000",
    }
    assert parse_origins("") == frozenset()
    for bad in ("*", "www.example.com", "https://www.example.com/", "https://x.example/player", "ftp://x.example"):
        with pytest.raises(ValueError, match="origin"):
            parse_origins(bad)


@pytest.mark.parametrize("path", ["/heartbeat", "/heartbeat/stop", "/sessions"])
def test_an_allowed_site_gets_its_preflight_answered(client: Client, allowed_site: str, path: str) -> None:
    response = preflight(client, path, allowed_site)
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == allowed_site
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "Authorization" in response["Access-Control-Allow-Headers"]
    assert "Origin" in response["Vary"]


def test_an_allowed_site_may_read_the_answers(client: Client, allowed_site: str) -> None:
    body = {"userId": "u", "streamId": "m", "sessionId": "s"}
    response = client.post("/heartbeat", body, content_type="application/json", headers={"Origin": allowed_site})
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == allowed_site
    assert response["Access-Control-Expose-Headers"] == "X-Correlation-ID"
    refused = client.post("/heartbeat", {"userId": ""}, content_type="application/json", headers={"Origin": SITE})
    assert refused.status_code == 400 and refused["Access-Control-Allow-Origin"] == SITE


@pytest.mark.parametrize("origin", ["https://evil.example", "https://www.example.com.evil.example", "null"])
def test_other_sites_get_no_cors_headers(client: Client, allowed_site: str, origin: str) -> None:
    response = preflight(client, "/heartbeat", origin)
    assert "Access-Control-Allow-Origin" not in response
    post = client.post(
        "/heartbeat", {"userId": "u", "streamId": "m", "sessionId": "s"}, content_type="application/json",
        headers={"Origin": origin},
    )  # fmt: skip
    assert "Access-Control-Allow-Origin" not in post


def test_without_the_setting_nothing_changes(client: Client) -> None:
    response = preflight(client, "/heartbeat", SITE)
    assert "Access-Control-Allow-Origin" not in response and "Vary" not in response
    assert "Access-Control-Allow-Origin" not in client.get("/healthz", headers={"Origin": SITE})


def test_the_staff_pages_never_answer_cors(client: Client, allowed_site: str) -> None:
    assert "Access-Control-Allow-Origin" not in client.get("/dashboard/", headers={"Origin": allowed_site})
