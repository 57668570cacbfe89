"""The /heartbeat API through Django's test client, on a real Redis."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from redis import Redis

URL = "/heartbeat"
STOP_URL = "/heartbeat/stop"


def body(user: str = "alice", stream: str = "movie", session: str = "s0") -> dict:
    return {"userId": user, "streamId": stream, "sessionId": session}


def post(client: Client, data: object, url: str = URL, content_type: str = "application/json", headers=None):
    raw = data if isinstance(data, (str, bytes)) else json.dumps(data)
    # CONTENT_TYPE is passed as well: the test client drops it for an empty body.
    return client.post(url, raw, content_type=content_type, headers=headers or {}, CONTENT_TYPE=content_type)


@pytest.fixture
def client() -> Client:
    return Client()


def test_first_heartbeat_is_allowed_with_the_pace_to_follow(client: Client) -> None:
    response = post(client, body())
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "allowed": True,
        "activeSessions": 1,
        "limit": 3,
        "limitSource": "default",
        "heartbeatInterval": 20,
    }


def test_trailing_slash_works_without_a_redirect(client: Client) -> None:
    assert post(client, body(), url="/heartbeat/").status_code == 200
    assert post(client, body(), url="/heartbeat/stop/").status_code == 204


def test_fourth_session_is_refused_with_a_message_to_show(client: Client) -> None:
    for i in range(3):
        assert post(client, body(session=f"s{i}")).status_code == 200
    response = post(client, body(session="s3"))
    assert response.status_code == 400
    data = response.json()
    assert data["allowed"] is False
    assert data["code"] == "concurrency_limit_reached"
    assert (data["activeSessions"], data["limit"]) == (3, 3)
    assert "3 screens" in data["message"]


def test_live_session_keeps_its_slot_when_the_stream_changes(client: Client) -> None:
    for i in range(3):
        post(client, body(session=f"s{i}"))
    response = post(client, body(session="s2", stream="next-episode"))
    assert response.status_code == 200 and response.json()["activeSessions"] == 3


def test_stop_frees_the_slot_for_a_new_session(client: Client) -> None:
    for i in range(3):
        post(client, body(session=f"s{i}"))
    assert post(client, body(session="s0"), url=STOP_URL).status_code == 204
    assert post(client, body(session="s3")).status_code == 200


def test_stop_is_idempotent_and_accepts_unknown_sessions(client: Client) -> None:
    for _ in range(2):
        response = post(client, body(session="never-seen"), url=STOP_URL)
        assert response.status_code == 204 and response.content == b""


def test_stop_accepts_json_sent_as_text_plain_by_send_beacon(client: Client) -> None:
    post(client, body())
    response = post(client, body(), url=STOP_URL, content_type="text/plain;charset=UTF-8")
    assert response.status_code == 204
    assert post(client, body(session="s1")).json()["activeSessions"] == 1


def test_heartbeat_does_not_accept_text_plain(client: Client) -> None:
    response = post(client, body(), content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "application/xml", ""])
def test_wrong_content_type_gets_415_json(client: Client, content_type: str) -> None:
    response = post(client, body(), content_type=content_type)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_wrong_method_gets_405_json(client: Client, method: str) -> None:
    for url in (URL, STOP_URL):
        response = getattr(client, method)(url)
        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"
        assert "POST" in response["Allow"]


BAD_BODIES = {
    "not json": ("{not json", "body"),
    "empty body": ("", "body"),
    "a list": ([body()], "body"),
    "a string": ('"alice"', "body"),
    "null": ("null", "body"),
    "missing userId": ({"streamId": "m", "sessionId": "s"}, "userId"),
    "missing streamId": ({"userId": "u", "sessionId": "s"}, "streamId"),
    "missing sessionId": ({"userId": "u", "streamId": "m"}, "sessionId"),
    "number": ({**body(), "userId": 42}, "userId"),
    "null field": ({**body(), "streamId": None}, "streamId"),
    "object field": ({**body(), "sessionId": {"a": 1}}, "sessionId"),
    "bool field": ({**body(), "userId": True}, "userId"),
    "empty string": ({**body(), "userId": ""}, "userId"),
    "129 characters": ({**body(), "sessionId": "x" * 129}, "sessionId"),
    "newline": ({**body(), "streamId": "a\nb"}, "streamId"),
    "nul": ({**body(), "userId": "a\u0000b"}, "userId"),
    "escape": ({**body(), "userId": "\u001b[31m"}, "userId"),
    "C1 control": ({**body(), "userId": "a\u0085"}, "userId"),
    "right-to-left override": ({**body(), "userId": "evil\u202egnp.exe"}, "userId"),
    "zero-width space": ({**body(), "userId": "demo-user-5\u200b"}, "userId"),
    "byte order mark": ({**body(), "sessionId": "\ufefftv"}, "sessionId"),
    "line separator": ({**body(), "streamId": "a\u2028b"}, "streamId"),
    "paragraph separator": ({**body(), "streamId": "a\u2029b"}, "streamId"),
    "private use": ({**body(), "sessionId": "tv\ue000"}, "sessionId"),
    "unassigned": ({**body(), "userId": "a\U000e0080"}, "userId"),
    # orjson refuses a lone surrogate as invalid JSON.
    "lone surrogate": ('{"userId": "\\ud800", "streamId": "m", "sessionId": "s"}', "body"),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_input_gets_invalid_request_and_touches_no_key(
    client: Client, redis_client: Redis, key_prefix: str, name: str
) -> None:
    data, field = BAD_BODIES[name]
    # A stop names its session; the streamId it may carry is checked but not needed.
    for url in (URL,) if name == "missing streamId" else (URL, STOP_URL):
        response = post(client, data, url=url)
        assert response.status_code == 400, response.content
        payload = response.json()
        assert payload["code"] == "invalid_request"
        assert field in payload["errors"], payload
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []


def test_stop_needs_no_stream_id(client: Client) -> None:
    post(client, body())
    assert post(client, {"userId": "alice", "sessionId": "s0"}, url=STOP_URL).status_code == 204
    assert post(client, body(session="s1")).json()["activeSessions"] == 1


def test_a_body_over_16_kib_gets_413_and_touches_no_key(client: Client, redis_client: Redis, key_prefix: str) -> None:
    for url in (URL, STOP_URL):
        response = post(client, {**body(), "padding": "x" * 20_000}, url=url)
        assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []


def test_all_field_errors_are_reported_at_once(client: Client) -> None:
    response = post(client, {"userId": "", "streamId": 1})
    assert set(response.json()["errors"]) == {"userId", "streamId", "sessionId"}


def test_unknown_extra_fields_are_ignored(client: Client) -> None:
    assert post(client, {**body(), "device": "tv"}).status_code == 200


def test_an_invisible_character_is_named_with_its_position(client: Client) -> None:
    response = post(client, body(user="evil\u202egnp.exe"))
    [error] = response.json()["errors"]["userId"]
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in error and "at character 5" in error


@pytest.mark.parametrize(
    "value",
    ["Zoë", "名前", "Ελληνικά", "עברית", "العربية", "हिन्दी", "user 42 / tv", "a.b-c_d:e@f", "🎬 movie night"],
)
def test_letters_of_every_script_spaces_punctuation_and_emoji_are_accepted(client: Client, value: str) -> None:
    assert post(client, body(user=value, session=value)).status_code == 200


def test_128_characters_and_odd_characters_are_accepted(client: Client) -> None:
    odd = "{*}: |@/ é 名 " + "x" * 115
    assert len(odd) == 128
    assert post(client, body(user=odd, stream=odd, session=odd)).status_code == 200


def test_correlation_id_is_echoed_or_made_up(client: Client) -> None:
    given = post(client, body(), headers={"X-Correlation-ID": "abc-123"})
    assert given["X-Correlation-ID"] == "abc-123"
    from_request_id = post(client, body(), headers={"X-Request-ID": "req-9"})
    assert from_request_id["X-Correlation-ID"] == "req-9"
    made_up = post(client, body())
    assert len(made_up["X-Correlation-ID"]) == 36
    hostile = post(client, body(), headers={"X-Correlation-ID": "bad value\twith tab"})
    assert hostile["X-Correlation-ID"] != "bad value\twith tab"


def test_each_heartbeat_logs_the_fields_operators_group_by(client: Client, json_log_lines) -> None:
    post(client, body(), headers={"X-Correlation-ID": "corr-1"})
    lines = json_log_lines()
    [finished] = [line for line in lines if line["message"] == "request_finished"]
    assert finished["level"] == "info"
    assert finished["status"] == 200
    assert finished["url"] == "/heartbeat"
    assert finished["correlationId"] == "corr-1"
    assert finished["reqBody"] == body()
    assert finished["hostname"]
    assert finished["timestamp"].endswith("Z") and "T" in finished["timestamp"]
    [allow] = [line for line in lines if line["message"] == "allow stream request"]
    assert allow["correlationId"] == "corr-1" and allow["level"] == "info"


def test_refusal_is_logged_at_warning_with_the_managers_line(client: Client, json_log_lines) -> None:
    for i in range(4):
        post(client, body(session=f"s{i}"), headers={"X-Correlation-ID": f"c{i}"})
    lines = json_log_lines()
    [reject] = [line for line in lines if line["message"] == "reject stream request"]
    assert reject["level"] == "warning" and reject["correlationId"] == "c3"
    finished = [line for line in lines if line["message"] == "request_finished" and line["correlationId"] == "c3"]
    assert finished[0]["level"] == "warning" and finished[0]["status"] == 400


def test_request_body_in_logs_is_cut_short(client: Client, json_log_lines) -> None:
    post(client, {**body(), "userId": "x" * 5000})
    [finished] = [line for line in json_log_lines() if line["message"] == "request_finished"]
    assert len(finished["reqBody"]["userId"]) < 200


@pytest.fixture
def redis_down(settings) -> None:
    """Point the service at a closed port (nothing listens on port 1)."""
    caches = {**settings.CACHES}
    caches["default"] = {**caches["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = caches


@pytest.mark.one_server  # a closed port stands for the one server
def test_redis_down_gives_500_json_and_an_error_line_with_the_stack(client: Client, redis_down, json_log_lines) -> None:
    response = post(client, body(), headers={"X-Correlation-ID": "down-1"})
    assert response.status_code == 500
    assert response.json() == {"code": "internal_error", "correlationId": "down-1"}
    errors = [line for line in json_log_lines() if line["level"] == "error"]
    failed = [line for line in errors if line["message"] == "heartbeat failed"]
    assert failed and "ConnectionError" in failed[0]["stack"] and failed[0]["correlationId"] == "down-1"
    assert any(line["message"] == "request_finished" and line["status"] == 500 for line in errors)


@pytest.mark.one_server  # a closed port stands for the one server
def test_stop_with_redis_down_gives_500_json(client: Client, redis_down) -> None:
    response = post(client, body(), url=STOP_URL)
    assert response.status_code == 500 and response.json()["code"] == "internal_error"


@pytest.mark.one_server  # a closed port stands for the one server
def test_fail_open_answers_200_degraded_while_redis_is_down(client: Client, redis_down, settings) -> None:
    settings.STREAMLIMIT_FAIL_OPEN = True
    response = post(client, body())
    assert response.status_code == 200
    data = response.json()
    assert data["allowed"] is True and data["degraded"] is True and data["limit"] == 3


def test_every_line_of_a_refused_heartbeat_carries_its_correlation_id(client: Client, json_log_lines) -> None:
    for i in range(4):
        post(client, body(session=f"s{i}"), headers={"X-Correlation-ID": f"c{i}"})
    lines = json_log_lines()
    assert lines and all(line.get("correlationId", "").startswith("c") for line in lines), lines
    assert not [line for line in lines if line["message"].startswith("Bad Request")]


def test_an_unparseable_body_is_logged_as_it_was_sent(client: Client, json_log_lines) -> None:
    response = client.post("/heartbeat", data='{"userId": "alice", oops', content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    [finished] = [line for line in json_log_lines() if line["message"] == "request_finished"]
    assert finished["reqBody"] == '{"userId": "alice", oops' and finished["level"] == "warning"


def test_a_blocked_account_refuses_new_sessions_with_its_own_code(client: Client) -> None:
    from heartbeat.services import get_stream_manager

    assert post(client, body(session="tv")).status_code == 200
    get_stream_manager().block_new_sessions("alice", 600)
    assert post(client, body(session="tv")).status_code == 200  # a live session plays on
    response = post(client, body(session="phone"))
    assert response.status_code == 400 and response.json()["code"] == "account_blocked"
    get_stream_manager().unblock_new_sessions("alice")
    assert post(client, body(session="phone")).status_code == 200
